"""The WebUI's entry into this extension: it installs the patches (undone when scripts unload).

The WebUI imports this file by path at startup. Everything it does is in ``patches/`` (imported under
a unique package name) and the library ``hypernetwork_ext``; this file only wires them up.
"""

import importlib.util
import sys
from pathlib import Path

from modules import script_callbacks, scripts, shared

EXTENSION_ROOT = Path(scripts.basedir())  # basedir() is the extension folder only while this file imports
if str(EXTENSION_ROOT) not in sys.path:
    sys.path.insert(0, str(EXTENSION_ROOT))  # `import hypernetwork_ext` must keep working after startup


def _patches_package():
    name = "hypernetwork_ext_patches"
    if name in sys.modules:
        return sys.modules[name]
    folder = EXTENSION_ROOT / "patches"
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py", submodule_search_locations=[str(folder)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    return package


def _install(registry):
    """(served hypernetworks, training gate); None for what is not patched (patching off, or this WebUI
    lacks the hypernetwork module or txt2img processing)."""
    if getattr(shared.cmd_opts, "hypernetwork_ext_no_patches", False):
        print("[hypernetwork-ext] --hypernetwork-ext-no-patches: the WebUI is left unchanged")
        return None, None
    try:
        from modules import devices
        from modules.hypernetworks import hypernetwork
    except ImportError as error:
        print(f"[hypernetwork-ext] this WebUI has no hypernetwork module ({error}); nothing to patch")
        return None, None
    served = importlib.import_module("hypernetwork_ext_patches.hypernetworks_a1111").install(
        registry, hypernetwork, shared, devices)
    importlib.import_module("hypernetwork_ext_patches.attention_fold").install(registry, served, shared, script_callbacks)
    try:
        from modules import call_queue, processing
    except ImportError as error:
        print(f"[hypernetwork-ext] no txt2img processing in this WebUI ({error}); training is not patched")
        return served, None
    gate = importlib.import_module("hypernetwork_ext_patches.webui_training").install(
        registry, hypernetwork, shared, processing, devices, _template_path, _model_info, call_queue.queue_lock)
    from modules import sd_hijack
    importlib.import_module("hypernetwork_ext_patches.forge").add_missing_hijack_functions(registry, sd_hijack)
    return served, gate


def _templates():
    """The WebUI's prompt templates, {file name: path}, listed again from its templates folder (files copied in
    since startup appear)."""
    try:
        from modules.textual_inversion import textual_inversion
    except ImportError:
        return {}
    listing = getattr(textual_inversion, "list_textual_inversion_templates", None)
    templates = listing() if listing is not None else textual_inversion.textual_inversion_templates
    return {name: template.path for name, template in templates.items() if getattr(template, "path", None)}


def _template_path(name):
    return _templates().get(name)


def _model_info():
    from hypernetwork_ext.training import ModelInfo
    info = getattr(shared.sd_model, "sd_checkpoint_info", None)
    return ModelInfo(getattr(info, "shorthash", None), getattr(info, "model_name", None))


def _bind_api_routes(_demo, _app):
    from modules.hypernetworks import hypernetwork
    importlib.import_module("hypernetwork_ext_patches.webui_training").bind_api_route(registry, hypernetwork)
    importlib.import_module("hypernetwork_ext_patches.create_route").bind_create_route(
        registry, lambda: shared.cmd_opts.hypernetwork_dir, shared.reload_hypernetworks)


def _model_attention_widths():
    """The attention widths of the loaded model, for the module sizes of Create Beta hypernetwork; None while no
    model is loaded. Reads the model the WebUI holds without loading one (``shared.sd_model`` would load it)."""
    try:
        from modules import sd_models
        model = sd_models.model_data.sd_model
    except (ImportError, AttributeError):
        model = getattr(shared, "sd_model", None)
    forge_unet = getattr(getattr(model, "forge_objects", None), "unet", None)  # Forge and reForge
    unet = getattr(getattr(forge_unet or model, "model", None), "diffusion_model", None)
    if unet is None:
        return None
    from hypernetwork_ext.attention import attention_widths
    return attention_widths(unet) or None


def _trainable_hypernetworks():
    """The networks in the folder now (refresh must show files copied in since startup); sets apply,
    they do not train."""
    shared.reload_hypernetworks()
    return importlib.import_module("hypernetwork_ext_patches.webui_training").trainable_names(shared.hypernetworks)


def _hypernetwork_file(name):
    """The file of a listed hypernetwork (None: not listed)."""
    path = shared.hypernetworks.get(name)
    return Path(path) if path else None


