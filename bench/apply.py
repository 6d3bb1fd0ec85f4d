"""How much does applying hypernetworks cost during generation?

One UNet evaluation of an SD 1.5-sized UNet (random weights; 64x64 latent, batch 2 as with CFG),
with no hypernetwork and with stacks of `1, 2, 1` networks, every configuration measured side by
side in the same rounds. Prints each as a ratio to the plain UNet, and the arithmetic lower bound
(counted FLOPs with / without) for the swish stacks. Last line: one JSON object of the ratios.

    python bench/apply.py [--rounds 5] [--device cpu|cuda] [--dtype float32|float16]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from side_by_side import measure, report  # noqa: E402
from unet import sd15_unet  # noqa: E402

from hypernetwork_ext import FastApplier, Hypernetwork, HypernetworkConfig, stack  # noqa: E402
from hypernetwork_ext.attention import HypernetworkAttention, install  # noqa: E402


def networks(activation: str, count: int, device, dtype):
    made = []
    for seed in range(count):
        network = Hypernetwork.create(HypernetworkConfig(layer_structure=(1, 2, 1), activation=activation),
                                      f"{activation}{seed}", seed=seed)
        made.append(network.to(device=device, dtype=dtype))
    return stack([(network, 1.0) for network in made])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="float32 (CPU default) or float16 (CUDA default)")
    parser.add_argument("--only", default=None, help="comma-separated configurations to run besides plain")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.float16 if device.type == "cuda" else torch.float32)

    unet = sd15_unet(device, dtype)
    latent = torch.randn(2, 4, 64, 64, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    timesteps = torch.tensor([500, 500], device=device)
    cond = torch.randn(2, 77, 768, generator=torch.Generator().manual_seed(2)).to(device, dtype)

    configs = {
        "plain": None,
        "plain_control": None,  # plain again: its ratio shows the measurement noise of this machine
        "linear_1": FastApplier(networks("linear", 1, device, dtype)),
        "linear_3": FastApplier(networks("linear", 3, device, dtype)),
        "linear_1_plain": FastApplier(networks("linear", 1, device, dtype), fast=False),
        "linear_3_plain": FastApplier(networks("linear", 3, device, dtype), fast=False),
        "swish_1": FastApplier(networks("swish", 1, device, dtype)),
        "swish_3": FastApplier(networks("swish", 3, device, dtype)),
    }
    if args.only:
        keep = {"plain", "plain_control", *args.only.split(",")}
        configs = {name: applier for name, applier in configs.items() if name in keep}
    processor = HypernetworkAttention()
    install(unet, processor)
    # as the WebUI samples in half precision: under autocast, so that float32 parts (the timestep
    # embedding) meet half weights
    half = dtype in (torch.float16, torch.bfloat16)

    def autocast():
        return torch.autocast(device.type, dtype=dtype) if half else contextlib.nullcontext()

    def evaluate(name):
        processor.applier = configs[name]
        # a new conditioning tensor with the same content at every step, as a sampler makes it
        with autocast():
            unet(latent, timesteps, context=cond.clone())
        if device.type == "cuda":
            torch.cuda.synchronize()

    flops, times = measure(list(configs), evaluate, args.rounds)
    ratios = report(f"device {device}, dtype {str(dtype).replace('torch.', '')}, {args.rounds} rounds, "
                    f"{torch.get_num_threads()} threads", flops, times)
    result = {name: round(ratio, 4) for name, ratio in ratios.items() if name != "plain"}
    for count in (1, 3):
        if f"swish_{count}" in flops:
            result[f"bound_swish_{count}"] = round(flops[f"swish_{count}"] / flops["plain"], 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
