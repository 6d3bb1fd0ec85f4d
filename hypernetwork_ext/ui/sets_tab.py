"""Sets and merges: rows of the folder's hypernetworks, each with a number, saved as a named set (a weighted mix
or a sequence, ``<name>.hnset.json``) or merged in weight space into a new ``<name>.pt``. The handlers, then the
Gradio layout."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import files
from ..config import parse_name
from ..errors import ConfigError, HypernetworkError
from ..stack import SET_SUFFIX, compose_set, merge, merge_weights_note, save_set
from .create_tab import field_message

ROWS = 6  # network rows in the form; a row without a network is left out
MODE_LABELS = {"mix": "Mix (the numbers are weights)", "sequence": "Sequence (the numbers are strengths)"}
MESSAGE_KEYS = ("members", "name")  # the inputs a message can stand beside


@dataclass
class SetsOutcome:
    path: Path | None
    message: str
    errors: dict[str, str] = field(default_factory=dict)  # input -> message shown beside it
    notes: list[str] = field(default_factory=list)


def available_networks(folder: str | Path) -> dict[str, Path]:
    """The networks a set can name, by name: the folder's and its subfolders' ``.pt`` / ``.safetensors`` files, each
    name with the file the WebUI's listing would use (the later of two with one name)."""
    return {name: paths[-1] for name, paths in files.network_files(folder, recursive=True).items()}


def chosen(rows: list[tuple[str | None, float | None]]) -> list[tuple[str, float]]:
    """The rows that name a network, with their numbers; a chosen row without a number is an input to fix."""
    entries = []
    for position, (name, number) in enumerate(rows, start=1):
        if not name:
            continue
        if number is None or isinstance(number, bool) or not math.isfinite(float(number)):
            raise ConfigError("members", f"Row {position} ({name}): give a number for it")
        entries.append((name, float(number)))
    return entries


def save_set_from_form(folder: str | Path, name: str, mode: str, rows: list, overwrite: bool,
                       description: str = "") -> SetsOutcome:
    """``<folder>/<name>.hnset.json`` from the rows; nothing is written when an input is wrong. ``mode``: ``mix`` or
    ``sequence``, or its label in the form."""
    mode = {label: key for key, label in MODE_LABELS.items()}.get(mode, mode)
    try:
        set_name = parse_name(name)
        path = Path(folder) / f"{set_name}{SET_SUFFIX}"
        spec = compose_set(mode, chosen(rows))
        if path.exists() and not overwrite:
            raise ConfigError("name", f"{path.name} already exists; choose another name or tick Overwrite")
        save_set(path, spec, description)
    except HypernetworkError as error:
        return _refused("No set was saved", error)
    return SetsOutcome(path, f"Saved the {mode} {path}; use it as <hypernet:{set_name}:1>")


def merge_from_form(folder: str | Path, name: str, rows: list, overwrite: bool) -> SetsOutcome:
    """``<folder>/<name>.pt``: every weight the rows' weighted sum; the networks must share one structure."""
    networks = available_networks(folder)
    try:
        merged_name = parse_name(name)
        path = Path(folder) / f"{merged_name}.pt"
        entries = chosen(rows)
        if len(entries) < 2:
            raise ConfigError("members", "Choose at least two hypernetworks to merge")
        missing = [member for member, _ in entries if member not in networks]
        if missing:
            raise ConfigError("members", f"{', '.join(missing)} is no longer in {folder}; press refresh")
        if path.exists() and not overwrite:
            raise ConfigError("name", f"{path.name} already exists; choose another name or tick Overwrite")
        files.check_free_name(path)
        files.save(merge([(files.load_by_file_name(networks[member]), weight) for member, weight in entries],
                         merged_name), path)
    except ConfigError as error:
        return _refused("Nothing was merged", error)
    except HypernetworkError as error:  # a member that cannot be read
        return _refused("Nothing was merged", ConfigError("members", str(error)))
    note = merge_weights_note([weight for _, weight in entries])
    return SetsOutcome(path, f"Merged {len(entries)} hypernetworks into {path}", notes=[note] if note else [])


