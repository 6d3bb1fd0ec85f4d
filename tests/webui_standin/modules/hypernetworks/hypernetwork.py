"""STAND-IN of modules/hypernetworks/hypernetwork.py: the listing, loading and application functions
the extension replaces, behaving as webui-interfaces.md §2.6-2.7 describes (module classes from the
test reference, which re-implements §2.2)."""
import glob
import os

import torch

from modules import devices, shared
from webui_reference import webui_load


class Hypernetwork:
    def __init__(self):
        self.name, self.filename, self.layers, self.multiplier = None, None, {}, 1.0

    def load(self, filename):
        self.filename = filename
        data = torch.load(filename, map_location="cpu")
        self.layers = webui_load(data)
        self.name = data.get("name", os.path.splitext(os.path.basename(filename))[0])

    def set_multiplier(self, multiplier):
        self.multiplier = multiplier
        for pair in self.layers.values():
            for module in pair:
                module.multiplier = multiplier
        return self


def list_hypernetworks(path):
    res = {}
    for filename in sorted(glob.iglob(os.path.join(path, "**/*.pt"), recursive=True), key=str.lower):
        name = os.path.splitext(os.path.basename(filename))[0]
        if name != "None":
            res[name] = filename
    return res


def load_hypernetwork(name):
    path = shared.hypernetworks.get(name)
    if path is None:
        return None
    hypernetwork = Hypernetwork()
    hypernetwork.load(path)
    return hypernetwork


def load_hypernetworks(names, multipliers=None):
    shared.loaded_hypernetworks.clear()
    for index, name in enumerate(names):
        hypernetwork = load_hypernetwork(name)
        if hypernetwork is None:
            continue
        hypernetwork.set_multiplier(multipliers[index] if multipliers else 1.0)
        shared.loaded_hypernetworks.append(hypernetwork)


def apply_single_hypernetwork(hypernetwork, context_k, context_v, layer=None):
    pair = hypernetwork.layers.get(context_k.shape[2], None)
    if pair is None:
        return context_k, context_v
    context_k = devices.cond_cast_unet(pair[0](devices.cond_cast_float(context_k)))
    context_v = devices.cond_cast_unet(pair[1](devices.cond_cast_float(context_v)))
    return context_k, context_v


def apply_hypernetworks(hypernetworks, context, layer=None):
    context_k = context
    context_v = context
    for hypernetwork in hypernetworks:
        context_k, context_v = apply_single_hypernetwork(hypernetwork, context_k, context_v, layer)
    return context_k, context_v


def train_hypernetwork(*args, **kwargs):
    """The plain WebUI's trainer is not emulated by this stand-in; the extension replaces it."""
    raise NotImplementedError("stand-in: the plain WebUI trainer is not emulated")
