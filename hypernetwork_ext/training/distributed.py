"""Data-parallel training across processes, through an existing engine (Hugging Face accelerate / torch
distributed), never a home-made one.

Each process takes its share of every global batch; gradients and the loss are averaged across
processes after each micro-batch; only the main process writes files and reports. Timesteps and noise
are drawn for the whole global batch from the step's seed and sliced, so N processes with batch B
train exactly like one process with batch N*B (for networks without dropout, whose masks depend on
the batch shape).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SingleProcess:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return True

    def average(self, tensors: list[torch.Tensor]) -> None:
        pass

    def barrier(self) -> None:
        pass


class TorchDistributed:
    """Processes started by ``accelerate launch`` or ``torchrun`` (torch.distributed initialised)."""

    def __init__(self):
        import torch.distributed as dist
        self.dist = dist
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def average(self, tensors: list[torch.Tensor]) -> None:
        if not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        self.dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for tensor in tensors:
            tensor.copy_(flat[offset:offset + tensor.numel()].view_as(tensor))
            offset += tensor.numel()

    def barrier(self) -> None:
        self.dist.barrier()


def from_environment(device: str = "auto"):
    """``TorchDistributed`` when started by accelerate/torchrun with several processes, else ``SingleProcess``."""
    import os
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return SingleProcess(), None
    from accelerate import Accelerator
    accelerator = Accelerator(cpu=(device == "cpu") or not torch.cuda.is_available())
    return TorchDistributed(), accelerator.device
