"""Train_Gamma: every training control, one table of fields, a handler that validates them into
``TrainingSettings`` (messages beside the inputs), settings saved to and loaded from JSON, the status
a page shows while training runs, and the Gradio layout. How training then runs (WebUI or standalone)
is the host's ``start`` function."""

from __future__ import annotations

import base64
import dataclasses
import html
import inspect
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ..errors import ConfigError, HypernetworkError, HypernetworkFileError
from ..training import Callbacks
from ..training.chart import render_chart
from ..training.optimizers import available_optimizers
from ..training.settings import (CLIP_MODES, LATENT_CACHES, LATENT_SAMPLING, LOSSES, NAN_POLICIES, PRECISIONS,
                                 TrainingSettings, coerce_to_kind)
from .create_tab import field_message


@dataclass(frozen=True)
class Field:
    key: str  # a TrainingSettings field, "preview.x" or "cosine.x"
    label: str
    kind: str = "text"  # text, number, checkbox, dropdown, radio
    choices: tuple = ()
    advanced: bool = False


FIELDS: tuple[Field, ...] = (
    Field("learn_rate", "Learning rate (schedule: 5e-3:100, 1e-3:1000, 1e-5)"),
    Field("batch_size", "Batch size", "number"),
    Field("grad_accum", "Gradient accumulation steps", "number"),
    Field("data_dir", "Dataset directory"),
    Field("log_dir", "Log directory"),
    Field("template", "Prompt template (text with [filewords] / [name], or a .txt file)"),
    Field("width", "Width", "number"),
    Field("height", "Height", "number"),
    Field("no_crop", "Do not crop: keep aspect ratios (bucketing)", "checkbox"),
    Field("max_steps", "Max steps", "number"),
    Field("save_every", "Save a copy of the hypernetwork to the log directory every N steps, 0 to disable", "number"),
    Field("preview_every", "Save an image to the log directory every N steps, 0 to disable", "number"),
    Field("preview.prompt", "Preview prompt (empty: the first caption of the batch)"),
    Field("preview.negative_prompt", "Preview negative prompt"),
    Field("preview.sampler", "Preview sampler (empty: the default)"),
    Field("preview.steps", "Preview sampling steps", "number"),
    Field("preview.cfg_scale", "Preview CFG scale", "number"),
    Field("preview.seed", "Preview seed (-1: random; fixed: comparable previews)", "number"),
    Field("preview.width", "Preview width", "number"),
    Field("preview.height", "Preview height", "number"),
    Field("shuffle_tags", "Shuffle tags by ',' when creating prompts", "checkbox"),
    Field("tag_dropout", "Drop out tags when creating prompts", "number"),
    Field("latent_sampling", "Latent sampling method", "radio", LATENT_SAMPLING),
    Field("use_alpha_weight", "Use PNG alpha channel as loss weight", "checkbox"),
    Field("flip", "Random horizontal flip", "checkbox", advanced=True),
    Field("repeats", "Repeats per epoch", "number", advanced=True),
    Field("latent_cache", "Keep the latents (auto: on disk when they would fill over a quarter of the memory)", "radio",
          LATENT_CACHES, advanced=True),
    Field("latent_cache_dir", "Latent cache folder (empty: inside the log folder)", advanced=True),
    Field("clip_mode", "Gradient clipping", "radio", CLIP_MODES, advanced=True),
    Field("clip_value", "Gradient clip value (schedule syntax)", advanced=True),
    Field("clip_norm_type", "Norm type", "number", advanced=True),
    Field("optimizer", "Optimizer", "dropdown", (), advanced=True),
    Field("adam_beta1", "AdamW beta1", "number", advanced=True),
    Field("adam_beta2", "AdamW beta2", "number", advanced=True),
    Field("adam_epsilon", "AdamW epsilon", "number", advanced=True),
    Field("weight_decay", "Weight decay", "number", advanced=True),
    Field("loss", "Loss", "radio", LOSSES, advanced=True),
    Field("cosine.enabled", "Use cosine annealing with warm restarts", "checkbox", advanced=True),
    Field("cosine.min_rate", "Minimum learning rate", "number", advanced=True),
    Field("cosine.cycle_steps", "Steps for cycle", "number", advanced=True),
    Field("cosine.cycle_mult", "Cycle length multiplier", "number", advanced=True),
    Field("cosine.warmup_steps", "Warmup steps per cycle", "number", advanced=True),
    Field("cosine.decay", "Decay of the max rate per cycle (1 = none)", "number", advanced=True),
    Field("cosine.save_at_cycle_end", "Save when a cycle ends", "checkbox", advanced=True),
    Field("cosine.preview_at_cycle_end", "Preview when a cycle ends", "checkbox", advanced=True),
    Field("unload_optimizer_for_preview", "Unload optimizer during previews", "checkbox", advanced=True),
    Field("unload_models_when_training", "Move the VAE and text encoder to CPU while training", "checkbox", advanced=True),
    Field("dataset_seed", "Dataset seed (order, captions, flips)", "number", advanced=True),
    Field("seed", "Training seed (noise, timesteps, dropout)", "number", advanced=True),
    Field("mixed_precision", "Mixed precision", "radio", PRECISIONS, advanced=True),
    Field("gradient_checkpointing", "Gradient checkpointing (less memory, slower)", "checkbox", advanced=True),
    Field("nan_policy", "When the loss is NaN or infinite", "radio", NAN_POLICIES, advanced=True),
    Field("tensorboard", "Log to TensorBoard (when installed)", "checkbox", advanced=True),
    Field("csv_every", "Write the loss CSV every N steps", "number", advanced=True),
)


