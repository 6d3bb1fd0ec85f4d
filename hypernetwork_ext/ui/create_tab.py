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
    activate_output: bool = False
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
            activate_output=form.activate_output, dropout=form.dropout if form.use_dropout else "", residual=form.residual,
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


def message_update(gr, text: str | None):
    """The update of the message beside an input: hidden while all is well, so that an empty message
    takes no room in the form."""
    return gr.update(value=field_message(text), visible=bool(text))


def offered_sizes(model_widths: Callable[[], tuple[int, ...] | None]) -> list[str]:
    """The module sizes to offer: the loaded model's attention widths (a network made with none of them could
    not be trained on it), or the WebUI's default list while no model is loaded."""
    return [str(width) for width in (model_widths() or DEFAULT_SIZES)]


def build(gr, folder: Callable[[], str], on_created: Callable[[], None] | None = None, elem_prefix: str = "hnext_create",
          model_widths: Callable[[], tuple[int, ...] | None] = lambda: None):
    """The tab's content (call inside a ``gr.Tab``); ``folder()`` gives the hypernetworks folder, ``model_widths()``
    the attention widths of the model the networks are for (None: no model loaded), read again by the refresh
    button beside the modules."""
    def eid(name):
        return f"{elem_prefix}_{name}"

    def message(key, elem):
        messages[key] = gr.HTML(elem_id=eid(elem + "_message"), visible=False)

    messages = {}
    sizes = offered_sizes(model_widths)
    name = gr.Textbox(label="Name", elem_id=eid("name"))
    message("name", "name")
    with gr.Row():
        modules = gr.CheckboxGroup(label="Modules", choices=sizes, value=sizes, elem_id=eid("sizes"))
        refresh_sizes = gr.Button(value="\U0001f504", elem_id=eid("sizes_refresh"), scale=0, min_width=48)
    message("sizes", "sizes")
    layers = gr.Textbox(label="Enter hypernetwork layer structure", value="1, 2, 1", elem_id=eid("layers"),
                        placeholder="1st and last digit must be 1. ex:'1, 2, 1'")
    message("layer_structure", "layers")
    with gr.Row():
        with gr.Column():
            activation = gr.Dropdown(label="Select activation function of hypernetwork. Recommended : Swish / "
                                           "Linear(none)", choices=activation_names(), value="linear",
                                     elem_id=eid("activation"))
            message("activation", "activation")
        with gr.Column():
            weight_init = gr.Dropdown(label="Select Layer weights initialization. Recommended: Kaiming for "
                                            "relu-like, Xavier for sigmoid-like, Normal otherwise",
                                      choices=list(INIT_MODES), value="Normal", elem_id=eid("weight_init"))
            message("weight_init", "weight_init")
    with gr.Row():
        layer_norm = gr.Checkbox(label="Add layer normalization", value=False, elem_id=eid("layer_norm"))
        activate_output = gr.Checkbox(label="Activate output (the activation function after the last layer too)",
                                      value=False, elem_id=eid("activate_output"))
    use_dropout = gr.Checkbox(label="Use dropout. Might improve training when dataset is small / limited.",
                              value=False, elem_id=eid("use_dropout"))
    dropout = gr.Textbox(label="Enter hypernetwork Dropout structure (or empty). Recommended : 0~0.35 incrementing "
                               "sequence: 0, 0.05, 0.15", value="0, 0, 0", elem_id=eid("dropout"),
                         placeholder="1st and last digit must be 0 and values should be between 0 and 1. ex:'0, 0.01, 0'")
    message("dropout_structure", "dropout")
    with gr.Accordion("Advanced options", open=False, elem_id=eid("advanced")) as advanced:
        with gr.Row():
            with gr.Column():
                seed = gr.Number(label="Weight initialization seed, set -1 for default", value=-1, precision=0,
                                 elem_id=eid("seed"))
                message("seed", "seed")
            with gr.Column():
                std = gr.Textbox(label="Standard Deviation for Normal weight initialization", value="0.01",
                                 elem_id=eid("std"))
                message("init_std", "std")
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

    form_inputs = {"name": name, "sizes": modules, "layers": layers, "activation": activation,
                   "weight_init": weight_init, "seed": seed, "std": std, "layer_norm": layer_norm,
                   "activate_output": activate_output, "use_dropout": use_dropout, "dropout": dropout,
                   "residual": residual, "residual_linear": residual_linear, "info": info, "overwrite": overwrite,
                   "file_format": file_format}
    message_order = list(messages)
    in_advanced = {"seed", "init_std"}  # their messages are inside the accordion, which opens to show them

    def submit(*values):
        outcome = create_from_form(CreateForm(**dict(zip(form_inputs, values))), folder())
        if outcome.path is not None and on_created:
            on_created()
        text = html.escape(outcome.message) + "".join(f"<br>note: {html.escape(n)}" for n in outcome.notes)
        if "output" in outcome.errors:
            text += "<br>" + field_message(outcome.errors["output"])
        opened = gr.update(open=True) if in_advanced & set(outcome.errors) else gr.update()
        return [message_update(gr, outcome.errors.get(key)) for key in message_order] + [text, opened]

    def refreshed_sizes():
        offered = offered_sizes(model_widths)
        return gr.update(choices=offered, value=offered)

    button.click(fn=submit, inputs=list(form_inputs.values()),
                 outputs=[messages[key] for key in message_order] + [output, advanced])
    refresh_sizes.click(fn=refreshed_sizes, inputs=[], outputs=[modules])
    return {"inputs": list(form_inputs.values()), "button": button, "output": output, "messages": messages,
            "sizes": modules}
