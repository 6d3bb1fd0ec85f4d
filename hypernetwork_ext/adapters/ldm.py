"""Adapter for latent-diffusion models of the ``ldm`` package (the classes the WebUI's
``shared.sd_model`` is built from): SD 1.x and 2.x, epsilon or v prediction."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from PIL import Image

from ..applier import FastApplier
from ..attention import HypernetworkAttention, attention_widths, install
from .base import PreviewRequest
from .sampling import SAMPLERS, per_sample_error, sample, to_image


class _TorchWithSizeTolerantCat:
    """``torch`` as seen by ldm's UNet, except that ``cat`` of an upsampled tensor and a skip
    connection of a different size first resizes the first to the second, as the WebUI does; this is
    what lets sizes be any multiple of 8 pixels instead of 64."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def cat(tensors, *args, **kwargs):
        if len(tensors) == 2 and tensors[0].shape[-2:] != tensors[1].shape[-2:]:
            tensors = (F.interpolate(tensors[0], tensors[1].shape[-2:], mode="nearest"), tensors[1])
        return torch.cat(tensors, *args, **kwargs)


@contextlib.contextmanager
def size_tolerant_unet():
    from ldm.modules.diffusionmodules import openaimodel

    if isinstance(openaimodel.th, _TorchWithSizeTolerantCat) or openaimodel.th is not torch:
        yield  # already tolerant (or patched by the WebUI): leave it alone
        return
    openaimodel.th = _TorchWithSizeTolerantCat()
    try:
        yield
    finally:
        openaimodel.th = torch


def _checkpointed(function):
    def run(*args):
        return torch.utils.checkpoint.checkpoint(function, *args, use_reentrant=False)
    return run


class LdmAdapter:
    preview_samplers = tuple(SAMPLERS)

    def __init__(self, model, device: torch.device | str | None = None):
        self.model = model
        self.device = torch.device(device) if device is not None else next(model.model.parameters()).device
        self.dtype = next(model.model.parameters()).dtype

    @property
    def num_timesteps(self) -> int:
        return self.model.num_timesteps

    def attention_widths(self) -> tuple[int, ...]:
        return attention_widths(self.model.model.diffusion_model)

    def encode_images(self, pixels):
        with torch.no_grad():
            first_stage = self.model.first_stage_model
            dist = self.model.encode_first_stage(pixels.to(self.device, next(first_stage.parameters()).dtype))
            scale = self.model.scale_factor
            return dist.mean * scale, dist.std * scale

    def encode_text(self, captions):
        with torch.no_grad():
            return self.model.get_learned_conditioning(list(captions))

    def loss(self, latents, cond, weights, kind, t=None, noise=None):
        model = self.model
        latents = latents.to(self.device, self.dtype)
        cond = cond.to(self.device, self.dtype)
        if t is None:
            t = torch.randint(0, model.num_timesteps, (latents.shape[0],), device=self.device)
        t = t.to(self.device)
        noise = torch.randn_like(latents) if noise is None else noise.to(latents.device, latents.dtype)
        x_noisy = model.q_sample(x_start=latents, t=t, noise=noise)
        with size_tolerant_unet():
            output = model.apply_model(x_noisy, t, cond)
        target = model.get_v(latents, noise, t) if model.parameterization == "v" else noise
        per_sample = per_sample_error(output, target, weights)
        if kind == "simple":
            return per_sample.mean()
        vlb = (model.lvlb_weights.to(per_sample.device)[t] * per_sample).mean()
        if kind == "vlb":
            return vlb
        logvar_t = model.logvar.to(per_sample.device)[t]
        full = model.l_simple_weight * (per_sample / torch.exp(logvar_t) + logvar_t).mean()
        return full + model.original_elbo_weight * vlb

    def attach(self, applier: FastApplier):
        return install(self.model.model.diffusion_model, HypernetworkAttention(applier))

    def render_preview(self, request: PreviewRequest) -> Image.Image:
        model = self.model
        with torch.no_grad():
            both = torch.cat([model.get_learned_conditioning([request.negative_prompt]),
                              model.get_learned_conditioning([request.prompt])])

            def predict(x, t):
                with size_tolerant_unet():
                    return model.apply_model(x, t, both)

            latents = sample(request.sampler, predict, model.alphas_cumprod, (1, model.channels, request.height // 8,
                             request.width // 8), request.steps, request.cfg_scale, request.seed,
                             model.parameterization == "v", self.device, self.dtype)
            return to_image(model.decode_first_stage(latents))

    def checkpointing(self, enabled: bool):
        """For training: ldm's own checkpoint (``use_checkpoint: True`` in every SD config) is switched
        off, since it passes gradients only to a block's own parameters and the hypernetwork's are not
        among them (it would never learn); with ``enabled``, each transformer and residual block is
        recomputed in the backward pass through torch's non-reentrant checkpoint instead. Returns the undo."""
        from ldm.modules.attention import BasicTransformerBlock
        from ldm.modules.diffusionmodules.openaimodel import ResBlock

        blocks = [m for m in self.model.model.diffusion_model.modules() if isinstance(m, (BasicTransformerBlock, ResBlock))]
        flags = [(block, flag, getattr(block, flag)) for block in blocks for flag in ("checkpoint", "use_checkpoint")
                 if hasattr(block, flag)]
        for block, flag, _value in flags:
            setattr(block, flag, False)
        if enabled:
            for block in blocks:
                block._forward = _checkpointed(block._forward)

        def undo():
            for block, flag, value in flags:
                setattr(block, flag, value)
            for block in blocks:
                block.__dict__.pop("_forward", None)
        return undo

    def set_encoders_device(self, device):
        self.model.cond_stage_model.to(device)
        self.model.first_stage_model.to(device)
