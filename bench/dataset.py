"""How does preparing a dataset scale? Synthetic folders of 100, 1 000 and 10 000 small captioned
images; for each, in a fresh process: the time to scan, bucket and encode them with the built-in
model's VAE, and the peak memory. Both should grow at most linearly. Last line: one JSON object.

    python bench/dataset.py [--sizes 100,1000,10000] [--side 64]
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_folder(folder: Path, count: int, side: int) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    shapes = [(side, side), (side, side * 3 // 2), (side * 3 // 2, side)]
    for index in range(count):
        width, height = shapes[index % 3]
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(folder / f"{index:05d}.png")
        (folder / f"{index:05d}.txt").write_text(f"tag{index % 7}, picture")


def prepare(folder: str, side: int) -> None:
    """Runs in its own process: prints seconds and peak RSS in MB."""
    from hypernetwork_ext.adapters.ldm import LdmAdapter
    from hypernetwork_ext.models.tiny import tiny_latent_diffusion
    from hypernetwork_ext.training.dataset import TrainingDataset, encode_latents, scan_folder

    adapter = LdmAdapter(tiny_latent_diffusion())
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    examples, report = scan_folder(folder, width=side, height=side, no_crop=True, use_alpha=False)
    TrainingDataset(examples, report, batch_size=4, grad_accum=1, templates=["[filewords]"], name="n", seed=0,
                    shuffle_tags=False, tag_dropout=0, flip=False, latent_sampling="once")
    encode_latents(examples, adapter.encode_images, flip=False, latent_sampling="once", seed=0, batch_size=16)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "growth_mb": peak - baseline, "images": len(examples)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--prepare", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare, args.side)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in (int(n) for n in args.sizes.split(",")):
            folder = Path(tmp) / str(count)
            make_folder(folder, count, args.side)
            out = subprocess.run([sys.executable, __file__, "--prepare", str(folder), "--side", str(args.side)],
                                 capture_output=True, text=True, check=True).stdout
            rows.append({"images": count, **json.loads(out.strip().splitlines()[-1])})
    print(f"{'images':>8}{'seconds':>10}{'ms/image':>10}{'peak MB':>10}{'growth MB':>11}")
    for row in rows:
        print(f"{row['images']:>8}{row['seconds']:>10.1f}{row['seconds'] / row['images'] * 1000:>10.2f}"
              f"{row['peak_mb']:>10.0f}{row['growth_mb']:>11.1f}")
    first, last = rows[0], rows[-1]
    scale = last["images"] / first["images"]
    result = {"time_ratio_per_image": round((last["seconds"] / last["images"]) / (first["seconds"] / first["images"]), 3),
              "memory_growth_ratio": round(max(last["growth_mb"], 1) / max(first["growth_mb"], 1), 3),
              "images_ratio": scale, "rows": rows}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
