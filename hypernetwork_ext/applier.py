"""Applying hypernetworks fast, with results equal to the plain definition within float tolerance.

Three savings, each exact up to rounding:

1. **Folding.** A network with linear activation and no layer norm is an affine map per module,
   ``x + s * W2 (W1 x + b1) + s * b2``; stacks, strengths and mixes of affine maps are affine too.
   So any arrangement of such networks becomes one ``(W, b)`` per width, and ``project`` goes one
   step further and folds it into the attention's key/value projection: the hypernetwork then
   costs nothing per token.
2. **Text-context cache.** The text conditioning is the same at every sampling step and in every
   cross-attention layer, so the key/value inputs for the text widths are computed once per
   conditioning tensor (matched by content) and reused until the tensor, the networks, their
   weights or a strength change.
3. **Shared key/value pass.** When the key and value inputs are the same tensor, the first layers
   of the key and value modules run as one matrix product.

During training (modules in train mode, or gradients wanted) everything falls back to the plain
definition, so the engine sees exactly the WebUI's formula.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .stack import Applied, Sequence, Transform, apply_plain

TEXT_WIDTHS = (768, 1024, 2048)  # CLIP ViT-L, OpenCLIP ViT-H, SDXL's concatenated encoders


@dataclass
class Affine:
    """``y = x @ weight.T + bias`` in float64, so that folding adds no rounding of its own."""

    weight: torch.Tensor
    bias: torch.Tensor

    @staticmethod
    def identity(width: int, device) -> "Affine":
        return Affine(torch.eye(width, dtype=torch.float64, device=device),
                      torch.zeros(width, dtype=torch.float64, device=device))

    def then(self, after: "Affine") -> "Affine":
        return Affine(after.weight @ self.weight, after.weight @ self.bias + after.bias)

    def blend_from_identity(self, strength: float) -> "Affine":
        """``x + strength * (self(x) - x)``."""
        if strength == 1.0:
            return self
        eye = torch.eye(self.weight.shape[1], dtype=self.weight.dtype, device=self.weight.device)
        return Affine(eye + strength * (self.weight - eye), strength * self.bias)


def _module_affine(module: nn.Module, strength: float) -> Affine:
    """``x + strength * linear(x)`` for a module made only of Linear (and, in eval, no-op Dropout) layers."""
    composed = None
    for layer in module.linear:
        if isinstance(layer, nn.Linear):
            step = Affine(layer.weight.detach().double(), layer.bias.detach().double())
            composed = step if composed is None else composed.then(step)
    eye = torch.eye(composed.weight.shape[1], dtype=torch.float64, device=composed.weight.device)
    return Affine(eye + strength * composed.weight, strength * composed.bias)


def affine_maps(transform: Transform, width: int, device) -> tuple[Affine, Affine] | None:
    """The (key, value) affine maps equal to ``transform`` at ``width``, or None if it is not affine."""
    if isinstance(transform, Applied):
        pair = transform.network.pair_for(width)
        if pair is None:
            return Affine.identity(width, device), Affine.identity(width, device)
        if not transform.network.config.is_affine:
            return None
        return _module_affine(pair.k, transform.strength), _module_affine(pair.v, transform.strength)
    if isinstance(transform, Sequence):
        k_map, v_map = Affine.identity(width, device), Affine.identity(width, device)
        for item in transform.items:
            maps = affine_maps(item, width, device)
            if maps is None:
                return None
            k_map, v_map = k_map.then(maps[0]), v_map.then(maps[1])
    else:  # Mix
        total = sum(weight for _, weight in transform.items)
        k_map = v_map = None
        for item, weight in transform.items:
            maps = affine_maps(item, width, device)
            if maps is None:
                return None
            share = weight / total
            k_part = Affine(maps[0].weight * share, maps[0].bias * share)
            v_part = Affine(maps[1].weight * share, maps[1].bias * share)
            k_map = k_part if k_map is None else Affine(k_map.weight + k_part.weight, k_map.bias + k_part.bias)
            v_map = v_part if v_map is None else Affine(v_map.weight + v_part.weight, v_map.bias + v_part.bias)
    return k_map.blend_from_identity(transform.strength), v_map.blend_from_identity(transform.strength)


def is_identity(affine: Affine) -> bool:
    eye = torch.eye(affine.weight.shape[1], dtype=affine.weight.dtype, device=affine.weight.device)
    return torch.equal(affine.weight, eye) and not affine.bias.any()


def affine_tail(transform: Transform, width: int, device) -> tuple[Transform | None, tuple[Affine, Affine]] | None:
    """Split ``transform`` at ``width`` into what must run on the key/value inputs (None: nothing) and the affine
    maps after it, which a projection can absorb: ``to_k(tail_k(head_k(x)))``. None when no part at the end is
    affine. A whole affine transform has no head; a sequence keeps its non-affine items up to the last one."""
    whole = affine_maps(transform, width, device)
    if whole is not None:
        return None, whole
    if not isinstance(transform, Sequence) or transform.strength != 1.0:
        return None  # a blend of the whole or a mix needs every part on the inputs
    cut = len(transform.items)
    while cut > 0 and affine_maps(transform.items[cut - 1], width, device) is not None:
        cut -= 1
    if cut == len(transform.items):
        return None
    head_items = transform.items[:cut]
    head = head_items[0] if len(head_items) == 1 else Sequence(tuple(head_items))
    return head, affine_maps(Sequence(tuple(transform.items[cut:])), width, device)


@dataclass
class _CacheEntry:
    context_k: torch.Tensor
    context_v: torch.Tensor | None  # None: the value input was the key input
    out_k: torch.Tensor
    out_v: torch.Tensor
    # The tensors last matched, unchanged since: every attention layer of one UNet evaluation gets the
    # same context object, and recognising it needs no comparison (which on a GPU waits for the device).
    last_k: weakref.ref | None = None
    last_v: weakref.ref | None = None
    last_versions: tuple[int, int] = (-1, -1)

    def is_last_seen(self, context_k: torch.Tensor, context_v: torch.Tensor | None) -> bool:
        if self.last_k is None or self.last_k() is not context_k:
            return False
        if (context_v is None) != (self.last_v is None) or (context_v is not None and self.last_v() is not context_v):
            return False
        return self.last_versions == _versions(context_k, context_v)

    def remember(self, context_k: torch.Tensor, context_v: torch.Tensor | None) -> None:
        self.last_k = weakref.ref(context_k)
        self.last_v = None if context_v is None else weakref.ref(context_v)
        self.last_versions = _versions(context_k, context_v)


def _version(tensor: torch.Tensor) -> int:
    """How often ``tensor`` was changed in place. Tensors made under ``torch.inference_mode`` (Forge and
    reForge sample, and load networks, inside it) keep no such count and raise on reading it; they are
    not changed in place outside inference mode, so one value stands for all their versions."""
    return -1 if tensor.is_inference() else tensor._version


def _versions(context_k: torch.Tensor, context_v: torch.Tensor | None) -> tuple[int, int]:
    return _version(context_k), -1 if context_v is None else _version(context_v)


class FastApplier:
    """Applies one transform (a stack, set or single network) to attention key/value inputs.

    ``applier(context_k, context_v)`` returns the key and value *inputs* (what the WebUI's
    ``apply_hypernetworks`` returns). ``applier.project(context, to_k, to_v)`` returns the key and
    value *projections*, folding affine networks into the projection weights.
    """

    def __init__(self, transform: Transform | None = None, *, fast: bool = True,
                 cached_widths: tuple[int, ...] = TEXT_WIDTHS, cache_size: int = 8):
        self.fast = fast
        self.cached_widths = tuple(cached_widths)
        self.cache_size = cache_size
        self._transform = None
        self.set_transform(transform)

    @property
    def transform(self) -> Transform | None:
        return self._transform

    def set_transform(self, transform: Transform | None) -> None:
        """Use another transform (other networks or strengths); every cache is dropped."""
        if transform is self._transform and transform is not None:
            return
        self._transform = transform
        self._network_list = list(dict.fromkeys(transform.networks())) if transform is not None else []
        self._parameter_list = [p for network in self._network_list for p in network.parameters()]
        self.clear()

    def clear(self) -> None:
        self._weights_version = None
        self._plans: dict[tuple, tuple | None] = {}
        self._projections: dict[tuple, tuple] = {}
        self._shared_first: dict[int, tuple] = {}
        self._context_cache: OrderedDict[int, list[_CacheEntry]] = OrderedDict()

    # -- bookkeeping ---------------------------------------------------------------------------

    def _must_run_plain(self) -> bool:
        if any(network.training for network in self._network_list):
            return True
        return torch.is_grad_enabled() and any(p.requires_grad for p in self._parameter_list)

    def _check_weights(self) -> None:
        """Drop derived data when any weight changed in place (e.g. a training step, a merge)."""
        version = tuple(_version(p) for p in self._parameter_list)
        if version != self._weights_version:
            self.clear()
            self._weights_version = version

    def fold_state(self):
        """A value that changes whenever folding the transform into projections would give other weights
        (other networks, strengths or weights); None when nothing may be folded now (no transform, the fast
        path off, or the networks training)."""
        if self._transform is None or not self.fast or self._must_run_plain():
            return None
        self._check_weights()
        return id(self._transform), self._weights_version

    def _plan(self, width: int, device) -> tuple[Affine, Affine] | None:
        """The folded (key, value) maps at ``width`` in float64, or None when not affine."""
        key = (width, str(device))
        if key not in self._plans:
            self._plans[key] = affine_maps(self._transform, width, device) if self.fast else None
        return self._plans[key]

    def _cast_plan(self, width: int, x: torch.Tensor):
        """The folded maps as ``(k_weight, k_bias, v_weight, v_bias)`` in the input's dtype."""
        key = (width, str(x.device), x.dtype)
        if key not in self._plans:
            plan = self._plan(width, x.device)
            self._plans[key] = None if plan is None else tuple(
                t.to(x.dtype) for t in (plan[0].weight, plan[0].bias, plan[1].weight, plan[1].bias))
        return self._plans[key]

    # -- key/value inputs ------------------------------------------------------------------------

    def __call__(self, context_k: torch.Tensor, context_v: torch.Tensor | None = None):
        if self._transform is None:
            return context_k, (context_k if context_v is None else context_v)
        if not self.fast or self._must_run_plain():
            return apply_plain(self._transform, context_k, context_v)
        self._check_weights()
        return self._fast_inputs(context_k, context_v)

    def _fast_inputs(self, context_k, context_v):
        """The key and value inputs once the plain formula is ruled out and the weights are checked:
        cached at the text widths, folded where affine."""
        shared = context_v is None or context_v is context_k
        width = context_k.shape[-1]
        with torch.no_grad():
            if width in self.cached_widths:
                hit = self._cache_lookup(width, context_k, None if shared else context_v)
                if hit is not None:
                    return hit
            out = self._compute(width, context_k, context_k if shared else context_v)
            if width in self.cached_widths:
                self._cache_store(width, context_k, None if shared else context_v, out)
        return out

    def _compute(self, width, context_k, context_v):
        plan = self._cast_plan(width, context_k)
        if plan is not None:
            k_weight, k_bias, v_weight, v_bias = plan
            return F.linear(context_k, k_weight, k_bias), F.linear(context_v, v_weight, v_bias)
        return self._run(self._transform, context_k, context_v)

    def _run(self, transform, k, v):
        """The plain definition, except that a network's key and value modules share their first
        matrix product when they see the same input."""
        if isinstance(transform, Sequence) and transform.strength == 1.0:
            for item in transform.items:
                k, v = self._run(item, k, v)
            return k, v
        if isinstance(transform, Applied) and k is v and not transform.network.config.residual:
            pair = transform.network.pair_for(k.shape[-1])
            if pair is not None:
                return self._shared_first_layer(pair, k, transform.strength)
        return transform(k, v)

    def _shared_first_layer(self, pair, x, strength):
        key = (id(pair), x.dtype, str(x.device))
        cached = self._shared_first.get(key)
        if cached is None or cached[0] is not pair:
            first_k, first_v = pair.k.linear[0], pair.v.linear[0]
            weight = torch.cat([first_k.weight, first_v.weight]).detach().to(x.dtype)
            bias = torch.cat([first_k.bias, first_v.bias]).detach().to(x.dtype)
            cached = (pair, weight, bias, first_k.out_features, pair.k.linear[1:], pair.v.linear[1:])
            self._shared_first[key] = cached
        _, weight, bias, split, rest_k, rest_v = cached
        hidden_k, hidden_v = F.linear(x, weight, bias).split(split, dim=-1)
        return x + rest_k(hidden_k) * strength, x + rest_v(hidden_v) * strength

    def _cache_lookup(self, width, context_k, context_v):
        entries = self._context_cache.get(width, [])
        for entry in entries:
            if entry.is_last_seen(context_k, context_v):
                return entry.out_k, entry.out_v
        for entry in entries:
            if _same(entry.context_k, context_k) and (
                    (context_v is None and entry.context_v is None)
                    or (context_v is not None and entry.context_v is not None and _same(entry.context_v, context_v))):
                self._context_cache.move_to_end(width)
                entry.remember(context_k, context_v)
                return entry.out_k, entry.out_v
        return None

    def _cache_store(self, width, context_k, context_v, out):
        entries = self._context_cache.setdefault(width, [])
        entry = _CacheEntry(context_k.detach().clone(), None if context_v is None else context_v.detach().clone(),
                            out[0], out[1])
        entry.remember(context_k, context_v)
        entries.insert(0, entry)
        del entries[self.cache_size:]

    # -- key/value projections -------------------------------------------------------------------

    def project(self, context: torch.Tensor, to_k: nn.Linear, to_v: nn.Linear):
        """``(to_k(k_input), to_v(v_input))``; affine networks are folded into the projections, at every
        width, so that they cost nothing; other networks run once per distinct text context (cache)."""
        width = context.shape[-1]
        if self._transform is None or not self.fast or self._must_run_plain():
            k_in, v_in = self(context)
            return to_k(k_in), to_v(v_in)
        self._check_weights()
        plan = self._plan(width, context.device)
        if plan is None:
            k_in, v_in = self._fast_inputs(context, None)
            return to_k(k_in), to_v(v_in)
        folded_k, folded_v = self._folded(to_k, plan[0], "k"), self._folded(to_v, plan[1], "v")
        return F.linear(context, *folded_k), F.linear(context, *folded_v)

    def _folded(self, projection: nn.Linear, affine: Affine, role: str):
        key = (id(projection), role)
        cached = self._projections.get(key)
        weight = projection.weight
        if cached is not None and cached[0] is projection and cached[1] == weight._version:
            return cached[2]
        with torch.no_grad():
            w = weight.detach().to(torch.float64)
            folded_weight = w @ affine.weight.to(w.device)
            folded_bias = w @ affine.bias.to(w.device)
            if projection.bias is not None:
                folded_bias = folded_bias + projection.bias.detach().to(torch.float64)
            result = (folded_weight.to(weight.dtype), folded_bias.to(weight.dtype))
        self._projections[key] = (projection, weight._version, result)
        return result


def _same(stored: torch.Tensor, current: torch.Tensor) -> bool:
    return (stored.shape == current.shape and stored.dtype == current.dtype
            and stored.device == current.device and torch.equal(stored, current))
