"""Sweep: every combination of several starting points and several training settings, trained one after another
and compared (``training/sweep.py``). The form and its handler (form values -> a ``SweepPlan``, messages beside
the inputs), what the page shows while the sweep runs (status, the results table, the previews side by side, the
chart of all loss curves), and the Gradio layout. How a sweep runs (which model, one training at a time) is the
host's ``run``."""

from __future__ import annotations

import html
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from PIL import Image

from ..config import DEFAULT_SIZES
from ..errors import ConfigError, HypernetworkError
from ..training import TrainingSettings
from ..training.sweep import (DEFAULT_LOSS_WINDOW, TABLE_HEADERS, SweepPlan, SweepResult, creation_start, file_start,
                              load_settings_file, override_line, render_sweep_chart, settings_variants, table_cells)
from .create_tab import field_message

# beside Train_Gamma's log folder, not in the hypernetworks folder, whose list would show every saved copy
DEFAULT_OUT_DIR = str(Path(TrainingSettings().log_dir) / "sweep")
# the inputs that carry a message beside them, in the order the page shows them; "sweep" is the form's own
MESSAGE_KEYS = ("hypernetworks", "creation", "create_seed", "settings_files", "overrides", "out_dir", "loss_window",
                "sweep")
# the library's names of what is wrong -> the input it belongs to; anything else (a setting) goes under "sweep"
FIELD_INPUTS = {"starts": "creation", "hypernetworks": "hypernetworks", "creation": "creation",
                "create_seed": "create_seed", "variants": "overrides", "overrides": "overrides", "out": "out_dir",
                "loss_window": "loss_window"}


@dataclass
class SweepForm:
    hypernetworks: list = field(default_factory=list)  # names, as the host lists them
    creation: str = ""  # one creation variant per line
    create_seed: float = 0
    settings_files: str = ""  # one path per line
    overrides: str = ""  # one key=value1,value2 per line
    out_dir: str = ""
    overwrite: bool = False
    loss_window: float = DEFAULT_LOSS_WINDOW


def numbered_lines(text: str) -> list[tuple[int, str]]:
    """The lines of a text field that say something, numbered from 1; a line starting with # is a comment."""
    return [(number, line.strip()) for number, line in enumerate(str(text or "").splitlines(), start=1)
            if line.strip() and not line.strip().startswith("#")]


def plan_from_form(form: SweepForm, find_hypernetwork: Callable[[str], Path | None],
                   sizes: tuple[int, ...] | None = None) -> tuple[SweepPlan | None, dict[str, str]]:
    """The plan, or None and {input: message} for the inputs to fix (the first problem of each). ``sizes``: the
    modules of created networks, the model's attention widths (None: the WebUI's default list)."""
    sizes = sizes or DEFAULT_SIZES
    errors: dict[str, str] = {}

    def attempt(key, make):
        try:
            return make()
        except HypernetworkError as error:
            errors.setdefault(key, getattr(error, "message", str(error)))
            return None

    names = [form.hypernetworks] if isinstance(form.hypernetworks, str) else list(form.hypernetworks or [])
    starts = []
    for name in filter(None, names):
        path = find_hypernetwork(name)
        if path is None:
            errors.setdefault("hypernetworks", f"{name} is not in the list any more; press refresh")
        else:
            starts.append(attempt("hypernetworks", lambda: file_start(path)))
    for number, line in numbered_lines(form.creation):
        starts.append(attempt("creation", lambda: creation_start(line, sizes, f"Line {number}")))
    bases = [attempt("settings_files", lambda: _settings_file(number, line))
             for number, line in numbered_lines(form.settings_files)]
    overrides = [attempt("overrides", lambda: override_line(line, f"Line {number}"))
                 for number, line in numbered_lines(form.overrides)]
    if not str(form.out_dir or "").strip():
        errors["out_dir"] = "Give the folder the results go to"
    if errors:
        return None, errors
    try:
        variants = settings_variants(bases or [("", TrainingSettings())], overrides)
        return SweepPlan(tuple(starts), variants, create_seed=form.create_seed, loss_window=form.loss_window), {}
    except ConfigError as error:
        return None, {FIELD_INPUTS.get(error.field, "overrides"): error.message}


def _settings_file(number: int, path: str):
    try:
        return load_settings_file(path)
    except HypernetworkError as error:
        raise ConfigError("settings_files", f"Line {number}: {error}") from None


