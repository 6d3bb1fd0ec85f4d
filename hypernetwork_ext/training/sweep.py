"""Sweeps: every combination of several starting points and several training settings, trained one after
another with ``train``, compared in one table and one chart (the old extension's Train_Tuning, reproducible).

* **What is swept.** A ``Start`` is a hypernetwork file trained as it is, or a ``HypernetworkConfig`` to create;
  a ``SettingsVariant`` is a whole ``TrainingSettings``. ``SweepPlan`` holds both lists (checked in one place)
  and names every pair: ``combinations()``.
* **From text.** ``creation_start("layers=1,2,1; activation=relu", sizes)`` (the ``create`` command's flags),
  ``load_settings_file(path)``, ``override_line("learn_rate=1e-3,5e-4")`` and ``settings_variants(bases,
  overrides)``: each base settings (a file, or the defaults) with every combination of the override values.
* **Same start, same result.** Created networks all come from one seed (``create_seed``) and are written once to
  ``<out>/starts/``; a file start is only read. Every combination trains from those weights, so the same sweep
  gives the same output files bit for bit (on the CPU) and a combination equals training its start alone.
* **Running.** ``prepare_sweep`` writes the created starts and checks every combination with the host's checks
  (before any model loads); ``run_sweep`` trains them through the host's ``train_one`` (its model, its place in
  the WebUI), each into ``<out>/logs/<name>/`` and ``<out>/<name>.pt``, and writes ``sweep_results.json``,
  ``sweep_results.csv`` and ``sweep_chart.png`` after every combination. A stop request ends the current
  combination at its next step (its result is kept) and skips the rest; a combination that fails (a loss that
  became NaN at a high learning rate, say) is recorded as failed and the sweep goes on.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import io
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from PIL import Image, ImageDraw

from .. import files
from ..config import HypernetworkConfig
from ..errors import ConfigError, HypernetworkError
from ..network import Hypernetwork
from .chart import moving_average
from .engine import Callbacks, LossPoint, TrainingResult
from .settings import SETTINGS_INFO, TrainingSettings, coerce_to_kind

RESULTS_FORMAT, RESULTS_VERSION = "hypernetwork-sweep-results", 1
RESULTS_JSON, RESULTS_CSV, CHART_PNG = "sweep_results.json", "sweep_results.csv", "sweep_chart.png"
DEFAULT_LOSS_WINDOW = 20  # steps in the moving average that the table and the chart report
MAX_NAME_LENGTH = 120  # of a combination's file name; its number in front keeps shortened names apart

# A creation variant's keys are the `create` command's flags (without "--"); each fills this argument of
# HypernetworkConfig.from_text
CREATION_KEYS = {"sizes": "sizes", "layers": "layers", "activation": "activation", "init": "weight_init",
                 "std": "init_std", "layer-norm": "layer_norm", "activate-output": "activate_output",
                 "dropout": "dropout", "residual": "residual", "residual-shortcut": "residual_shortcut"}
CREATION_SWITCHES = ("layer-norm", "activate-output", "residual")  # on when named alone: "layers=1,2,1; layer-norm"
ON_WORDS, OFF_WORDS = ("true", "on", "yes", "1"), ("false", "off", "no", "0")


# --------------------------------------------------------------------------------------------
# What is swept
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Start:
    """Where a combination's training starts: ``path``, trained as it is, or a new network of shape ``config``.
    ``params``: what tells this start from the others, as (name, value) pairs (results and TensorBoard)."""

    label: str
    params: tuple[tuple[str, str], ...]
    path: Path | None = None
    config: HypernetworkConfig | None = None

    def __post_init__(self):
        if (self.path is None) == (self.config is None):
            raise ValueError("a Start is a file or a configuration to create, one of the two")

    @property
    def file_name(self) -> str:
        """Of a created start: its file in ``<out>/starts/``, and the name stored in it."""
        return f"{file_safe(self.label)}.pt"


@dataclass(frozen=True)
class SettingsVariant:
    """One whole ``TrainingSettings``; ``label`` and ``params`` say only what differs from the other variants."""

    label: str
    params: tuple[tuple[str, str], ...]
    settings: TrainingSettings


@dataclass(frozen=True)
class Combination:
    index: int  # 1-based, in run order
    name: str  # file-safe and unique: the output file and the log folder
    start: Start
    variant: SettingsVariant

    @property
    def label(self) -> str:
        return " × ".join(part for part in (self.start.label, self.variant.label) if part)

    @property
    def params(self) -> dict[str, str]:
        return dict(self.start.params + self.variant.params)


@dataclass(frozen=True)
class SweepPlan:
    """Every start trained with every settings variant, starts outermost. ``create_seed`` creates every new
    network; ``loss_window`` is the moving average (in steps) that the results report."""

    starts: tuple[Start, ...]
    variants: tuple[SettingsVariant, ...] = (SettingsVariant("", (), TrainingSettings()),)
    create_seed: int = 0
    loss_window: int = DEFAULT_LOSS_WINDOW

    def __post_init__(self):
        object.__setattr__(self, "starts", tuple(self.starts))
        object.__setattr__(self, "variants", tuple(self.variants))
        if not self.starts:
            raise ConfigError("starts", "Nothing to sweep: give a starting hypernetwork or a creation variant")
        if not self.variants:
            raise ConfigError("variants", "Nothing to sweep: give at least one training settings")
        twins = _first_repeat([start.config or start.path.resolve() for start in self.starts])
        if twins:
            raise ConfigError("starts", f"Starting points '{self.starts[twins[0]].label}' and "
                                        f"'{self.starts[twins[1]].label}' are the same network; give it once")
        created = [start for start in self.starts if start.config is not None]
        for labels, what, field_name in (([start.label for start in self.starts], "Starting point", "starts"),
                                         ([variant.label for variant in self.variants], "Training settings",
                                          "variants"),
                                         ([start.file_name for start in created], "Created start file", "starts")):
            twins = _first_repeat(labels)
            if twins:
                raise ConfigError(field_name, f"{what} '{labels[twins[0]]}' is listed twice; each combination is "
                                              f"named after its parts, so every one must differ")
        object.__setattr__(self, "create_seed", _whole_at_least(self.create_seed, 0, "create_seed", "Creation seed"))
        object.__setattr__(self, "loss_window", _whole_at_least(self.loss_window, 1, "loss_window",
                                                                "Moving-average window"))

    def combinations(self) -> list[Combination]:
        pairs = list(itertools.product(self.starts, self.variants))
        digits = len(str(len(pairs)))
        combinations = []
        for index, (start, variant) in enumerate(pairs, start=1):
            described = "__".join(file_safe(part) for part in (start.label, variant.label) if part)
            combinations.append(Combination(index, f"{index:0{digits}d}_{described}"[:MAX_NAME_LENGTH], start, variant))
        return combinations


def _first_repeat(items: list) -> tuple[int, int] | None:
    """The positions of the first item that comes again, and of its repeat."""
    for later, item in enumerate(items):
        if item in items[:later]:
            return items.index(item), later
    return None


def _whole_at_least(value, minimum: int, name: str, label: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(name, f"{label} ({value!r}) is not a number") from None
    if isinstance(value, bool) or not math.isfinite(number) or number != int(number) or number < minimum:
        raise ConfigError(name, f"{label} ({value!r}) must be a whole number, at least {minimum}")
    return int(number)


def file_safe(label: str) -> str:
    """``layers=1,2,1 activation=relu`` -> ``layers-1-2-1_activation-relu``: letters (any script), digits and
    ``._-`` only, so the name works as a file name everywhere and in a ``<hypernet:...>`` prompt tag."""
    text = re.sub(r"[=,]", "-", label)
    text = re.sub(r"[^\w.\-]+", "_", text).strip("._-")
    return text or "x"


# --------------------------------------------------------------------------------------------
# From text: creation variants, settings files, override lines
# --------------------------------------------------------------------------------------------

def file_start(path: str | Path) -> Start:
    """A hypernetwork file that every one of its combinations trains as it is (its .optim state too)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("hypernetworks", f"Starting hypernetwork {str(path)!r} does not exist")
    return Start(files.listed_name(path), (("start", path.name),), path=path)


