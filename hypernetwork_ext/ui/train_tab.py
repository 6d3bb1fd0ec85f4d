"""Train_Gamma: every training control, laid out from the settings table (its groups, rows and sliders), a
handler that validates them into ``TrainingSettings`` (messages beside the inputs), settings saved to and
loaded from JSON, the status a page shows while training runs, and the Gradio layout. How training then runs
(WebUI or standalone) is the host's ``start`` function."""

from __future__ import annotations

import base64
import dataclasses
import html
import inspect
import io
from pathlib import Path
from typing import Callable, Iterator

from ..errors import ConfigError, HypernetworkError, HypernetworkFileError
from ..adapters.sampling import SAMPLERS
from ..training import Callbacks
from ..training.chart import render_chart
from ..training.settings import GROUPS, SETTINGS_INFO, SettingInfo, TrainingSettings, coerce_to_kind
from .create_tab import message_update


# One control per setting, in this order; labels, notes, groups and rows are shared with `train --help`
FIELDS = SETTINGS_INFO
KEYS = [f.key for f in FIELDS]
LISTS = ("optimizer", "preview.sampler", "template")  # dropdowns whose lists the host or the machine supplies
# The WebUI hands the Train tabs its txt2img controls in this order (modules/ui.py, txt2img_preview_params)
TXT2IMG_PREVIEW_KEYS = ("preview.prompt", "preview.negative_prompt", "preview.steps", "preview.sampler",
                        "preview.cfg_scale", "preview.seed", "preview.width", "preview.height")
FROM_TXT2IMG_LABEL = "Read parameters (prompt, etc...) from txt2img tab when making previews"


def control_kind(spec: SettingInfo) -> str:
    """checkbox, slider, number, radio, dropdown (a list found at run time) or text."""
    default = spec.default()
    if isinstance(default, bool):
        return "checkbox"
    if spec.key in LISTS:
        return "dropdown"
    if spec.choices:
        return "radio"
    if spec.slider:
        return "slider"
    return "number" if isinstance(default, (int, float)) else "text"


def layout_rows(group: str) -> list[tuple[SettingInfo, ...]]:
    """The group's settings as the tab lays them out, top to bottom: the settings sharing a row key side by side
    (where the first of them is in the table), every other one on a line of its own."""
    rows, by_key = [], {}
    for spec in (f for f in FIELDS if f.group == group):
        if spec.row in by_key:
            by_key[spec.row].append(spec)
            continue
        row = [spec]
        rows.append(row)
        if spec.row:
            by_key[spec.row] = row
    return [tuple(row) for row in rows]


def accordion_id(elem_prefix: str, group: str) -> str:
    """hnext_train_optimizer_accordion for "Optimizer" (hnext_train_optimizer is the optimizer's own list)."""
    return f"{elem_prefix}_{group.lower().replace(' ', '_')}_accordion"


def default_values(settings: TrainingSettings | None = None) -> list:
    data = dataclasses.asdict(settings or TrainingSettings())
    return [_lookup(data, f.key) for f in FIELDS]


def with_txt2img_preview(values: list, txt2img_values: list) -> list:
    """Form values (in FIELDS order) whose preview settings are the txt2img tab's (in TXT2IMG_PREVIEW_KEYS order)."""
    values = list(values)
    for key, value in zip(TXT2IMG_PREVIEW_KEYS, txt2img_values):
        values[KEYS.index(key)] = value
    return values


