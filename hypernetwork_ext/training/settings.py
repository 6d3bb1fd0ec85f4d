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
from .schedule import CosineRestarts, StepSchedule, TimestepRange

SETTINGS_FORMAT = "hypernetwork-training-settings"
SETTINGS_VERSION = 1
LATENT_SAMPLING = ("once", "deterministic", "random")
CLIP_MODES = ("none", "value", "norm")
LOSSES = ("simple", "vlb", "full")
PRECISIONS = ("auto", "no", "fp16", "bf16")
NAN_POLICIES = ("stop", "skip")
LATENT_CACHES = ("auto", "memory", "disk")
CURRICULA = ("off", "linear", "restart")


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
class TimestepSettings:
    """Which diffusion timesteps training draws: a noise curriculum (the old extension's "noise training
    scheduler"). Small timesteps add little noise (fine detail), large ones much (composition)."""

    curriculum: str = "off"  # off: always min..max; linear: from start_min..start_max to min..max; restart: ramps
    min: int = 0
    max: int = 999  # Stable Diffusion models have 1000 timesteps, 0 to 999
    start_min: int = 0
    start_max: int = 0  # as the old extension's ramp, which started at timestep 0
    ramp_steps: int = 500


@dataclass(frozen=True)
class TrainingSettings:
    data_dir: str = ""
    log_dir: str = "hypernetwork_logs"
    template: str = "[filewords]"  # template text, or the path of a template file
    learn_rate: str = "0.00004"
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
    timesteps: TimestepSettings = field(default_factory=TimestepSettings)
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
        if isinstance(self.timesteps, dict):
            object.__setattr__(self, "timesteps", _nested(TimestepSettings, self.timesteps, "timesteps"))
        for section in ("preview", "cosine", "timesteps"):  # numbers must be numbers even in parts that are switched off
            _check_numbers(getattr(self, section), section)
        _check_timesteps(self.timesteps)
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

    def timestep_range(self, num_timesteps: int) -> TimestepRange:
        """The timesteps to draw from at each step, for a model with ``num_timesteps`` (1000 in SD); a
        range beyond the model's last timestep is refused here, as only the model knows its count."""
        t = self.timesteps
        last = num_timesteps - 1
        used = ("max",) if t.curriculum == "off" else ("max", "start_max")  # the start range serves a ramp only
        for name in used:
            highest = getattr(t, name)
            if highest > last:
                raise ConfigError(f"timesteps.{name}", f"{_TIMESTEP_LABELS[name].capitalize()} ({highest}) is beyond "
                                                       f"this model's last timestep: its timesteps run from 0 to {last}")
        end = (t.min, t.max)
        if t.curriculum == "off":
            return TimestepRange(end, end, 1)
        return TimestepRange((t.start_min, t.start_max), end, t.ramp_steps, restart=t.curriculum == "restart")

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


# --------------------------------------------------------------------------------------------
# What each setting means, for people: the Train_Gamma tab's labels, notes and groups, and the help of
# `python -m hypernetwork_ext train`, both come from this one table.
# --------------------------------------------------------------------------------------------

BASIC, ADVANCED = "Training", "Advanced options"
DATA, PREVIEWS, OPTIMIZER = "Images and captions", "Previews", "Optimizer"
COSINE, CLIPPING = "Cosine annealing schedule", "Gradient clipping"
# In the order both show them; the tab shows the first group open and each other one as a closed accordion
GROUPS = (BASIC, DATA, PREVIEWS, OPTIMIZER, COSINE, CLIPPING, ADVANCED)


@dataclass(frozen=True)
class SettingInfo:
    key: str  # a TrainingSettings field, "preview.x" or "cosine.x"
    label: str  # short: the tab's label
    info: str = ""  # a sentence: what it does, what its special values mean
    group: str = BASIC
    choices: tuple[str, ...] = ()  # a fixed list of values; the optimizer's list is found at run time
    row: str = ""  # the tab puts the settings of one group that share a row key side by side, in table order
    slider: tuple[float, float, float] | None = None  # (minimum, maximum, step): the tab shows a slider

    def __post_init__(self):
        if self.group not in GROUPS:
            raise ValueError(f"setting {self.key}: group {self.group!r} is not one of GROUPS")
        if self.slider is not None:
            minimum, maximum, step = self.slider
            if not (minimum < maximum and step > 0):
                raise ValueError(f"setting {self.key}: slider {self.slider} must go up from its minimum in "
                                 f"positive steps")

    def options(self) -> tuple[str, ...]:
        """The values this setting takes, when it takes one of a list."""
        if self.key == "optimizer":
            from .optimizers import available_optimizers
            return tuple(available_optimizers())
        return self.choices

    def default(self):
        outer, _, inner = self.key.partition(".")
        value = getattr(TrainingSettings(), outer)
        return getattr(value, inner) if inner else value


