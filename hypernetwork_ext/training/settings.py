"""Every training hyperparameter, validated in one place, and saved to / loaded from versioned JSON.

Train_Gamma, the WebUI's own Train tab (through its adapter) and the command line all fill one
``TrainingSettings``; the JSON file it writes is the one format they all read.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from ..errors import ConfigError, HypernetworkFileError
from .optimizers import canonical_optimizer_name
from .schedule import CosineRestarts, StepSchedule

SETTINGS_FORMAT = "hypernetwork-training-settings"
SETTINGS_VERSION = 1
LATENT_SAMPLING = ("once", "deterministic", "random")
CLIP_MODES = ("none", "value", "norm")
LOSSES = ("simple", "vlb", "full")
PRECISIONS = ("auto", "no", "fp16", "bf16")
NAN_POLICIES = ("stop", "skip")
LATENT_CACHES = ("auto", "memory", "disk")


@dataclass(frozen=True)
class PreviewSettings:
    prompt: str = ""  # empty: the first caption of the current batch
    negative_prompt: str = ""
    steps: int = 20
    sampler: str = ""  # empty: the model's default sampler
    cfg_scale: float = 7.0
    seed: int = -1  # -1: a new seed for every preview; any other value keeps previews comparable
    width: int = 512
    height: int = 512


@dataclass(frozen=True)
class CosineSettings:
    enabled: bool = False
    min_rate: float = 6e-7
    cycle_steps: int = 500
    cycle_mult: float = 1.0
    warmup_steps: int = 0
    decay: float = 1.0
    save_at_cycle_end: bool = False
    preview_at_cycle_end: bool = False


@dataclass(frozen=True)
class TrainingSettings:
    data_dir: str = ""
    log_dir: str = "hypernetwork_logs"
    template: str = "[filewords]"  # template text, or the path of a template file
    learn_rate: str = "0.00001"
    max_steps: int = 2000
    batch_size: int = 1
    grad_accum: int = 1
    width: int = 512
    height: int = 512
    no_crop: bool = True  # keep every aspect ratio: long side to the training size, aspect-ratio buckets
    repeats: int = 1
    flip: bool = False
    shuffle_tags: bool = False
    tag_dropout: float = 0.0
    latent_sampling: str = "once"
    latent_cache: str = "auto"  # auto: on disk when the latents would take over a quarter of the memory
    latent_cache_dir: str = ""  # empty: inside the run's log folder
    use_alpha_weight: bool = False
    save_every: int = 500
    preview_every: int = 500
    preview: PreviewSettings = field(default_factory=PreviewSettings)
    clip_mode: str = "none"
    clip_value: str = "0.1"
    clip_norm_type: float = 2.0
    optimizer: str = "AdamW"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 0.01
    loss: str = "simple"
    cosine: CosineSettings = field(default_factory=CosineSettings)
    unload_optimizer_for_preview: bool = True
    unload_models_when_training: bool = False
    seed: int = 0  # training randomness (timesteps, noise, dropout)
    dataset_seed: int = 0  # data order, captions, flips
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = False
    nan_policy: str = "stop"
    tensorboard: bool = False
    csv_every: int = 1

    def __post_init__(self):
        ints = {"max_steps": 1, "batch_size": 1, "grad_accum": 1, "width": 8, "height": 8, "repeats": 1,
                "save_every": 0, "preview_every": 0, "csv_every": 0}
        for name, minimum in ints.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                value = _whole(value, name)
                object.__setattr__(self, name, value)
            if value < minimum:
                raise ConfigError(name, f"{_label(name)} ({value}) must be at least {minimum}")
        for name in ("width", "height"):
            if getattr(self, name) % 8:
                raise ConfigError(name, f"{_label(name)} ({getattr(self, name)}) must be a multiple of 8")
        choices = {"latent_sampling": LATENT_SAMPLING, "latent_cache": LATENT_CACHES, "clip_mode": CLIP_MODES,
                   "loss": LOSSES, "mixed_precision": PRECISIONS, "nan_policy": NAN_POLICIES}
        for name, options in choices.items():
            object.__setattr__(self, name, _choice(getattr(self, name), options, name))
        object.__setattr__(self, "optimizer", canonical_optimizer_name(self.optimizer))
        if not (0 <= float(self.tag_dropout) < 1):
            raise ConfigError("tag_dropout", f"Tag dropout ({self.tag_dropout}) must be at least 0 and below 1")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= float(getattr(self, name)) < 1:
                raise ConfigError(name, f"{_label(name)} ({getattr(self, name)}) must be at least 0 and below 1")
        if not float(self.adam_epsilon) > 0:
            raise ConfigError("adam_epsilon", f"AdamW epsilon ({self.adam_epsilon}) must be positive")
        if not (math.isfinite(float(self.weight_decay)) and float(self.weight_decay) >= 0):
            raise ConfigError("weight_decay", f"Weight decay ({self.weight_decay}) must be 0 or more")
        if not (math.isfinite(float(self.clip_norm_type)) and float(self.clip_norm_type) > 0):
            raise ConfigError("clip_norm_type", f"Norm type ({self.clip_norm_type}) must be positive")
        if isinstance(self.preview, dict):
            object.__setattr__(self, "preview", _nested(PreviewSettings, self.preview, "preview"))
        if isinstance(self.cosine, dict):
            object.__setattr__(self, "cosine", _nested(CosineSettings, self.cosine, "cosine"))
        for section in ("preview", "cosine"):  # numbers must be numbers even in parts that are switched off
            _check_numbers(getattr(self, section), section)
        if self.preview.steps < 1:
            raise ConfigError("preview.steps", f"Preview steps ({self.preview.steps}) must be at least 1")
        if self.preview.width % 8 or self.preview.height % 8 or self.preview.width < 8 or self.preview.height < 8:
            raise ConfigError("preview.width", "Preview width and height must be multiples of 8")
        self.learn_rate_schedule()  # parse now, so a bad schedule is reported before anything starts
        if self.clip_mode != "none":
            self.clip_schedule()

    # -- derived objects ------------------------------------------------------------------------

    def learn_rate_schedule(self):
        """The learning rate for the step after ``n`` completed steps: ``schedule.rate_at(n)``."""
        if self.cosine.enabled:
            max_rate = StepSchedule.parse(self.learn_rate, self.max_steps).first_rate
            c = self.cosine
            return CosineRestarts(max_rate, float(c.min_rate), _whole(c.cycle_steps, "cosine.cycle_steps"),
                                  float(c.cycle_mult), _whole(c.warmup_steps, "cosine.warmup_steps"), float(c.decay))
        return StepSchedule.parse(self.learn_rate, self.max_steps)

    def clip_schedule(self) -> StepSchedule:
        return StepSchedule.parse(self.clip_value, self.max_steps, field="clip_value", label="Gradient clip value")

    # -- JSON -----------------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps({"format": SETTINGS_FORMAT, "version": SETTINGS_VERSION, **asdict(self)},
                          indent=2, ensure_ascii=False)

    def save(self, path: str | os.PathLike) -> Path:
        from ..files import atomic_write_bytes
        atomic_write_bytes(path, self.to_json().encode("utf-8"))
        return Path(path)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainingSettings":
        if not isinstance(data, dict):
            raise ConfigError("settings", "Training settings must be a JSON object")
        data = dict(data)
        if data.pop("format", SETTINGS_FORMAT) != SETTINGS_FORMAT:
            raise ConfigError("settings", "not a training-settings file (its \"format\" is different)")
        version = data.pop("version", SETTINGS_VERSION)
        if not isinstance(version, int) or version > SETTINGS_VERSION:
            raise ConfigError("settings", f"these settings were saved by a newer version (settings version "
                                          f"{version!r}); please update the extension")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError("settings", f"unknown setting{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainingSettings":
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise HypernetworkFileError(path, f"cannot be read ({error})") from error
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise HypernetworkFileError(path, f"not valid JSON (line {error.lineno}: {error.msg})") from error
        try:
            return cls.from_dict(data)
        except ConfigError as error:
            raise HypernetworkFileError(path, str(error)) from error
        except (TypeError, ValueError, AttributeError) as error:  # a value of the wrong kind, e.g. "fast" for a rate
            raise HypernetworkFileError(path, f"a setting has a value of the wrong kind ({error})") from error

    def updated(self, **changes) -> "TrainingSettings":
        return replace(self, **changes)


def coerce_to_kind(value, default, field: str, label: str):
    """A value typed into a form or on the command line, as the kind of the setting's default
    (bool, int, float or text); ``label`` names the input in the message."""
    if isinstance(default, bool):
        return bool(value)
    if isinstance(default, (int, float)):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(field, f"{label}: {value!r} is not a number") from None
        if not math.isfinite(number):
            raise ConfigError(field, f"{label}: {value!r} is not a finite number")
        if isinstance(default, int):
            if number != int(number):
                raise ConfigError(field, f"{label}: {value!r} must be a whole number")
            return int(number)
        return number
    return "" if value is None else str(value)


def _whole(value, name: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(name, f"{_label(name)} must be a whole number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(name, f"{_label(name)} must be a whole number, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise ConfigError(name, f"{_label(name)} must be a whole number, got {value!r}")
    return int(number)


def _check_numbers(section, prefix: str) -> None:
    for item in fields(section):
        default, value = item.default, getattr(section, item.name)
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            continue
        name = f"{prefix}.{item.name}"
        if isinstance(default, int):
            object.__setattr__(section, item.name, _whole(value, name))
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ConfigError(name, f"{_label(name)} must be a number, got {value!r}") from None
            if not math.isfinite(number):
                raise ConfigError(name, f"{_label(name)} must be a finite number, got {value!r}")
            object.__setattr__(section, item.name, number)


def _choice(value, options, name):
    """The option ``value`` names, in its own spelling: a choice is the same in any case (``Norm`` is ``norm``)."""
    canonical = {option.lower(): option for option in options}.get(str(value).strip().lower())
    if canonical is None:
        raise ConfigError(name, f"{_label(name)} must be one of {', '.join(options)}; got {value!r}")
    return canonical


def _nested(cls, data: dict, prefix: str):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(prefix, f"unknown setting{'s' if len(unknown) > 1 else ''}: "
                                  f"{', '.join(prefix + '.' + key for key in unknown)}")
    return cls(**data)


def _label(name: str) -> str:
    return name.replace("_", " ").replace(".", " ").capitalize()