def build_tabs(txt2img_preview_params=None):
    """Create Beta hypernetwork, Train_Gamma, Sweep, and Sets and merges; ``txt2img_preview_params``: the txt2img
    controls that the Train tab callback hands over (previews may read them), None where there are none."""
    import gradio as gr
    from hypernetwork_ext.ui import create_tab, sets_tab, sweep_tab, train_tab

    with gr.Tab(label="Create Beta hypernetwork", id="hnext_create_tab", elem_id="hnext_create_tab"):
        create_tab.build(gr, lambda: shared.cmd_opts.hypernetwork_dir, on_created=shared.reload_hypernetworks,
                         model_widths=_model_attention_widths)
    with gr.Tab(label="Train_Gamma", id="hnext_train_tab", elem_id="hnext_train_tab"):
        from modules import devices, processing, progress
        webui_training = importlib.import_module("hypernetwork_ext_patches.webui_training")
        start = webui_training.start_from_tab(shared, processing, devices, _model_info, training_gate, progress)
        tab = train_tab.build(gr, _trainable_hypernetworks, start, progress_js="hnext_start_training",
                              preview_samplers=webui_training.webui_sampler_names() or (), templates=_templates,
                              txt2img_preview_params=txt2img_preview_params)
        tab["interrupt"].click(fn=lambda: shared.state.interrupt(), inputs=[], outputs=[])
    with gr.Tab(label="Sweep", id="hnext_sweep_tab", elem_id="hnext_sweep_tab"):
        run = importlib.import_module("hypernetwork_ext_patches.webui_sweep").run_from_tab(
            shared, processing, devices, _model_info, training_gate)
        tab = sweep_tab.build(gr, _trainable_hypernetworks, _hypernetwork_file, run,
                              model_widths=_model_attention_widths)
        tab["interrupt"].click(fn=lambda: shared.state.interrupt(), inputs=[], outputs=[])
    with gr.Tab(label="Sets and merges", id="hnext_sets_tab", elem_id="hnext_sets_tab"):  # a saved set is listed at once, for prompts
        sets_tab.build(gr, lambda: shared.cmd_opts.hypernetwork_dir, on_saved=shared.reload_hypernetworks)


class TabHost:
    """Our tabs go inside the WebUI's Train tab; a WebUI without one (Forge) never asks for Train tabs
    before it asks for top-level ones, and then they get a top-level "Hypernetworks" tab instead."""

    def __init__(self):
        self.in_train_tab = False

    def train_tabs(self, params):
        self.in_train_tab = True
        build_tabs(list(getattr(params, "txt2img_preview_params", None) or ()))

    def top_level_tabs(self):
        if self.in_train_tab:
            return []
        import gradio as gr
        with gr.Blocks(analytics_enabled=False) as tabs:
            with gr.Tabs(elem_id="hnext_tabs"):
                build_tabs()
        return [(tabs, "Hypernetworks", "hnext_hypernetworks")]


_patches_package()
registry = importlib.import_module("hypernetwork_ext_patches.registry").PatchRegistry()
served, training_gate = _install(registry)
script_callbacks.on_script_unloaded(registry.undo_all)
if served is not None:
    script_callbacks.on_before_ui(
        lambda: importlib.import_module("hypernetwork_ext_patches.extra_networks_page").ensure_page(registry))
    if training_gate is not None:
        tab_host = TabHost()
        script_callbacks.on_ui_train_tabs(tab_host.train_tabs)
        script_callbacks.on_ui_tabs(tab_host.top_level_tabs)
        script_callbacks.on_app_started(_bind_api_routes)
    script_callbacks.on_ui_settings(
        lambda: importlib.import_module("hypernetwork_ext_patches.settings").register(shared, served))


class HypernetworkExtension(scripts.Script):
    """Per generation: records which hypernetworks were applied (name and hash; the prompt tags keep
    name and strength), and on Forge and reForge puts them into the UNet before every sampling pass."""

    def title(self):
        return "Hypernetworks"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def after_extra_networks_activate(self, p, *args, **kwargs):
        if served is not None and shared.loaded_hypernetworks:
            info = importlib.import_module("hypernetwork_ext_patches.hypernetworks_a1111").generation_info(
                shared.loaded_hypernetworks)
            if info:
                p.extra_generation_params["Hypernet hashes"] = info

    def process_before_every_sampling(self, p, *args, **kwargs):
        if served is not None:
            importlib.import_module("hypernetwork_ext_patches.forge").apply_to_sampling(
                served, p, shared.loaded_hypernetworks)
