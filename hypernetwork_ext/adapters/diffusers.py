"""Adapter for diffusers components: ``UNet2DConditionModel``, ``AutoencoderKL`` and a CLIP text model.

Hypernetworks enter through an attention processor (diffusers' own mechanism for swapping attention
behaviour), installed on every attention layer of the UNet and removed again by the undo.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from PIL import Image

from ..applier import FastApplier
from ..attention import attention_widths
from .base import PreviewRequest
from .sampling import SAMPLERS, lvlb_weights, noise_prediction_loss, per_sample_error, sample, to_image


class HypernetworkAttnProcessor:
    """Scaled-dot-product attention whose key and value inputs pass through the hypernetworks."""

    def __init__(self, applier: FastApplier | None):
        self.applier = applier

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        residual = hidden_states
        if getattr(attn, "spatial_norm", None) is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attention_mask is not None:
            length = (hidden_states if encoder_hidden_states is None else encoder_hidden_states).shape[1]
            attention_mask = attn.prepare_attention_mask(attention_mask, length, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if getattr(attn, "group_norm", None) is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            context = hidden_states
        else:
            context = attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states
        if self.applier is not None:
            key, value = self.applier.project(context, attn.to_k, attn.to_v)
        else:
            key, value = attn.to_k(context), attn.to_v(context)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (t.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
        if getattr(attn, "norm_q", None) is not None:
            query = attn.norm_q(query)
        if getattr(attn, "norm_k", None) is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class DiffusersAdapter:
    preview_samplers = tuple(SAMPLERS)

    def __init__(self, unet, vae, text_encoder, tokenize: Callable[[list[str]], torch.Tensor], noise_scheduler,
                 device: torch.device | str | None = None):
        """``tokenize`` maps captions to input ids (e.g. a CLIP tokenizer with padding to 77);
        ``noise_scheduler`` is the training scheduler (``DDPMScheduler``) of the model."""
        self.unet, self.vae, self.text_encoder, self.tokenize = unet, vae, text_encoder, tokenize
        self.scheduler = noise_scheduler
        self.device = torch.device(device) if device is not None else next(unet.parameters()).device
        self.dtype = next(unet.parameters()).dtype
        self.v_prediction = noise_scheduler.config.prediction_type == "v_prediction"
        self.alphas_cumprod = noise_scheduler.alphas_cumprod.float()
        self.lvlb = lvlb_weights(noise_scheduler.betas, self.v_prediction)
        self.scaling = getattr(vae.config, "scaling_factor", 0.18215)

    @property
    def num_timesteps(self) -> int:
        return len(self.alphas_cumprod)

    def attention_widths(self) -> tuple[int, ...]:
        return attention_widths(self.unet)

    def encode_images(self, pixels):
        with torch.no_grad():
            dist = self.vae.encode(pixels.to(self.device, next(self.vae.parameters()).dtype)).latent_dist
            return dist.mean * self.scaling, dist.std * self.scaling

    def encode_text(self, captions):
        with torch.no_grad():
            ids = self.tokenize(list(captions)).to(next(self.text_encoder.parameters()).device)
            return self.text_encoder(ids)[0]

    def loss(self, latents, cond, weights, kind, t=None, noise=None):
        latents = latents.to(self.device, self.dtype)
        cond = cond.to(self.device, self.dtype)
        if t is None:
            t = torch.randint(0, len(self.alphas_cumprod), (latents.shape[0],), device=self.device)
        t = t.to(self.device)
        noise = torch.randn_like(latents) if noise is None else noise.to(latents.device, latents.dtype)
        a = self.alphas_cumprod.to(self.device)[t].view(-1, 1, 1, 1)
        noisy = (a.sqrt() * latents.float() + (1 - a).sqrt() * noise.float()).to(self.dtype)
        output = self.unet(noisy, t, encoder_hidden_states=cond).sample
        target = a.sqrt() * noise.float() - (1 - a).sqrt() * latents.float() if self.v_prediction else noise.float()
        return noise_prediction_loss(per_sample_error(output, target, weights), kind, t, self.lvlb)

    def attach(self, applier: FastApplier):
        previous = dict(self.unet.attn_processors)
        self.unet.set_attn_processor(HypernetworkAttnProcessor(applier))
        return lambda: self.unet.set_attn_processor(previous)

    def render_preview(self, request: PreviewRequest) -> Image.Image:
        with torch.no_grad():
            both = torch.cat([self.encode_text([request.negative_prompt]), self.encode_text([request.prompt])])
            both = both.to(self.device, self.dtype)
            channels = self.unet.config.in_channels
            latents = sample(request.sampler, lambda x, t: self.unet(x, t, encoder_hidden_states=both).sample,
                             self.alphas_cumprod, (1, channels, request.height // 8, request.width // 8),
                             request.steps, request.cfg_scale, request.seed, self.v_prediction,
                             self.device, self.dtype)
            decoded = self.vae.decode(latents.to(next(self.vae.parameters()).dtype) / self.scaling).sample
            return to_image(decoded)

    def checkpointing(self, enabled: bool):
        """With ``enabled``, recompute blocks in the backward pass (less memory, more time); returns the undo."""
        if not enabled:
            return lambda: None
        self.unet.enable_gradient_checkpointing()
        return self.unet.disable_gradient_checkpointing

    def set_encoders_device(self, device):
        self.text_encoder.to(device)
        self.vae.to(device)
