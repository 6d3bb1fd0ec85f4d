"""What a hypernetwork is made of, and the one place where user text becomes a configuration.

Every entry point (CLI, WebUI tab, file loader, standalone app) goes through the parsers and the
``HypernetworkConfig`` validation here, so a bad input gets the same message everywhere.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Iterable, Sequence

import torch

from .errors import ConfigError

DEFAULT_SIZES: tuple[int, ...] = (768, 320, 640, 1024, 1280)
DEFAULT_LAYER_STRUCTURE: tuple[float, ...] = (1.0, 2.0, 1.0)
INIT_MODES: tuple[str, ...] = ("Normal", "KaimingUniform", "KaimingNormal", "XavierUniform", "XavierNormal")
RESIDUAL_SHORTCUTS: tuple[str, ...] = ("interpolate", "linear")
MAX_PARAMETERS = 1_000_000_000  # far above any useful hypernetwork; stops a typo from eating all memory

# The names the WebUI has always used. "swish" is Hardswish in every existing file, so it stays that.
_NAMED_ACTIVATIONS: dict[str, type[torch.nn.Module]] = {
    "linear": torch.nn.Identity,
    "relu": torch.nn.ReLU,
    "leakyrelu": torch.nn.LeakyReLU,
    "elu": torch.nn.ELU,
    "swish": torch.nn.Hardswish,
    "tanh": torch.nn.Tanh,
    "sigmoid": torch.nn.Sigmoid,
}


@lru_cache(maxsize=1)
def _activation_classes() -> dict[str, type[torch.nn.Module]]:
    """Activation name -> class: the WebUI's names plus every torch activation that works here.

    "Works" means it builds without arguments and keeps the shape of a (batch, tokens, width)
    tensor; MultiheadAttention, Threshold (need arguments) and GLU (halves the width) do not.
    """
    classes = dict(_NAMED_ACTIVATIONS)
    module = torch.nn.modules.activation
    probe = torch.zeros(2, 3, 8)
    for cls_name, cls in inspect.getmembers(module, inspect.isclass):
        if cls.__module__ != module.__name__ or cls_name.lower() in classes:
            continue
        try:
            with warnings.catch_warnings():  # softmax-like classes warn about an implicit dim
                warnings.simplefilter("ignore")
                if cls().eval()(probe).shape != probe.shape:  # eval: RReLU must not draw random numbers
                    continue
        except Exception:  # noqa: BLE001 - anything that fails to build or run is simply not offered
            continue
        classes[cls_name.lower()] = cls
    return classes


def activation_names() -> list[str]:
    """Names offered to users: the WebUI's familiar ones first, then the rest alphabetically."""
    rest = sorted(n for n in _activation_classes() if n not in _NAMED_ACTIVATIONS)
    return list(_NAMED_ACTIVATIONS) + rest


def build_activation(name: str) -> torch.nn.Module:
    return _activation_classes()[name]()


def is_affine_activation(name: str) -> bool:
    return name == "linear"


# --------------------------------------------------------------------------------------------
# Parsing user text. Each parser raises ConfigError naming the field and the entry that is wrong.
# --------------------------------------------------------------------------------------------

def _split_numbers(text: str | Sequence, field_name: str, label: str) -> list[float]:
    if isinstance(text, str):
        stripped = text.strip().strip("[]()")
        if not stripped:
            raise ConfigError(field_name, f"{label} is empty; write numbers separated by commas, e.g. 1, 2, 1")
        items: list = [s.strip() for s in stripped.split(",")]
    else:
        items = list(text)
        if not items:
            raise ConfigError(field_name, f"{label} is empty; write numbers separated by commas, e.g. 1, 2, 1")
    numbers = []
    for position, item in enumerate(items, start=1):
        if isinstance(item, str) and item == "":
            raise ConfigError(field_name, f"{label}: entry {position} is empty (two commas in a row, or a trailing comma?)")
        if isinstance(item, bool):
            raise ConfigError(field_name, f"{label}: entry {position} ({item!r}) is not a number")
        try:
            value = float(item)
        except (TypeError, ValueError):
            raise ConfigError(field_name, f"{label}: entry {position} ({item!r}) is not a number") from None
        if not math.isfinite(value):
            raise ConfigError(field_name, f"{label}: entry {position} ({item!r}) is not a finite number")
        numbers.append(value)
    return numbers


def parse_layer_structure(text: str | Sequence) -> tuple[float, ...]:
    """``"1, 2, 1"`` -> ``(1.0, 2.0, 1.0)``; each entry multiplies the width of that layer."""
    values = _split_numbers(text, "layer_structure", "Layer structure")
    return _check_layer_structure(values)


