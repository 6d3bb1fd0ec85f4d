"""Forge and reForge: they load hypernetworks (``shared.loaded_hypernetworks``) but never apply them,
because their UNet does not read that list. Here the same networks enter through the UNet patcher's
attention patches, set on a clone of the patcher before every sampling pass (Forge resets its
``forge_objects`` before each pass, so this must be repeated each time).

Patch contract (reForge's ``ldm_patched`` attention and Forge's ``backend/nn/unet.py``):
``fn(n, context, value, extra_options) -> (n, context, value)`` where ``context`` and ``value`` are
the inputs of the key and value projections, exactly where A1111 applies hypernetworks.

Training on the forks (``ForgeTrainingModel``) uses the same contract: while a network trains, the
UNet's forward adds its patch to whatever transformer options it is called with, so the training
loss and the previews (the fork's own txt2img) both run the network through the fork's own attention.
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint

from hypernetwork_ext.adapters.sampling import betas_of, lvlb_weights, noise_prediction_loss, per_sample_error
from hypernetwork_ext.attention import attention_widths


def is_forge_model(sd_model) -> bool:
    return getattr(sd_model, "forge_objects", None) is not None


def load_pending_model(sd_models) -> None:
    """Forge loads the selected checkpoint at the first generation (``shared.sd_model`` is a placeholder
    until then); training may come first. A no-op where the checkpoint is loaded at startup."""
    reload = getattr(sd_models, "forge_model_reload", None)
    if reload is not None:
        reload()


def attention_patch(transform_pair):
    """The patch function for both attention kinds: ``transform_pair(context, value) -> (context, value)``."""
    def patch(n, context, value, extra_options):
        context, value = transform_pair(context, value)
        return n, context, value
    return patch


def apply_to_sampling(served, p, loaded_hypernetworks) -> bool:
    """Install the attention patches on ``p.sd_model``'s UNet for this sampling pass; False if not Forge."""
    from .hypernetworks_a1111 import apply_pair

    if not loaded_hypernetworks or not is_forge_model(p.sd_model):
        return False
    loaded = list(loaded_hypernetworks)
    unet = p.sd_model.forge_objects.unet.clone()
    patch = attention_patch(lambda context, value: apply_pair(served, loaded, context, value))
    unet.set_model_attn1_patch(patch)
    unet.set_model_attn2_patch(patch)
    p.sd_model.forge_objects.unet = unet
    return True


def add_missing_hijack_functions(registry, sd_hijack) -> None:
    """reForge commented out ``sd_hijack.undo_optimizations`` and ``apply_optimizations``, but its own
    training route still calls them, so it fails before training starts. Its attention has no WebUI
    optimisations to switch, so doing nothing is what they mean there."""
    for name in ("undo_optimizations", "apply_optimizations"):
        registry.add(sd_hijack, name, lambda *args, **kwargs: None,
                     f"sd_hijack.{name} for the training route (this fork removed it)")


def with_patch(transformer_options: dict | None, patch) -> dict:
    """A copy of the UNet's transformer options with ``patch`` added to both attention patch lists
    (the caller's dictionaries are left as they were)."""
    options = dict(transformer_options or {})
    patches = dict(options.get("patches", {}))
    for name in ("attn1_patch", "attn2_patch"):
        patches[name] = list(patches.get(name, [])) + [patch]
    options["patches"] = patches
    return options


def _load_to_device(unet_patcher) -> None:
    """The fork's memory manager puts the UNet (with its LoRA weights) where it computes; training
    calls the UNet directly, so it asks first."""
    try:
        from backend import memory_management  # Forge
        memory_management.load_model_gpu(unet_patcher)
    except ImportError:
        from ldm_patched.modules import model_management  # reForge
        model_management.load_models_gpu([unet_patcher])


def _sampling(base_model):
    """The noise schedule object: reForge's ``model_sampling``, Forge's ``predictor``."""
    return getattr(base_model, "model_sampling", None) or getattr(base_model, "predictor")


def _is_v_prediction(sd_model, base_model) -> bool:
    if getattr(sd_model, "parameterization", None) == "v":
        return True
    kind = str(getattr(_sampling(base_model), "prediction_type", "")).lower()
    return kind in ("v", "v_prediction") or type(_sampling(base_model)).__name__.startswith("V_PREDICTION")


def make_autograd_usable(module: torch.nn.Module) -> int:
    """Forge loads its weights under ``torch.inference_mode``; autograd cannot save such tensors for the
    backward pass, so the hypernetwork's gradient (which flows back through the frozen projections)
    could not be computed. Each such parameter and buffer is replaced by an ordinary tensor with the
    same values, one at a time; the model computes as before. Returns how many were replaced."""
    replaced = 0
    with torch.no_grad():
        for owner in module.modules():
            for table in (owner._parameters, owner._buffers):
                for name, tensor in table.items():
                    if tensor is not None and tensor.is_inference():
                        copy = tensor.clone()
                        table[name] = torch.nn.Parameter(copy, requires_grad=False) \
                            if isinstance(tensor, torch.nn.Parameter) else copy
                        replaced += 1
    return replaced


