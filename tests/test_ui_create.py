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
