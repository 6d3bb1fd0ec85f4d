"""The extension started the way each WebUI starts it (webui-interfaces.md §1.2 and §5), in the stand-in
set up as A1111 1.8, A1111 1.10, Forge and reForge: no error, tabs and settings registered, patches in
place, a Hypernetworks card page that lists every kind of file, and everything undone on unload.

STAND-IN, kept because ../shared/webui provides A1111 1.8 only (not the 1.6 / 1.10 layout differences),
and the Forge and reForge builds it also provides are not in the real-WebUI test layer yet; A1111 1.8
itself is tested for real in tests/test_real_a1111.py."""

from __future__ import annotations

import types
from dataclasses import dataclass

import pytest
import torch

from hypernetwork_ext import Hypernetwork, HypernetworkConfig, files
from hypernetwork_ext.stack import write_set_file

import webui

PATCHED = ("list_hypernetworks", "load_hypernetwork", "load_hypernetworks", "apply_hypernetworks",
           "apply_single_hypernetwork", "train_hypernetwork")


@dataclass(frozen=True)
class Layout:
    callback_names: bool  # A1111 1.10, Forge and reForge take `name=`; 1.8 does not
    settings_before_train_tabs: bool  # 1.9+ build Settings first; 1.8 after the other tabs
    hypernetworks_page: bool  # Forge ships the card page but does not register it
    forge_unet: bool  # Forge and reForge never apply hypernetworks themselves


LAYOUTS = {
    "a1111-1.8": Layout(callback_names=False, settings_before_train_tabs=False, hypernetworks_page=True,
                        forge_unet=False),
    "a1111-1.10": Layout(callback_names=True, settings_before_train_tabs=True, hypernetworks_page=True,
                         forge_unet=False),
    "forge": Layout(callback_names=True, settings_before_train_tabs=True, hypernetworks_page=False, forge_unet=True),
    "reforge": Layout(callback_names=True, settings_before_train_tabs=True, hypernetworks_page=True, forge_unet=True),
}


def _without_name(register):
    def on_x(callback):  # A1111 1.8's signature: `name=` would be a TypeError there
        return register(callback)
    return on_x


@pytest.fixture(params=sorted(LAYOUTS))
def started(request, tmp_path, monkeypatch):
    gr = pytest.importorskip("gradio")
    layout = LAYOUTS[request.param]
    folder = tmp_path / "hypernetworks"
    folder.mkdir()
    modules = webui.reset(folder)
    from modules import ui_extra_networks
    callbacks = modules["callbacks"]
    if not layout.callback_names:
        for name in ("on_script_unloaded", "on_before_ui", "on_ui_settings", "on_ui_train_tabs", "on_ui_tabs"):
            monkeypatch.setattr(callbacks, name, _without_name(getattr(callbacks, name)))
    monkeypatch.setattr(ui_extra_networks, "HYPERNETWORKS_PAGE_BY_DEFAULT", layout.hypernetworks_page)
    originals = {name: getattr(modules["hypernetwork"], name) for name in PATCHED}
    _write_files(folder)

    # startup, in the WebUI's order: scripts load (callbacks cleared first), hypernetworks are listed,
    # the card pages are reset to the defaults, before_ui, then the UI with the Train tab and Settings
    callbacks.clear_callbacks()
    script_module = webui.load_extension()
    modules["shared"].reload_hypernetworks()
    ui_extra_networks.initialize()
    ui_extra_networks.register_default_pages()
    callbacks.before_ui_callback()
    with gr.Blocks() as blocks:
        if layout.settings_before_train_tabs:
            callbacks.ui_settings_callback()
        with gr.Tabs(elem_id="train_tabs"):
            callbacks.ui_train_tabs_callback(callbacks.UiTrainTabParams([]))
        if not layout.settings_before_train_tabs:
            callbacks.ui_settings_callback()
        top_level_tabs = callbacks.ui_tabs_callback()
    yield types.SimpleNamespace(layout=layout, modules=modules, folder=folder, blocks=blocks, script=script_module,
                                pages=ui_extra_networks.extra_pages, originals=originals, top_level_tabs=top_level_tabs)
    webui.unload_extension()
    for name, function in originals.items():  # a failed test must not leave patches behind
        setattr(modules["hypernetwork"], name, function)


def _write_files(folder):
    for name, seed in (("anime", 1), ("sketch", 2)):
        network = Hypernetwork.create(HypernetworkConfig(sizes=(32, 48), init_std=0.1), name, seed=seed)
        files.save(network, folder / f"{name}.pt" if name == "anime" else folder / f"{name}.safetensors")
    write_set_file(folder / "both.hnset.json", {"mix": [{"network": "anime"}, {"network": "sketch"}]})


def test_startup_registers_tabs_settings_and_patches(started, capsys):
    text = str(started.blocks.get_config_file())
    assert "Create Beta hypernetwork" in text and "Train_Gamma" in text and "Sets and merges" in text
    assert "hnext_sweep_run" in text
    assert started.top_level_tabs == []  # they are in the Train tab, so no "Hypernetworks" tab of their own
    assert "hypernetwork_ext_fast_apply" in started.modules["shared"].opts.data_labels
    for name, function in started.originals.items():
        assert getattr(started.modules["hypernetwork"], name) is not function, name
    assert "Traceback" not in capsys.readouterr().err


def test_one_hypernetworks_card_page_lists_every_kind_of_file(started):
    pages = [page for page in started.pages if page.name == "hypernetworks"]
    assert len(pages) == 1  # the WebUI's own where it has one, else the one the extension registers
    cards = {item["name"]: item for item in pages[0].list_items()}
    assert set(cards) == {"anime", "sketch", "both"}
    assert cards["sketch"]["filename"].endswith(".safetensors") and cards["both"]["filename"].endswith(".hnset.json")
    assert cards["anime"]["prompt"].startswith('"<hypernet:anime:"')


def test_unloading_undoes_everything(started):
    default_pages = len([page for page in started.pages if page.name == "hypernetworks"
                         and started.layout.hypernetworks_page])
    webui.unload_extension()
    for name, function in started.originals.items():
        assert getattr(started.modules["hypernetwork"], name) is function, name
    assert not started.modules["patches"].originals["hypernetwork_ext"]
    assert len([page for page in started.pages if page.name == "hypernetworks"]) == default_pages


def test_a_loaded_hypernetwork_reaches_attention(started):
    """A1111 applies it inside its own attention; Forge and reForge only through the UNet patcher."""
    modules = started.modules
    modules["hypernetwork"].load_hypernetworks(["anime"], [1.0])
    network = files.load(started.folder / "anime.pt")
    context = torch.randn(1, 7, 48, generator=torch.Generator().manual_seed(0))
    pair = network.pair_for(48)
    with torch.no_grad():
        expected_k = context + pair.k.linear(context)
        if started.layout.forge_unet:
            from forge_unet import UnetPatcher
            p = types.SimpleNamespace(sd_model=types.SimpleNamespace(forge_objects=types.SimpleNamespace(
                unet=UnetPatcher())))
            started.script.HypernetworkExtension().process_before_every_sampling(p)
            patch = p.sd_model.forge_objects.unet.model_options["transformer_options"]["patches"]["attn2_patch"][0]
            _, k, _ = patch(context, context, context, {})
        else:
            k, _ = modules["hypernetwork"].apply_hypernetworks(modules["shared"].loaded_hypernetworks, context)
    assert torch.allclose(k, expected_k, atol=1e-5)