SIZE_SLIDER = (64, 2048, 8)  # the WebUI's own Train tab: width and height from 64 to 2048 in steps of 8

SETTINGS_INFO: tuple[SettingInfo, ...] = (
    SettingInfo("learn_rate", "Learning rate (schedule: 5e-3:100, 1e-3:1000, 1e-5)",
                "One rate, or rate:until_step pairs: 5e-3:100, 1e-3:1000, 1e-5 trains at 5e-3 until step 100, "
                "at 1e-3 until step 1000, then at 1e-5 to the end; the last rate needs no step.", row="schedule"),
    SettingInfo("batch_size", "Batch size", "Images in one forward pass.", row="batch"),
    SettingInfo("grad_accum", "Gradient accumulation steps",
                "Forward passes whose gradients are added up before each optimizer step, so one step sees "
                "batch size x this many images.", row="batch"),
    SettingInfo("data_dir", "Dataset directory",
                "The folder of training images; each one's caption is in the .txt file of the same name, or "
                "its file name.", row="folders"),
    SettingInfo("log_dir", "Log directory",
                "Where each run's folder goes (<log directory>/<date>/<name>): saved copies, previews, the "
                "loss CSV, the settings.", row="folders"),
    SettingInfo("template", "Prompt template (text with [filewords] / [name], or a .txt file)",
                "Prompt lines to train with: [filewords] becomes the image's caption and [name] the "
                "hypernetwork's name; a path to a .txt file of lines picks one line at random per image."),
    SettingInfo("width", "Width", "Training width in pixels, a multiple of 8.", row="size", slider=SIZE_SLIDER),
    SettingInfo("height", "Height", "Training height in pixels, a multiple of 8.", row="size", slider=SIZE_SLIDER),
    SettingInfo("no_crop", "Do not crop: keep aspect ratios (bucketing)",
                "On: every image keeps its aspect ratio (long side to the training size, grouped in size "
                "buckets); off: every image is resized to exactly width x height."),
    SettingInfo("max_steps", "Max steps", "Training stops when the hypernetwork has trained this many steps.",
                row="schedule"),
    SettingInfo("save_every", "Save a copy of the hypernetwork to the log directory every N steps, 0 to disable",
                "Each copy has its own optimizer state, so training can resume from it.", row="intervals"),
    SettingInfo("preview_every", "Save an image to the log directory every N steps, 0 to disable",
                "A preview rendered with the preview settings below.", row="intervals"),
    SettingInfo("preview.prompt", "Preview prompt (empty: the first caption of the batch)",
                "The prompt of every preview image.", PREVIEWS),
    SettingInfo("preview.negative_prompt", "Preview negative prompt", "The negative prompt of the previews.", PREVIEWS),
    SettingInfo("preview.sampler", "Preview sampler (empty: the default)",
                "The sampler that renders previews; empty uses the model's default.", PREVIEWS, row="sampling"),
    SettingInfo("preview.steps", "Preview sampling steps", "Sampling steps of each preview.", PREVIEWS, row="sampling"),
    SettingInfo("preview.cfg_scale", "Preview CFG scale", "Classifier-free guidance scale of the previews.", PREVIEWS,
                row="sampling"),
    SettingInfo("preview.seed", "Preview seed (-1: random; fixed: comparable previews)",
                "-1 draws a new seed for each preview; any other value renders every preview from the same "
                "noise, so they show how training changes the result.", PREVIEWS, row="sampling"),
    SettingInfo("preview.width", "Preview width", "Preview width in pixels, a multiple of 8.", PREVIEWS,
                row="size", slider=SIZE_SLIDER),
    SettingInfo("preview.height", "Preview height", "Preview height in pixels, a multiple of 8.", PREVIEWS,
                row="size", slider=SIZE_SLIDER),
    SettingInfo("shuffle_tags", "Shuffle tags by ',' when creating prompts",
                "The comma-separated tags of a caption are put in a random order at each step.", DATA, row="tags"),
    SettingInfo("tag_dropout", "Drop out tags when creating prompts",
                "The chance (0 to below 1) that each tag of a caption is left out at a step.", DATA, row="tags"),
    SettingInfo("latent_sampling", "Latent sampling method",
                "once: one sample of each image's latent distribution, drawn when it is encoded; "
                "deterministic: its mean; random: a new sample at every step.", DATA, LATENT_SAMPLING),
    SettingInfo("use_alpha_weight", "Use PNG alpha channel as loss weight",
                "Transparent parts of an image count less in the loss, in proportion to their alpha.", DATA,
                row="images"),
    SettingInfo("flip", "Random horizontal flip", "Each image is mirrored at random half of the times it is used.",
                DATA, row="images"),
    SettingInfo("repeats", "Repeats per epoch", "How many times each image appears in one epoch.", DATA, row="images"),
    SettingInfo("latent_cache", "Keep the latents (auto: on disk when they would fill over a quarter of the memory)",
                "memory: in memory; disk: in files in the latent cache folder, for datasets too large for "
                "memory; auto: on disk when they would take over a quarter of the memory. Training is the "
                "same either way.", DATA, LATENT_CACHES, row="latent cache"),
    SettingInfo("latent_cache_dir", "Latent cache folder (empty: inside the log folder)",
                "Where the latents go when they are kept on disk; removed when training ends.", DATA,
                row="latent cache"),
    SettingInfo("clip_mode", "Gradient clipping",
                "none: no clipping; value: each gradient entry is limited to the clip value; norm: the "
                "gradients' total norm is limited to it.", CLIPPING, CLIP_MODES),
    SettingInfo("clip_value", "Gradient clip value (schedule syntax)",
                "The clipping limit, one value or a schedule like the learning rate's (0.5:1000, 0.1).", CLIPPING,
                row="clip"),
    SettingInfo("clip_norm_type", "Norm type", "The p of the p-norm that norm clipping limits (2: Euclidean).",
                CLIPPING, row="clip"),
    SettingInfo("optimizer", "Optimizer",
                "AdamW, any torch.optim optimizer, or Prodigy / D-Adaptation when their packages are installed.",
                OPTIMIZER),
    SettingInfo("adam_beta1", "AdamW beta1", "AdamW's decay rate of the gradients' running mean.", OPTIMIZER, row="adam"),
    SettingInfo("adam_beta2", "AdamW beta2", "AdamW's decay rate of the squared gradients' running mean.",
                OPTIMIZER, row="adam"),
    SettingInfo("adam_epsilon", "AdamW epsilon", "AdamW's small number that keeps its division finite.", OPTIMIZER,
                row="adam"),
    SettingInfo("weight_decay", "Weight decay", "How fast AdamW pulls the weights towards zero.", OPTIMIZER, row="adam"),
    SettingInfo("loss", "Loss",
                "simple: the noise-prediction error; vlb: that error weighted by the variational lower bound; "
                "full: ldm's full objective (simple, learned variance and vlb).", OPTIMIZER, LOSSES),
    SettingInfo("cosine.enabled", "Use cosine annealing with warm restarts",
                "Instead of the learning-rate schedule: the rate falls along a cosine from the first rate of the "
                "learning rate to the minimum rate, then starts again.", COSINE),
    SettingInfo("cosine.min_rate", "Minimum learning rate", "Cosine annealing: the rate at the end of each cycle.",
                COSINE, row="cycle"),
    SettingInfo("cosine.cycle_steps", "Steps for cycle", "Cosine annealing: the steps of the first cycle.", COSINE,
                row="cycle"),
    SettingInfo("cosine.cycle_mult", "Cycle length multiplier",
                "Cosine annealing: each cycle is this many times as long as the one before.", COSINE, row="cycle"),
    SettingInfo("cosine.warmup_steps", "Warmup steps per cycle",
                "Cosine annealing: steps at the start of each cycle in which the rate rises from the minimum.",
                COSINE, row="rise and fall"),
    SettingInfo("cosine.decay", "Decay of the max rate per cycle (1 = none)",
                "Cosine annealing: each cycle's highest rate is the one before's times this.", COSINE,
                row="rise and fall"),
    SettingInfo("cosine.save_at_cycle_end", "Save when a cycle ends",
                "Cosine annealing: also save a copy at the end of every cycle.", COSINE, row="cycle end"),
    SettingInfo("cosine.preview_at_cycle_end", "Preview when a cycle ends",
                "Cosine annealing: also render a preview at the end of every cycle.", COSINE, row="cycle end"),
    SettingInfo("timesteps.curriculum", "Noise curriculum (which timesteps training draws)",
                "off: every step draws its timesteps evenly from the lowest to the highest timestep below; linear: "
                "that range starts as the ramp's start range and moves to the lowest-highest range over the ramp "
                "steps, then stays; restart: the same ramp, begun again every ramp steps. Small timesteps are "
                "little noise (fine detail), large ones much (composition).", ADVANCED, CURRICULA),
    SettingInfo("timesteps.min", "Lowest timestep (with a curriculum: at the ramp's end)",
                "The smallest timestep training draws; 0 is the least noise.", ADVANCED, row="timesteps range"),
    SettingInfo("timesteps.max", "Highest timestep (with a curriculum: at the ramp's end)",
                "The largest timestep training draws; Stable Diffusion's last is 999, the most noise.", ADVANCED,
                row="timesteps range"),
    SettingInfo("timesteps.start_min", "Curriculum: lowest timestep at the ramp's start",
                "Where the lower end of the range starts.", ADVANCED, row="timesteps start"),
    SettingInfo("timesteps.start_max", "Curriculum: highest timestep at the ramp's start",
                "Where the upper end of the range starts. With the defaults (a start range of 0-0 that widens to "
                "0-999) linear is the old extension's noise training scheduler: low noise first.", ADVANCED,
                row="timesteps start"),
    SettingInfo("timesteps.ramp_steps", "Curriculum: ramp steps",
                "Steps over which the range moves from the start range to the lowest-highest range; restart "
                "begins the ramp again after this many steps.", ADVANCED),
    SettingInfo("unload_optimizer_for_preview", "Unload optimizer during previews",
                "The optimizer's state moves to CPU memory while a preview renders, leaving the GPU memory to "
                "the sampler.", ADVANCED, row="memory"),
    SettingInfo("unload_models_when_training", "Move the VAE and text encoder to CPU while training",
                "Saves GPU memory; captions that change per step are then encoded on the CPU.", ADVANCED,
                row="memory"),
    SettingInfo("dataset_seed", "Dataset seed (order, captions, flips)",
                "Seeds the data order, caption choices and flips; the same seed gives the same batches.",
                ADVANCED, row="seeds"),
    SettingInfo("seed", "Training seed (noise, timesteps, dropout)",
                "Seeds the noise, timesteps and dropout of each step; the same seeds give the same training.",
                ADVANCED, row="seeds"),
    SettingInfo("mixed_precision", "Mixed precision",
                "On a CUDA GPU: auto: bf16 where the GPU has it, else fp16; no: float32; fp16 or bf16: that "
                "type. The CPU always trains in float32.", ADVANCED, PRECISIONS, row="precision"),
    SettingInfo("gradient_checkpointing", "Gradient checkpointing (less memory, slower)",
                "Recomputes the model's activations in the backward pass instead of keeping them.", ADVANCED,
                row="precision"),
    SettingInfo("nan_policy", "When the loss is NaN or infinite",
                "stop: training stops and keeps the last good weights; skip: that step is skipped (10 in a row "
                "stop training). Either way such a step never changes the weights.", ADVANCED, NAN_POLICIES,
                row="logging"),
    SettingInfo("tensorboard", "Log to TensorBoard (when installed)",
                "Loss, learning rate and previews go to <run folder>/tensorboard as well.", ADVANCED,
                row="logging"),
    SettingInfo("csv_every", "Write the loss CSV every N steps",
                "How often a line goes to hypernetwork_loss.csv; 0 writes none.", ADVANCED, row="logging"),
)


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


