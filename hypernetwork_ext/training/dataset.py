"""The training images: read every file we can, report every one we cannot, bucket by aspect ratio,
encode latents once, and serve micro-batches as a pure function of (seed, step).

Memory stays proportional to the latents, not the pixels: the first pass checks and measures every
image and keeps only its size, caption and alpha weight; the encoding pass reads each image again,
resized straight to its bucket's size, and keeps only its latent.

Making every random choice (data order, template line, tag shuffle and dropout, flips, latent
samples) a function of the dataset seed and the step means a resumed run sees exactly the data an
uninterrupted one would, and nothing outside (a preview, another extension) can shift it.
"""

from __future__ import annotations

import math
import random
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import ConfigError

CAPTION_ENCODINGS = ("cp1252", "latin-1")  # after UTF-8 and, with a byte-order mark, UTF-16
_LEADING_NUMBER = re.compile(r"^[-\d]+\s*")


@dataclass
class Problem:
    path: str
    reason: str


@dataclass
class DatasetReport:
    used: list[str] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)  # files that are not used, and why
    notes: list[Problem] = field(default_factory=list)  # files used after a conversion worth knowing

    def summary(self) -> str:
        lines = [f"{len(self.used)} images used, {len(self.skipped)} files skipped"]
        lines += [f"skipped {Path(p.path).name}: {p.reason}" for p in self.skipped]
        lines += [f"note {Path(p.path).name}: {p.reason}" for p in self.notes]
        return "\n".join(lines)


@dataclass
class Example:
    path: str
    caption: str  # the tags from the .txt beside the image or from the file name
    size: tuple[int, int]  # (width, height) after resizing, multiples of 8
    weight: torch.Tensor | None  # (H/8, W/8) loss weight from the alpha channel, mean 1
    latent_mean: torch.Tensor | None = None
    latent_std: torch.Tensor | None = None
    flipped_mean: torch.Tensor | None = None
    flipped_std: torch.Tensor | None = None


# --------------------------------------------------------------------------------------------
# Reading one image
# --------------------------------------------------------------------------------------------

def read_image(path: Path, want_alpha: bool) -> tuple[Image.Image, np.ndarray | None, list[str]]:
    """RGB image, alpha (float 0..1) or None, and notes. Raises ValueError with a reason."""
    notes = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                image.load()
                frames = getattr(image, "n_frames", 1)
                if frames > 1:
                    notes.append(f"animated ({frames} frames); the first frame is used")
                    image.seek(0)
                image = image.copy()
        except (UnidentifiedImageError, Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
            raise ValueError("not an image PIL can read" if isinstance(error, UnidentifiedImageError)
                             else "image too large (decompression bomb guard)") from error
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise ValueError(f"the image is truncated or damaged ({error})") from error
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
        notes.append("16-bit image converted to 8 bits")
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(array * (255.0 if array.max() <= 1 else 1.0), 0, 255).astype(np.uint8), "L")
    if image.mode == "CMYK":
        notes.append("CMYK converted to RGB")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    alpha = None
    if want_alpha and (image.mode in ("RGBA", "LA", "PA") or (image.mode == "RGB" and "transparency" in image.info)):
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba, dtype=np.float32)[..., 3] / 255.0
    return image.convert("RGB"), alpha, notes


def read_caption(image_path: Path) -> tuple[str, str | None]:
    """Caption from ``<stem>.txt`` (any common encoding) or from the file name; and a note if any."""
    text_path = image_path.with_suffix(".txt")
    if text_path.is_file():
        raw = text_path.read_bytes()
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            return raw.decode("utf-16").strip(), "caption read as utf-16, not UTF-8"
        try:
            return raw.decode("utf-8-sig").strip(), None
        except UnicodeDecodeError:
            for encoding in CAPTION_ENCODINGS:
                try:
                    return raw.decode(encoding).strip(), f"caption read as {encoding}, not UTF-8"
                except UnicodeDecodeError:
                    continue
    return _LEADING_NUMBER.sub("", image_path.stem).strip(), None


def target_size(width: int, height: int, settings_width: int, settings_height: int, no_crop: bool) -> tuple[int, int]:
    """No-crop: the long side becomes the training size, the other keeps the aspect ratio; both
    rounded to multiples of 8. Otherwise: the training size itself."""
    if not no_crop:
        return settings_width, settings_height
    long_side = max(settings_width, settings_height)
    scale = long_side / max(width, height)
    return (max(8, int(round(width * scale / 8)) * 8), max(8, int(round(height * scale / 8)) * 8))


