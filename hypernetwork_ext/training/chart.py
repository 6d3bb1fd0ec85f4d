"""A loss and learning-rate chart as a PNG, drawn with Pillow (no plotting library needed)."""

from __future__ import annotations

import io
import math
from pathlib import Path

from PIL import Image, ImageDraw

from .engine import LossPoint

WIDTH, HEIGHT = 800, 400
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 70, 90, 30, 40
LOSS_COLOUR, AVERAGE_COLOUR, RATE_COLOUR = (170, 190, 230), (30, 70, 180), (220, 110, 30)


def moving_average(values: list[float], window: int) -> list[float]:
    averaged, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        averaged.append(total / min(index + 1, window))
    return averaged


def render_chart(points: list[LossPoint], title: str = "") -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = MARGIN_LEFT, WIDTH - MARGIN_RIGHT, MARGIN_TOP, HEIGHT - MARGIN_BOTTOM
    draw.rectangle([left, top, right, bottom], outline=(120, 120, 120))
    draw.text((left, 8), title or "loss and learning rate", fill=(0, 0, 0))
    if not points:
        draw.text((left + 10, top + 10), "no steps yet", fill=(0, 0, 0))
        return image
    steps = [p.step for p in points]
    losses = [p.loss for p in points]
    rates = [p.learn_rate for p in points]
    first, last = min(steps), max(steps)
    span = max(1, last - first)
    low, high = min(losses), max(losses)
    if math.isclose(low, high):
        low, high = low - 0.5, high + 0.5
    rate_high = max(rates) or 1.0

    def x_of(step):
        return left + (step - first) / span * (right - left)

    def y_of(value, lo, hi):
        return bottom - (value - lo) / (hi - lo) * (bottom - top)

    def line(values, lo, hi, colour, width):
        coords = [(x_of(s), y_of(v, lo, hi)) for s, v in zip(steps, values)]
        if len(coords) == 1:  # the first step: a line of one point would not show
            x, y = coords[0]
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        else:
            draw.line(coords, fill=colour, width=width)

    line(losses, low, high, LOSS_COLOUR, 1)
    line(moving_average(losses, max(1, len(losses) // 20)), low, high, AVERAGE_COLOUR, 2)
    line(rates, 0.0, rate_high * 1.05, RATE_COLOUR, 2)
    for fraction in (0, 0.5, 1):
        value = low + (high - low) * fraction
        draw.text((4, y_of(value, low, high) - 6), f"{value:.4f}", fill=AVERAGE_COLOUR)
        rate = rate_high * 1.05 * fraction
        draw.text((right + 6, y_of(rate, 0, rate_high * 1.05) - 6), f"{rate:.2e}", fill=RATE_COLOUR)
    draw.text((left, bottom + 8), f"step {first}", fill=(0, 0, 0))
    draw.text((right - 60, bottom + 8), f"step {last}", fill=(0, 0, 0))
    draw.text((left + 150, bottom + 8), "loss (moving average)", fill=AVERAGE_COLOUR)
    draw.text((left + 330, bottom + 8), "learning rate", fill=RATE_COLOUR)
    return image


def save_chart(points: list[LossPoint], path: str | Path, title: str = "") -> Path:
    from ..files import atomic_write_bytes

    buffer = io.BytesIO()
    render_chart(points, title).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
