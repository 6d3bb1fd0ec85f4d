"""Stable Diffusion hypernetworks: create, load, save, stack, merge and apply them. Pure torch.

This package never imports the WebUI; ``patches/`` connects it to the WebUI.
"""

from .applier import FastApplier
from .config import HypernetworkConfig, activation_names, parse_layer_structure, parse_dropout_structure, parse_name
from .errors import ConfigError, HypernetworkError, HypernetworkFileError
from .files import convert, load, load_optimizer_state, save, save_optimizer_state, shorthash
from .network import Hypernetwork, HypernetworkModule
from .stack import Applied, Mix, Sequence, apply_plain, merge, stack

__version__ = "0.1.0"

__all__ = [
    "Applied", "ConfigError", "FastApplier", "Hypernetwork", "HypernetworkConfig", "HypernetworkError",
    "HypernetworkFileError", "HypernetworkModule", "Mix", "Sequence", "activation_names", "apply_plain",
    "convert", "load", "load_optimizer_state", "merge", "parse_dropout_structure", "parse_layer_structure",
    "parse_name", "save", "save_optimizer_state", "shorthash", "stack",
]
