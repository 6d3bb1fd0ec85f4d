"""The training images: read every file we can, report every one we cannot, bucket by aspect ratio,
encode latents once, and serve micro-batches as a pure function of (seed, step).

Memory stays proportional to the latents, not the pixels: the first pass checks and measures every
image and keeps only its size, caption and alpha weight; the encoding pass reads each image again,
resized straight to its bucket's size, and keeps only its latent: in memory, or, for datasets whose
latents would not fit there, in one file per bucket size, so that memory stays flat however many
images there are.

Making every random choice (data order, template line, tag shuffle and dropout, flips, latent
samples) a function of the dataset seed and the step means a resumed run sees exactly the data an
uninterrupted one would, and nothing outside (a preview, another extension) can shift it.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
import tempfile
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ConfigError

# tried in this order after UTF-16 (with a byte-order mark) and UTF-8: cp1252 decodes almost any bytes, so it
# comes after Shift-JIS, which is taken only when its reading looks like Japanese (see _looks_japanese)
CAPTION_ENCODINGS = (("cp932", "Shift-JIS (cp932)"), ("cp1252", "cp1252"), ("latin-1", "latin-1"))
MAX_BUCKET_CROP = 0.05  # an image joins a bucket of another size only if that crops at most this share of a side
LATENT_CACHE_SUFFIX = ".latents"
LATENT_CHANNELS = 4  # of every Stable Diffusion 1.x/2.x VAE; only the "auto" estimate assumes it
MEMORY_SHARE_FOR_LATENTS = 0.25  # "auto": latents that would take more of the machine's memory go to disk
ASSUMED_MEMORY_BYTES = 8 * 2 ** 30  # where the platform cannot say how much memory there is
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
    changes: list[str] = field(default_factory=list)  # settings the dataset did not allow, and what was used

    def summary(self) -> str:
        lines = [f"{len(self.used)} images used, {len(self.skipped)} files skipped"]
        lines += [f"note: {change}" for change in self.changes]
        lines += [f"skipped {Path(p.path).name}: {p.reason}" for p in self.skipped]
        lines += [f"note {Path(p.path).name}: {p.reason}" for p in self.notes]
        return "\n".join(lines)


@dataclass
class Example:
    path: str
    caption: str  # the tags from the .txt beside the image or from the file name
    size: tuple[int, int]  # (width, height) after resizing, multiples of 8
    weight: torch.Tensor | None  # (H/8, W/8) loss weight from the alpha channel, mean 1
    aspect: float  # the image's own width / height
    crop_to_size: bool = False  # joined a bucket of a nearby shape: scaled to cover its size, the overflow cut
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
            return raw.decode("utf-16").strip(), "caption read as UTF-16 (it has a byte-order mark), not UTF-8"
        try:
            return raw.decode("utf-8-sig").strip(), None
        except UnicodeDecodeError:
            pass
        for encoding, label in CAPTION_ENCODINGS:
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError:
                continue
            if encoding != "cp932" or _looks_japanese(text):
                return text.strip(), (f"caption is not UTF-8; read as {label} (if its words look wrong, save "
                                      f"{text_path.name} as UTF-8)")
    return _LEADING_NUMBER.sub("", image_path.stem).strip(), None


_KANA = re.compile(r"[\u3040-\u30ff]")  # full-width hiragana and katakana
_KANJI = re.compile(r"[\u4e00-\u9fff]")
_KANJI_BESIDE_LATIN = re.compile(r"[A-Za-z][\u4e00-\u9fff]|[\u4e00-\u9fff][A-Za-z]")
_PRIVATE_USE = re.compile(r"[\ue000-\uf8ff]")


def _looks_japanese(text: str) -> bool:
    """Whether a Shift-JIS reading is believable. Western cp1252 bytes often decode as Shift-JIS too: an
    accented letter or curly quote and the byte after it become one kanji glued to Latin letters
    ("garçon" -> "gar輟n", "it’s" -> "it痴"), capitals like É become half-width katakana, ñ and ö
    private-use characters. So: no private-use characters, and either full-width kana, or kanji that
    touch no Latin letter. (Half-width katakana alone, or kanji glued to Latin letters without any kana,
    are read as cp1252; the note then asks for UTF-8.)"""
    if _PRIVATE_USE.search(text) or not (_KANA.search(text) or _KANJI.search(text)):
        return False
    return bool(_KANA.search(text)) or not _KANJI_BESIDE_LATIN.search(text)


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
    box = crop_box(image.size, example.size) if example.crop_to_size else None
    resized = image.resize(example.size, Image.BICUBIC, box=box) if image.size != example.size or box else image
    array = np.asarray(resized, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def crop_box(source: tuple[int, int], size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The centred part (left, top, right, bottom) of a ``source`` (width, height) with the shape of ``size``."""
    width, height = source
    aspect = size[0] / size[1]
    if width / height > aspect:
        kept = height * aspect
        return ((width - kept) / 2, 0.0, (width + kept) / 2, float(height))
    kept = width / aspect
    return (0.0, (height - kept) / 2, float(width), (height + kept) / 2)


