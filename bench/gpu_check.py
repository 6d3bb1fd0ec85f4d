"""What only a CUDA GPU shows: mixed-precision training and the folded applier in half precision.

1. Training: the tiny ldm model, 8 steps with a preview at steps 4 and 8, once in each precision
   (no / fp16 / bf16). Prints the mean loss of the first and last steps, whether every weight stayed
   finite and changed, the dtype the file was saved in, and the peak GPU memory allocated.
2. Applying: `FastApplier` (folded, in float16 and bfloat16) and, for scale, the plain formula in the
   same low precision (what the WebUI computes), each against the plain formula in float32, on a stack
   of three `1, 2, 1` swish networks at SD 1.5 widths; prints the largest error relative to the
   output's magnitude.
Last line: one JSON object.

    python bench/gpu_check.py
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from train import make_workspace  # noqa: E402

from hypernetwork_ext import FastApplier, Hypernetwork, HypernetworkConfig, load, save, stack  # noqa: E402
from hypernetwork_ext.adapters.ldm import LdmAdapter  # noqa: E402
from hypernetwork_ext.models.tiny import TINY_ATTENTION_WIDTHS, tiny_latent_diffusion  # noqa: E402
from hypernetwork_ext.stack import apply_plain  # noqa: E402
from hypernetwork_ext.training import TrainingSettings, train  # noqa: E402


def train_in(precision: str, folder: Path, device: torch.device) -> dict:
    data, _ = make_workspace(folder)
    start = Hypernetwork.create(HypernetworkConfig(sizes=TINY_ATTENTION_WIDTHS, layer_structure=(1, 2, 1)), "g", seed=0)
    start_path = save(start, folder / f"start-{precision}.pt")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = train(LdmAdapter(tiny_latent_diffusion().to(device)), start_path,
                   TrainingSettings(data_dir=str(data), width=64, height=64, max_steps=8, batch_size=2,
                                    learn_rate="1e-3", save_every=0, preview_every=4, mixed_precision=precision,
                                    preview={"steps": 4, "width": 64, "height": 64, "seed": 1}),
                   output_path=folder / f"out-{precision}.pt", log_dir=folder / f"logs-{precision}")
    losses = [point.loss for point in result.losses]
    saved = torch.load(result.output_path, map_location="cpu", weights_only=True)
    trained = load(result.output_path)
    before = dict(start.named_parameters())
    after = dict(trained.named_parameters())
    return {
        "loss_first": round(sum(losses[:2]) / 2, 5), "loss_last": round(sum(losses[-2:]) / 2, 5),
        "finite": all(torch.isfinite(p).all().item() for p in after.values()),
        "all_changed": all(not torch.equal(before[name], after[name]) for name in after),
        "saved_dtypes": sorted({str(t.dtype) for width, layers in saved.items() if isinstance(width, int)
                                for module in layers for t in module.values()}),
        "peak_mb": round(torch.cuda.max_memory_allocated() / 2 ** 20, 1) if device.type == "cuda" else None,
        "previews": len(list((folder / f"logs-{precision}").rglob("*.png"))),
    }


def low_precision_errors(dtype: torch.dtype, device: torch.device) -> tuple[float, float]:
    """(folded applier, plain formula), each in ``dtype``, against the plain formula in float32."""
    made = [Hypernetwork.create(HypernetworkConfig(layer_structure=(1, 2, 1), activation="swish"), f"s{seed}", seed=seed)
            for seed in range(3)]
    transform32 = stack([(network.to(device), 1.0) for network in made])
    worst_fast = worst_plain = 0.0
    for width in (768, 320, 640, 1280):
        x = torch.randn(2, 77, width, generator=torch.Generator().manual_seed(width)).to(device)
        reference_k, reference_v = apply_plain(transform32, x, x)
        low = stack([(copy.deepcopy(network).to(dtype), 1.0) for network in made])
        fast = FastApplier(low)(x.to(dtype), x.to(dtype))
        plain = apply_plain(low, x.to(dtype), x.to(dtype))
        for index, reference in enumerate((reference_k, reference_v)):
            worst_fast = max(worst_fast, _relative_error(fast[index], reference))
            worst_plain = max(worst_plain, _relative_error(plain[index], reference))
    return worst_fast, worst_plain


def _relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return ((value.float() - reference).abs().max() / reference.abs().max()).item()


def main() -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # the CPU only as a dry run
    print(f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}")
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("no", "fp16", "bf16"):
            report[f"train_{precision}"] = train_in(precision, Path(tmp), device)
            print(f"  training, precision {precision}: {report[f'train_{precision}']}")
    for name, dtype in (("float16", torch.float16), ("bfloat16", torch.bfloat16)):
        fast, plain = low_precision_errors(dtype, device)
        report[f"relative_error_{name}"] = {"folded": round(fast, 6), "plain": round(plain, 6)}
        print(f"  {name} vs plain float32, largest relative error: folded applier {fast:.6f}, "
              f"plain formula {plain:.6f}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
