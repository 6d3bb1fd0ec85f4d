"""STAND-IN of modules/shared.py: the globals the hypernetwork code reads."""
import argparse

cmd_opts = argparse.Namespace(hypernetwork_dir="", disable_safe_unpickle=False, hypernetwork_ext_no_patches=False,
                              lowvram=False, textual_inversion_templates_dir="")


class OptionInfo:
    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None, section=None,
                 **kwargs):
        self.default, self.label, self.onchange, self.section = default, label, onchange, section
        self.component, self.component_args = component, component_args


class Options:
    def __init__(self):
        self.data = {"sd_hypernetwork": "None", "extra_networks_default_multiplier": 1.0}
        section = ("extra_networks", "Extra Networks")
        self.data_labels = {"extra_networks_default_multiplier": OptionInfo(1.0, "Default multiplier for extra networks",
                                                                           section=section),
                            "sd_hypernetwork": OptionInfo("None", "Add hypernetwork to prompt", section=section),
                            "extra_networks_card_width": OptionInfo(0, "Card width for Extra Networks", section=section)}

    def add_option(self, key, info):
        self.data_labels[key] = info
        self.data.setdefault(key, info.default)

    def onchange(self, key, func, call=True):
        self.data_labels[key].onchange = func
        if call:
            func()

    def set(self, key, value):
        self.data[key] = value
        callback = getattr(self.data_labels.get(key), "onchange", None)
        if callback:
            callback()

    def __getattr__(self, item):
        data = self.__dict__.get("data", {})
        if item in data:
            return data[item]
        raise AttributeError(item)


opts = Options()
opts.data.update({"training_xattention_optimizations": False, "save_optimizer_state": True,
                  "unload_models_when_training": False, "pin_memory": False, "training_write_csv_every": 500})
hypernetworks = {}
loaded_hypernetworks = []
sd_model = None
parallel_processing_allowed = True


def _state():
    from modules.shared_state import State
    return State()


state = _state()


def reload_hypernetworks():
    from modules.hypernetworks import hypernetwork
    hypernetworks.clear()
    hypernetworks.update(hypernetwork.list_hypernetworks(cmd_opts.hypernetwork_dir))
