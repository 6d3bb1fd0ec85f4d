"""A loss and learning-rate chart as a PNG, drawn with Pillow (no plotting library needed).

Two panels share the step axis: the loss on top (each step's loss thin and light, its moving average thick and
dark, a legend saying which is which) and the learning rate below. Every axis has ticks at round numbers with
their values, as many as fit without their labels touching.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .engine import LossPoint

WIDTH, HEIGHT = 800, 460
LOSS_COLOUR, AVERAGE_COLOUR, RATE_COLOUR = (160, 185, 230), (25, 60, 170), (215, 100, 20)
TEXT, AXIS, GRID = (30, 30, 30), (120, 120, 120), (228, 228, 228)
PAD, GAP, TICK = 10, 14, 4  # outer padding, between panels and between labels, tick length (pixels)


def moving_average(values: list[float], window: int) -> list[float]:
    averaged, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        averaged.append(total / min(index + 1, window))
    return averaged


def nice_ticks(low: float, high: float, most: int, minimum_step: float = 0.0) -> list[float]:
    """Round values (1, 2, 2.5 or 5 times a power of ten apart, and at least ``minimum_step``) from at or below
    ``low`` to at or above ``high``: at most ``most`` of them where round values allow (always 3 or fewer)."""
    if not high > low:  # one value: a tenth of it either side
        spread = abs(low) / 10 or 0.5
        low, high = low - spread, high + spread
    ticks = []
    for intervals in range(max(1, most - 1), 0, -1):  # fewer and wider intervals until the ticks fit
        raw = max((high - low) / intervals, minimum_step)
        magnitude = 10 ** math.floor(math.log10(raw))
        step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
        first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
        ticks = [round(index * step, 12) for index in range(first, last + 1)]
        if len(ticks) <= max(2, most):
            break
    return ticks  # at worst three: one interval's round ends may lie either side of the range


def tick_labels(ticks: list[float]) -> list[str]:
    """Whole numbers as they are; others in the fewest significant digits that write every tick exactly."""
    if all(float(t).is_integer() and abs(t) < 1e7 for t in ticks):
        return [str(int(t)) for t in ticks]
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    tolerance = (min(gaps) if gaps else abs(ticks[0]) or 1) / 1000  # well under a tick's step
    for digits in range(1, 18):
        labels = [f"{t:.{digits}g}" for t in ticks]
        if all(abs(float(label) - t) <= tolerance for label, t in zip(labels, ticks)):
            return labels
    return [repr(t) for t in ticks]


def _font(size: int = 13):
    try:
        return ImageFont.load_default(size=size)  # Pillow 10.1+: a scalable font
    except TypeError:  # older Pillow (the WebUI pins 9.5): its small bitmap font
        return ImageFont.load_default()


@dataclass(frozen=True)
class Label:
    text: str
    box: tuple[int, int, int, int]  # left, top, right, bottom, in pixels
    colour: tuple[int, int, int]


class Chart:
    """The chart of ``points`` laid out: ``labels`` holds every text with the box it takes (none overlap),
    ``panels`` the frame of each panel (``"loss"``, ``"rate"``) as left, top, right, bottom; ``render()`` draws it."""

    def __init__(self, points: list[LossPoint], title: str = ""):
        self.points, self.font = list(points), _font()
        self.image = Image.new("RGB", (WIDTH, HEIGHT), "white")
        self.draw = ImageDraw.Draw(self.image)
        self.labels: list[Label] = []
        self.panels: dict[str, tuple[int, int, int, int]] = {}
        self.line_height = self._size("0.9e-05")[1]
        self._text((PAD, PAD), title or "Loss and learning rate", TEXT)
        if not self.points:
            self._text((PAD, PAD + 2 * self.line_height), "no steps yet", TEXT)
            return
        self._layout()

    def render(self) -> Image.Image:
        return self.image

    # -- text -------------------------------------------------------------------------------------

    def _size(self, text: str) -> tuple[int, int]:
        left, top, right, bottom = self.draw.textbbox((0, 0), text, font=self.font)
        return right - left, bottom - top

    def _text(self, at: tuple[float, float], text: str, colour, anchor: str = "la") -> Label:
        """Draws ``text`` with its ``anchor`` (Pillow's: l/m/r, a/m/s) at ``at`` and records its box."""
        width, height = self._size(text)
        x = at[0] - {"l": 0, "m": width / 2, "r": width}[anchor[0]]
        y = at[1] - {"a": 0, "m": height / 2, "s": height}[anchor[1]]
        box = (int(x), int(y), int(math.ceil(x + width)), int(math.ceil(y + height)))
        self.draw.text((x, y), text, fill=colour, font=self.font)
        label = Label(text, box, colour)
        self.labels.append(label)
        return label

    # -- layout -----------------------------------------------------------------------------------

    def _layout(self):
        steps = [p.step for p in self.points]
        losses = [p.loss for p in self.points]
        rates = [p.learn_rate for p in self.points]
        window = max(1, len(losses) // 20)
        averages = moving_average(losses, window)

        legend_y = PAD + self.line_height + 6  # the title's line, then the legend's
        top = legend_y + self.line_height + GAP
        bottom = HEIGHT - PAD - 2 * self.line_height - TICK - GAP  # above the step labels and "step"
        rate_height = max(60, (bottom - top) // 4)
        loss_panel = (top, bottom - rate_height - GAP - self.line_height - 4)  # room for "learning rate"
        rate_panel = (bottom - rate_height, bottom)

        loss_ticks = nice_ticks(min(losses), max(losses), self._fitting(loss_panel))
        rate_ticks = nice_ticks(0.0, max(rates) or 1.0, self._fitting(rate_panel))
        y_labels = tick_labels(loss_ticks) + tick_labels(rate_ticks)
        left = PAD + max(self._size(text)[0] for text in y_labels) + TICK + 4
        right = WIDTH - PAD - 8
        step_ticks = self._step_ticks(min(steps), max(steps), right - left)
        # the step labels are centred on their ticks: the first and last need half their width beside the panels
        left = max(left, PAD + self._size(tick_labels(step_ticks)[0])[0] // 2 + 1)
        right = min(right, WIDTH - PAD - self._size(tick_labels(step_ticks)[-1])[0] // 2 - 1)
        step_ticks = self._step_ticks(min(steps), max(steps), right - left)
        first, last = step_ticks[0], step_ticks[-1]

        def x_of(step):
            return left + (step - first) / (last - first) * (right - left)

        self.panels = {"loss": (left, loss_panel[0], right, loss_panel[1]),
                       "rate": (left, rate_panel[0], right, rate_panel[1])}
        self._panel(left, right, loss_panel, loss_ticks, x_of, step_ticks)
        self._panel(left, right, rate_panel, rate_ticks, x_of, step_ticks)
        self._series(steps, losses, x_of, loss_panel, loss_ticks, LOSS_COLOUR, 1)
        self._series(steps, averages, x_of, loss_panel, loss_ticks, AVERAGE_COLOUR, 2)
        self._series(steps, rates, x_of, rate_panel, rate_ticks, RATE_COLOUR, 2)
        self._text((left, legend_y), "loss", TEXT)
        self._text((left, rate_panel[0] - 4), "learning rate", RATE_COLOUR, "ls")
        for step, text in zip(step_ticks, tick_labels(step_ticks)):
            self._text((x_of(step), rate_panel[1] + TICK + 2), text, TEXT, "ma")
        self._text(((left + right) / 2, HEIGHT - PAD), "step", TEXT, "ms")
        self._legend(right, legend_y, window)

    def _fitting(self, panel: tuple[int, int]) -> int:
        """How many value ticks a panel of this height holds with room between their labels."""
        return max(2, (panel[1] - panel[0]) // (2 * self.line_height + GAP // 2) + 1)

    def _step_ticks(self, first: int, last: int, length: float) -> list[float]:
        """As many round whole step numbers as fit along ``length`` pixels with a gap between their labels."""
        for most in range(12, 2, -1):
            ticks = nice_ticks(first, max(last, first + 1), most, minimum_step=1)
            widest = max(self._size(text)[0] for text in tick_labels(ticks))
            if (len(ticks) - 1) * (widest + GAP) <= length:
                return ticks
        return nice_ticks(first, max(last, first + 1), 2, minimum_step=1)

    def _panel(self, left, right, panel, ticks, x_of, step_ticks):
        top, bottom = panel
        for value, text in zip(ticks, tick_labels(ticks)):
            y = self._y(value, panel, ticks)
            self.draw.line([(left, y), (right, y)], fill=GRID)
            self.draw.line([(left - TICK, y), (left, y)], fill=AXIS)
            self._text((left - TICK - 3, y), text, TEXT, "rm")
        for step in step_ticks:
            x = x_of(step)
            self.draw.line([(x, top), (x, bottom)], fill=GRID)
            self.draw.line([(x, bottom), (x, bottom + TICK)], fill=AXIS)
        self.draw.rectangle([left, top, right, bottom], outline=AXIS)

    @staticmethod
    def _y(value, panel, ticks):
        top, bottom = panel
        return bottom - (value - ticks[0]) / (ticks[-1] - ticks[0]) * (bottom - top)

    def _series(self, steps, values, x_of, panel, ticks, colour, width):
        coords = [(x_of(s), self._y(v, panel, ticks)) for s, v in zip(steps, values)]
        if len(coords) == 1:  # the first step: a line of one point would not show
            x, y = coords[0]
            self.draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        else:
            self.draw.line(coords, fill=colour, width=width)

    def _legend(self, right: int, y: int, window: int):
        """Right-aligned under the title: a swatch of each loss line's colour, then what it shows."""
        entries = [(LOSS_COLOUR, 1, "loss of each step"),
                   (AVERAGE_COLOUR, 3, f"moving average ({window} step{'s' if window > 1 else ''})")]
        x = right
        for colour, width, text in reversed(entries):
            label = self._text((x, y), text, TEXT, "ra")
            middle = (label.box[1] + label.box[3]) / 2
            self.draw.line([(label.box[0] - 26, middle), (label.box[0] - 6, middle)], fill=colour, width=width)
            x = label.box[0] - 26 - 3 * GAP


def render_chart(points: list[LossPoint], title: str = "") -> Image.Image:
    return Chart(points, title).render()


def save_chart(points: list[LossPoint], path: str | Path, title: str = "") -> Path:
    from ..files import atomic_write_bytes

    buffer = io.BytesIO()
    render_chart(points, title).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