def _check_layer_structure(values: Sequence[float]) -> tuple[float, ...]:
    values = [float(v) for v in values]
    if len(values) < 2:
        raise ConfigError("layer_structure", "Layer structure needs at least two entries, e.g. 1, 1 or 1, 2, 1")
    for position, value in enumerate(values, start=1):
        if not math.isfinite(value) or value <= 0:
            raise ConfigError("layer_structure", f"Layer structure: entry {position} ({value:g}) must be a positive number")
    if values[0] != 1 or values[-1] != 1:
        raise ConfigError("layer_structure",
                          f"Layer structure must start and end with 1 (the attention width itself); got "
                          f"{_fmt(values)}")
    return tuple(values)


def parse_dropout_structure(text: str | Sequence | None, layer_structure: Sequence[float]) -> tuple[float, ...]:
    """``"0, 0.3, 0"`` -> one dropout rate per entry of the layer structure.

    Empty text means no dropout. The first entry would act before any layer, so it must be 0.
    """
    if text is None or (isinstance(text, str) and not text.strip()):
        return tuple(0.0 for _ in layer_structure)
    values = _split_numbers(text, "dropout_structure", "Dropout structure")
    if values[0] != 0:
        raise ConfigError("dropout_structure",
                          f"Dropout structure: entry 1 ({values[0]:g}) must be 0; the first entry is the input "
                          f"and no dropout happens before the first layer")
    return _check_dropout_structure(values, layer_structure)


def _check_dropout_structure(values: Sequence[float], layer_structure: Sequence[float]) -> tuple[float, ...]:
    values = [float(v) for v in values]
    if len(values) != len(layer_structure):
        raise ConfigError("dropout_structure",
                          f"Dropout structure has {len(values)} entries but the layer structure "
                          f"{_fmt(layer_structure)} has {len(layer_structure)}; give one rate per entry, "
                          f"e.g. {_fmt([0] + [0.3] * (len(layer_structure) - 2) + [0])}")
    for position, value in enumerate(values, start=1):
        if not math.isfinite(value) or not 0 <= value < 1:
            raise ConfigError("dropout_structure",
                              f"Dropout structure: entry {position} ({value:g}) must be at least 0 and below 1 "
                              f"(0 to 0.35 works well)")
    return tuple(values)


def parse_sizes(text: str | Iterable) -> tuple[int, ...]:
    """``"768, 320"`` or ``[768, "320"]`` -> ``(768, 320)``: the attention widths to modify."""
    values = _split_numbers(text if isinstance(text, str) else list(text), "sizes", "Modules")
    sizes = []
    for position, value in enumerate(values, start=1):
        if value != int(value) or value < 1:
            raise ConfigError("sizes", f"Modules: entry {position} ({value:g}) must be a positive whole number, e.g. 768")
        if int(value) in sizes:
            raise ConfigError("sizes", f"Modules: {int(value)} is listed twice")
        sizes.append(int(value))
    return tuple(sizes)


def parse_activation(name: str | None) -> str:
    key = "linear" if name is None else str(name).strip().lower()
    if key in ("", "none"):
        key = "linear"
    if key not in _activation_classes():
        raise ConfigError("activation", f"Unknown activation {name!r}; choose one of: {', '.join(activation_names())}")
    return key


def parse_weight_init(name: str | None) -> str:
    if name is None or not str(name).strip():
        return "Normal"
    by_lower = {mode.lower(): mode for mode in INIT_MODES}
    key = str(name).strip().lower()
    if key not in by_lower:
        raise ConfigError("weight_init", f"Unknown initialisation {name!r}; choose one of: {', '.join(INIT_MODES)}")
    return by_lower[key]


