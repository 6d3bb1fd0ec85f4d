"""Sets and merges (the tab's handlers): a set composed from rows of the folder's networks, a merge of networks of
one structure, and Generate applying a saved set."""

import numpy as np
import pytest
import torch

from hypernetwork_ext import Hypernetwork, HypernetworkConfig, files
from hypernetwork_ext.stack import read_set_file
from hypernetwork_ext.ui.generate_tab import list_networks_and_sets, make_generate
from hypernetwork_ext.ui.sets_tab import MODE_LABELS, available_networks, merge_from_form, save_set_from_form

from training_helpers import make_network, tiny_adapter, weights_of

EMPTY_ROWS = [("", 1.0)] * 4


@pytest.fixture
def folder(tmp_path):
    folder = tmp_path / "hypernetworks"
    folder.mkdir()
    make_network(folder / "style.pt", seed=1, activation="relu", init_std=0.3)
    (folder / "sub").mkdir()
    make_network(folder / "sub" / "v1.5-detail.safetensors", seed=2, activation="relu", init_std=0.3)
    return folder


def listing(folder):
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_a_mix_and_a_sequence_from_the_rows(folder):
    assert sorted(available_networks(folder)) == ["style", "v1.5-detail"]  # subfolders too, by whole name
    rows = [("style", 2), ("", 1.0), ("v1.5-detail", 1)] + EMPTY_ROWS  # rows without a network are left out
    mix = save_set_from_form(folder, "combo", MODE_LABELS["mix"], rows, overwrite=False, description="my mix")
    assert mix.path == folder / "combo.hnset.json" and not mix.errors
    assert "use it as <hypernet:combo:1>" in mix.message
    assert read_set_file(mix.path) == {"mix": [{"network": "style", "strength": 1.0, "weight": 2.0},
                                               {"network": "v1.5-detail", "strength": 1.0, "weight": 1.0}],
                                       "strength": 1.0}
    sequence = save_set_from_form(folder, "chain", "sequence", rows, overwrite=False)
    assert read_set_file(sequence.path)["sequence"] == [{"network": "style", "strength": 2.0},
                                                        {"network": "v1.5-detail", "strength": 1.0}]


@pytest.mark.parametrize("name, rows, key, fragment", [
    ("", [("style", 1)], "name", "Name is empty"),
    ("a/b", [("style", 1)], "name", "path separator"),
    ("style", [("style", 1)], "name", "'style' is already the name of"),  # a set would hide the network
    ("v1.5-detail", [("style", 1)], "name", "is already the name of"),  # also one in a subfolder
    ("combo", [("", 1)], "members", "Choose at least one hypernetwork"),
    ("combo", [("style", None)], "members", "Row 1 (style): give a number"),
    ("combo", [("gone", 1)], "members", "no hypernetwork named 'gone'"),
])
def test_a_set_with_a_bad_input_says_which_and_writes_nothing(folder, name, rows, key, fragment):
    before = listing(folder)
    outcome = save_set_from_form(folder, name, "mix", rows, overwrite=False)
    assert outcome.path is None and fragment in outcome.errors[key], outcome
    assert listing(folder) == before


def test_an_existing_set_is_replaced_only_with_overwrite(folder):
    first = save_set_from_form(folder, "combo", "mix", [("style", 1)], overwrite=False)
    before = first.path.read_bytes()
    again = save_set_from_form(folder, "combo", "sequence", [("v1.5-detail", 1)], overwrite=False)
    assert again.path is None and "combo.hnset.json already exists" in again.errors["name"]
    assert first.path.read_bytes() == before
    assert save_set_from_form(folder, "combo", "sequence", [("v1.5-detail", 1)], overwrite=True).path == first.path
    assert "sequence" in read_set_file(first.path)