_TIMESTEP_LABELS = {"min": "lowest timestep", "max": "highest timestep",
                    "start_min": "lowest timestep at the ramp's start", "start_max": "highest timestep at the ramp's start"}


def _check_timesteps(t: TimestepSettings) -> None:
    """Both ranges in order and not below 0, a ramp of at least one step; checked even while the curriculum is
    off, as every section's numbers are. The model's own limit is checked by ``timestep_range``."""
    object.__setattr__(t, "curriculum", _choice(t.curriculum, CURRICULA, "timesteps.curriculum"))
    for low, high in (("min", "max"), ("start_min", "start_max")):
        lowest, highest = getattr(t, low), getattr(t, high)
        if lowest < 0:
            raise ConfigError(f"timesteps.{low}", f"{_TIMESTEP_LABELS[low].capitalize()} ({lowest}) must be 0 or more")
        if lowest > highest:
            raise ConfigError(f"timesteps.{low}", f"{_TIMESTEP_LABELS[low].capitalize()} ({lowest}) is above the "
                                                  f"{_TIMESTEP_LABELS[high]} ({highest})")
    if t.ramp_steps < 1:
        raise ConfigError("timesteps.ramp_steps", f"Curriculum ramp steps ({t.ramp_steps}) must be at least 1")


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
