"""Generate: see a hypernetwork at work (standalone app): one image with a network or a set at a strength."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from .. import files
from ..adapters.base import PreviewRequest
from ..applier import FastApplier
from ..errors import HypernetworkError
from ..stack import SET_SUFFIXES, Applied, build_set, is_set_file, read_set_file, require_members


def list_networks(folder: str | Path) -> dict[str, Path]:
    """The app's list: each ``.pt`` / ``.safetensors`` file in ``folder`` by its name (dots and brackets
    included); when two files share a name (``x.pt`` and ``x.safetensors``) both are listed, by file name.
    Sets are left out: the app trains and previews single networks."""
    return {(name if len(paths) == 1 else path.name): path
            for name, paths in files.network_files(folder).items() for path in paths}


def find_network(folder: str | Path, name: str) -> Path | None:
    """The file listed as ``name`` in ``folder``, if there is one."""
    return list_networks(folder).get(name)


def list_networks_and_sets(folder: str | Path) -> dict[str, Path]:
    """What Generate offers: the networks of ``list_networks`` and the folder's sets (``.hnset.json``, ``.hns``)."""
    sets = {files.listed_name(path): path for path in sorted(Path(folder).iterdir())
            if path.is_file() and path.name.lower().endswith(SET_SUFFIXES)}
    return {**sets, **list_networks(folder)}  # of a set and a network with one name, the network


def _transform(path: Path, folder: Path, strength: float, device):
    """A network at ``strength``, or a set whose members are found by name in ``folder`` (as the WebUI finds them)."""
    if not is_set_file(path):
        return Applied(files.load(path).to(device), strength)
    spec = read_set_file(path)
    members = require_members(spec, folder)
    return build_set(spec, lambda name: files.load(members[name]).to(device), strength)


def make_generate(folder: Path, adapter: Callable[[], object]):
    """``generate(name, strength, prompt, negative, steps, cfg, seed, width, height) -> (image, message)``."""

    def generate(name, strength, prompt, negative_prompt, steps, cfg_scale, seed, width, height):
        model = adapter()
        transform, label = None, "no hypernetwork"
        if name:
            path = list_networks_and_sets(folder).get(name)
            if path is None:
                return None, f"{name} was not found in {folder}"
            try:
                transform = _transform(path, folder, float(strength), model.device)
            except HypernetworkError as error:
                return None, str(error)
            label = f"{name} at strength {float(strength):g}"
        request = PreviewRequest(prompt=prompt or "", negative_prompt=negative_prompt or "", steps=int(steps),
                                 cfg_scale=float(cfg_scale), seed=int(seed), width=int(width), height=int(height))
        undo = model.attach(FastApplier(transform))
        try:
            with torch.no_grad():
                image = model.render_preview(request)
        finally:
            undo()
        return image, f"Generated with {label}, seed {int(seed)}"

    return generate


def build(gr, hypernetwork_choices: Callable[[], list[str]], generate, elem_prefix: str = "hnext_generate"):
    def eid(name):
        return f"{elem_prefix}_{name}"

    with gr.Row():
        with gr.Column():
            with gr.Row():
                name = gr.Dropdown(label="Hypernetwork", choices=[""] + hypernetwork_choices(), value="",
                                   elem_id=eid("hypernetwork"))
                refresh = gr.Button(value="\U0001f504", elem_id=eid("refresh"), scale=0, min_width=48)  # a tool button
            strength = gr.Slider(label="Hypernetwork strength", minimum=0, maximum=2, step=0.05, value=1.0,
                                 elem_id=eid("strength"))
            prompt = gr.Textbox(label="Prompt", elem_id=eid("prompt"))
            negative = gr.Textbox(label="Negative prompt", elem_id=eid("negative"))
            with gr.Row():
                steps = gr.Number(label="Steps", value=20, precision=0, elem_id=eid("steps"))
                cfg = gr.Number(label="CFG scale", value=7.0, elem_id=eid("cfg"))
                seed = gr.Number(label="Seed", value=1, precision=0, elem_id=eid("seed"))
            with gr.Row():
                width = gr.Number(label="Width", value=64, precision=0, elem_id=eid("width"))
                height = gr.Number(label="Height", value=64, precision=0, elem_id=eid("height"))
            button = gr.Button(value="Generate", variant="primary", elem_id=eid("button"))
        with gr.Column():
            image = gr.Image(label="Result", elem_id=eid("image"))
            message = gr.HTML(elem_id=eid("message"))
    button.click(fn=generate, inputs=[name, strength, prompt, negative, steps, cfg, seed, width, height],
                 outputs=[image, message])
    refresh.click(fn=lambda: gr.update(choices=[""] + hypernetwork_choices()), inputs=[], outputs=[name])
