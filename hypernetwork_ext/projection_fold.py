"""Affine hypernetworks folded into an attention layer's weights, in place, with an exact undo.

Where attention code that is not ours computes ``to_k(hypernetwork(context))`` (the WebUI's attention
functions), the hypernetwork still costs a matrix product per token even when it is one affine map
``A x + b``. Writing ``W A`` into ``to_k`` (as the WebUI's Lora extension merges its weights) makes it free.
The bias ``W b`` needs no new parameter: softmax ignores a constant added to every key, and a constant added
to every value comes out of the attention unchanged (each query's weights sum to one), where ``to_out``'s
bias takes it. So the layers keep their parameters (other weight patchers, such as Lora, keep a backup of a
bias only where there is one). Every tensor written is kept on the CPU and put back bit for bit; a tensor
changed by someone else after the fold (a model reloaded in place) is taken as the new original.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .applier import Affine, is_identity


@dataclass
class _Written:
    tensor: torch.Tensor
    original: torch.Tensor  # a copy on the CPU, as the WebUI's Lora extension keeps its backups (no extra VRAM)
    version: int  # the tensor's version right after our write


class ProjectionFold:
    """The tensors written now, each with its original."""

    def __init__(self):
        self._written: dict[int, _Written] = {}

    def __len__(self) -> int:
        return len(self._written)

    def fold_attention(self, to_k: nn.Linear, to_v: nn.Linear, to_out: nn.Linear, k_map: Affine, v_map: Affine):
        """Make the layer with these projections attend as if its key and value inputs went through ``k_map`` and
        ``v_map`` first. Products are formed in float32 (float64 for a float64 layer), then cast to the layer's
        dtype; folding again starts from the originals."""
        for projection, affine, role in ((to_k, k_map, "key"), (to_v, v_map, "value")):
            if is_identity(affine):
                continue
            compute = torch.float64 if projection.weight.dtype == torch.float64 else torch.float32
            weight = self._original(projection.weight).to(compute)
            self._write(projection.weight, weight @ affine.weight.to(weight.device, compute))
            shift = weight @ affine.bias.to(weight.device, compute)  # added to every key or value
            if projection.bias is not None:
                self._write(projection.bias, self._original(projection.bias).to(compute) + shift)
            elif role == "value":
                out_weight = self._original(to_out.weight).to(compute)
                self._write(to_out.bias, self._original(to_out.bias).to(compute) + out_weight @ shift)
            # a key without a bias: the shift changes no attention weight, and is left out

    def all_intact(self) -> bool:
        """True when nobody changed a written tensor since."""
        return all(entry.tensor._version == entry.version for entry in self._written.values())

    def restore_all(self) -> None:
        """Put every original back; a tensor changed since the fold stays as it is (it is the new original)."""
        with torch.no_grad():
            for entry in self._written.values():
                if entry.tensor._version == entry.version:
                    entry.tensor.copy_(entry.original)
        self._written.clear()

    def _original(self, tensor: torch.Tensor) -> torch.Tensor:
        entry = self._written.get(id(tensor))
        if entry is None or entry.tensor is not tensor:
            return tensor.detach()
        return entry.original.to(tensor.device)

    def _write(self, tensor: torch.Tensor, value: torch.Tensor) -> None:
        entry = self._written.get(id(tensor))
        if entry is None or entry.tensor is not tensor:
            entry = self._written[id(tensor)] = _Written(tensor, tensor.detach().to("cpu", copy=True), -1)
        with torch.no_grad():
            tensor.copy_(value.to(tensor.dtype))
        entry.version = tensor._version