def crop_share(aspect: float, size: tuple[int, int]) -> float:
    """How much of one side an image of ``aspect`` loses when it is scaled to cover ``size``."""
    ratio = (size[0] / size[1]) / aspect
    return 1.0 - min(ratio, 1.0 / ratio)


# --------------------------------------------------------------------------------------------
# Where the latents live
# --------------------------------------------------------------------------------------------

Latents = list[tuple[torch.Tensor, torch.Tensor]]  # (mean, std) of an image, then of its mirror image


class MemoryLatentCache:
    """The latents kept on the examples themselves."""

    where = "in memory"

    def __init__(self, examples: list[Example]):
        self.examples = examples

    def put(self, index: int, latents: Latents) -> None:
        example = self.examples[index]
        example.latent_mean, example.latent_std = latents[0]
        if len(latents) > 1:
            example.flipped_mean, example.flipped_std = latents[1]

    def get(self, index: int, flipped: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        example = self.examples[index]
        return (example.flipped_mean, example.flipped_std) if flipped else (example.latent_mean, example.latent_std)

    def close(self) -> None:
        pass


@dataclass
class _RowFile:
    path: str
    handle: BinaryIO
    latent_shape: torch.Size  # (C, h, w)
    latents_per_row: int
    rows: int = 0

    @property
    def latent_bytes(self) -> int:
        return math.prod(self.latent_shape) * 4  # float32


class DiskLatentCache:
    """One file per bucket size, one fixed-size row of float32 latents per image, written once while
    the dataset is prepared and read back a row at a time by position (not memory-mapped, whose
    pages would count as this process's memory as training touches them).

    The files are rebuilt every run, never reused, so they can never be stale; each has a name of
    its own and stays open, so another run sharing the folder can neither reuse nor overwrite it.
    ``close`` (also run when the cache is garbage-collected or the process exits) removes them; a run
    that was killed leaves files that the next run in the same folder removes."""

    def __init__(self, examples: list[Example], folder: str | os.PathLike, *, keep_std: bool):
        self.examples = examples
        self.folder = Path(folder)
        self.keep_std = keep_std  # only "random" sampling uses the std; the others would store zeros
        self.where = f"on disk in {self.folder}"
        self._files: dict[tuple[int, int], _RowFile] = {}
        self._rows: dict[int, int] = {}  # example index -> row in its size's file
        created = _prepare_cache_folder(self.folder)
        self.close = weakref.finalize(self, _remove_row_files, self._files, self.folder if created else None)

    def put(self, index: int, latents: Latents) -> None:
        row = torch.stack([t for mean, std in latents for t in ((mean, std) if self.keep_std else (mean,))])
        try:
            file = self._file_for(self.examples[index].size, row)
            file.handle.seek(0, os.SEEK_END)
            file.handle.write(row.numpy().tobytes())
            file.handle.flush()  # a full disk is reported here, for this row
        except OSError as error:
            raise ConfigError("latent_cache_dir", f"The latent cache cannot be written in {self.folder} "
                                                  f"({error.strerror or error}); free some space, choose another "
                                                  f"latent cache folder, or keep the latents in memory") from None
        self._rows[index] = file.rows
        file.rows += 1

    def get(self, index: int, flipped: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        file = self._files[self.examples[index].size]
        per_image = 2 if self.keep_std else 1
        latents = torch.empty((per_image, *file.latent_shape))
        file.handle.seek((self._rows[index] * file.latents_per_row + (per_image if flipped else 0)) * file.latent_bytes)
        if file.handle.readinto(latents.numpy()) != per_image * file.latent_bytes:
            raise ConfigError("latent_cache_dir", f"The latent cache file {file.path} was cut short while training")
        return latents[0], (latents[1] if self.keep_std else None)

    def _file_for(self, size: tuple[int, int], row: torch.Tensor) -> _RowFile:
        if size not in self._files:
            fd, path = tempfile.mkstemp(prefix=f"{size[0]}x{size[1]}-", suffix=LATENT_CACHE_SUFFIX, dir=self.folder)
            self._files[size] = _RowFile(path, os.fdopen(fd, "w+b"), row.shape[1:], row.shape[0])
        return self._files[size]


def _prepare_cache_folder(folder: Path) -> bool:
    """Make the folder and remove the files an earlier run left there. True if the folder is new."""
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError("latent_cache_dir", f"The latent cache folder {str(folder)!r} cannot be made "
                                              f"({error.strerror or error})") from None
    for leftover in folder.glob(f"*{LATENT_CACHE_SUFFIX}"):
        with contextlib.suppress(OSError):  # still open in a running process (Windows): that process removes it
            leftover.unlink()
    return created


def _remove_row_files(files: dict[tuple[int, int], _RowFile], folder: Path | None) -> None:
    for file in files.values():
        file.handle.close()
        with contextlib.suppress(OSError):
            os.unlink(file.path)
    if folder is not None:
        with contextlib.suppress(OSError):  # still holds another run's files
            folder.rmdir()


def open_latent_cache(mode: str, examples: list[Example], *, flip: bool, latent_sampling: str,
                      folder: str | os.PathLike) -> MemoryLatentCache | DiskLatentCache:
    """``mode`` is the latent cache setting: memory, disk, or auto (disk when the latents would take
    more than a quarter of the machine's memory)."""
    if mode == "auto":
        too_big = estimated_latent_bytes(examples, flip) > MEMORY_SHARE_FOR_LATENTS * physical_memory_bytes()
        mode = "disk" if too_big else "memory"
    if mode == "disk":
        return DiskLatentCache(examples, folder, keep_std=latent_sampling == "random")
    return MemoryLatentCache(examples)


def estimated_latent_bytes(examples: list[Example], flip: bool) -> int:
    """What the latents take in memory: a mean and a std for every image and mirror image."""
    per_image = (2 if flip else 1) * 2 * LATENT_CHANNELS * 4
    return sum(per_image * (e.size[0] // 8) * (e.size[1] // 8) for e in examples)


def physical_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no os.sysconf (Windows) or no such name
        return ASSUMED_MEMORY_BYTES


# --------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------

@dataclass
class SizeGroup:
    """The images of a batch that share one latent size: they go through the model together."""

    positions: list[int]  # where they are in the batch
    latents: torch.Tensor  # (n, C, h, w)
    weights: torch.Tensor | None  # (n, 1, h, w) or None


@dataclass
class MicroBatch:
    captions: list[str]  # after the template, shuffle and dropout
    paths: list[str]
    groups: list[SizeGroup]  # one, except in a batch made of what the buckets had left over


@dataclass(frozen=True)
class Batching:
    """Batch size and gradient accumulation that fit the dataset, and what was changed to make them fit."""

    batch_size: int  # per process
    grad_accum: int
    changes: list[str]


def fit_batching(samples: int, batch_size: int, grad_accum: int, processes: int = 1) -> Batching:
    """An epoch holds ``samples`` images (images x repeats) and at least one step: a larger batch size, or
    more accumulation than an epoch has batches, is brought down to what the epoch holds."""
    changes = []
    per_process = " per process" if processes > 1 else ""
    if samples < processes:
        raise ConfigError("batch_size", f"{samples} images cannot be shared among {processes} processes; "
                                        f"add images, raise repeats or use fewer processes")
    if batch_size * processes > samples:
        fitted = samples // processes
        changes.append(f"Batch size {batch_size}{per_process} is more than the {samples} images of an epoch; "
                       f"training with batch size {fitted}{per_process}")
        batch_size = fitted
    batches = samples // (batch_size * processes)
    if grad_accum > batches:
        changes.append(f"Gradient accumulation {grad_accum} is more than the {counted(batches, 'batch')} of an "
                       f"epoch; training with {batches}, so that a step holds one epoch")
        grad_accum = batches
    return Batching(batch_size, grad_accum, changes)


def counted(number: int, noun: str) -> str:
    """The count with its noun: 1 batch, 4 batches, 2 steps."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}es" if noun.endswith("ch") else f"{number} {noun}s"


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
    latent_cache: MemoryLatentCache | DiskLatentCache | None = None  # None: in memory

    def __post_init__(self):
        fitted = fit_batching(len(self.examples) * self.repeats, self.batch_size, self.grad_accum)
        if fitted.changes:
            raise ValueError(f"{fitted.changes[0]}: fit the batching first (fit_batching)")
        self.buckets = _buckets(self.examples, self.batch_size, self.report)
        self.latent_cache = self.latent_cache or MemoryLatentCache(self.examples)
        self._epoch_cache: tuple[int, list[list[int]]] | None = None

    # -- accounting (B3) --------------------------------------------------------------------------

    @property
    def batches_per_epoch(self) -> int:
        """Every image once (``repeats`` times), rounded down to whole batches."""
        return len(self.examples) * self.repeats // self.batch_size

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch: batches // accumulation, rounded down."""
        return self.batches_per_epoch // self.grad_accum

    @property
    def captions_vary(self) -> bool:
        return self.shuffle_tags or self.tag_dropout > 0 or len(self.templates) > 1

    # -- serving ----------------------------------------------------------------------------------

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """Every batch of one epoch, in order: a pure function of (seed, epoch). Each image comes once
        (``repeats`` times); when they do not fill the last batch, a random few wait for the next epoch.
        A batch holds one bucket's images; what the buckets have left over shares batches, each image at
        its own size (the engine runs each size of a batch through the model on its own)."""
        if self._epoch_cache is not None and self._epoch_cache[0] == epoch:
            return self._epoch_cache[1]
        rng = random.Random(f"{self.seed}/order/{epoch}")
        samples = [index for size in sorted(self.buckets) for index in self.buckets[size]] * self.repeats
        rng.shuffle(samples)
        samples = samples[:self.batches_per_epoch * self.batch_size]
        batches, leftovers = [], []
        for size in sorted(self.buckets):
            mine = [index for index in samples if self.examples[index].size == size]
            whole = len(mine) - len(mine) % self.batch_size
            batches += [mine[start:start + self.batch_size] for start in range(0, whole, self.batch_size)]
            leftovers += mine[whole:]  # in size order, so that a batch of them has few sizes
        batches += [leftovers[start:start + self.batch_size] for start in range(0, len(leftovers), self.batch_size)]
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
            mean, std = self.latent_cache.get(index, flipped)
            if self.latent_sampling == "random":
                latents.append(mean + std * torch.randn(mean.shape, generator=generator))
            else:
                latents.append(mean)
            captions.append(self.caption_for(index, rng))
            if example.weight is not None:
                weights.append(example.weight.flip(-1) if flipped else example.weight)
        by_size: dict[tuple[int, int], list[int]] = {}
        for position, index in enumerate(indices):
            by_size.setdefault(self.examples[index].size, []).append(position)
        groups = [SizeGroup(positions, torch.stack([latents[p] for p in positions]),
                            torch.stack([weights[p] for p in positions]).unsqueeze(1)
                            if len(weights) == len(indices) else None)
                  for positions in by_size.values()]
        return MicroBatch(captions, [self.examples[i].path for i in indices], groups)


def _buckets(examples: list[Example], batch_size: int, report: DatasetReport) -> dict[tuple[int, int], list[int]]:
    """Group by size. A bucket too small for one batch joins the bucket nearest in shape when that
    crops each of its images by at most MAX_BUCKET_CROP of a side (never a stretch), so that fewer
    batches need the model run once per size; the report notes every such crop."""
    buckets: dict[tuple[int, int], list[int]] = {}
    for index, example in enumerate(examples):
        buckets.setdefault(example.size, []).append(index)
    alone: set[tuple[int, int]] = set()  # small buckets with no other bucket near enough in shape
    while True:
        small = [size for size, members in buckets.items() if len(members) < batch_size and size not in alone]
        if not small:
            return buckets
        size = min(small, key=lambda s: (len(buckets[s]), s))
        near = [other for other in buckets if other != size and
                all(crop_share(examples[index].aspect, other) <= MAX_BUCKET_CROP for index in buckets[size])]
        if not near:
            alone.add(size)
            continue
        aspect = math.log(size[0] / size[1])
        target = min(near, key=lambda s: (abs(math.log(s[0] / s[1]) - aspect), s))
        for index in buckets.pop(size):
            _join_bucket(examples[index], target, report)
            buckets[target].append(index)


def _join_bucket(example: Example, size: tuple[int, int], report: DatasetReport) -> None:
    """Train ``example`` at ``size``: scaled to cover it, centred, the overflow cut."""
    if example.weight is not None:
        height, width = example.weight.shape
        left, top, right, bottom = (round(edge) for edge in crop_box((width, height), size))
        weight = torch.nn.functional.interpolate(example.weight[top:bottom, left:right][None, None],
                                                 size=(size[1] // 8, size[0] // 8), mode="area")[0, 0]
        example.weight = weight / weight.mean()
    side = "width" if example.aspect > size[0] / size[1] else "height"
    report.notes.append(Problem(example.path, f"trained at {size[0]}x{size[1]} with images of a similar shape: "
                                              f"{crop_share(example.aspect, size):.0%} of its {side} cropped"))
    example.size, example.crop_to_size = size, True


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
        try:
            caption, caption_note = read_caption(path)
        except OSError as error:
            report.skipped.append(Problem(str(path), f"its caption {path.with_suffix('.txt').name} cannot be read "
                                                     f"({error.strerror or error})"))
            continue
        weight = alpha_weight(alpha, size) if alpha is not None else None
        if use_alpha and alpha is not None and float(alpha.max()) == 0.0:
            report.skipped.append(Problem(str(path), "fully transparent: nothing to learn with alpha as loss weight"))
            continue
        examples.append(Example(str(path), caption, size, weight, image.width / image.height))
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
                   *, flip: bool, latent_sampling: str, seed: int, batch_size: int = 4,
                   cache: MemoryLatentCache | DiskLatentCache | None = None) -> None:
    """Encode every image once (and its mirror image when flipping) into ``cache`` (default: in
    memory), on the CPU. "once" draws its one sample here; "deterministic" uses the mean; "random"
    samples at every use."""
    cache = cache or MemoryLatentCache(examples)
    generator = torch.Generator().manual_seed(seed)
    by_size: dict[tuple[int, int], list[int]] = {}
    for index, example in enumerate(examples):
        by_size.setdefault(example.size, []).append(index)
    for size in sorted(by_size):
        group = by_size[size]
        for start in range(0, len(group), batch_size):
            chunk = group[start:start + batch_size]
            pixels = torch.stack([load_pixels(examples[index]) for index in chunk])
            variants = [pixels] + ([pixels.flip(-1)] if flip else [])
            encoded = [_sampled(*encode(batch), latent_sampling, generator) for batch in variants]
            for position, index in enumerate(chunk):
                cache.put(index, [per_variant[position] for per_variant in encoded])


def _sampled(mean: torch.Tensor, std: torch.Tensor, latent_sampling: str,
             generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(mean, std) per image of an encoded batch, after the sampling that happens once."""
    pairs = []
    for m, s in zip(mean.float().cpu(), std.float().cpu()):
        if latent_sampling == "once":
            m = m + s * torch.randn(m.shape, generator=generator)
            s = torch.zeros_like(s)
        elif latent_sampling == "deterministic":
            s = torch.zeros_like(s)
        pairs.append((m, s))
    return pairs
