"""Create Beta hypernetwork: the form, its handler and its Gradio layout."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import files
from ..config import DEFAULT_SIZES, INIT_MODES, HypernetworkConfig, activation_names, parse_name
from ..errors import ConfigError, HypernetworkError
from ..network import Hypernetwork

FIELDS = ("name", "sizes", "layer_structure", "activation", "weight_init", "init_std", "dropout_structure",
          "seed", "output")


@dataclass
class CreateForm:
    name: str = ""
    sizes: list = field(default_factory=lambda: [str(s) for s in DEFAULT_SIZES])
    layers: str = "1, 2, 1"
    activation: str = "linear"
    weight_init: str = "Normal"
    seed: float = -1
    std: str = "0.01"
    layer_norm: bool = False
    use_dropout: bool = False
    dropout: str = "0, 0, 0"
    residual: bool = False
    residual_linear: bool = False
    info: str = ""
    overwrite: bool = False
    file_format: str = ".pt"


@dataclass
class CreateOutcome:
    path: Path | None
    message: str
    errors: dict[str, str] = field(default_factory=dict)  # field -> message shown beside that input
    notes: list[str] = field(default_factory=list)


def create_from_form(form: CreateForm, folder: str | Path) -> CreateOutcome:
    """Validate everything, then write ``<folder>/<name>.pt``; nothing is written when any input is wrong."""
    errors: dict[str, str] = {}
    try:
        name = parse_name(form.name)
    except ConfigError as error:
        errors["name"] = error.message
        name = None
    try:
        seed = _seed(form.seed)
    except ConfigError as error:
        errors["seed"] = error.message
        seed = None
    try:
        if not form.sizes:
            raise ConfigError("sizes", "Choose at least one module size")
        config = HypernetworkConfig.from_text(
            sizes=",".join(str(s) for s in form.sizes), layers=form.layers, activation=form.activation,
            weight_init=form.weight_init, init_std=form.std, layer_norm=form.layer_norm,
            dropout=form.dropout if form.use_dropout else "", residual=form.residual,
            residual_shortcut="linear" if form.residual_linear else "interpolate")
    except ConfigError as error:
        errors[error.field] = error.message
        config = None
    if errors:
        return CreateOutcome(None, "Nothing was created: fix the marked inputs.", errors)
    path = Path(folder) / f"{name}{form.file_format}"
    if path.exists() and not form.overwrite:
        return CreateOutcome(None, "Nothing was created.",
                             {"name": f"{path.name} already exists; choose another name or tick Overwrite"})
    try:
        files.save(Hypernetwork.create(config, name, seed=seed, optional_info=form.info or None), path)
    except HypernetworkError as error:
        return CreateOutcome(None, f"Nothing was created: {error}", {"output": str(error)})
    notes = config.plain_webui_problems()
    return CreateOutcome(path, f"Created: {path} ({config.parameter_count():,} parameters)", {}, notes)


def _seed(value) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError("seed", f"Seed {value!r} is not a number; use -1 for a random start") from None
    if number != int(number):
        raise ConfigError("seed", f"Seed {value!r} must be a whole number")
    return None if int(number) < 0 else int(number)


def field_message(text: str | None) -> str:
    """HTML shown beside an input: empty when all is well."""
    return "" if not text else f"<span class='hnext-error' style='color:#d33'>{html.escape(text)}</span>"


def build(gr, folder: Callable[[], str], on_created: Callable[[], None] | None = None, elem_prefix: str = "hnext_create",
          sizes: tuple[int, ...] = DEFAULT_SIZES):
    """The tab's content (call inside a ``gr.Tab``); ``folder()`` gives the hypernetworks folder, ``sizes`` the
    attention widths offered as modules (those of the model the networks are for)."""
    def eid(name):
        return f"{elem_prefix}_{name}"

    messages = {}
    with gr.Row():
        with gr.Column():
            name = gr.Textbox(label="Name", elem_id=eid("name"))
            messages["name"] = gr.HTML(elem_id=eid("name_message"))
            modules = gr.CheckboxGroup(label="Modules", choices=[str(s) for s in sizes], value=[str(s) for s in sizes],
                                       elem_id=eid("sizes"))
            messages["sizes"] = gr.HTML(elem_id=eid("sizes_message"))
            layers = gr.Textbox(label="Enter hypernetwork layer structure", value="1, 2, 1", elem_id=eid("layers"),
                                placeholder="1st and last digit must be 1. ex:'1, 2, 1'")
            messages["layer_structure"] = gr.HTML(elem_id=eid("layers_message"))
            activation = gr.Dropdown(label="Select activation function of hypernetwork. Recommended : Swish / Linear(none)",
                                     choices=activation_names(), value="linear", elem_id=eid("activation"))
            messages["activation"] = gr.HTML(elem_id=eid("activation_message"))
            weight_init = gr.Dropdown(label="Select Layer weights initialization. Recommended: Kaiming for relu-like, "
                                            "Xavier for sigmoid-like, Normal otherwise",
                                      choices=list(INIT_MODES), value="Normal", elem_id=eid("weight_init"))
            messages["weight_init"] = gr.HTML(elem_id=eid("weight_init_message"))
            with gr.Accordion("Advanced options", open=False):
                with gr.Row():
                    seed = gr.Number(label="Weight initialization seed, set -1 for default", value=-1, precision=0,
                                     elem_id=eid("seed"))
                    std = gr.Textbox(label="Standard Deviation for Normal weight initialization", value="0.01",
                                     elem_id=eid("std"))
                messages["seed"] = gr.HTML(elem_id=eid("seed_message"))
                messages["init_std"] = gr.HTML(elem_id=eid("std_message"))
                layer_norm = gr.Checkbox(label="Add layer normalization", value=False, elem_id=eid("layer_norm"))
                use_dropout = gr.Checkbox(label="Use dropout. Might improve training when dataset is small / limited.",
                                          value=False, elem_id=eid("use_dropout"))
                dropout = gr.Textbox(label="Enter hypernetwork Dropout structure (or empty). Recommended : 0~0.35 "
                                           "incrementing sequence: 0, 0.05, 0.15", value="0, 0, 0", elem_id=eid("dropout"))
                messages["dropout_structure"] = gr.HTML(elem_id=eid("dropout_message"))
                with gr.Row():
                    residual = gr.Checkbox(label="Use skip-connection. Won't work without extension!", value=False,
                                           elem_id=eid("residual"))
                    residual_linear = gr.Checkbox(label="Learned (linear) skip-connection shortcut", value=False,
                                                  elem_id=eid("residual_linear"))
                file_format = gr.Radio(label="File format", choices=[".pt", ".safetensors"], value=".pt",
                                       elem_id=eid("format"))
            info = gr.Textbox(label="Optional information about Hypernetwork", elem_id=eid("info"))
            with gr.Row():
                overwrite = gr.Checkbox(label="Overwrite Old Hypernetwork", value=False, elem_id=eid("overwrite"))
                button = gr.Button(value="Create hypernetwork", variant="primary", elem_id=eid("button"))
            output = gr.HTML(elem_id=eid("output"))

    inputs = [name, modules, layers, activation, weight_init, seed, std, layer_norm, use_dropout, dropout, residual,
              residual_linear, info, overwrite, file_format]
    message_order = ["name", "sizes", "layer_structure", "activation", "weight_init", "seed", "init_std",
                     "dropout_structure"]

    def submit(*values):
        outcome = create_from_form(CreateForm(*values), folder())
        if outcome.path is not None and on_created:
            on_created()
        text = html.escape(outcome.message) + "".join(f"<br>note: {html.escape(n)}" for n in outcome.notes)
        if "output" in outcome.errors:
            text += "<br>" + field_message(outcome.errors["output"])
        return [field_message(outcome.errors.get(key)) for key in message_order] + [text]

    button.click(fn=submit, inputs=inputs, outputs=[messages[key] for key in message_order] + [output])
    return {"inputs": inputs, "button": button, "output": output, "messages": messages}
