"""The preview samplers both adapters use, with classifier-free guidance: deterministic DDIM (eta 0, the
default) and Euler (k-diffusion's, on the model's own noise levels, as the WebUI's "Euler").

Their only randomness is the starting noise, drawn from a generator seeded with the preview seed, so
a fixed seed gives comparable previews and a preview never touches the global generators.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from PIL import Image

Predict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sample(sampler: str, predict: Predict, alphas_cumprod: torch.Tensor, shape: tuple[int, ...], steps: int,
           cfg_scale: float, seed: int, v_prediction: bool, device, dtype) -> torch.Tensor:
    """Latents drawn by ``sampler`` (a name in ``SAMPLERS``; empty: DDIM). ``predict(x_pair, t_pair)``
    returns the model output for ``[uncond, cond]`` stacked on the batch."""
    function = SAMPLERS[sampler or DEFAULT_SAMPLER]
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device, torch.float32)
    alphas = alphas_cumprod.to(device, torch.float32)
    timesteps = torch.linspace(len(alphas) - 1, 0, steps).round().long().tolist()
    return function(_guided(predict, cfg_scale, dtype), alphas, timesteps, noise, v_prediction).to(dtype)


def _guided(predict: Predict, cfg_scale: float, dtype):
    def guided(x: torch.Tensor, t: int) -> torch.Tensor:
        t_pair = torch.full((2 * x.shape[0],), t, device=x.device, dtype=torch.long)
        out_uncond, out_cond = predict(torch.cat([x, x]).to(dtype), t_pair).float().chunk(2)
        return out_uncond + cfg_scale * (out_cond - out_uncond)
    return guided


def ddim(guided, alphas: torch.Tensor, timesteps: list[int], noise: torch.Tensor, v_prediction: bool) -> torch.Tensor:
    x = noise
    for index, t in enumerate(timesteps):
        out = guided(x, t)
        a_t = alphas[t]
        a_prev = alphas[timesteps[index + 1]] if index + 1 < len(timesteps) else torch.ones((), device=x.device)
        if v_prediction:
            eps = a_t.sqrt() * out + (1 - a_t).sqrt() * x
            x0 = a_t.sqrt() * x - (1 - a_t).sqrt() * out
        else:
            eps = out
            x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x


def euler(guided, alphas: torch.Tensor, timesteps: list[int], noise: torch.Tensor, v_prediction: bool) -> torch.Tensor:
    """Euler steps of the probability-flow ODE in k-diffusion's form, x = x0 + sigma * eps, ending at sigma 0."""
    sigmas = [((1 - alphas[t]) / alphas[t]).sqrt() for t in timesteps] + [torch.zeros((), device=noise.device)]
    x = noise * sigmas[0]
    for index, t in enumerate(timesteps):
        sigma = sigmas[index]
        scale_in = (sigma ** 2 + 1).rsqrt()  # back to the model's input scale, sqrt(alpha) * x
        out = guided(x * scale_in, t)
        denoised = x * scale_in ** 2 - out * sigma * scale_in if v_prediction else x - sigma * out
        x = x + (x - denoised) / sigma * (sigmas[index + 1] - sigma)
    return x


SAMPLERS = {"DDIM": ddim, "Euler": euler}
DEFAULT_SAMPLER = "DDIM"


def to_image(decoded: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) in [-1, 1] -> PIL image."""
    array = ((decoded[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array))


def lvlb_weights(betas: torch.Tensor, v_prediction: bool) -> torch.Tensor:
    """Per-timestep weights of the variational bound, as latent diffusion defines them (all 1 for v prediction)."""
    betas = betas.double()
    if v_prediction:
        return torch.ones_like(betas).float()
    alphas = 1 - betas
    cumprod = torch.cumprod(alphas, 0)
    cumprod_prev = torch.cat([torch.ones(1, dtype=cumprod.dtype), cumprod[:-1]])
    posterior_variance = betas * (1 - cumprod_prev) / (1 - cumprod)
    weights = betas ** 2 / (2 * posterior_variance * alphas * (1 - cumprod))
    weights[0] = weights[1]
    return weights.float()


def betas_of(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The noise schedule's betas from its cumulative alphas."""
    cumprod = alphas_cumprod.double()
    return 1 - cumprod / torch.cat([torch.ones(1, dtype=cumprod.dtype), cumprod[:-1]])


def per_sample_error(output: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error of each sample, in float32, weighted per latent pixel (alpha masks) when given."""
    error = (output.float() - target.float()) ** 2
    if weights is not None:
        error = error * weights.to(error.device, error.dtype)
    return error.mean(dim=(1, 2, 3))


def noise_prediction_loss(per_sample: torch.Tensor, kind: str, t: torch.Tensor, lvlb: torch.Tensor) -> torch.Tensor:
    """The loss of a model without a learnt log-variance: "full" equals "simple" there (log-variance 0, no
    ELBO term, as in every stock SD configuration); "vlb" weights each sample by its timestep."""
    if kind == "vlb":
        return (lvlb.to(per_sample.device)[t] * per_sample).mean()
    return per_sample.mean()
