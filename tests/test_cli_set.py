"""``python -m hypernetwork_ext set``: a named set (a weighted mix or a sequence) written from the command line."""

import pytest
import torch

from hypernetwork_ext import files
from hypernetwork_ext.cli import main
from hypernetwork_ext.stack import apply_plain, build_set, locate_members, read_set_file, stack

from training_helpers import make_network


@pytest.fixture
def folder(tmp_path):
    make_network(tmp_path / "a.pt", seed=1, init_std=0.3)
    make_network(tmp_path / "v1.5-b.safetensors", seed=2, init_std=0.3)
    return tmp_path


def applied(set_path, x):
    """The key and value inputs after the set, its members found as the WebUI finds them."""
    spec = read_set_file(set_path)
    members = locate_members(spec, set_path.parent)
    return apply_plain(build_set(spec, lambda name: files.load(members[name])), x)


def test_a_mix_and_a_sequence_apply_as_their_networks_would(folder, capsys):
    a, b = files.load(folder / "a.pt"), files.load(folder / "v1.5-b.safetensors")
    x = torch.randn(2, 3, 48)
    assert main(["set", "--out", str(folder / "mix.hnset.json"), "--mix", str(folder / "a.pt") + ":3",
                 "v1.5-b.safetensors:1", "--description", "three to one"]) == 0
    assert "use it as <hypernet:mix:1>" in capsys.readouterr().out
    assert read_set_file(folder / "mix.hnset.json")["mix"][0]["network"] == "a"  # a file given by path: its name
    k, v = applied(folder / "mix.hnset.json", x)
    ka, va = apply_plain(stack([(a, 1)]), x)
    kb, vb = apply_plain(stack([(b, 1)]), x)
    assert torch.allclose(k, 0.75 * ka + 0.25 * kb, atol=1e-6) and torch.allclose(v, 0.75 * va + 0.25 * vb, atol=1e-6)

    assert main(["set", "--out", str(folder / "chain.hnset.json"), "--sequence", "a:0.6", "v1.5-b"]) == 0
    out = capsys.readouterr().out
    assert f"Wrote {folder / 'chain.hnset.json'}: use it as <hypernet:chain:1>" in out and "a  strength 0.6" in out
    expected = apply_plain(stack([(a, 0.6), (b, 1.0)]), x)  # as the tags <hypernet:a:0.6> <hypernet:v1.5-b:1>
    assert all(torch.equal(got, want) for got, want in zip(applied(folder / "chain.hnset.json", x), expected))
    assert main(["inspect", str(folder / "chain.hnset.json")]) == 0
    assert "all present" in capsys.readouterr().out


@pytest.mark.parametrize("args, fragment", [
    (["--out", "{tmp}/x.hnset.json", "--mix", "a.pt:lots"], "weight 'lots' in 'a.pt:lots' is not a number"),
    (["--out", "{tmp}/x.hnset.json", "--sequence", "a:x"], "strength 'x' in 'a:x' is not a number"),
    (["--out", "{tmp}/x.hnset.json", "--mix", "a", "missing.pt"], "no hypernetwork named 'missing' in"),
    (["--out", "{tmp}/a.hnset.json", "--mix", "v1.5-b"], "'a' is already the name of"),
    (["--out", "{tmp}/x.json", "--mix", "a"], "x.json: a set's file name ends in .hnset.json"),
    (["--out", "{tmp}/x.hnset.json", "--mix", "a:-1"], "weight -1 must not be negative"),
    (["--out", "{tmp}/x.hnset.json"], "one of the arguments --mix --sequence is required"),
    (["--out", "{tmp}/x.hnset.json", "--mix", "a", "--sequence", "a"], "not allowed with argument --mix"),
])
def test_bad_inputs_are_one_line_with_status_2_and_write_nothing(folder, capsys, args, fragment):
    before = sorted(folder.iterdir())
    status = main(["set"] + [arg.replace("{tmp}", str(folder)) for arg in args])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], lines
    assert sorted(folder.iterdir()) == before


def test_an_existing_set_is_replaced_only_with_overwrite(folder, capsys):
    out = str(folder / "combo.hnset.json")
    assert main(["set", "--out", out, "--mix", "a"]) == 0
    before = (folder / "combo.hnset.json").read_bytes()
    assert main(["set", "--out", out, "--sequence", "v1.5-b"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert (folder / "combo.hnset.json").read_bytes() == before
    assert main(["set", "--out", out, "--sequence", "v1.5-b", "--overwrite"]) == 0
    assert "sequence" in read_set_file(folder / "combo.hnset.json")


def test_merge_names_the_files_whose_structures_differ(folder, capsys):
    make_network(folder / "wide.pt", seed=3, layer_structure=(1, 3, 1))
    assert main(["merge", "--out", str(folder / "m.pt"), str(folder / "a.pt"), str(folder / "wide.pt")]) == 2
    error = capsys.readouterr().err
    assert "'wide' (layers 1, 3, 1" in error and "the structure of 'a' (layers 1, 2, 1" in error, error
    assert not (folder / "m.pt").exists()
