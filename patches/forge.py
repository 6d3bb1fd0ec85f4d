"""Forge and reForge: they load hypernetworks (``shared.loaded_hypernetworks``) but never apply them,
because their UNet does not read that list. Here the same networks enter through the UNet patcher's
attention patches, set on a clone of the patcher before every sampling pass (Forge resets its
``forge_objects`` before each pass, so this must be repeated each time).

Patch contract (Forge's ``ldm_patched`` attention and ``backend/nn/unet.py``):
``fn(n, context, value, extra_options) -> (n, context, value)`` where ``context`` and ``value`` are
the inputs of the key and value projections, exactly where A1111 applies hypernetworks.
"""

from __future__ import annotations


def is_forge_model(sd_model) -> bool:
    return getattr(sd_model, "forge_objects", None) is not None


def attention_patch(served, loaded_hypernetworks):
    """The patch function for the networks loaded for this generation."""
    from .hypernetworks_a1111 import apply_pair

    def patch(n, context, value, extra_options):
        context, value = apply_pair(served, loaded_hypernetworks, context, value)
        return n, context, value
    return patch


def apply_to_sampling(served, p, loaded_hypernetworks) -> bool:
    """Install the attention patches on ``p.sd_model``'s UNet for this sampling pass; False if not Forge."""
    if not loaded_hypernetworks or not is_forge_model(p.sd_model):
        return False
    unet = p.sd_model.forge_objects.unet.clone()
    patch = attention_patch(served, list(loaded_hypernetworks))
    unet.set_model_attn1_patch(patch)
    unet.set_model_attn2_patch(patch)
    p.sd_model.forge_objects.unet = unet
    return True
