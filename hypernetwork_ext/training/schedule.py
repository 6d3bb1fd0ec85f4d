"""Learning-rate (and clip-value) schedules: the WebUI's text syntax and cosine annealing with warm restarts;
and the range of timesteps training draws from (the noise curriculum).

Each answers one question about the optimizer step that follows ``step`` completed steps (``rate_at(step)``,
``range_at(step)``), as a pure function of the step, so a resumed run continues exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError

USAGE = "write a rate, or rate:until_step pairs, e.g. 5e-3:100, 1e-3:1000, 1e-5"


@dataclass(frozen=True)
class StepSchedule:
    """``"5e-3:100, 1e-3:1000, 1e-5"``: 5e-3 until step 100, 1e-3 until 1000, then 1e-5 to the end.

    Unlike the WebUI's, a schedule that ends before max steps is refused instead of silently
    ending training early, and steps must grow. Entries beyond max steps are not reached.
    """

    segments: tuple[tuple[float, int], ...]  # (rate, until this many completed steps, exclusive)

    @classmethod
    def parse(cls, text, max_steps: int, field: str = "learn_rate", label: str = "Learning rate",
              allow_zero: bool = False) -> "StepSchedule":
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            text = repr(float(text))
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(field, f"{label} is empty; {USAGE}")
        segments: list[tuple[float, int]] = []
        items = [item.strip() for item in text.split(",")]
        for position, item in enumerate(items, start=1):
            if not item:
                raise ConfigError(field, f"{label}: entry {position} is empty; {USAGE}")
            rate_text, _, step_text = item.partition(":")
            try:
                rate = float(rate_text)
            except ValueError:
                raise ConfigError(field, f"{label}: {rate_text.strip()!r} in entry {position} is not a number; {USAGE}") from None
            if not math.isfinite(rate) or rate < 0 or (rate == 0 and not allow_zero):
                raise ConfigError(field, f"{label}: {rate_text.strip()} in entry {position} must be a positive number")
            if step_text.strip() in ("", "-1"):
                until = max_steps
            else:
                try:
                    until = int(step_text)
                except ValueError:
                    raise ConfigError(field, f"{label}: step {step_text.strip()!r} in entry {position} is not a whole number; {USAGE}") from None
                if until <= 0:
                    raise ConfigError(field, f"{label}: step {until} in entry {position} must be positive")
            if segments and until <= segments[-1][1]:
                raise ConfigError(field, f"{label}: step {until} in entry {position} is not after step "
                                         f"{segments[-1][1]}; steps must grow from left to right")
            segments.append((rate, min(until, max_steps)))
            if step_text.strip() in ("", "-1") and position < len(items):
                raise ConfigError(field, f"{label}: entry {position} has no step, so it lasts to the end, but more "
                                         f"entries follow; give it a step (rate:step) or remove the rest")
            if until >= max_steps:
                break  # entries for steps beyond max steps are not reached (as in the WebUI)
        if segments[-1][1] < max_steps:
            raise ConfigError(field, f"{label}: the schedule ends at step {segments[-1][1]} but max steps is "
                                     f"{max_steps}; end it with a bare rate (e.g. '{text.strip()}, 1e-5') or lower max steps")
        return cls(tuple(segments))

    def rate_at(self, step: int) -> float:
        for rate, until in self.segments:
            if step < until:
                return rate
        return self.segments[-1][0]

    @property
    def first_rate(self) -> float:
        return self.segments[0][0]


@dataclass(frozen=True)
class CosineRestarts:
    """Cosine annealing with warm restarts, in closed form.

    Cycle ``c`` has length ``cycle_steps * cycle_mult**c``; it warms up linearly from ``min_rate``
    over ``warmup_steps``, then follows half a cosine from its peak ``max_rate * decay**c`` down to
    ``min_rate``.
    """

    max_rate: float
    min_rate: float
    cycle_steps: int
    cycle_mult: float = 1.0
    warmup_steps: int = 0
    decay: float = 1.0

    def __post_init__(self):
        checks = [
            (math.isfinite(self.max_rate) and self.max_rate > 0, "max_rate", "the learning rate must be positive"),
            (math.isfinite(self.min_rate) and 0 <= self.min_rate <= self.max_rate, "min_rate",
             f"minimum learning rate ({self.min_rate:g}) must be between 0 and the learning rate ({self.max_rate:g})"),
            (self.cycle_steps >= 1, "cycle_steps", f"steps per cycle ({self.cycle_steps}) must be at least 1"),
            (math.isfinite(self.cycle_mult) and self.cycle_mult >= 1, "cycle_mult",
             f"cycle length multiplier ({self.cycle_mult:g}) must be 1 or more"),
            (0 <= self.warmup_steps < self.cycle_steps, "warmup_steps",
             f"warmup steps ({self.warmup_steps}) must be at least 0 and fewer than the steps per cycle ({self.cycle_steps})"),
            (math.isfinite(self.decay) and 0 < self.decay <= 1, "decay",
             f"decay per cycle ({self.decay:g}) must be above 0 and at most 1 (1 = no decay)"),
        ]
        for ok, field, message in checks:
            if not ok:
                raise ConfigError(field, f"Cosine schedule: {message}")

    def cycle(self, step: int) -> tuple[int, int, int]:
        """``(cycle index, position in the cycle, cycle length)`` after ``step`` completed steps."""
        first, mult = self.cycle_steps, self.cycle_mult
        if mult == 1:
            return step // first, step % first, first
        index = int(math.floor(math.log(step / first * (mult - 1) + 1, mult))) if step >= first else 0
        start = round(first * (mult ** index - 1) / (mult - 1))
        length = round(first * mult ** index)
        if step >= start + length:  # floating-point edge of the log
            index, start, length = index + 1, start + length, round(first * mult ** (index + 1))
        return index, step - start, length

    def rate_at(self, step: int) -> float:
        index, position, length = self.cycle(step)
        peak = self.max_rate * self.decay ** index
        warmup = min(self.warmup_steps, length - 1)
        if position < warmup:
            return self.min_rate + (peak - self.min_rate) * position / warmup
        progress = (position - warmup) / max(1, length - warmup)
        return self.min_rate + (peak - self.min_rate) * (1 + math.cos(math.pi * progress)) / 2

    def cycle_ends_at(self, step: int) -> bool:
        """True when ``step`` completed steps closes a cycle (save / preview "when a cycle ends")."""
        return step > 0 and self.cycle(step)[1] == 0


@dataclass(frozen=True)
class TimestepRange:
    """The timesteps training draws from: ``range_at(step)`` is ``(lowest, highest)``, both included.

    The range moves linearly (each end rounded to a whole timestep) from ``start`` to ``end`` over
    ``ramp_steps`` and then stays at ``end``; with ``restart`` the ramp begins again every ``ramp_steps``
    (a sawtooth). ``start == end`` is a fixed range, the whole model's range when no curriculum is on.
    """

    start: tuple[int, int]
    end: tuple[int, int]
    ramp_steps: int
    restart: bool = False

    def range_at(self, step: int) -> tuple[int, int]:
        if self.start == self.end:
            return self.end
        done = step % self.ramp_steps if self.restart else min(step, self.ramp_steps)
        fraction = done / self.ramp_steps
        low, high = (round(first + (last - first) * fraction) for first, last in zip(self.start, self.end))
        return low, high