def test_a_merge_is_the_weighted_sum_of_the_weights(folder):
    outcome = merge_from_form(folder, "merged", [("style", 0.25), ("v1.5-detail", 0.75)] + EMPTY_ROWS, overwrite=False)
    assert outcome.path == folder / "merged.pt" and not outcome.notes, outcome
    merged, style, detail = (weights_of(path) for path in (outcome.path, folder / "style.pt",
                                                           folder / "sub" / "v1.5-detail.safetensors"))
    for key in merged:
        assert torch.allclose(merged[key], 0.25 * style[key] + 0.75 * detail[key], atol=1e-7), key
    assert files.load(outcome.path).name == "merged"
    uneven = merge_from_form(folder, "uneven", [("style", 1), ("v1.5-detail", 1)], overwrite=False)
    assert uneven.notes == ["the weights add up to 2, not 1, so the result is not an average"]


def test_a_merge_of_different_structures_names_the_networks_that_differ(folder):
    files.save(Hypernetwork.create(HypernetworkConfig(sizes=(48, 32, 64), layer_structure=(1, 3, 1)), "wide", seed=3),
               folder / "wide.pt")
    before = listing(folder)
    outcome = merge_from_form(folder, "merged", [("style", 0.5), ("wide", 0.5)], overwrite=False)
    assert outcome.path is None and listing(folder) == before
    assert "'wide' (layers 1, 3, 1; activation linear" in outcome.message
    assert "does not have the structure of 'style' (layers 1, 2, 1; activation relu" in outcome.message


@pytest.mark.parametrize("name, rows, overwrite, key, fragment", [
    ("merged", [("style", 1)], False, "members", "at least two hypernetworks"),
    ("style", [("style", 0.5), ("v1.5-detail", 0.5)], False, "name", "style.pt already exists"),
    ("v1.5-detail", [("style", 0.5), ("v1.5-detail", 0.5)], True, "name", "is already the name of"),
    ("", [("style", 0.5), ("v1.5-detail", 0.5)], False, "name", "Name is empty"),
])
def test_a_merge_with_a_bad_input_says_which_and_writes_nothing(folder, name, rows, overwrite, key, fragment):
    before = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    outcome = merge_from_form(folder, name, rows, overwrite=overwrite)
    assert outcome.path is None and fragment in outcome.errors[key], outcome
    assert {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()} == before


def test_generate_lists_a_saved_set_and_applies_it(folder):
    save_set_from_form(folder, "chain", "sequence", [("style", 0.7)], overwrite=False)
    assert sorted(list_networks_and_sets(folder)) == ["chain", "style"]  # the app lists its folder's own files
    adapter = tiny_adapter()
    generate = make_generate(folder, lambda: adapter)
    args = ("a cat", "", 4, 5.0, 3, 64, 64)
    by_set, message = generate("chain", 1.0, *args)
    by_network, _ = generate("style", 0.7, *args)
    plain, _ = generate("", 1.0, *args)
    assert message == "Generated with chain at strength 1, seed 3"
    assert np.array_equal(np.asarray(by_set), np.asarray(by_network))  # the sequence [style at 0.7] is that network
    assert not np.array_equal(np.asarray(by_set), np.asarray(plain))


def test_generate_names_a_member_that_is_missing(folder):
    make_network(folder / "local.pt", seed=4)
    save_set_from_form(folder, "chain", "sequence", [("local", 1)], overwrite=False)
    (folder / "local.pt").unlink()
    image, message = make_generate(folder, tiny_adapter)("chain", 1.0, "a cat", "", 2, 5.0, 3, 64, 64)
    assert image is None and message == (f"no hypernetwork named 'local' in {folder} or below; a set finds its "
                                         f"networks by name in its own folder")


def test_the_app_has_the_sets_tab(tmp_path):
    pytest.importorskip("gradio")
    from hypernetwork_ext.ui.app import build_app
    config = str(build_app(tmp_path / "hypernetworks").get_config_file())
    assert "Sets and merges" in config and "hnext_sets_network_1" in config and "hnext_sets_merge" in config
