"""An attention forward with hypernetworks, swapped into a model as an object (like diffusers'
attention processors), for attention modules of the latent-diffusion kind: ``to_q``, ``to_k``,
``to_v``, ``to_out`` and ``heads`` (``ldm``/``sgm`` ``CrossAttention`` and its memory-efficient twin).
"""

from __future__ import annotations

import types
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .applier import FastApplier


def is_attention(module: nn.Module) -> bool:
    return all(hasattr(module, name) for name in ("to_q", "to_k", "to_v", "to_out", "heads"))


def attention_widths(model: nn.Module) -> tuple[int, ...]:
    """The widths a hypernetwork module can attach to in ``model``: the key/value input width of every
    attention layer, cross-attention (text) widths first, then the others ascending, as the WebUI lists them."""
    cross, self_ = set(), set()
    for module in model.modules():
        if is_attention(module):
            width = module.to_k.in_features
            (self_ if width == module.to_q.in_features else cross).add(width)
    return tuple(sorted(cross)) + tuple(sorted(self_ - cross))


class HypernetworkAttention:
    """``scaled_dot_product_attention`` with the key/value inputs passed through hypernetworks.

    With no applier (or an empty one) it is plain SDPA attention, so a benchmark or a preview can
    compare like with like.
    """

    def __init__(self, applier: FastApplier | None = None):
        self.applier = applier

    def __call__(self, attn: nn.Module, x: torch.Tensor, context: torch.Tensor | None = None,
                 mask: torch.Tensor | None = None, **_) -> torch.Tensor:
        context = x if context is None else context
        q = attn.to_q(x)
        if self.applier is not None:
            k, v = self.applier.project(context, attn.to_k, attn.to_v)
        else:
            k, v = attn.to_k(context), attn.to_v(context)
        batch, heads = x.shape[0], attn.heads
        q, k, v = (t.reshape(batch, -1, heads, t.shape[-1] // heads).transpose(1, 2) for t in (q, k, v))
        if mask is not None:
            mask = mask.reshape(batch, 1, 1, -1).to(torch.bool)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.transpose(1, 2).reshape(batch, -1, heads * out.shape[-1]).to(q.dtype)
        return attn.to_out(out)


def install(model: nn.Module, processor: HypernetworkAttention) -> Callable[[], None]:
    """Route every attention module of ``model`` through ``processor``; returns the undo."""
    swapped = []
    for module in model.modules():
        if is_attention(module):
            swapped.append((module, module.__dict__.get("forward")))
            module.forward = types.MethodType(lambda self, *a, **k: processor(self, *a, **k), module)

    def undo():
        for module, previous in swapped:
            if previous is None:
                module.__dict__.pop("forward", None)
            else:
                module.forward = previous
    return undo
