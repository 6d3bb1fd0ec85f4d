"""The preview sampler both adapters use: deterministic DDIM (eta 0) with classifier-free guidance.

Its only randomness is the starting noise, drawn from a generator seeded with the preview seed, so
a fixed seed gives comparable previews and a preview never touches the global generators.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from PIL import Image


def ddim_sample(predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], alphas_cumprod: torch.Tensor,
                shape: tuple[int, ...], steps: int, cfg_scale: float, seed: int, v_prediction: bool,
                device, dtype) -> torch.Tensor:
    """``predict(x_pair, t_pair)`` returns the model output for ``[uncond, cond]`` stacked on the batch."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator).to(device, dtype)
    alphas = alphas_cumprod.to(device, torch.float32)
    timesteps = torch.linspace(len(alphas) - 1, 0, steps).round().long().tolist()
    for index, t in enumerate(timesteps):
        t_pair = torch.full((2 * shape[0],), t, device=device, dtype=torch.long)
        out_uncond, out_cond = predict(torch.cat([x, x]), t_pair).float().chunk(2)
        out = out_uncond + cfg_scale * (out_cond - out_uncond)
        a_t = alphas[t]
        a_prev = alphas[timesteps[index + 1]] if index + 1 < len(timesteps) else torch.ones((), device=device)
        xf = x.float()
        if v_prediction:
            eps = a_t.sqrt() * out + (1 - a_t).sqrt() * xf
            x0 = a_t.sqrt() * xf - (1 - a_t).sqrt() * out
        else:
            eps = out
            x0 = (xf - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        x = (a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps).to(dtype)
    return x


def to_image(decoded: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) in [-1, 1] -> PIL image."""
    array = ((decoded[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array))


def lvlb_weights(betas: torch.Tensor, v_prediction: bool) -> torch.Tensor:
    """Per-timestep weights of the variational bound, as latent diffusion defines them."""
    betas = betas.double()
    alphas = 1 - betas
    cumprod = torch.cumprod(alphas, 0)
    cumprod_prev = torch.cat([torch.ones(1, dtype=cumprod.dtype), cumprod[:-1]])
    posterior_variance = betas * (1 - cumprod_prev) / (1 - cumprod)
    if v_prediction:
        weights = 0.5 * cumprod.sqrt() / (2.0 * 1 - cumprod)  # exactly ldm's expression (sic: 2 - a, not 2(1 - a))
    else:
        weights = betas ** 2 / (2 * posterior_variance * alphas * (1 - cumprod))
    weights[0] = weights[1]
    return weights.float()
