"""STAND-IN, not our code: the plain WebUI's hypernetwork formula and pickle check, re-implemented
from ../shared/docs/webui-interfaces.md (§2.2 module, §2.4-2.5 file rules, §2.7 application) and the
old extension's residual layout (prior-art-monkeypatch.md §2.11), so tests can compare our library
against what A1111 1.6-1.10.1 would compute. It deliberately imports nothing from hypernetwork_ext.
"""

from __future__ import annotations

import collections
import inspect
import pickle
import re
import zipfile

import torch

ACTIVATIONS = {
    "linear": torch.nn.Identity, "relu": torch.nn.ReLU, "leakyrelu": torch.nn.LeakyReLU, "elu": torch.nn.ELU,
    "swish": torch.nn.Hardswish, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid,
}
ACTIVATIONS.update({name.lower(): cls for name, cls in inspect.getmembers(torch.nn.modules.activation, inspect.isclass)
                    if cls.__module__ == "torch.nn.modules.activation"})


class WebUIModule(torch.nn.Module):
    """§2.2: Linear, [activation], [LayerNorm], [Dropout] per layer; forward x + linear(x) * m."""

    def __init__(self, dim, state_dict, layer_structure, activation_func, add_layer_norm, activate_output,
                 dropout_structure):
        super().__init__()
        assert layer_structure[0] == 1 and layer_structure[-1] == 1
        layers = []
        for i in range(len(layer_structure) - 1):
            layers.append(torch.nn.Linear(int(dim * layer_structure[i]), int(dim * layer_structure[i + 1])))
            is_last = i >= len(layer_structure) - 2
            if activation_func not in (None, "linear") and not (is_last and not activate_output):
                layers.append(ACTIVATIONS[activation_func]())
            if add_layer_norm:
                layers.append(torch.nn.LayerNorm(int(dim * layer_structure[i + 1])))
            if dropout_structure is not None and dropout_structure[i + 1] > 0:
                assert 0 < dropout_structure[i + 1] < 1
                layers.append(torch.nn.Dropout(p=dropout_structure[i + 1]))
        self.linear = torch.nn.Sequential(*layers)
        state_dict = dict(state_dict)
        for old, new in (("linear1.weight", "linear.0.weight"), ("linear1.bias", "linear.0.bias"),
                         ("linear2.weight", "linear.1.weight"), ("linear2.bias", "linear.1.bias")):
            if old in state_dict:
                state_dict[new] = state_dict.pop(old)
        self.load_state_dict(state_dict, strict=True)
        self.multiplier = 1.0

    def forward(self, x):
        return x + self.linear(x) * (self.multiplier if not self.training else 1)


def webui_parse_dropout_structure(layer_structure, use_dropout, last_layer_dropout):
    """§2.3."""
    if layer_structure is None:
        layer_structure = [1, 2, 1]
    if not use_dropout:
        return [0] * len(layer_structure)
    return [0] + [0.3] * (len(layer_structure) - 3) + [0.3 if last_layer_dropout else 0] + [0]


def webui_load(data: dict) -> dict[int, tuple[WebUIModule, WebUIModule]]:
    """§2.5 ``Hypernetwork.load`` rules applied to an already-unpickled dict."""
    layer_structure = data.get("layer_structure", [1, 2, 1])
    activation_func = data.get("activation_func", None)
    add_layer_norm = data.get("is_layer_norm", False)
    dropout_structure = data.get("dropout_structure", None)
    activate_output = data.get("activate_output", True)
    last_layer_dropout = data.get("last_layer_dropout", False)
    use_dropout = (True if dropout_structure is not None and any(dropout_structure)
                   else data.get("use_dropout", False))
    if dropout_structure is None:
        dropout_structure = webui_parse_dropout_structure(layer_structure, use_dropout, last_layer_dropout)
    layers = {}
    for size, pair in data.items():
        if type(size) is int:
            layers[size] = tuple(WebUIModule(size, sd, layer_structure, activation_func, add_layer_norm,
                                             activate_output, dropout_structure).eval() for sd in pair)
    return layers


def webui_apply(loaded: list[tuple[dict, float]], context):
    """§2.7 ``apply_hypernetworks``: chain each network's K and V module, picked by width."""
    k = v = context
    for layers, multiplier in loaded:
        pair = layers.get(k.shape[2])
        if pair is None:
            continue
        for module in pair:
            module.multiplier = multiplier
        k, v = pair[0](k), pair[1](v)
    return k, v


# ---- the old extension's residual files (prior-art §2.11) ------------------------------------

def old_extension_residual_forward(state_dict, dim, layer_structure, activation_func, add_layer_norm,
                                   strength, upsample_linear=False):
    """Evaluate a residual module straight from its state dict: block = shortcut(x) + act(LN(Linear x))."""

    def run(x):
        h = x
        for i in range(len(layer_structure) - 1):
            n_out = int(dim * layer_structure[i + 1])
            prefix = f"linear.{i}."
            main = torch.nn.functional.linear(h, state_dict[prefix + "linear.0.weight"], state_dict[prefix + "linear.0.bias"])
            if add_layer_norm:
                main = torch.nn.functional.layer_norm(main, (n_out,), state_dict[prefix + "linear.1.weight"],
                                                      state_dict[prefix + "linear.1.bias"])
            if activation_func not in (None, "linear"):
                main = ACTIVATIONS[activation_func]()(main)
            if upsample_linear:
                shortcut = torch.nn.functional.linear(h, state_dict[prefix + "upsample_layer.weight"])
            else:
                shortcut = torch.nn.functional.interpolate(h, size=n_out, mode="nearest-exact")
            h = shortcut + main
        return x + strength * (h - x)

    return run


# ---- modules/safe.py (§2.5): the WebUI's check for pickled files -------------------------------

RECORDS_1_8 = re.compile(r"^([^/]+)/((data/\d+)|version|byteorder|.data/serialization_id|(data\.pkl))$")
RECORDS_1_6 = re.compile(r"^([^/]+)/((data/\d+)|version|(data\.pkl))$")


class _RestrictedUnpickler(pickle.Unpickler):
    allowed = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch", "FloatStorage"): torch.FloatStorage, ("torch", "HalfStorage"): torch.HalfStorage,
        ("torch", "IntStorage"): torch.IntStorage, ("torch", "LongStorage"): torch.LongStorage,
        ("torch", "DoubleStorage"): torch.DoubleStorage, ("torch", "ByteStorage"): torch.ByteStorage,
        ("torch", "BFloat16Storage"): torch.BFloat16Storage, ("torch", "float32"): torch.float32,
        ("__builtin__", "set"): set,
    }

    def persistent_load(self, saved_id):
        assert saved_id[0] == "storage"
        return torch.storage.TypedStorage(_internal=True)

    def find_class(self, module, name):
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        raise pickle.UnpicklingError(f"global '{module}/{name}' is forbidden")


def webui_safe_check(path, records=RECORDS_1_8) -> None:
    """Raise like the WebUI's ``check_pt`` would: unknown archive records or forbidden globals."""
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if not records.match(name):
                raise ValueError(f"bad file inside {path}: {name}")
        for name in archive.namelist():
            if re.match(r"^([^/]+)/data\.pkl$", name):
                with archive.open(name) as handle:
                    _RestrictedUnpickler(handle).load()
                return
    raise ValueError(f"data.pkl not found in {path}")
