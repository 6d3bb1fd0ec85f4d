import urllib.request

import pytest
import torch

from hypernetwork_ext import files
from hypernetwork_ext.ui.create_tab import CreateForm, create_from_form

from webui_reference import webui_load, webui_safe_check


def test_create_writes_a_file_the_plain_webui_loads(tmp_path):
    outcome = create_from_form(CreateForm(name="スタイル", layers="1, 2, 1", activation="relu", seed=3,
                                          use_dropout=True, dropout="0, 0.2, 0"), tmp_path)
    assert outcome.path == tmp_path / "スタイル.pt" and not outcome.errors
    webui_safe_check(outcome.path)
    layers = webui_load(torch.load(outcome.path, map_location="cpu", weights_only=False))
    assert sorted(layers) == [320, 640, 768, 1024, 1280]
    x = torch.randn(1, 3, 320)
    assert torch.allclose(layers[320][0](x), files.load(outcome.path).pair_for(320).k(x), atol=1e-6)


@pytest.mark.parametrize("form, field, fragment", [
    (CreateForm(name="x", layers="1, a, 1"), "layer_structure", "entry 2 ('a') is not a number"),
    (CreateForm(name="x", layers="2, 2, 1"), "layer_structure", "must start and end with 1"),
    (CreateForm(name="x", use_dropout=True, dropout="0, 0.3"), "dropout_structure", "has 2 entries"),
    (CreateForm(name="x", use_dropout=True, dropout="0, 1.5, 0"), "dropout_structure", "below 1"),
    (CreateForm(name="../x"), "name", "path separator"),
    (CreateForm(name=""), "name", "empty"),
    (CreateForm(name="x", sizes=[]), "sizes", "at least one"),
    (CreateForm(name="x", std="abc"), "init_std", "not a number"),
    (CreateForm(name="x", seed=1.5), "seed", "whole number"),
])
def test_bad_inputs_get_a_message_beside_the_input_and_nothing_is_written(tmp_path, form, field, fragment):
    outcome = create_from_form(form, tmp_path)
    assert outcome.path is None and fragment in outcome.errors[field]
    assert not list(tmp_path.iterdir())


def test_existing_file_needs_overwrite(tmp_path):
    first = create_from_form(CreateForm(name="a", seed=1), tmp_path)
    before = first.path.read_bytes()
    again = create_from_form(CreateForm(name="a", seed=2), tmp_path)
    assert again.path is None and "already exists" in again.errors["name"] and first.path.read_bytes() == before
    assert create_from_form(CreateForm(name="a", seed=2, overwrite=True), tmp_path).path == first.path


def test_residual_is_flagged(tmp_path):
    outcome = create_from_form(CreateForm(name="r", residual=True), tmp_path)
    assert outcome.path and any("plain WebUI cannot load" in note for note in outcome.notes)


def test_the_app_serves_the_create_tab_on_localhost(tmp_path):
    pytest.importorskip("gradio")
    import socket
    from hypernetwork_ext.ui.app import launch
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = launch(tmp_path / "hypernetworks", port, block=False)
    try:
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).read().decode("utf-8", "replace")
        config = urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=30).read().decode()
    finally:
        app.close()
    assert "<html" in page.lower()
    assert "Create Beta hypernetwork" in config and "hnext_create_layers" in config


def test_activate_output_puts_the_activation_after_the_last_layer_in_the_plain_webui_too(tmp_path):
    x = torch.randn(4, 3, 320)
    changes = {}
    for activate in (False, True):
        outcome = create_from_form(CreateForm(name=f"out{activate}", activation="relu", activate_output=activate,
                                              seed=5, std="0.3"), tmp_path)
        assert outcome.path and not outcome.errors
        saved = torch.load(outcome.path, map_location="cpu", weights_only=False)
        assert saved["activate_output"] is activate
        module = webui_load(saved)[320][0]
        with torch.no_grad():
            changes[activate] = module(x) - x
            assert torch.allclose(module(x), files.load(outcome.path).pair_for(320).k(x), atol=1e-6)
    assert changes[True].min() >= 0 and changes[False].min() < 0  # relu now ends the module


def _create_page(folder=".", **options):
    gr = pytest.importorskip("gradio")
    from gradio_config import PageConfig
    from hypernetwork_ext.ui import create_tab
    with gr.Blocks() as blocks:
        create_tab.build(gr, lambda: str(folder), **options)
    return PageConfig(blocks)


def test_create_offers_the_loaded_models_widths_and_keeps_dropout_in_view():
    widths = {"now": (768, 320, 640, 1280)}
    page = _create_page(model_widths=lambda: widths["now"])
    assert page.choices("hnext_create_sizes") == ["768", "320", "640", "1280"]
    assert page.props("hnext_create_sizes")["value"] == ["768", "320", "640", "1280"]
    widths["now"] = (2048, 640, 1280)  # another model was loaded: the refresh button offers its widths
    update = page.handler("hnext_create_sizes_refresh")()
    assert update["choices"] == ["2048", "640", "1280"] and update["value"] == ["2048", "640", "1280"]
    widths["now"] = None  # no model loaded: the WebUI's default list
    assert page.handler("hnext_create_sizes_refresh")()["choices"] == ["768", "320", "640", "1024", "1280"]
    for elem_id in ("hnext_create_use_dropout", "hnext_create_dropout", "hnext_create_activate_output",
                    "hnext_create_layer_norm"):
        assert page.accordion_of(elem_id) is None, elem_id  # in view, not folded away
    assert page.accordion_of("hnext_create_seed") == "Advanced options"


def test_a_bad_value_in_the_closed_advanced_options_opens_them(tmp_path):
    page = _create_page(tmp_path)
    create = page.handler("hnext_create_button")
    shown = page.outputs("hnext_create_button", create(hnext_create_name="x", hnext_create_std="abc"))
    assert shown["hnext_create_advanced"]["open"] is True
    assert shown["hnext_create_std_message"]["visible"] is True and "not a number" in shown["hnext_create_std_message"]["value"]
    assert shown["hnext_create_name_message"]["visible"] is False  # no message, no room taken
    assert not list(tmp_path.iterdir())
    shown = page.outputs("hnext_create_button", create(hnext_create_name=""))
    assert shown["hnext_create_advanced"].get("open") is None  # its message is not in there: it stays as it is
    assert shown["hnext_create_name_message"]["visible"] is True


def test_the_webui_host_offers_the_loaded_models_widths(tmp_path):
    import webui
    from hypernetwork_ext.models.tiny import TINY_ATTENTION_WIDTHS, tiny_latent_diffusion
    modules = webui.reset(tmp_path)
    try:
        script = webui.load_extension()
        modules["shared"].sd_model = None
        assert script._model_attention_widths() is None  # no model yet: the default list is offered
        modules["shared"].sd_model = tiny_latent_diffusion()
        assert script._model_attention_widths() == TINY_ATTENTION_WIDTHS
    finally:
        modules["shared"].sd_model = None
        webui.unload_extension()
