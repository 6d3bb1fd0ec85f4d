"""Shared pieces for training tests: a tiny real ldm model and synthetic image folders."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hypernetwork_ext import Hypernetwork, HypernetworkConfig, save


@functools.lru_cache(maxsize=None)
def _tiny_state():
    from hypernetwork_ext.models.tiny import tiny_latent_diffusion
    model = tiny_latent_diffusion(seed=0)
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def tiny_model():
    """The tiny LatentDiffusion, with its original weights (built once per test session)."""
    model, state = _tiny_state()
    model.load_state_dict(state)
    return model.eval()


@functools.lru_cache(maxsize=None)
def _tiny_diffusers_state():
    from hypernetwork_ext.models.tiny import tiny_diffusers_components
    components = tiny_diffusers_components(seed=0)
    states = {name: {k: v.clone() for k, v in components[name].state_dict().items()}
              for name in ("unet", "vae", "text_encoder")}
    return components, states


def tiny_adapter(kind: str = "ldm"):
    """An adapter over a tiny real model: ``ldm`` (LatentDiffusion) or ``diffusers`` components."""
    if kind == "ldm":
        from hypernetwork_ext.adapters.ldm import LdmAdapter
        return LdmAdapter(tiny_model())
    from hypernetwork_ext.adapters.diffusers import DiffusersAdapter
    components, states = _tiny_diffusers_state()
    for name, state in states.items():
        components[name].load_state_dict(state)
    components["unet"].set_default_attn_processor()
    return DiffusersAdapter(**components)


def make_images(folder: Path, count: int, sizes=((64, 64), (64, 96), (96, 64)), captions=True, seed=0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        rng = np.random.default_rng(seed + index)
        width, height = sizes[index % len(sizes)]
        base = rng.integers(0, 255, 3)
        gradient = np.linspace(0, 1, width)[None, :, None] * rng.integers(0, 255, 3)
        array = np.clip(base * 0.5 + gradient * 0.5 + rng.normal(0, 8, (height, width, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(array).save(folder / f"{index:03d}-image.png")
        if captions:
            (folder / f"{index:03d}-image.txt").write_text(f"subject{index % 4}, red, blue, style", encoding="utf-8")
    return folder


def make_network(path: Path, seed=1, **config) -> Path:
    from hypernetwork_ext.models.tiny import TINY_ATTENTION_WIDTHS
    config.setdefault("activation", "relu")
    save(Hypernetwork.create(HypernetworkConfig(sizes=TINY_ATTENTION_WIDTHS, **config), "tiny", seed=seed), path)
    return path


def weights_of(path) -> dict:
    from hypernetwork_ext import load
    return {k: v.clone() for k, v in load(path).state_dict().items()}


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def largest_difference(a: dict, b: dict) -> float:
    """The largest absolute difference between same-named tensors of two state dicts."""
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def same_optimizer_state(a: dict, b: dict) -> bool:
    state_a, state_b = a["state"], b["state"]
    if state_a.keys() != state_b.keys():
        return False
    for key in state_a:
        for name in state_a[key]:
            x, y = state_a[key][name], state_b[key][name]
            if isinstance(x, torch.Tensor):
                if not torch.equal(x, y):
                    return False
            elif x != y:
                return False
    return a["param_groups"] == b["param_groups"]
