"""How does preparing a dataset scale? Synthetic folders of 100, 1 000 and 10 000 small captioned
images; for each, and for the latents kept in memory and on disk, in a fresh process: the time to
scan, bucket and encode them with the built-in model's VAE, the time to read one epoch of batches
back, and the peak memory above that of a process that has encoded one batch. Time should grow at
most linearly; memory at most linearly in memory (the latents: the "latents MB" column estimates
them), and on disk only by the per-image bookkeeping (paths, captions, sizes). Last line: one JSON
object.

    python bench/dataset.py [--sizes 100,1000,10000] [--side 64] [--caches memory,disk]
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


def prepare(folder: str, side: int, cache: str) -> None:
    """Runs in its own process: prints seconds to prepare and to read an epoch, and peak RSS in MB."""
    import torch
    from hypernetwork_ext.adapters.ldm import LdmAdapter
    from hypernetwork_ext.models.tiny import tiny_latent_diffusion
    from hypernetwork_ext.training.dataset import (TrainingDataset, encode_latents, estimated_latent_bytes,
                                                   open_latent_cache, scan_folder)

    adapter = LdmAdapter(tiny_latent_diffusion())
    adapter.encode_images(torch.zeros(16, 3, side, side))  # the VAE's working memory for a batch is not the data's
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    examples, report = scan_folder(folder, width=side, height=side, no_crop=True, use_alpha=False)
    latent_cache = open_latent_cache(cache, examples, flip=False, latent_sampling="once", folder=f"{folder}-latents")
    dataset = TrainingDataset(examples, report, batch_size=4, grad_accum=1, templates=["[filewords]"], name="n",
                              seed=0, shuffle_tags=False, tag_dropout=0, flip=False, latent_sampling="once",
                              latent_cache=latent_cache)
    encode_latents(examples, adapter.encode_images, flip=False, latent_sampling="once", seed=0, batch_size=16,
                   cache=latent_cache)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    for batch in dataset.epoch_batches(0):
        dataset.materialize(batch, 0, 0)
    read_seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    latent_cache.close()
    print(json.dumps({"seconds": seconds, "read_seconds": read_seconds, "peak_mb": peak, "growth_mb": peak - baseline,
                      "latents_mb": estimated_latent_bytes(examples, flip=False) / 2 ** 20, "images": len(examples)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--caches", default="memory,disk")
    parser.add_argument("--prepare", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache", default="memory", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        prepare(args.prepare, args.side, args.cache)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in (int(n) for n in args.sizes.split(",")):
            folder = Path(tmp) / str(count)
            make_folder(folder, count, args.side)
            for cache in args.caches.split(","):
                out = subprocess.run([sys.executable, __file__, "--prepare", str(folder), "--side", str(args.side),
                                      "--cache", cache], capture_output=True, text=True, check=True).stdout
                rows.append({"images": count, "cache": cache, **json.loads(out.strip().splitlines()[-1])})
    print(f"{'images':>8}{'cache':>8}{'seconds':>10}{'ms/image':>10}{'read ms/image':>15}{'latents MB':>12}"
          f"{'peak MB':>10}{'growth MB':>11}")
    for row in rows:
        print(f"{row['images']:>8}{row['cache']:>8}{row['seconds']:>10.1f}{row['seconds'] / row['images'] * 1000:>10.2f}"
              f"{row['read_seconds'] / row['images'] * 1000:>15.3f}{row['latents_mb']:>12.1f}{row['peak_mb']:>10.0f}"
              f"{row['growth_mb']:>11.1f}")
    result = {cache: _ratios([row for row in rows if row["cache"] == cache]) for cache in args.caches.split(",")}
    print(json.dumps({**result, "rows": rows}))


def _ratios(rows: list[dict]) -> dict:
    """Largest run against the smallest: time per image, memory growth, and how many more images."""
    first, last = rows[0], rows[-1]
    return {"time_ratio_per_image": round((last["seconds"] / last["images"]) / (first["seconds"] / first["images"]), 3),
            "memory_growth_ratio": round(max(last["growth_mb"], 1) / max(first["growth_mb"], 1), 3),
            "images_ratio": last["images"] / first["images"]}


if __name__ == "__main__":
    main()
