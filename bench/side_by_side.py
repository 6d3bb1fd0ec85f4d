"""Measuring configurations side by side: counted FLOPs, and the fastest of interleaved rounds, as ratios."""

from __future__ import annotations

import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode


def measure(names, evaluate, rounds: int, prepare=lambda name: None) -> tuple[dict, dict]:
    """``(flops, times)`` of one ``evaluate(name)`` per configuration; each is warmed up first (caches and
    folded weights exist from the first step of a run), the rounds alternate their order, and ``prepare(name)``
    runs untimed before each timed evaluation (what a run does once, not at every step)."""
    flops, times = {}, {name: [] for name in names}
    with torch.no_grad():
        for name in names:
            evaluate(name)
            with FlopCounterMode(display=False) as counter:
                evaluate(name)
            flops[name] = counter.get_total_flops()
        for round_index in range(rounds):
            for name in (list(names) if round_index % 2 == 0 else list(reversed(names))):
                prepare(name)
                start = time.perf_counter()
                evaluate(name)
                times[name].append(time.perf_counter() - start)
    return flops, times


def report(heading: str, flops: dict, times: dict, baseline: str = "plain") -> dict:
    """Prints the table; returns each configuration's time ratio to ``baseline`` (fastest round against
    fastest round: interference only ever adds time)."""
    ratios = {name: min(times[name]) / min(times[baseline]) for name in times}
    print(f"{heading}; ratio = fastest round / fastest {baseline} round")
    print(f"{'configuration':<18}{'fastest ms':>11}{'median ms':>11}{'ratio':>9}{'FLOP ratio':>12}")
    for name in times:
        print(f"{name:<18}{min(times[name]) * 1000:>11.1f}{statistics.median(times[name]) * 1000:>11.1f}"
              f"{ratios[name]:>9.3f}{flops[name] / flops[baseline]:>12.3f}")
    return ratios