def default_values(settings: TrainingSettings | None = None) -> list:
    data = dataclasses.asdict(settings or TrainingSettings())
    return [_lookup(data, f.key) for f in FIELDS]


def _lookup(data: dict, key: str):
    outer, _, inner = key.partition(".")
    return data[outer][inner] if inner else data[outer]


def settings_from_values(values: list) -> tuple[TrainingSettings | None, dict[str, str]]:
    """Form values (in FIELDS order) -> settings, or None and {key: message} for the inputs to fix."""
    data = dataclasses.asdict(TrainingSettings())
    errors: dict[str, str] = {}
    for spec, value in zip(FIELDS, values):
        outer, _, inner = spec.key.partition(".")
        default = _lookup(data, spec.key)
        try:
            value = coerce_to_kind(value, default, spec.key, spec.label)
        except ConfigError as error:
            errors[spec.key] = error.message
            continue
        if inner:
            data[outer][inner] = value
        else:
            data[outer] = value
    if errors:
        return None, errors
    try:
        return TrainingSettings.from_dict(data), {}
    except ConfigError as error:
        key = error.field if any(f.key == error.field for f in FIELDS) else "settings"
        return None, {key: error.message}


def save_settings(values: list, path: str | Path) -> str:
    settings, errors = settings_from_values(values)
    if settings is None:
        return "Not saved: " + "; ".join(errors.values())
    if not str(path).strip():
        return "Not saved: give a file name for the settings"
    return f"Saved {settings.save(Path(path))}"


def load_settings(path: str | Path) -> tuple[list | None, str]:
    try:
        return default_values(TrainingSettings.load(path)), f"Loaded {path}"
    except HypernetworkFileError as error:
        return None, f"Not loaded: {error}"