def alpha_weight(alpha: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Alpha resized to latent size (area average), scaled to mean 1: transparent pixels count less."""
    latent = (size[0] // 8, size[1] // 8)
    small = Image.fromarray((alpha * 255).astype(np.uint8), "L").resize(latent, Image.BOX)
    weight = torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0)
    weight = weight - weight.min() if weight.max() > weight.min() else torch.ones_like(weight)
    return weight / weight.mean()


def load_pixels(example: "Example") -> torch.Tensor:
    """The image of ``example`` read again and resized to its bucket's size: (3, H, W) in [-1, 1]."""
    try:
        image, _, _ = read_image(Path(example.path), want_alpha=False)
    except (ValueError, OSError) as error:
        raise ConfigError("data_dir", f"{example.path} changed or vanished while the dataset was prepared ({error})") from None
    return _to_pixels(image, example.size)


def _to_pixels(image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    resized = image.resize(size, Image.BICUBIC) if image.size != size else image
    array = np.asarray(resized, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


# --------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------

@dataclass
class MicroBatch:
    latents: torch.Tensor  # (B, C, h, w)
    captions: list[str]  # after the template, shuffle and dropout
    weights: torch.Tensor | None  # (B, 1, h, w) or None
    paths: list[str]


@dataclass(eq=False)
class TrainingDataset:
    """Images of a folder, bucketed by size, with latents encoded once."""

    examples: list[Example]
    report: DatasetReport
    batch_size: int
    grad_accum: int
    templates: list[str]
    name: str
    seed: int
    shuffle_tags: bool
    tag_dropout: float
    flip: bool
    latent_sampling: str
    repeats: int = 1

    def __post_init__(self):
        self.buckets = _buckets(self.examples, self.batch_size)
        self._epoch_cache: tuple[int, list[list[int]]] | None = None

    # -- accounting (B3) --------------------------------------------------------------------------

    @property
    def batches_per_epoch(self) -> int:
        return sum(math.ceil(len(indices) * self.repeats / self.batch_size) for indices in self.buckets.values())

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch: batches // accumulation, rounded down (at least 1)."""
        return max(1, self.batches_per_epoch // self.grad_accum)

    @property
    def captions_vary(self) -> bool:
        return self.shuffle_tags or self.tag_dropout > 0 or len(self.templates) > 1

    # -- serving ----------------------------------------------------------------------------------

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """Every batch of one epoch, in order: a pure function of (seed, epoch)."""
        if self._epoch_cache is not None and self._epoch_cache[0] == epoch:
            return self._epoch_cache[1]
        rng = random.Random(f"{self.seed}/order/{epoch}")
        batches = []
        for size in sorted(self.buckets):
            indices = list(self.buckets[size]) * self.repeats
            rng.shuffle(indices)
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start:start + self.batch_size]
                if len(batch) < self.batch_size:  # complete it from the same bucket, so every image is used
                    others = [i for i in self.buckets[size] if i not in batch]
                    batch += rng.sample(others, self.batch_size - len(batch))
                batches.append(batch)
        rng.shuffle(batches)
        self._epoch_cache = (epoch, batches)
        return batches

    def micro_batches(self, step: int) -> list[list[int]]:
        """The ``grad_accum`` batches of optimizer step ``step`` (0-based)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        batches = self.epoch_batches(epoch)
        return batches[position * self.grad_accum:(position + 1) * self.grad_accum]

    def caption_for(self, index: int, rng: random.Random) -> str:
        tags = [t.strip() for t in self.examples[index].caption.split(",") if t.strip()]
        if self.tag_dropout > 0:
            tags = [t for t in tags if rng.random() >= self.tag_dropout]
        if self.shuffle_tags:
            rng.shuffle(tags)
        line = self.templates[rng.randrange(len(self.templates))] if len(self.templates) > 1 else self.templates[0]
        return line.replace("[filewords]", ", ".join(tags)).replace("[name]", self.name)

    def materialize(self, indices: list[int], step: int, micro: int) -> MicroBatch:
        rng = random.Random(f"{self.seed}/sample/{step}/{micro}")
        generator = torch.Generator().manual_seed(rng.getrandbits(63))
        latents, captions, weights = [], [], []
        for index in indices:
            example = self.examples[index]
            flipped = self.flip and rng.random() < 0.5
            mean = example.flipped_mean if flipped else example.latent_mean
            std = example.flipped_std if flipped else example.latent_std
            if self.latent_sampling == "random":
                latents.append(mean + std * torch.randn(mean.shape, generator=generator))
            else:
                latents.append(mean)
            captions.append(self.caption_for(index, rng))
            if example.weight is not None:
                weights.append(example.weight.flip(-1) if flipped else example.weight)
        weight = torch.stack(weights).unsqueeze(1) if weights and len(weights) == len(indices) else None
        return MicroBatch(torch.stack(latents), captions, weight, [self.examples[i].path for i in indices])


def _buckets(examples: list[Example], batch_size: int) -> dict[tuple[int, int], list[int]]:
    """Group by size; a bucket too small for one batch joins the nearest aspect ratio (its images
    are then resized to that bucket's size, a small stretch instead of a crop)."""
    buckets: dict[tuple[int, int], list[int]] = {}
    for index, example in enumerate(examples):
        buckets.setdefault(example.size, []).append(index)
    while len(buckets) > 1:
        small = [size for size, members in buckets.items() if len(members) < batch_size]
        if not small:
            break
        size = min(small, key=lambda s: len(buckets[s]))
        aspect = math.log(size[0] / size[1])
        target = min((s for s in buckets if s != size), key=lambda s: abs(math.log(s[0] / s[1]) - aspect))
        for index in buckets.pop(size):
            _resize_example(examples[index], target)
            buckets[target].append(index)
    return buckets


def _resize_example(example: Example, size: tuple[int, int]) -> None:
    if example.size == size:
        return
    if example.weight is not None:
        weight = torch.nn.functional.interpolate(example.weight[None, None], size=(size[1] // 8, size[0] // 8),
                                                 mode="area")[0, 0]
        example.weight = weight / weight.mean()
    example.size = size


# --------------------------------------------------------------------------------------------
# Building it
# --------------------------------------------------------------------------------------------

def read_template(template: str) -> list[str]:
    """A template is text with one prompt per line, or the path of such a file."""
    text = template
    if "\n" not in template and "[" not in template and Path(template).suffix.lower() == ".txt":
        path = Path(template)
        if not path.is_file():
            raise ConfigError("template", f"Prompt template file {template!r} does not exist")
        text = path.read_text(encoding="utf-8", errors="replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ConfigError("template", "The prompt template is empty; use [filewords] for the captions")
    return lines


def scan_folder(data_dir: str | Path, *, width: int, height: int, no_crop: bool, use_alpha: bool,
                progress: Callable[[int, int], None] | None = None) -> tuple[list[Example], DatasetReport]:
    folder = Path(data_dir) if data_dir else None
    if folder is None or not str(data_dir).strip():
        raise ConfigError("data_dir", "Dataset directory is empty; choose the folder with your training images")
    if not folder.is_dir():
        raise ConfigError("data_dir", f"Dataset directory {str(data_dir)!r} does not exist or is not a folder")
    try:
        entries = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError as error:
        raise ConfigError("data_dir", f"Dataset directory {str(data_dir)!r} cannot be read ({error.strerror})") from None
    report = DatasetReport()
    examples: list[Example] = []
    image_stems = set()
    candidates = [p for p in entries if p.suffix.lower() != ".txt"]
    for position, path in enumerate(candidates):
        if progress:
            progress(position, len(candidates))
        try:
            image, alpha, notes = read_image(path, use_alpha)
        except ValueError as error:
            report.skipped.append(Problem(str(path), str(error)))
            continue
        except OSError as error:
            report.skipped.append(Problem(str(path), f"cannot be read ({error.strerror or error})"))
            continue
        size = target_size(*image.size, width, height, no_crop)
        caption, caption_note = read_caption(path)
        weight = alpha_weight(alpha, size) if alpha is not None else None
        if use_alpha and alpha is not None and float(alpha.max()) == 0.0:
            report.skipped.append(Problem(str(path), "fully transparent: nothing to learn with alpha as loss weight"))
            continue
        examples.append(Example(str(path), caption, size, weight))
        image_stems.add(path.stem)
        report.used.append(str(path))
        for note in notes + ([caption_note] if caption_note else []):
            report.notes.append(Problem(str(path), note))
    known_stems = image_stems | {Path(problem.path).stem for problem in report.skipped}
    for path in entries:  # captions are used with their image; a caption for nothing is worth a word
        if path.suffix.lower() == ".txt" and path.stem not in known_stems:
            report.skipped.append(Problem(str(path), "a text file with no image of the same name"))
    if not examples:
        raise ConfigError("data_dir", f"No usable images in {str(data_dir)!r}: " + (
            "; ".join(f"{Path(p.path).name}: {p.reason}" for p in report.skipped[:5]) or "the folder is empty"))
    if use_alpha:
        for example in examples:
            if example.weight is None:
                example.weight = torch.ones(example.size[1] // 8, example.size[0] // 8)
    return examples, report


def encode_latents(examples: list[Example], encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                   *, flip: bool, latent_sampling: str, seed: int, batch_size: int = 4) -> None:
    """Encode every image once (and its mirror image when flipping), keeping mean and std on the CPU.
    "once" draws its one sample here; "deterministic" uses the mean; "random" samples at every use."""
    generator = torch.Generator().manual_seed(seed)
    by_size: dict[tuple[int, int], list[Example]] = {}
    for example in examples:
        by_size.setdefault(example.size, []).append(example)
    for size in sorted(by_size):
        group = by_size[size]
        for start in range(0, len(group), batch_size):
            chunk = group[start:start + batch_size]
            pixels = torch.stack([load_pixels(e) for e in chunk])
            variants = [(pixels, False)] + ([(pixels.flip(-1), True)] if flip else [])
            for batch, flipped in variants:
                mean, std = encode(batch)
                for example, m, s in zip(chunk, mean.float().cpu(), std.float().cpu()):
                    if latent_sampling == "once":
                        m = m + s * torch.randn(m.shape, generator=generator)
                        s = torch.zeros_like(s)
                    elif latent_sampling == "deterministic":
                        s = torch.zeros_like(s)
                    if flipped:
                        example.flipped_mean, example.flipped_std = m, s
                    else:
                        example.latent_mean, example.latent_std = m, s