def streamed(work: Callable[[Callable[[SweepResult], None]], SweepResult]) -> Iterator[SweepResult]:
    """Runs ``work(report)`` in a worker thread and yields each result it reports (the latest, when several came
    while the page was busy), then the one it returns; its error is raised here. The work goes on when the page
    goes away, so a sweep never stops half-way holding the host's lock."""
    changes: queue.Queue = queue.Queue()
    outcome: dict = {}
    done = object()

    def worker():
        try:
            outcome["result"] = work(changes.put)
        except BaseException as error:  # handed to the page's thread, which reports it
            outcome["error"] = error
        finally:
            changes.put(done)

    threading.Thread(target=worker, daemon=True, name="hypernetwork-sweep").start()
    while True:
        change = changes.get()
        while change is not done and not changes.empty():
            change = changes.get_nowait()
        if change is done:
            break
        yield change
    if "error" in outcome:
        raise outcome["error"]
    yield outcome["result"]


def status_html(result: SweepResult) -> str:
    if result.finished:
        return (f"<p>{html.escape(result.message)}<br>Results: {html.escape(str(result.results_json))}, "
                f"{html.escape(str(result.results_csv))}; chart: {html.escape(str(result.chart))}</p>")
    row = next((row for row in result.rows if row.index == result.current), None)
    where = (f"Combination {row.index} of {len(result.rows)}: {html.escape(row.label)}, step {result.step} of "
             f"{result.max_steps}<br>") if row else ""
    return f"<p>{where}{html.escape(result.message)}</p>"