def png_data_uri(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class TrainingStatus:
    """What a page shows while training runs, kept up to date by the engine's callbacks: step of total,
    loss, learning rate, the last saved copy and preview, the loss/learning-rate chart, and the dataset's
    report (skipped files, conversions) for the whole run."""

    def __init__(self, max_steps: int, message: str = ""):
        self.max_steps, self.message = max_steps, message
        self.dataset_notes: list[str] = []
        self.step, self.points = 0, []
        self.last_saved, self.last_image, self.preview = "-", "-", None

    def callbacks(self, changed: Callable[[], None] = lambda: None,
                  should_stop: Callable[[], bool] | None = None) -> Callbacks:
        def record(update):
            def hook(*args):
                update(*args)
                changed()
            return hook
        # no update of its own for a loss point: the engine reports progress right after it, and rendering the
        # chart twice a step (once with the old step count) would only cost the training loop time
        return Callbacks(status=record(self._status), progress=record(self._progress), loss=self.points.append,
                         preview=record(self._preview), saved=record(self._saved), should_stop=should_stop,
                         dataset_notes=record(self._dataset_notes))

    def _status(self, text: str):
        self.message = text

    def _dataset_notes(self, lines: list[str]):
        self.dataset_notes = lines

    def _progress(self, step: int, total: int):
        self.step, self.max_steps = step, total

    def _preview(self, step: int, image, path: Path):
        self.preview, self.last_image = image, str(path)

    def _saved(self, path: Path):
        self.last_saved = str(path)

    def html(self, with_preview: bool = True) -> str:
        """Starts with a newline: the WebUI's progress bar shows one-line status text inside the bar itself."""
        notes = "".join(f"<br>{html.escape(line)}" for line in self.dataset_notes)
        if not self.points:
            return "\n<p>" + html.escape(self.message) + notes + "</p>"
        p = self.points[-1]
        chart = png_data_uri(render_chart(self.points[-2000:]))
        preview = (f"<img class='hnext-preview' src='{png_data_uri(self.preview)}' style='max-width:256px'>"
                   if with_preview and self.preview is not None else "")
        return (f"\n<p>Step: {self.step} of {self.max_steps} (epoch {p.epoch}, {p.epoch_step} in epoch)<br>"
                f"Loss: {p.loss:.7f}<br>Learning rate: {p.learn_rate:.3g}<br>"
                f"Last saved hypernetwork: {html.escape(self.last_saved)}<br>"
                f"Last saved image: {html.escape(self.last_image)}<br>{html.escape(self.message)}{notes}</p>"
                f"<img class='hnext-chart' src='{chart}' style='max-width:100%'>{preview}")


def build(gr, hypernetwork_choices: Callable[[], list[str]], start: Callable[..., str | Iterator[str]],
          elem_prefix: str = "hnext_train", progress_js: str | None = None):
    """The tab's content. ``start(hypernetwork_name, settings, task_id)`` runs training and returns an HTML
    reply; a generator function instead yields HTML as training goes, and the page shows each (Gradio
    streams it; the app needs ``queue()``). With ``progress_js`` (a page function that supplies a task id,
    as the WebUI's Train tab does), a hidden first input carries the id and the host can report progress
    under it."""
    def eid(name):
        return f"{elem_prefix}_{name.replace('.', '_')}"

    components, messages = {}, {}

    def component(spec: Field, value):
        if spec.kind == "checkbox":
            return gr.Checkbox(label=spec.label, value=value, elem_id=eid(spec.key))
        if spec.kind == "number":
            return gr.Number(label=spec.label, value=value, elem_id=eid(spec.key))
        if spec.kind == "radio":
            return gr.Radio(label=spec.label, choices=list(spec.choices), value=value, elem_id=eid(spec.key))
        if spec.kind == "dropdown":
            return gr.Dropdown(label=spec.label, choices=available_optimizers(), value=value, elem_id=eid(spec.key))
        return gr.Textbox(label=spec.label, value=value, elem_id=eid(spec.key))

    defaults = dict(zip((f.key for f in FIELDS), default_values()))
    with gr.Row():
        hypernetwork = gr.Dropdown(label="Hypernetwork", choices=hypernetwork_choices(), elem_id=eid("hypernetwork"))
        refresh = gr.Button(value="\U0001f504", elem_id=eid("refresh"), scale=0, min_width=48)  # a tool button
    messages["hypernetwork"] = gr.HTML(elem_id=eid("hypernetwork_message"))
    for spec in (f for f in FIELDS if not f.advanced):
        components[spec.key] = component(spec, defaults[spec.key])
        messages[spec.key] = gr.HTML(elem_id=eid(spec.key + "_message"))
    with gr.Accordion("Advanced options", open=False):
        for spec in (f for f in FIELDS if f.advanced):
            components[spec.key] = component(spec, defaults[spec.key])
            messages[spec.key] = gr.HTML(elem_id=eid(spec.key + "_message"))
    with gr.Row():
        settings_file = gr.Textbox(label="Training settings file (JSON)", elem_id=eid("settings_file"))
        save_button = gr.Button(value="Save training settings", elem_id=eid("save_settings"))
        load_button = gr.Button(value="Load training settings", elem_id=eid("load_settings"))
    with gr.Row():
        interrupt = gr.Button(value="Interrupt", elem_id=eid("interrupt"))
        train_button = gr.Button(value="Train", variant="primary", elem_id=eid("train"))
    messages["settings"] = gr.HTML(elem_id=eid("settings_message"))
    output = gr.HTML(elem_id=eid("output"))
    task = gr.Textbox(visible=False, elem_id=eid("task_id"))
    if progress_js:
        gr.Gallery(label="Preview", show_label=False, elem_id=eid("gallery"))
        gr.HTML(elem_id=eid("progress"))

    inputs = [components[f.key] for f in FIELDS]
    message_keys = ["hypernetwork"] + [f.key for f in FIELDS] + ["settings"]

    message_outputs = [messages[key] for key in message_keys]
    problems = gr.State({})  # {input key: message} from the last press of Train

    def shown(errors: dict[str, str]) -> list:
        return [field_message(errors.get(key)) for key in message_keys]

    def replies(task_id, name, values) -> Iterator[tuple[str, dict[str, str]]]:
        settings, errors = settings_from_values(list(values))
        if not name:
            errors["hypernetwork"] = "Choose a hypernetwork to train"
        if errors or settings is None:
            yield "Nothing was started: fix the marked inputs.", errors
            return
        started = False
        try:
            reply = start(name, settings, task_id or None)
            for text in [reply] if isinstance(reply, str) else reply:
                started = True
                yield text, {}
        except HypernetworkError as error:
            key = getattr(error, "field", "settings")
            yield ("Training stopped." if started else "Training did not start."), {
                key if key in message_keys else "settings": str(error)}

    def run(task_id, name, *values):
        *_, last = replies(task_id, name, values)
        return last

    def run_streaming(task_id, name, *values):
        yield from replies(task_id, name, values)

    handler = run_streaming if inspect.isgeneratorfunction(start) else run
    # The messages beside the inputs are filled before and after the run, not by it: Gradio gives each output
    # of a running event a spinner and extra height, which would stretch the whole form while training runs.
    train_button.click(fn=lambda: shown({}), inputs=[], outputs=message_outputs, queue=False).then(
        fn=handler, inputs=[task, hypernetwork] + inputs, outputs=[output, problems],
        **({"_js": progress_js} if progress_js else {})).then(
        fn=shown, inputs=[problems], outputs=message_outputs, queue=False)
    refresh.click(fn=lambda: gr.update(choices=hypernetwork_choices()), inputs=[], outputs=[hypernetwork])
    save_button.click(fn=lambda path, *values: html.escape(save_settings(list(values), path)),
                      inputs=[settings_file] + inputs, outputs=[messages["settings"]])

    def load(path):
        values, text = load_settings(path)
        if values is None:
            return [gr.update() for _ in inputs] + [html.escape(text)]
        return values + [html.escape(text)]

    load_button.click(fn=load, inputs=[settings_file], outputs=inputs + [messages["settings"]])
    return {"hypernetwork": hypernetwork, "inputs": inputs, "train": train_button, "interrupt": interrupt,
            "output": output, "messages": messages, "run": handler}

