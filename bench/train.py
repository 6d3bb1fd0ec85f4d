"""What does the training engine cost on top of the UNet itself?

An SD 1.5-sized UNet (random weights; a small VAE and text encoder, since latents and text are cached
before the timed steps), 32x32 latents, batch 1, a `1, 2, 1` network on every width. Measured in one
run: the engine's time per optimizer step, its floor (the same UNet's forward and backward with the
same hypernetwork modules in place and nothing else), and the plain UNet's forward and backward
without hypernetworks. Then the peak memory of a short training run with previews, with and without
moving the optimizer state to CPU memory during previews (separate processes; on a CPU the state
is already in CPU memory, so the two agree there). Last line: one JSON object.

    python bench/train.py [--steps 6] [--device cpu|cuda] [--precision auto|no|fp16|bf16]
                          [--preview-size 256] [--memory-only]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypernetwork_ext import FastApplier, Hypernetwork, HypernetworkConfig, save  # noqa: E402
from hypernetwork_ext.adapters.ldm import LdmAdapter  # noqa: E402
from hypernetwork_ext.attention import HypernetworkAttention, install  # noqa: E402
from hypernetwork_ext.models.tiny import SD15_UNET, build_latent_diffusion  # noqa: E402
from hypernetwork_ext.stack import Applied  # noqa: E402
from hypernetwork_ext.training import Callbacks, TrainingSettings, train  # noqa: E402
from hypernetwork_ext.training.engine import _precision  # noqa: E402

SIZES = (768, 320, 640, 1280)


def sd15_latent_diffusion(device):
    return build_latent_diffusion(SD15_UNET, context_width=768, latent_size=32).to(device)


def make_workspace(folder: Path) -> tuple[Path, Path]:
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    for index in range(4):
        array = np.random.default_rng(index).integers(0, 255, (256, 256, 3), dtype=np.uint8)
        Image.fromarray(array).save(data / f"{index}.png")
        (data / f"{index}.txt").write_text(f"subject {index}, style")
    network = Hypernetwork.create(HypernetworkConfig(sizes=SIZES, layer_structure=(1, 2, 1)), "bench", seed=0)
    return data, save(network, folder / "bench.pt")


def settings_for(data: Path, steps: int, precision: str, **changes) -> TrainingSettings:
    base = dict(data_dir=str(data), width=256, height=256, max_steps=steps, batch_size=1, grad_accum=1,
                learn_rate="1e-5", save_every=0, preview_every=0, csv_every=0, mixed_precision=precision)
    base.update(changes)
    return TrainingSettings(**base)


def time_engine(adapter, data, network_path, steps, folder, precision) -> list[float]:
    stamps = []
    callbacks = Callbacks(progress=lambda step, total: stamps.append(time.perf_counter()))
    train(adapter, network_path, settings_for(data, steps + 1, precision), output_path=folder / "engine-out.pt",
          log_dir=folder / "logs", callbacks=callbacks)
    return [b - a for a, b in zip(stamps, stamps[1:])]  # step 1 is the warm-up


def time_floor(adapter, network_path, steps, with_hypernetwork: bool, precision: str) -> list[float]:
    """The UNet's forward and backward alone, under the same autocast as the engine."""
    from hypernetwork_ext import load

    device = adapter.device
    latents = torch.randn(1, 4, 32, 32, device=device)
    cond = adapter.encode_text(["subject 0, style"]).to(device)
    network = load(network_path).to(device).train().requires_grad_(True)
    undo = install(adapter.model.model.diffusion_model,
                   HypernetworkAttention(FastApplier(Applied(network, 1.0)) if with_hypernetwork else None))
    autocast, _ = _precision(precision, device)
    times = []
    try:
        for index in range(steps + 1):
            start = time.perf_counter()
            x = latents if with_hypernetwork else latents.clone().requires_grad_(True)
            with autocast():
                loss = adapter.loss(x, cond, None, "simple")
            loss.backward()
            for parameter in network.parameters():
                parameter.grad = None
            if device.type == "cuda":
                torch.cuda.synchronize()
            if index:
                times.append(time.perf_counter() - start)
    finally:
        undo()
    return times


def peak_memory(unload: bool, device: str, precision: str, preview_size: int) -> float:
    """Peak memory (MB) of a 3-step run with a preview every step, measured in a fresh process."""
    code = (f"import sys; sys.argv=['x', '--memory-run', '{int(unload)}', '--device', '{device}', "
            f"'--precision', '{precision}', '--preview-size', '{preview_size}']; "
            f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import train as t; t.main()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def memory_run(unload: bool, device: torch.device, precision: str, preview_size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data, network_path = make_workspace(folder)
        adapter = LdmAdapter(sd15_latent_diffusion(device))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        train(adapter, network_path, settings_for(data, 3, precision, preview_every=1, unload_optimizer_for_preview=unload,
                                                   preview={"steps": 4, "width": preview_size, "height": preview_size, "seed": 1}),
              output_path=folder / "o.pt", log_dir=folder / "logs")
        if device.type == "cuda":
            print(torch.cuda.max_memory_allocated() / 2 ** 20)
        else:
            print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="auto", choices=("auto", "no", "fp16", "bf16"),
                        help="mixed precision of engine and floor alike (CUDA only; the CPU trains in float32)")
    parser.add_argument("--preview-size", type=int, default=256,
                        help="preview width and height in the memory runs (larger than training: previews set the peak)")
    parser.add_argument("--memory-only", action="store_true", help="only the two peak-memory runs")
    parser.add_argument("--memory-run", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.memory_run is not None:
        memory_run(bool(int(args.memory_run)), device, args.precision, args.preview_size)
        return
    peaks = (peak_memory(True, args.device, args.precision, args.preview_size),
             peak_memory(False, args.device, args.precision, args.preview_size))
    if args.memory_only:
        print(json.dumps({"preview_size": args.preview_size, "peak_mb_unload": round(peaks[0], 1),
                          "peak_mb_no_unload": round(peaks[1], 1)}))
        return

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data, network_path = make_workspace(folder)
        adapter = LdmAdapter(sd15_latent_diffusion(device))
        floor = time_floor(adapter, network_path, args.steps, True, args.precision)
        engine = time_engine(adapter, data, network_path, args.steps, folder, args.precision)
        plain = time_floor(adapter, network_path, args.steps, False, args.precision)
        floor += time_floor(adapter, network_path, args.steps, True, args.precision)  # before and after: drift shows up here
    peak_unload, peak_no_unload = peaks

    fastest = {"engine step": min(engine), "floor (UNet fwd+bwd with hypernetwork)": min(floor),
               "plain UNet fwd+bwd": min(plain)}
    print(f"device {device}, {torch.get_num_threads()} threads, precision {args.precision}, {args.steps} timed steps "
          f"each; fastest step shown")
    for name, seconds in fastest.items():
        print(f"  {name:<42}{seconds * 1000:>10.1f} ms")
    memory_kind = "GPU peak allocated" if device.type == "cuda" else "process peak RSS"
    print(f"  {memory_kind} with previews: optimizer unloaded {peak_unload:.0f} MB, kept {peak_no_unload:.0f} MB")
    result = {"step_over_floor": round(min(engine) / min(floor), 4), "floor_over_plain": round(min(floor) / min(plain), 4),
              "peak_mb_unload": round(peak_unload, 1), "peak_mb_no_unload": round(peak_no_unload, 1)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
