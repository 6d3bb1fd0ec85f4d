"""STAND-IN of modules/processing.py: a txt2img job object and process_images, enough for training
previews. Sampling is a short deterministic Euler-style loop on shared.sd_model whose attention goes
through the WebUI's hypernetwork hook (modules.sd_hijack_optimizations)."""
import types

import numpy as np
import torch
from PIL import Image

from modules import shared


class StableDiffusionProcessingTxt2Img:
    def __init__(self, sd_model=None, prompt="", negative_prompt="", steps=20, sampler_name=None, cfg_scale=7.0,
                 seed=-1, width=512, height=512, do_not_save_grid=False, do_not_save_samples=False, **kwargs):
        self.sd_model, self.prompt, self.negative_prompt = sd_model, prompt, negative_prompt
        self.steps, self.sampler_name, self.cfg_scale, self.seed = steps, sampler_name, cfg_scale, seed
        self.width, self.height = width, height
        self.disable_extra_networks = False
        self.__dict__.update(kwargs)

    def close(self):
        pass


def process_images(p):
    shared.state.nextjob()
    model = p.sd_model
    generator = torch.Generator().manual_seed(p.seed if p.seed >= 0 else 0)
    x = torch.randn((1, 4, p.height // 8, p.width // 8), generator=generator)
    cond = model.get_learned_conditioning([p.prompt])
    uncond = model.get_learned_conditioning([p.negative_prompt])
    alphas = model.alphas_cumprod.float()
    steps = torch.linspace(len(alphas) - 1, 0, p.steps).long().tolist()
    with torch.no_grad():
        for i, t in enumerate(steps):
            tt = torch.full((2,), t, dtype=torch.long)
            eps_u, eps_c = model.apply_model(torch.cat([x, x]), tt, torch.cat([uncond, cond])).chunk(2)
            eps = eps_u + p.cfg_scale * (eps_c - eps_u)
            a, a_next = alphas[t], (alphas[steps[i + 1]] if i + 1 < len(steps) else torch.tensor(1.0))
            x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
            x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
            shared.state.sampling_step = i + 1
        image = model.decode_first_stage(x)[0]
    array = ((image.clamp(-1, 1) + 1) * 127.5).byte().permute(1, 2, 0).numpy()
    return types.SimpleNamespace(images=[Image.fromarray(np.ascontiguousarray(array))], infotexts=[p.prompt])
