"""Linear hypernetworks folded into the key/value projections of the WebUI's own attention (A1111, ldm and sgm).

The WebUI's attention functions (every optimisation) call ``apply_hypernetworks(…, context)`` and then
``self.to_k`` / ``self.to_v`` themselves, so a folded affine network would still cost one matrix product per
token on the inputs. Here it goes into the projection weights instead, as the WebUI's Lora extension merges
its weights: before each UNet evaluation (a forward pre-hook on the UNet) the fold wanted now is compared
with the one in place; on a change every folded layer gets its original weights back, lazy weight patchers
run on the originals (the Lora extension merges its weights at a layer's first call), and the new fold is
written. While a width is folded, ``apply_hypernetworks`` runs only what could not be folded there.

Nothing is folded during training (the networks in train mode or wanting gradients), with the fast path
switched off, or with a Lora in the Lora extension's "functional" mode (it adds its output computed from the
layer's input, which the fold changes).
"""

from __future__ import annotations

import sys

import torch

from hypernetwork_ext import FastApplier
from hypernetwork_ext.applier import affine_tail
from hypernetwork_ext.projection_fold import ProjectionFold


def attention_layers(unet: torch.nn.Module) -> list[torch.nn.Module]:
    """The layers whose forward is the WebUI's attention (A1111 makes ldm's memory-efficient variant the same
    class): they call ``apply_hypernetworks``, then their ``to_k`` / ``to_v``, and end with ``to_out[0]``."""
    return [module for module in unet.modules() if type(module).__name__ == "CrossAttention"
            and all(isinstance(projection, torch.nn.Linear) for projection in _projections(module))]


def _projections(layer) -> tuple:
    to_out = getattr(layer, "to_out", None)
    first_out = to_out[0] if isinstance(to_out, torch.nn.Sequential) and len(to_out) else to_out
    return getattr(layer, "to_k", None), getattr(layer, "to_v", None), first_out


def lora_state(shared):
    """What the built-in Lora extension has merged or will merge into weights: ``(may fold, state)``."""
    networks = sys.modules.get("networks")  # extensions-builtin/Lora/networks.py, imported under this name
    loaded = getattr(networks, "loaded_networks", None) or []
    names = tuple((n.name, getattr(n, "te_multiplier", None), getattr(n, "unet_multiplier", None),
                   getattr(n, "dyn_dim", None)) for n in loaded)
    functional = bool(getattr(shared.opts, "lora_functional", False))
    return not (functional and names), names


class AttentionFold:
    """Keeps the UNet's projections folded with what ``served`` applies, and tells ``served`` per width what
    still runs on the key/value inputs (``served.unfolded_parts``)."""

    def __init__(self, served, other_weight_patchers=lambda: (True, None)):
        self.served = served
        self.other_weight_patchers = other_weight_patchers
        self.fold = ProjectionFold()
        self._state = None
        self._unet = None
        self._hook = None

    def attach(self, unet: torch.nn.Module) -> None:
        """Fold into ``unet`` from its next evaluation on (a new model: the old one's weights are put back)."""
        if unet is self._unet:
            return
        self.detach()
        self._unet = unet
        self._hook = unet.register_forward_pre_hook(self._before_unet)

    def detach(self) -> None:
        """Every original weight back, no hook left."""
        self._refold(None)
        if self._hook is not None:
            self._hook.remove()
        self._unet = self._hook = None

    def _wanted(self):
        # quietly: apply_hypernetworks names any entry that is not ours, once per call, not per UNet evaluation
        loaded = self.served.ours(self.served.shared.loaded_hypernetworks, quietly=True)
        if not loaded:
            return None
        may_fold, others = self.other_weight_patchers()
        if not may_fold:
            return None
        state = self.served.applier_for(loaded).fold_state()
        return None if state is None else (state, others)

    def _before_unet(self, _unet, _args):
        self.sync()

    def sync(self) -> None:
        """Bring the fold in line with what is loaded now (what happens before each UNet evaluation)."""
        wanted = self._wanted()
        if wanted != self._state or (wanted is not None and not self.fold.all_intact()):
            self._refold(wanted)

    def _refold(self, wanted) -> None:
        self.fold.restore_all()
        self.served.unfolded_parts = {}
        self._state = None
        if wanted is None or self._unet is None:
            return
        layers = attention_layers(self._unet)
        self._let_weight_patchers_run(layers)
        transform = self.served.applier.transform
        parts = {}
        for layer in layers:
            width = layer.to_k.in_features
            if width not in parts:
                parts[width] = affine_tail(transform, width, layer.to_k.weight.device)
            if parts[width] is None:
                continue
            _head, (k_map, v_map) = parts[width]
            self.fold.fold_attention(*_projections(layer), k_map, v_map)
        applier = self.served.applier
        self.served.unfolded_parts = {
            width: None if split[0] is None else FastApplier(split[0], cache_size=applier.cache_size)
            for width, split in parts.items() if split is not None}
        self._state = wanted

    @staticmethod
    def _let_weight_patchers_run(layers) -> None:
        """A call with no rows: whatever patches a Linear's weights at its first call (Lora) does it now, and
        keeps its backups, on the original weights, not later on folded ones."""
        with torch.no_grad():
            for layer in layers:
                for projection in _projections(layer):
                    weight = projection.weight
                    projection(torch.empty(0, projection.in_features, device=weight.device, dtype=weight.dtype))


def install(registry, served, shared, script_callbacks) -> AttentionFold:
    """Fold into each loaded A1111 model's UNet (Forge and reForge apply through their UNet patcher instead)."""
    fold = AttentionFold(served, lambda: lora_state(shared))

    def attach(sd_model) -> None:
        unet = getattr(getattr(sd_model, "model", None), "diffusion_model", None)
        if unet is not None and not hasattr(sd_model, "forge_objects"):
            fold.attach(unet)

    script_callbacks.on_model_loaded(attach)
    try:
        from modules import sd_models
        loaded = sd_models.model_data.sd_model  # not shared.sd_model: reading that would load a model now
    except (ImportError, AttributeError):
        loaded = None
    if loaded is not None:
        attach(loaded)  # a UI reload: the model stays, this new script instance takes it over
    registry.record(fold.detach, "the attention projections get their original weights back")
    return fold