def _cloned_input(_module, args):
    if torch.is_grad_enabled():
        return (args[0].clone(),) + tuple(args[1:])
    return None


def keep_norm_inputs(unet: torch.nn.Module) -> list:
    """Forge's transformer blocks add the attention output into the residual in place (``x += n``),
    after ``norm1(x)`` saved ``x`` for the backward pass, so backpropagating to the hypernetwork fails
    ("modified by an inplace operation"). While gradients are recorded, each block's layer norms get a
    copy of their input instead. Returns the hook handles (their ``remove`` is the undo)."""
    hooks = []
    for block in unet.modules():
        if type(block).__name__ == "BasicTransformerBlock":
            for norm in block.children():
                if isinstance(norm, torch.nn.LayerNorm):
                    hooks.append(norm.register_forward_pre_hook(_cloned_input))
    return hooks


class ForgeTrainingModel:
    """The engine's model parts on a fork: the UNet of its patcher, its noise schedule, its text and image
    encoders (which run under ``torch.inference_mode`` there, so their outputs are cloned into ordinary
    tensors). Mixed into ``webui_training.ForgeModelAdapter`` for previews through the fork's txt2img."""

    def __init__(self, sd_model):
        self.sd_model = sd_model
        unet_patcher = sd_model.forge_objects.unet
        _load_to_device(unet_patcher)
        base_model = unet_patcher.model
        self.unet = base_model.diffusion_model
        make_autograd_usable(self.unet)
        first = next(self.unet.parameters())
        self.device = first.device
        self.dtype = getattr(base_model, "computation_dtype", None) or getattr(base_model, "manual_cast_dtype", None) \
            or first.dtype
        sigmas = _sampling(base_model).sigmas.detach().double().cpu()
        self.alphas_cumprod = (1 / (1 + sigmas ** 2)).float()
        self.v_prediction = _is_v_prediction(sd_model, base_model)
        self.lvlb_weights = lvlb_weights(betas_of(self.alphas_cumprod), self.v_prediction)

    @property
    def num_timesteps(self) -> int:
        return len(self.alphas_cumprod)

    def attention_widths(self):
        return attention_widths(self.unet)

    def encode_images(self, pixels):
        """The fork's encoder returns one draw of the latent distribution (scaled), not its mean and spread:
        every latent sampling method then trains on that draw."""
        with torch.no_grad():
            latents = self.sd_model.encode_first_stage(pixels.to(self.device)).clone()
        return latents, torch.zeros_like(latents)

    def encode_text(self, captions):
        with torch.no_grad():
            return self.sd_model.get_learned_conditioning(list(captions)).clone()

    def loss(self, latents, cond, weights, kind, t=None, noise=None):
        latents = latents.to(self.device, self.dtype)
        cond = cond.to(self.device, self.dtype)
        if t is None:
            t = torch.randint(0, self.num_timesteps, (latents.shape[0],), device=self.device)
        t = t.to(self.device)
        noise = torch.randn_like(latents) if noise is None else noise.to(latents.device, latents.dtype)
        alpha = self.alphas_cumprod.to(self.device)[t].view(-1, 1, 1, 1).to(latents.dtype)
        x_noisy = alpha.sqrt() * latents + (1 - alpha).sqrt() * noise
        output = self.unet(x_noisy, t.float(), context=cond)
        target = alpha.sqrt() * noise - (1 - alpha).sqrt() * latents if self.v_prediction else noise
        return noise_prediction_loss(per_sample_error(output, target, weights), kind, t, self.lvlb_weights)

    def attach_to_unet(self, applier):
        """Every UNet call (training and the previews) runs ``applier`` through the attention patches."""
        unet = self.unet
        forward = unet.forward
        patch = attention_patch(applier)

        def patched_forward(*args, transformer_options=None, **kwargs):
            return forward(*args, transformer_options=with_patch(transformer_options, patch), **kwargs)

        unet.forward = patched_forward
        hooks = keep_norm_inputs(unet)

        def undo():
            unet.__dict__.pop("forward", None)
            for hook in hooks:
                hook.remove()
        return undo

    def checkpointing(self, enabled: bool):
        """With ``enabled``, each transformer and residual block is recomputed in the backward pass
        (torch's non-reentrant checkpoint, which passes gradients to the hypernetwork's inputs)."""
        if not enabled:
            return lambda: None
        blocks = [m for m in self.unet.modules() if type(m).__name__ in ("BasicTransformerBlock", "ResBlock")]
        for block in blocks:
            original = block.forward
            block.forward = (lambda f: lambda *a, **k: torch.utils.checkpoint.checkpoint(f, *a, use_reentrant=False,
                                                                                          **k))(original)

        def undo():
            for block in blocks:
                block.__dict__.pop("forward", None)
        return undo

    def set_encoders_device(self, device):
        """The fork's memory manager moves its text encoder and autoencoder itself."""
