"""Choosing the optimizer: AdamW with the user's parameters, any ``torch.optim`` class, or a
learning-rate-free optimizer (Prodigy, D-Adaptation) when its package is installed."""

from __future__ import annotations

import importlib
import importlib.util
import inspect

import torch

from ..errors import ConfigError

# name -> (module, class); used only when the package is installed
LEARNING_RATE_FREE = {
    "Prodigy": ("prodigyopt", "Prodigy"),
    "DAdaptAdam": ("dadaptation", "DAdaptAdam"),
    "DAdaptAdamW": ("dadaptation", "DAdaptAdam"),  # the old extension's name for decoupled DAdaptAdam
    "DAdaptLion": ("dadaptation", "DAdaptLion"),
}


def _torch_optimizers() -> dict[str, type]:
    return {name: cls for name, cls in inspect.getmembers(torch.optim, inspect.isclass)
            if issubclass(cls, torch.optim.Optimizer) and cls is not torch.optim.Optimizer}


def available_optimizers() -> list[str]:
    names = ["AdamW"] + sorted(n for n in _torch_optimizers() if n != "AdamW")
    for name, (module, _) in LEARNING_RATE_FREE.items():
        if importlib.util.find_spec(module) is not None:
            names.append(name)
    return names


def canonical_optimizer_name(name: str) -> str:
    """The optimizer's own spelling of ``name`` (``adamw`` -> ``AdamW``); refuses a name that is unknown or
    whose package is not installed, so the settings are refused before any model loads."""
    known = {option.lower(): option for option in [*_torch_optimizers(), *LEARNING_RATE_FREE]}
    canonical = known.get(str(name).strip().lower())
    if canonical is None:
        raise ConfigError("optimizer", f"Unknown optimizer {name!r}; choose one of: {', '.join(available_optimizers())}")
    if canonical in LEARNING_RATE_FREE and importlib.util.find_spec(LEARNING_RATE_FREE[canonical][0]) is None:
        raise ConfigError("optimizer", f"Optimizer {canonical} needs the package {LEARNING_RATE_FREE[canonical][0]!r}; "
                                       f"install it or choose another optimizer")
    return canonical


def build_optimizer(settings, parameters, learn_rate: float):
    """``(optimizer, name)``; AdamW takes beta1, beta2, epsilon and weight decay from the settings."""
    name = canonical_optimizer_name(settings.optimizer)
    adam = dict(betas=(float(settings.adam_beta1), float(settings.adam_beta2)), eps=float(settings.adam_epsilon),
                weight_decay=float(settings.weight_decay))
    if name in LEARNING_RATE_FREE:
        module_name, class_name = LEARNING_RATE_FREE[name]
        cls = getattr(importlib.import_module(module_name), class_name)
        extra = {"decouple": True} if "decouple" in inspect.signature(cls).parameters else {}
        return cls(parameters, lr=learn_rate, **adam, **extra), name
    cls = _torch_optimizers()[name]
    accepted = inspect.signature(cls).parameters
    options = {key: value for key, value in adam.items() if key in accepted} if name in ("AdamW", "Adam") else {}
    if "fused" in accepted:
        try:  # one kernel for all parameters: several times faster than the per-tensor loop
            return cls(parameters, lr=learn_rate, fused=True, **options), name
        except (RuntimeError, TypeError, ValueError):
            pass  # this device or dtype has no fused kernel
    try:
        return cls(parameters, lr=learn_rate, **options), name
    except (TypeError, ValueError) as error:
        raise ConfigError("optimizer", f"Optimizer {name} cannot be used here ({error})") from None
