"""STAND-IN of modules/shared.py: the globals the hypernetwork code reads."""
import argparse

cmd_opts = argparse.Namespace(hypernetwork_dir="", disable_safe_unpickle=False, hypernetwork_ext_no_patches=False,
                              lowvram=False)


class Options:
    def __init__(self):
        self.data = {"sd_hypernetwork": "None", "extra_networks_default_multiplier": 1.0}
        self.data_labels = {}

    def add_option(self, key, info):
        self.data_labels[key] = info
        self.data.setdefault(key, info.default)

    def __getattr__(self, item):
        data = self.__dict__.get("data", {})
        if item in data:
            return data[item]
        raise AttributeError(item)


opts = Options()
hypernetworks = {}
loaded_hypernetworks = []
sd_model = None


def reload_hypernetworks():
    from modules.hypernetworks import hypernetwork
    global hypernetworks
    hypernetworks.clear()
    hypernetworks.update(hypernetwork.list_hypernetworks(cmd_opts.hypernetwork_dir))