def with_template_file(values: list, templates: dict[str, str]) -> list:
    """Form values whose template, when it names one of the host's templates, is that template's file."""
    values = list(values)
    index = KEYS.index("template")
    values[index] = templates.get(values[index], values[index])
    return values


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
          elem_prefix: str = "hnext_train", progress_js: str | None = None,
          preview_samplers: tuple[str, ...] = tuple(SAMPLERS), templates: Callable[[], dict[str, str]] = dict,
          txt2img_preview_params: list | None = None):
    """The tab's content. ``start(hypernetwork_name, settings, task_id)`` runs training and returns an HTML
    reply; a generator function instead yields HTML as training goes, and the page shows each (Gradio
    streams it; the app needs ``queue()``). With ``progress_js`` (a page function that supplies a task id,
    as the WebUI's Train tab does), a hidden first input carries the id and the host can report progress
    under it. ``preview_samplers``: the names the host's previews take (the first is the default).
    ``templates()``: the host's prompt templates, {name: file}, offered by name (a path or template text may
    be typed too). ``txt2img_preview_params``: the txt2img controls (TXT2IMG_PREVIEW_KEYS order) that previews
    may read instead of their own settings, with a checkbox; without them there is no such checkbox."""
    lists = {"optimizer": lambda: list(FIELDS[KEYS.index("optimizer")].options()),
             "preview.sampler": lambda: list(preview_samplers), "template": lambda: sorted(templates())}

    def eid(name):
        return f"{elem_prefix}_{name.replace('.', '_')}"

    components, messages, accordions = {}, {}, {}
    defaults = dict(zip(KEYS, default_values()))

    def control(spec: SettingInfo):
        common = dict(label=spec.label, info=spec.info or None, value=defaults[spec.key], elem_id=eid(spec.key))
        kind = control_kind(spec)
        if kind == "checkbox":
            return gr.Checkbox(**common)
        if kind == "slider":
            minimum, maximum, step = spec.slider
            return gr.Slider(minimum=minimum, maximum=maximum, step=step, **common)
        if kind == "number":
            return gr.Number(**common)
        if kind == "radio":
            return gr.Radio(choices=list(spec.options()), **common)
        if kind == "dropdown":  # the sampler and template may also be typed; they are checked on Train
            return gr.Dropdown(choices=lists[spec.key](), allow_custom_value=spec.key != "optimizer", **common)
        return gr.Textbox(**common)

    def field(spec: SettingInfo):
        components[spec.key] = control(spec)
        messages[spec.key] = gr.HTML(elem_id=eid(spec.key + "_message"), visible=False)

    def template_field(spec: SettingInfo):
        with gr.Row():
            components[spec.key] = control(spec)
            refresh = gr.Button(value="\U0001f504", elem_id=eid("template_refresh"), scale=0, min_width=48)
        messages[spec.key] = gr.HTML(elem_id=eid(spec.key + "_message"), visible=False)
        refresh.click(fn=lambda: gr.update(choices=lists["template"]()), inputs=[], outputs=[components[spec.key]])

    def fields(group: str):
        for row in layout_rows(group):
            if row[0].key == "template":
                template_field(row[0])
            elif len(row) == 1:
                field(row[0])
            else:
                with gr.Row():
                    for spec in row:
                        with gr.Column(min_width=160):
                            field(spec)

    from_txt2img = None
    with gr.Row():
        hypernetwork = gr.Dropdown(label="Hypernetwork", choices=hypernetwork_choices(), elem_id=eid("hypernetwork"))
        refresh = gr.Button(value="\U0001f504", elem_id=eid("refresh"), scale=0, min_width=48)  # a tool button
    messages["hypernetwork"] = gr.HTML(elem_id=eid("hypernetwork_message"), visible=False)
    first, *folded = GROUPS
    fields(first)
    for group in folded:
        with gr.Accordion(group, open=False, elem_id=accordion_id(elem_prefix, group)) as accordions[group]:
            if group == FIELDS[KEYS.index("preview.prompt")].group and txt2img_preview_params:
                from_txt2img = gr.Checkbox(label=FROM_TXT2IMG_LABEL, value=False, elem_id=eid("preview_from_txt2img"))
            fields(group)
    with gr.Accordion("Training settings file", open=False, elem_id=eid("settings_file_accordion")):
        with gr.Row():
            settings_file = gr.Textbox(label="Training settings file (JSON)", elem_id=eid("settings_file"))
            save_button = gr.Button(value="Save training settings", elem_id=eid("save_settings"))
            load_button = gr.Button(value="Load training settings", elem_id=eid("load_settings"))
        settings_file_message = gr.HTML(elem_id=eid("settings_file_message"))
    with gr.Row():
        interrupt = gr.Button(value="Interrupt", elem_id=eid("interrupt"))
        train_button = gr.Button(value="Train", variant="primary", elem_id=eid("train"))
    messages["settings"] = gr.HTML(elem_id=eid("settings_message"), visible=False)
    output = gr.HTML(elem_id=eid("output"))
    task = gr.Textbox(visible=False, elem_id=eid("task_id"))
    if progress_js:
        gr.Gallery(label="Preview", show_label=False, elem_id=eid("gallery"))
        gr.HTML(elem_id=eid("progress"))

    inputs = [components[key] for key in KEYS]
    preview_source = [from_txt2img, *txt2img_preview_params] if from_txt2img is not None else []
    message_keys = ["hypernetwork"] + KEYS + ["settings"]
    message_outputs = [messages[key] for key in message_keys]
    problems = gr.State({})  # {input key: message} from the last press of Train

    group_of = {f.key: f.group for f in FIELDS}

    def shown(errors: dict[str, str]) -> list:
        """Each message beside its input, and the accordions that hold a message opened to show it."""
        marked = {group_of.get(key) for key in errors}
        return [message_update(gr, errors.get(key)) for key in message_keys] + [
            gr.update(open=True) if group in marked else gr.update() for group in folded]

    def form_values(values, source=()) -> list:
        """What the run uses: a template chosen by name is its file, and with the box ticked (the first of
        ``source``, then the txt2img values) the previews are the txt2img tab's."""
        if source and source[0]:
            values = with_txt2img_preview(values, source[1:])
        return with_template_file(values, templates())

    def replies(task_id, name, values) -> Iterator[tuple[str, dict[str, str]]]:
        source, values = values[:len(preview_source)], values[len(preview_source):]
        settings, errors = settings_from_values(form_values(values, source))
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
    shown_outputs = message_outputs + [accordions[group] for group in folded]
    # The messages beside the inputs are filled before and after the run, not by it: Gradio gives each output
    # of a running event a spinner and extra height, which would stretch the whole form while training runs.
    train_button.click(fn=lambda: shown({}), inputs=[], outputs=shown_outputs, queue=False).then(
        fn=handler, inputs=[task, hypernetwork] + preview_source + inputs, outputs=[output, problems],
        **({"_js": progress_js} if progress_js else {})).then(
        fn=shown, inputs=[problems], outputs=shown_outputs, queue=False)
    refresh.click(fn=lambda: gr.update(choices=hypernetwork_choices()), inputs=[], outputs=[hypernetwork])
    save_button.click(fn=lambda path, *values: html.escape(save_settings(form_values(values), path)),
                      inputs=[settings_file] + inputs, outputs=[settings_file_message])

    def load(path):
        values, text = load_settings(path)
        if values is None:
            return [gr.update() for _ in inputs] + [html.escape(text)]
        return values + [html.escape(text)]

    load_button.click(fn=load, inputs=[settings_file], outputs=inputs + [settings_file_message])
    return {"hypernetwork": hypernetwork, "inputs": inputs, "train": train_button, "interrupt": interrupt,
            "output": output, "messages": messages, "accordions": accordions, "from_txt2img": from_txt2img,
            "run": handler}
