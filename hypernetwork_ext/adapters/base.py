"""The contract between the training engine and a model.

An adapter knows one model family; the engine knows none. Everything random inside ``loss`` must
come from torch's global generator, which the engine seeds per micro-batch inside a forked RNG, so
training is a pure function of the seed and the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from PIL import Image

from ..applier import FastApplier


@dataclass(frozen=True)
class PreviewRequest:
    prompt: str
    negative_prompt: str
    steps: int
    cfg_scale: float
    seed: int
    width: int
    height: int
    sampler: str = ""  # one of the adapter's preview_samplers; empty: its default


class ModelAdapter(Protocol):
    device: torch.device
    dtype: torch.dtype  # the dtype the model computes in
    num_timesteps: int  # diffusion timesteps the model was trained with (e.g. 1000)
    preview_samplers: tuple[str, ...] | None  # the sampler names render_preview takes; None: any (the host checks)

    def attention_widths(self) -> tuple[int, ...]:
        """The widths a hypernetwork module can attach to (see ``attention.attention_widths``)."""

    def encode_images(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) in [-1, 1] -> latent mean and std, (B, C, H/8, W/8), already scaled."""

    def encode_text(self, captions: list[str]) -> torch.Tensor:
        """Captions -> conditioning (B, tokens, width)."""

    def loss(self, latents: torch.Tensor, cond: torch.Tensor, weights: torch.Tensor | None, kind: str,
             t: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """The diffusion loss (a scalar) with the hypernetwork active; ``kind`` is simple, vlb or full.
        ``t`` (timesteps) and ``noise`` are drawn here when not given."""

    def attach(self, applier: FastApplier) -> Callable[[], None]:
        """Apply ``applier`` inside every attention layer; returns the undo."""

    def render_preview(self, request: PreviewRequest) -> Image.Image:
        """One image, sampled with the attached hypernetwork."""

    def checkpointing(self, enabled: bool) -> Callable[[], None]:
        """Set up gradient checkpointing for training (torch's, when ``enabled``; none of a kind that would
        keep gradients from the hypernetwork either way); returns the undo."""

    def set_encoders_device(self, device: torch.device | str) -> None:
        """Move the text encoder and the image autoencoder (to free GPU memory while training)."""