def table_html(result: SweepResult) -> str:
    """The results table (the command line's columns); a failed combination's reason shows when pointed at."""
    head = "".join(f"<th>{html.escape(header)}</th>" for header in TABLE_HEADERS)
    body = "".join(f"<tr title='{html.escape(row.message)}'>" + "".join(
        f"<td>{html.escape(cell)}</td>" for cell in table_cells(row)) + "</tr>" for row in result.rows)
    return (f"<table class='hnext-sweep-table'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            f"<p>Losses: moving averages over {result.loss_window} steps.</p>")


def gallery_items(result: SweepResult) -> list[tuple[Image.Image, str]]:
    """The last preview of each combination that has one, captioned with the combination, side by side."""
    items = []
    for row in result.rows:
        if row.previews:
            with Image.open(row.previews[-1]) as image:
                items.append((image.convert("RGB"), f"{row.index}: {row.label}"))
    return items


class _PageView:
    """The page's outputs for a result; the previews and the chart are redrawn only when a combination ended."""

    def __init__(self, gr):
        self.gr, self.ended = gr, None

    def __call__(self, result: SweepResult) -> tuple:
        ended = sum(row.outcome not in ("waiting", "training") for row in result.rows), result.finished
        if ended == self.ended:
            pictures = (self.gr.update(), self.gr.update())
        else:
            self.ended = ended
            pictures = (gallery_items(result), render_sweep_chart(result.rows, result.loss_window))
        return (status_html(result), table_html(result)) + pictures


def build(gr, hypernetwork_choices: Callable[[], list[str]], find_hypernetwork: Callable[[str], Path | None],
          run: Callable[..., SweepResult], out_dir: str = DEFAULT_OUT_DIR,
          model_widths: Callable[[], tuple[int, ...] | None] = lambda: None, elem_prefix: str = "hnext_sweep"):
    """The tab's content (call inside a ``gr.Tab``). ``run(plan, out_dir, overwrite, report)`` runs a sweep to the
    end (``report(result)`` after every change; the tab runs it in a worker thread and shows each report);
    ``find_hypernetwork(name)`` is the file of a listed name (None when it is gone); ``out_dir`` the output folder
    offered; ``model_widths()`` the modules of created networks, read at each Run (the model's attention widths;
    None: the default list), as in Create Beta hypernetwork. The host binds the Interrupt button (``["interrupt"]``)."""
    def eid(name):
        return f"{elem_prefix}_{name}"

    messages = {}
    with gr.Row():
        hypernetworks = gr.Dropdown(label="Starting hypernetworks (each trained as it is)", choices=hypernetwork_choices(),
                                    multiselect=True, elem_id=eid("hypernetworks"))
        refresh = gr.Button(value="\U0001f504", elem_id=eid("refresh"), scale=0, min_width=48)  # a tool button
    messages["hypernetworks"] = gr.HTML(elem_id=eid("hypernetworks_message"))
    creation = gr.Textbox(label="New networks to start from, one per line, as the create command's flags: "
                                "layers=1,2,1; activation=relu; layer-norm", lines=3, elem_id=eid("creation"),
                          placeholder="layers=1,2,1; activation=relu\nlayers=1,4,1; activation=swish; dropout=0,0.1,0")
    messages["creation"] = gr.HTML(elem_id=eid("creation_message"))
    create_seed = gr.Number(label="Creation seed (every new network starts from it)", value=0, precision=0,
                            elem_id=eid("create_seed"))
    messages["create_seed"] = gr.HTML(elem_id=eid("create_seed_message"))
    settings_files = gr.Textbox(label="Training settings files (JSON, as Train_Gamma saves them), one path per line; "
                                      "none: the defaults", lines=2, elem_id=eid("settings_files"))
    messages["settings_files"] = gr.HTML(elem_id=eid("settings_files_message"))
    overrides = gr.Textbox(label="Settings to change or sweep, one per line: key=value1,value2 (names as in the "
                                 "settings JSON; '|' between values that hold commas); every combination of the "
                                 "values is tried with each settings file", lines=4, elem_id=eid("overrides"),
                           placeholder="learn_rate=1e-3,5e-4\nmax_steps=500")
    messages["overrides"] = gr.HTML(elem_id=eid("overrides_message"))
    with gr.Row():
        out = gr.Textbox(label="Output folder (a trained file per combination, logs, results, chart)", value=out_dir,
                         elem_id=eid("out_dir"))
        loss_window = gr.Number(label="Moving average of the loss over N steps", value=DEFAULT_LOSS_WINDOW,
                                precision=0, elem_id=eid("loss_window"))
    messages["out_dir"] = gr.HTML(elem_id=eid("out_dir_message"))
    messages["loss_window"] = gr.HTML(elem_id=eid("loss_window_message"))
    overwrite = gr.Checkbox(label="Overwrite an earlier sweep's results in the output folder", value=False,
                            elem_id=eid("overwrite"))
    with gr.Row():
        interrupt = gr.Button(value="Interrupt", elem_id=eid("interrupt"))
        run_button = gr.Button(value="Run sweep", variant="primary", elem_id=eid("run"))
    messages["sweep"] = gr.HTML(elem_id=eid("message"))
    status = gr.HTML(elem_id=eid("status"))
    table = gr.HTML(elem_id=eid("table"))
    gallery = gr.Gallery(label="Previews: the last of each combination", columns=4, elem_id=eid("gallery"))
    chart = gr.Image(label="Loss of every combination", type="pil", interactive=False, elem_id=eid("chart"))

    inputs = [hypernetworks, creation, create_seed, settings_files, overrides, out, overwrite, loss_window]
    message_outputs = [messages[key] for key in MESSAGE_KEYS]
    problems = gr.State({})  # {input key: message} from the last press of Run

    def shown(errors: dict[str, str]) -> list:
        return [field_message(errors.get(key)) for key in MESSAGE_KEYS]

    def replies(*values):
        form = SweepForm(*values)
        plan, errors = plan_from_form(form, find_hypernetwork, model_widths())
        if plan is None:
            yield "<p>Nothing was started: fix the marked inputs.</p>", gr.update(), gr.update(), gr.update(), errors
            return
        view, started = _PageView(gr), False
        try:
            for result in streamed(lambda report: run(plan, Path(form.out_dir.strip()), bool(form.overwrite), report)):
                started = True
                yield view(result) + ({},)
        except HypernetworkError as error:
            key = FIELD_INPUTS.get(getattr(error, "field", ""), "sweep")
            text = "The sweep stopped." if started else "The sweep did not start."
            yield f"<p>{text}</p>", gr.update(), gr.update(), gr.update(), {key: str(error)}

    # The messages beside the inputs are filled before and after the run, not by it (see train_tab.build).
    run_button.click(fn=lambda: shown({}), inputs=[], outputs=message_outputs, queue=False).then(
        fn=replies, inputs=inputs, outputs=[status, table, gallery, chart, problems]).then(
        fn=shown, inputs=[problems], outputs=message_outputs, queue=False)
    refresh.click(fn=lambda: gr.update(choices=hypernetwork_choices()), inputs=[], outputs=[hypernetworks])
    return {"inputs": inputs, "run": run_button, "interrupt": interrupt, "status": status, "table": table,
            "gallery": gallery, "chart": chart, "messages": messages, "handler": replies}