def _refused(what: str, error: HypernetworkError) -> SetsOutcome:
    key = getattr(error, "field", "")
    if key in MESSAGE_KEYS:
        return SetsOutcome(None, f"{what}: fix the marked input.", {key: str(error)})
    return SetsOutcome(None, f"{what}: {error}")


def reply_html(outcome: SetsOutcome) -> str:
    return html.escape(outcome.message) + "".join(f"<br>note: {html.escape(note)}" for note in outcome.notes)


def build(gr, folder: Callable[[], str], on_saved: Callable[[], None] | None = None, elem_prefix: str = "hnext_sets"):
    """The tab's content (call inside a ``gr.Tab``); ``folder()`` gives the hypernetworks folder, ``on_saved`` runs
    after a file was written (the WebUI reloads its list of hypernetworks)."""
    def eid(name):
        return f"{elem_prefix}_{name}"

    def choices():
        return [""] + sorted(available_networks(folder()))

    dropdowns, numbers = [], []
    with gr.Row():
        with gr.Column():
            gr.Markdown("Choose hypernetworks of the folder and a number for each. A **set** applies them as one "
                        "name: a mix (their outputs averaged by weight) or a sequence (one after another, each "
                        "at its strength, as a prompt's stack of tags). A **merge** writes one new network whose "
                        "weights are the weighted sum of theirs (they must have the same structure).")
            refresh = gr.Button(value="\U0001f504 Refresh the list", elem_id=eid("refresh"))
            for row in range(1, ROWS + 1):
                with gr.Row():
                    dropdowns.append(gr.Dropdown(label=f"Hypernetwork {row}", choices=choices(), value="",
                                                 elem_id=eid(f"network_{row}")))
                    numbers.append(gr.Number(label="Weight / strength", value=1.0, elem_id=eid(f"number_{row}")))
            members_message = gr.HTML(elem_id=eid("members_message"))
            name = gr.Textbox(label="Name of the new set or hypernetwork", elem_id=eid("name"))
            name_message = gr.HTML(elem_id=eid("name_message"))
            overwrite = gr.Checkbox(label="Overwrite an existing file of that name", value=False,
                                    elem_id=eid("overwrite"))
            with gr.Row():
                mode = gr.Radio(label="Set", choices=list(MODE_LABELS.values()), value=MODE_LABELS["mix"],
                                elem_id=eid("mode"))
                description = gr.Textbox(label="Description of the set (optional)", elem_id=eid("description"))
            with gr.Row():
                save_button = gr.Button(value="Save set", variant="primary", elem_id=eid("save"))
                merge_button = gr.Button(value="Merge into a new hypernetwork", elem_id=eid("merge"))
            output = gr.HTML(elem_id=eid("output"))

    def shown(outcome: SetsOutcome) -> list:
        if outcome.path is not None and on_saved:
            on_saved()
        return [field_message(outcome.errors.get("members")), field_message(outcome.errors.get("name")),
                reply_html(outcome)]

    def rows_of(values) -> list:
        return list(zip(values[:ROWS], values[ROWS:]))

    def save(name_text, mode_label, description_text, replace, *values):
        return shown(save_set_from_form(folder(), name_text, mode_label, rows_of(values), replace, description_text))

    def merge_rows(name_text, replace, *values):
        return shown(merge_from_form(folder(), name_text, rows_of(values), replace))

    outputs = [members_message, name_message, output]
    save_button.click(fn=save, inputs=[name, mode, description, overwrite] + dropdowns + numbers, outputs=outputs)
    merge_button.click(fn=merge_rows, inputs=[name, overwrite] + dropdowns + numbers, outputs=outputs)
    refresh.click(fn=lambda: [gr.update(choices=choices()) for _ in dropdowns], inputs=[], outputs=dropdowns)
    return {"networks": dropdowns, "numbers": numbers, "name": name, "mode": mode, "save": save_button,
            "merge": merge_button, "output": output}