def creation_start(text: str, sizes: Sequence[int], where: str = "Creation variant") -> Start:
    """A new network: ``key=value`` pairs separated by ``;`` with the ``create`` command's flags as keys
    (``layers=1,2,1; activation=relu; layer-norm``); its modules are ``sizes`` unless it says ``sizes=...``.
    ``where`` names the input in messages (``--create '...'``, ``Line 2``)."""
    given: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in str(text).split(";"))):
        name, has_value, value = (part.strip() for part in item.partition("="))
        key = name.lower().replace("_", "-")
        if key not in CREATION_KEYS:
            raise ConfigError("creation", f"{where}: unknown key {name!r}; use {', '.join(CREATION_KEYS)} (the "
                                          f"flags of the create command)")
        if key in given:
            raise ConfigError("creation", f"{where}: {key} is given twice")
        if not has_value and key not in CREATION_SWITCHES:
            raise ConfigError("creation", f"{where}: {key} needs a value ({key}=...)")
        given[key] = value.replace(" ", "") if has_value else "true"
    if not given:
        raise ConfigError("creation", f"{where} is empty; write key=value pairs separated by ';', e.g. "
                                      f"layers=1,2,1; activation=relu")
    arguments: dict[str, object] = {"sizes": ",".join(map(str, sizes))}
    for key, value in given.items():
        if key in CREATION_SWITCHES:
            arguments[CREATION_KEYS[key]] = parse_switch(value, f"{where}: {key}", "creation")
            given[key] = str(arguments[CREATION_KEYS[key]]).lower()  # one spelling in labels: true or false
        else:
            arguments[CREATION_KEYS[key]] = value
    try:
        config = HypernetworkConfig.from_text(**arguments)
    except ConfigError as error:
        raise ConfigError("creation", f"{where}: {error.message}") from None
    label = " ".join(key if value == "true" else f"{key}={value}" for key, value in given.items())
    return Start(label, tuple(given.items()), config=config)


