"""STAND-IN of modules/extra_networks_hypernet.py (webui-interfaces.md §2.8): the `<hypernet:...>` tags, and
the Settings dropdown "Add hypernetwork to prompt" (`sd_hypernetwork`) appended as one more tag at the
default multiplier."""
from modules import extra_networks, shared
from modules.hypernetworks import hypernetwork


class ExtraNetworkHypernet(extra_networks.ExtraNetwork):
    def __init__(self):
        super().__init__("hypernet")

    def activate(self, p, params_list):
        chosen, multiplier = shared.opts.sd_hypernetwork, shared.opts.extra_networks_default_multiplier
        named = {params.items[0] for params in params_list}
        if chosen != "None" and chosen in shared.hypernetworks and chosen not in named:
            p.all_prompts = [f"{prompt}<hypernet:{chosen}:{multiplier}>" for prompt in p.all_prompts]
            params_list.append(extra_networks.ExtraNetworkParams(items=[chosen, multiplier]))
        names = [params.items[0] for params in params_list]
        multipliers = [float(params.items[1]) if len(params.items) > 1 else 1.0 for params in params_list]
        hypernetwork.load_hypernetworks(names, multipliers)
