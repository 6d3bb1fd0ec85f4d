"""Training a hypernetwork inside the real WebUI: the WebUI's own training against ours.

In the real A1111 1.8 built from ``../shared/webui`` (the real-WebUI tests' build in ``cache/``, made here if
missing), the same request goes to ``/sdapi/v1/train/hypernetwork`` twice per side: in the plain WebUI
(started with ``--hypernetwork-ext-no-patches``, so its own training runs) and with the extension (ours).
Same random SD 1.5 checkpoint, data, size, batch and a `1, 2, 1` linear network on every width. Per-step
time is the difference of a long and a short run divided by their step difference, so that loading and
encoding are not counted; memory is the largest growth of the WebUI process's resident set over its size
before the long run (sampled every 0.1 s; the short run before it has made what a first training makes once). Last line: one JSON object.

    .venv/bin/python bench/webui_train.py [--size 256] [--steps 2,6]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import real_webui  # noqa: E402
from real_webui_checks import SD15_SIZES, api_training_request, train_through_api  # noqa: E402
from training_helpers import make_images  # noqa: E402

from hypernetwork_ext import Hypernetwork, HypernetworkConfig, save  # noqa: E402


def resident_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakGrowth:
    """The largest resident size of a process above its size when this starts, while it runs."""

    def __init__(self, pid: int):
        self.pid, self.start, self.peak = pid, resident_bytes(pid), 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._done.wait(0.1):
            self.peak = max(self.peak, resident_bytes(self.pid) - self.start)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._done.set()
        self._thread.join()


def write_start(folder: Path, name: str) -> None:
    """The same starting weights under each name (the WebUI lists the folder when it starts)."""
    config = HypernetworkConfig(sizes=SD15_SIZES, layer_structure=(1, 2, 1), activation="linear")
    save(Hypernetwork.create(config, name, seed=7), folder / f"{name}.pt")


def train_runs(webui, side: str, data: Path, logs: Path, steps: list[int], size: int) -> dict:
    """Seconds and peak growth of each run."""
    results = {}
    for count in steps:
        name = f"bench_{side}_{count}"
        request = api_training_request(name, data, logs / name, steps=count, save_every=10_000)
        request.update(training_width=size, training_height=size, learn_rate="0.00004")  # Train_Gamma's default
        with PeakGrowth(webui.process.pid) as memory:
            start = time.perf_counter()
            info = train_through_api(webui, request)
            seconds = time.perf_counter() - start
        if not info.endswith("error: None"):
            raise SystemExit(f"{side} training of {count} steps failed: {info}")
        results[count] = (seconds, memory.peak)
        print(f"{side:>5}: {count} steps in {seconds:.1f} s, process grew by {memory.peak / 2**20:.0f} MB", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="training width and height")
    parser.add_argument("--steps", default="2,6", help="the short and the long run's steps")
    parser.add_argument("--images", type=int, default=4)
    args = parser.parse_args()
    steps = sorted(int(part) for part in args.steps.split(","))
    build = real_webui.Build("a1111").result()
    real_webui.install_extension(build)
    folder = real_webui.fresh_state(build)
    work = real_webui.REPO / "tests" / "artifacts" / "bench-webui-train"
    data = make_images(work / "data", args.images, sizes=((args.size, args.size),))
    for side in ("webui", "ours"):
        for count in steps:
            write_start(folder, f"bench_{side}_{count}")
    results = {}
    for side, flags in (("webui", ("--hypernetwork-ext-no-patches",)), ("ours", ())):
        webui = real_webui.start(build, *flags, log_name=f"bench-webui-train-{side}")
        try:
            results[side] = train_runs(webui, side, data, work / side, steps, args.size)
        finally:
            webui.stop()
    short, long = steps[0], steps[-1]
    per_step = {side: (runs[long][0] - runs[short][0]) / (long - short) for side, runs in results.items()}
    # the long run's growth: the short one before it has made what a first training makes once (caches, hashes)
    peak = {side: runs[long][1] for side, runs in results.items()}
    print(f"{args.size}x{args.size}, batch 1, {args.images} images; per step "
          f"(({long}-step run) - ({short}-step run)) / {long - short}:")
    for side in results:
        print(f"{side:>5}: {per_step[side]:.2f} s/step, process grew by {peak[side] / 2**20:.0f} MB in the long run")
    print(f"ours / webui: time {per_step['ours'] / per_step['webui']:.3f}, memory {peak['ours'] / peak['webui']:.3f}")
    print(json.dumps({"webui_s_per_step": round(per_step["webui"], 3), "ours_s_per_step": round(per_step["ours"], 3),
                      "time_ratio": round(per_step["ours"] / per_step["webui"], 4),
                      "webui_peak_mb": round(peak["webui"] / 2**20), "ours_peak_mb": round(peak["ours"] / 2**20),
                      "memory_ratio": round(peak["ours"] / peak["webui"], 4)}))


if __name__ == "__main__":
    main()