def parse_switch(text: str, where: str, field_name: str) -> bool:
    word = str(text).strip().lower()
    if word in ON_WORDS or word in OFF_WORDS:
        return word in ON_WORDS
    raise ConfigError(field_name, f"{where}: {text!r} is neither on nor off; write true or false")


def load_settings_file(path: str | Path) -> tuple[str, TrainingSettings]:
    """(label, settings) of a settings JSON file (what Train_Gamma saves and every run writes); the label is
    the file's name without ``.json``."""
    return Path(path).stem, TrainingSettings.load(path)


# a setting's name in an override: its key in the settings JSON, "-" or "_" for the dot of a nested one
_SETTING_KEYS = {spec.key.replace(".", "_"): spec.key for spec in SETTINGS_INFO}
_SETTING_DEFAULTS = {spec.key: spec.default() for spec in SETTINGS_INFO}


def override_line(text: str, where: str = "Override") -> tuple[str, tuple[str, ...]]:
    """``key=value1,value2`` -> (setting key, values). Values are separated by commas, or by ``|`` when they hold
    commas themselves (schedules: ``learn_rate=5e-3:100, 1e-5 | 1e-3``). ``where`` names the input in messages."""
    text = str(text).strip()
    name, has_value, values_text = (part.strip() for part in text.partition("="))
    if not has_value or not name:
        raise ConfigError("overrides", f"{where} ({text!r}): write key=value1,value2, e.g. learn_rate=1e-3,5e-4")
    key = _SETTING_KEYS.get(name.lower().replace("-", "_").replace(".", "_"))
    if key is None:
        close = difflib.get_close_matches(name.lower(), [spec.key for spec in SETTINGS_INFO], n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError("overrides", f"{where}: unknown setting {name!r}{hint}; write a setting's name as the "
                                       f"settings JSON has it, e.g. learn_rate, max_steps, preview.seed")
    values = tuple(value.strip() for value in values_text.split("|" if "|" in values_text else ","))
    if not any(values):
        raise ConfigError("overrides", f"{where}: {key} has no values after '='")
    for position, value in enumerate(values, start=1):
        if not value:
            raise ConfigError("overrides", f"{where}: value {position} of {key} is empty (two commas in a row, or a "
                                           f"trailing comma?)")
        if values.count(value) > 1:
            raise ConfigError("overrides", f"{where}: {key} lists {value} twice")
    return key, values


def overridden(base: TrainingSettings, changes: Sequence[tuple[str, str]]) -> TrainingSettings:
    """``base`` with each (key, text) applied, the text read as the setting's kind (number, on/off or text);
    validated as any settings are."""
    data = dataclasses.asdict(base)
    for key, text in changes:
        default = _SETTING_DEFAULTS[key]
        value = parse_switch(text, key, key) if isinstance(default, bool) else coerce_to_kind(text, default, key, key)
        outer, _, inner = key.partition(".")
        if inner:
            data[outer][inner] = value
        else:
            data[outer] = value
    return TrainingSettings.from_dict(data)


def settings_variants(bases: Sequence[tuple[str, TrainingSettings]],
                      overrides: Sequence[tuple[str, tuple[str, ...]]] = ()) -> tuple[SettingsVariant, ...]:
    """Each (label, settings) base with every combination of the override values (as ``override_line`` gives
    them). Labels name only what varies: a base's label when there are several, a key when it has several values."""
    keys = [key for key, _ in overrides]
    for key in keys:
        if keys.count(key) > 1:
            raise ConfigError("overrides", f"{key} is swept on two lines; give all its values on one")
    variants = []
    for base_label, base in bases:
        for values in itertools.product(*(values for _, values in overrides)):
            changes = tuple(zip(keys, values))
            shown = ((("settings", base_label),) if len(bases) > 1 else ()) + tuple(
                (key, value) for (key, value), (_, choices) in zip(changes, overrides) if len(choices) > 1)
            label = " ".join(value if key == "settings" else f"{key}={value}" for key, value in shown)
            try:
                settings = overridden(base, changes)
            except ConfigError as error:  # named by all it changes: the value at fault may be in every variant
                given = " ".join([base_label] * (len(bases) > 1) + [f"{key}={value}" for key, value in changes])
                raise ConfigError(error.field, f"Settings {given or 'as given'}: {error.message}") from None
            variants.append(SettingsVariant(label, shown, settings))
    return tuple(variants)


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------

# the host's training of one combination: (start file, settings, output file, log folder, callbacks) -> result;
# it hands ``callbacks`` to the engine (with any of its own: ``combined``)
TrainOne = Callable[[Path, TrainingSettings, Path, Path, Callbacks], TrainingResult]


@dataclass(frozen=True)
class PreparedSweep:
    plan: SweepPlan
    out_dir: Path
    combinations: tuple[Combination, ...]
    start_files: dict  # start label -> the file its combinations train from

    def output_path(self, combination: Combination) -> Path:
        return self.out_dir / f"{combination.name}{self.start_files[combination.start.label].suffix}"

    def log_dir(self, combination: Combination) -> Path:
        return self.out_dir / "logs" / combination.name


def prepare_sweep(plan: SweepPlan, out_dir: str | Path, check: Callable[[Path, TrainingSettings], object],
                  overwrite: bool = False) -> PreparedSweep:
    """Writes each created start to ``<out>/starts/`` (the same bytes every time) and checks every combination
    with ``check(start file, settings)``, the host's checks that need no model (``prepare``, and the model's
    widths where the host can read them without loading it). An output folder holding an earlier sweep's
    results is refused unless ``overwrite``."""
    out_dir = Path(out_dir)
    combinations = plan.combinations()
    start_files = {start.label: start.path for start in plan.starts if start.path is not None}
    for start in plan.starts:
        if start.config is not None:
            start_files[start.label] = out_dir / "starts" / start.file_name
    prepared = PreparedSweep(plan, out_dir, tuple(combinations), start_files)
    if not overwrite:
        earlier = [path for path in [out_dir / RESULTS_JSON] + [prepared.output_path(c) for c in combinations]
                   if path.exists()]
        if earlier:
            raise ConfigError("out", f"{out_dir} already holds results of a sweep ({earlier[0].name}); choose another "
                                     f"output folder, or allow overwriting them")
    for start in plan.starts:
        if start.config is not None:
            network = Hypernetwork.create(start.config, start_files[start.label].stem, seed=plan.create_seed)
            files.save(network, start_files[start.label])
    for combination in combinations:
        try:
            check(start_files[combination.start.label], combination.variant.settings)
        except HypernetworkError as error:
            raise ConfigError(getattr(error, "field", "sweep"), f"{combination.label}: {error}") from error
    return prepared


@dataclass
class SweepRow:
    """One combination's outcome: waiting, training, finished, interrupted, failed (``message`` says why) or
    skipped (after a stop request). Losses are moving averages over the sweep's loss window."""

    index: int
    name: str
    label: str
    params: dict
    outcome: str = "waiting"
    final_loss: float | None = None
    lowest_loss: float | None = None
    steps: int = 0
    seconds: float = 0.0
    output: str | None = None
    log_dir: str | None = None
    previews: list = field(default_factory=list)
    curve: list = field(default_factory=list)  # [step, loss] of every step
    message: str = ""


@dataclass
class SweepResult:
    """Filled in while the sweep runs (a host shows it live); complete once ``finished``."""

    out_dir: Path
    rows: list
    loss_window: int
    current: int | None = None  # the number of the combination training now
    step: int = 0
    max_steps: int = 0
    message: str = ""
    finished: bool = False
    interrupted: bool = False

    @property
    def results_json(self) -> Path:
        return self.out_dir / RESULTS_JSON

    @property
    def results_csv(self) -> Path:
        return self.out_dir / RESULTS_CSV

    @property
    def chart(self) -> Path:
        return self.out_dir / CHART_PNG


def run_sweep(prepared: PreparedSweep, train_one: TrainOne, *, should_stop: Callable[[], bool] | None = None,
              status: Callable[[str], None] | None = None,
              on_change: Callable[[SweepResult], None] | None = None) -> SweepResult:
    """Trains every combination in order with ``train_one``. ``should_stop`` is polled at every step;
    ``status`` hears one line as each combination starts and ends; ``on_change`` hears the result after every
    change (a step, a line, a finished combination)."""
    should_stop = should_stop or (lambda: False)
    plan, total = prepared.plan, len(prepared.combinations)
    result = SweepResult(prepared.out_dir, [SweepRow(c.index, c.name, c.label, c.params)
                                            for c in prepared.combinations], plan.loss_window)
    changed = (lambda: on_change(result)) if on_change else (lambda: None)

    def say(text: str) -> None:
        result.message = text
        if status:
            status(text)
        changed()

    for combination, row in zip(prepared.combinations, result.rows):
        if result.interrupted or should_stop():
            row.outcome, result.interrupted = "skipped", True
            continue
        settings = combination.variant.settings
        result.current, result.step, result.max_steps, row.outcome = combination.index, 0, settings.max_steps, "training"
        say(f"Combination {combination.index} of {total}: {combination.label}")
        points: list[LossPoint] = []
        try:
            trained = train_one(prepared.start_files[combination.start.label], settings,
                                prepared.output_path(combination), prepared.log_dir(combination),
                                _listening(result, points, should_stop, changed))
        except HypernetworkError as error:
            if isinstance(error.__cause__, KeyboardInterrupt):  # stopped at once: no results to keep
                raise
            _fill(row, points, plan.loss_window)
            row.outcome, row.message = "failed", str(error)
            say(f"Combination {combination.index} failed: {error}")
        else:
            _fill(row, trained.losses, plan.loss_window, trained)
            row.outcome = "interrupted" if trained.interrupted else "finished"
            result.interrupted = trained.interrupted
            say(f"Combination {combination.index} {row.outcome} at step {row.steps}: {_loss_text(row)}")
            _tensorboard_hparams(prepared.out_dir, combination, row)
        write_results(result)
    skipped = sum(row.outcome == "skipped" for row in result.rows)
    result.current, result.finished = None, True
    write_results(result)
    say(f"Sweep {'interrupted' if result.interrupted else 'finished'}: "
        f"{total - skipped} of {total} combinations trained" + (f", {skipped} skipped" if skipped else ""))
    return result


def _listening(result: SweepResult, points: list, should_stop, changed) -> Callbacks:
    """What the sweep hears from the engine: the steps (for the page) and every loss (for a run that fails)."""
    def progress(step, total):
        result.step, result.max_steps = step, total
        changed()

    def status(text):
        result.message = text
        changed()
    return Callbacks(status=status, progress=progress, loss=points.append, should_stop=should_stop)


def _fill(row: SweepRow, points: Sequence[LossPoint], window: int, trained: TrainingResult | None = None) -> None:
    row.curve = [[point.step, point.loss] for point in points]
    averaged = moving_average([point.loss for point in points], window)
    row.final_loss = averaged[-1] if averaged else None
    row.lowest_loss = min(averaged) if averaged else None
    row.steps = points[-1].step if points else 0
    if trained is not None:
        row.steps, row.seconds = trained.steps_done, trained.seconds
        row.output, row.log_dir = str(trained.output_path), str(trained.log_dir)
        row.previews = [str(path) for path in trained.previews]


def _loss_text(row: SweepRow) -> str:
    if row.final_loss is None:
        return "no steps"
    return f"loss {row.final_loss:.5f} at the end, lowest {row.lowest_loss:.5f} (moving averages)"


def combined(*parts: Callbacks) -> Callbacks:
    """One ``Callbacks`` that calls the hooks of every part in turn (a host's own and the sweep's); it stops
    when any part says stop, and each part hears the dataset's report its own way."""
    def chained(name):
        hooks = [getattr(part, name) for part in parts if getattr(part, name) is not None]
        if not hooks:
            return None
        if name == "should_stop":
            return lambda: any(hook() for hook in hooks)
        return lambda *args: [hook(*args) for hook in hooks] and None

    hooks = {item.name: chained(item.name) for item in dataclasses.fields(Callbacks)}
    hooks["dataset_notes"] = lambda lines: [part.tell_dataset(lines) for part in parts] and None
    return Callbacks(**hooks)


def _tensorboard_hparams(out_dir: Path, combination: Combination, row: SweepRow) -> None:
    """The combination's parameters and results in TensorBoard's HPARAMS table, when tensorboard is installed."""
    if row.final_loss is None:
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return
    writer = SummaryWriter(str(out_dir / "tensorboard"))
    try:
        writer.add_hparams(combination.params or {"combination": combination.label},
                           {"sweep/final_loss": row.final_loss, "sweep/lowest_loss": row.lowest_loss,
                            "sweep/steps": float(row.steps)}, run_name=combination.name)
    finally:
        writer.close()


# --------------------------------------------------------------------------------------------
# Results: the table, its files and the chart of all loss curves
# --------------------------------------------------------------------------------------------

TABLE_HEADERS = ("#", "combination", "outcome", "final loss", "lowest loss", "steps", "seconds", "output")


def table_cells(row: SweepRow) -> tuple[str, ...]:
    """One row of the results table as text, in ``TABLE_HEADERS`` order (the command line and the tab alike)."""
    def loss(value):
        return "-" if value is None else f"{value:.5f}"
    return (str(row.index), row.label, row.outcome, loss(row.final_loss), loss(row.lowest_loss), str(row.steps),
            f"{row.seconds:.1f}", Path(row.output).name if row.output else "-")


def format_table(result: SweepResult) -> str:
    """The results table as aligned text, with what its losses are."""
    lines = [TABLE_HEADERS] + [table_cells(row) for row in result.rows]
    widths = [max(len(line[column]) for line in lines) for column in range(len(TABLE_HEADERS))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
    return "\n".join(text + [f"(losses: moving averages over {result.loss_window} steps)"])


def write_results(result: SweepResult) -> None:
    """``sweep_results.json`` (every row, curves included), ``sweep_results.csv`` (the table) and the chart."""
    rows = [dataclasses.asdict(row) for row in result.rows]
    document = {"format": RESULTS_FORMAT, "version": RESULTS_VERSION, "loss_window": result.loss_window,
                "finished": result.finished, "interrupted": result.interrupted, "rows": rows}
    files.atomic_write_bytes(result.results_json, json.dumps(document, indent=1, ensure_ascii=False).encode("utf-8"))
    columns = ["index", "name", "label", "outcome", "final_loss", "lowest_loss", "steps", "seconds", "output",
               "log_dir", "previews", "message"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["; ".join(row["previews"]) if column == "previews" else
                         "" if row[column] is None else row[column] for column in columns])
    files.atomic_write_bytes(result.results_csv, buffer.getvalue().encode("utf-8"))
    chart = io.BytesIO()
    render_sweep_chart(result.rows, result.loss_window).save(chart, format="PNG")
    files.atomic_write_bytes(result.chart, chart.getvalue())


CHART_WIDTH, PLOT_HEIGHT, LEGEND_LINE = 900, 380, 18
# distinct colours (matplotlib's "tab10"), one per combination in turn
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def curve_colour(index: int) -> tuple[int, int, int]:
    return PALETTE[(index - 1) % len(PALETTE)]


def render_sweep_chart(rows: Sequence[SweepRow], window: int) -> Image.Image:
    """Every combination's moving-average loss against its steps, one colour each, numbered in a legend below."""
    legend_top = PLOT_HEIGHT + 30
    image = Image.new("RGB", (CHART_WIDTH, legend_top + LEGEND_LINE * math.ceil(len(rows) / 2) + 10), "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 70, CHART_WIDTH - 20, 30, PLOT_HEIGHT
    draw.rectangle([left, top, right, bottom], outline=(120, 120, 120))
    title = f"loss of each combination (moving average over {window} steps)"
    draw.text(((CHART_WIDTH - draw.textlength(title)) / 2, 8), title, fill=(0, 0, 0))  # centred: a page's label sits left
    curves = [(row, [step for step, _ in row.curve], moving_average([loss for _, loss in row.curve], window))
              for row in rows if row.curve]
    for number, row in enumerate(rows):
        x, y = left + (number % 2) * (right - left) // 2, legend_top + LEGEND_LINE * (number // 2)
        draw.rectangle([x, y + 3, x + 12, y + 11], fill=curve_colour(row.index))
        note = "" if row.curve else " (no steps)"
        label = row.label.replace("×", "x")  # the default font has no ×
        draw.text((x + 18, y), f"{row.index}: {label}"[:62] + note, fill=(0, 0, 0))
    if not curves:
        draw.text((left + 10, top + 10), "no steps yet", fill=(0, 0, 0))
        return image
    first = min(steps[0] for _, steps, _ in curves)
    last = max(steps[-1] for _, steps, _ in curves)
    low = min(min(values) for _, _, values in curves)
    high = max(max(values) for _, _, values in curves)
    if math.isclose(low, high):
        low, high = low - 0.5, high + 0.5

    def point(step, value):
        return (left + (step - first) / max(1, last - first) * (right - left),
                bottom - (value - low) / (high - low) * (bottom - top))

    for row, steps, values in curves:
        coords = [point(step, value) for step, value in zip(steps, values)]
        if len(coords) == 1:  # a line of one point would not show
            x, y = coords[0]
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=curve_colour(row.index))
        else:
            draw.line(coords, fill=curve_colour(row.index), width=2)
    for fraction in (0, 0.5, 1):
        value = low + (high - low) * fraction
        draw.text((4, point(first, value)[1] - 6), f"{value:.4f}", fill=(0, 0, 0))
    draw.text((left, bottom + 8), f"step {first}", fill=(0, 0, 0))
    draw.text((right - 70, bottom + 8), f"step {last}", fill=(0, 0, 0))
    return image