def _fmt(values: Sequence[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


# --------------------------------------------------------------------------------------------
# The validated configuration.
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HypernetworkConfig:
    """The shape of a hypernetwork. Constructing one validates it; an instance is always valid."""

    sizes: tuple[int, ...] = DEFAULT_SIZES
    layer_structure: tuple[float, ...] = DEFAULT_LAYER_STRUCTURE
    activation: str = "linear"
    weight_init: str = "Normal"
    init_std: float = 0.01
    layer_norm: bool = False
    activate_output: bool = False
    dropout_structure: tuple[float, ...] | None = None  # None -> no dropout
    residual: bool = False
    residual_shortcut: str = "interpolate"  # residual only: how a block maps its input to its output width

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen dataclass
        set_("sizes", parse_sizes(self.sizes))
        set_("layer_structure", _check_layer_structure(self.layer_structure))
        set_("activation", parse_activation(self.activation))
        set_("weight_init", parse_weight_init(self.weight_init))
        std = float(self.init_std)
        if not math.isfinite(std) or std <= 0:
            raise ConfigError("init_std", f"Normal init std ({self.init_std}) must be a positive number, e.g. 0.01")
        set_("init_std", std)
        ds = self.dropout_structure
        set_("dropout_structure", tuple(0.0 for _ in self.layer_structure) if ds is None
             else _check_dropout_structure(ds, self.layer_structure))
        if self.residual_shortcut not in RESIDUAL_SHORTCUTS:
            raise ConfigError("residual_shortcut",
                              f"Residual shortcut must be one of {', '.join(RESIDUAL_SHORTCUTS)}; got {self.residual_shortcut!r}")
        for size in self.sizes:
            for factor in self.layer_structure:
                if int(size * factor) < 1:
                    raise ConfigError("layer_structure",
                                      f"Layer structure entry {factor:g} makes a layer of width 0 for module {size}")
        if self.parameter_count() > MAX_PARAMETERS:
            raise ConfigError("layer_structure",
                              f"This structure would have {self.parameter_count():,} parameters "
                              f"(limit {MAX_PARAMETERS:,}); use smaller layer-structure entries")
        set_("layer_norm", bool(self.layer_norm))
        set_("activate_output", bool(self.activate_output))
        set_("residual", bool(self.residual))
        if not self.residual:
            set_("residual_shortcut", "interpolate")  # meaningless without residual blocks; one canonical value

    @classmethod
    def from_text(cls, *, sizes="768, 320, 640, 1024, 1280", layers="1, 2, 1", activation="linear",
                  weight_init="Normal", init_std=0.01, layer_norm=False, activate_output=False,
                  dropout="", residual=False, residual_shortcut="interpolate") -> "HypernetworkConfig":
        """Build from what a user typed into a form or on the command line."""
        layer_structure = parse_layer_structure(layers)
        try:
            std = float(init_std)
        except (TypeError, ValueError):
            raise ConfigError("init_std", f"Normal init std ({init_std!r}) is not a number") from None
        return cls(sizes=parse_sizes(sizes), layer_structure=layer_structure, activation=activation,
                   weight_init=weight_init, init_std=std, layer_norm=layer_norm,
                   activate_output=activate_output,
                   dropout_structure=parse_dropout_structure(dropout, layer_structure),
                   residual=residual, residual_shortcut=residual_shortcut)

    def widths(self, size: int) -> list[int]:
        """The width of every layer of the module for attention width ``size`` (WebUI rounding)."""
        return [int(size * factor) for factor in self.layer_structure]

    def parameter_count(self) -> int:
        total = 0
        for size in self.sizes:
            widths = self.widths(size)
            per_module = 0
            for n_in, n_out in zip(widths, widths[1:]):
                per_module += n_in * n_out + n_out
                if self.layer_norm:
                    per_module += 2 * n_out
                if self.residual and self.residual_shortcut == "linear":
                    per_module += n_in * n_out
            total += 2 * per_module
        return total

    @property
    def is_affine(self) -> bool:
        """True when each module is an affine map (so it can be folded into one matrix)."""
        return is_affine_activation(self.activation) and not self.layer_norm and not self.residual

    def plain_webui_problems(self) -> list[str]:
        """Why the plain WebUI (A1111 1.6-1.10.1) could not load a file of this shape; empty if it can."""
        problems = []
        if self.residual:
            problems.append("residual blocks are an extension feature; the plain WebUI cannot load them")
        if self.dropout_structure[-1] != 0:
            problems.append("a non-zero last dropout rate (dropout on the output) is refused by the plain WebUI")
        return problems

    def with_sizes(self, sizes) -> "HypernetworkConfig":
        return replace(self, sizes=tuple(sizes))


_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
MAX_NAME_LENGTH = 150


def parse_name(text: str | None) -> str:
    """A hypernetwork name: any Unicode (e.g. Japanese) that is safe as a file name in every OS."""
    name = (text or "").strip()
    if not name:
        raise ConfigError("name", "Name is empty; give the hypernetwork a name")
    if any(ch in name for ch in '/\\\0') or any(ord(ch) < 32 for ch in name):
        raise ConfigError("name", f"Name {name!r:.60} contains a path separator or control character; "
                                  f"use a plain name, it is saved in the hypernetworks folder")
    if any(ch in name for ch in '<>:"|?*'):
        raise ConfigError("name", f"Name {name!r:.60} contains a character Windows forbids in file names (<>:\"|?*)")
    if name.strip(". ") == "" or not any(ch.isalnum() for ch in name):
        raise ConfigError("name", f"Name {name!r:.60} needs at least one letter or digit")
    if name.split(".")[0].lower() in _WINDOWS_RESERVED:
        raise ConfigError("name", f"Name {name!r} is reserved on Windows; choose another")
    if name.lower() == "none":
        raise ConfigError("name", "Name 'None' is reserved by the WebUI (it means no hypernetwork)")
    if len(name) > MAX_NAME_LENGTH:
        raise ConfigError("name", f"Name is {len(name)} characters long; keep it under {MAX_NAME_LENGTH}")
    return name
