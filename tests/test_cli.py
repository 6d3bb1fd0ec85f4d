import json
import subprocess
import sys

import pytest
import torch

from hypernetwork_ext import load
from hypernetwork_ext.cli import main

from webui_reference import webui_safe_check


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "hypernetwork_ext", *args], capture_output=True, text=True, cwd=cwd)


def test_create_inspect_convert_merge(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    done = run("create", "スタイル", "--out", str(a), "--sizes", "768,320", "--layers", "1, 2, 1",
               "--activation", "swish", "--dropout", "0, 0.2, 0", "--layer-norm", "--seed", "1", "--info", "hello")
    assert done.returncode == 0, done.stderr
    assert "Created" in done.stdout
    webui_safe_check(a)
    assert run("create", "other", "--out", str(b), "--sizes", "768,320", "--activation", "swish",
               "--dropout", "0, 0.2, 0", "--layer-norm", "--seed", "2").returncode == 0

    report = json.loads(run("inspect", str(a), "--json").stdout)
    assert report["name"] == "スタイル" and report["sizes"] == [768, 320] and report["activation"] == "swish"
    assert report["plain_webui_loadable"] is True and report["parameters"] > 0 and report["step"] == 0
    text = run("inspect", str(a)).stdout
    assert "plain WebUI    can load it" in text and "hello" in text

    assert run("convert", str(a), str(tmp_path / "a.safetensors")).returncode == 0
    report = json.loads(run("inspect", str(tmp_path / "a.safetensors"), "--json").stdout)
    assert report["plain_webui_loadable"] is False  # the plain WebUI lists only .pt

    merged = run("merge", "--out", str(tmp_path / "m.pt"), f"{a}:0.5", f"{b}:0.5")
    assert merged.returncode == 0, merged.stderr
    m, la, lb = load(tmp_path / "m.pt"), load(a), load(b)
    key = next(iter(m.state_dict()))
    assert torch.allclose(m.state_dict()[key], 0.5 * la.state_dict()[key] + 0.5 * lb.state_dict()[key])


def test_create_twice_with_a_seed_gives_the_same_bytes(tmp_path):
    for name in ("one.pt", "two.pt"):
        assert run("create", "same", "--out", str(tmp_path / name), "--sizes", "320", "--seed", "42").returncode == 0
    assert (tmp_path / "one.pt").read_bytes() == (tmp_path / "two.pt").read_bytes()


def test_residual_is_flagged_at_creation(tmp_path):
    done = run("create", "res", "--out", str(tmp_path / "r.pt"), "--sizes", "320", "--residual")
    assert done.returncode == 0 and "plain WebUI cannot load them" in done.stdout


@pytest.mark.parametrize("args, fragment", [
    (["create", "x", "--out", "{tmp}/x.pt", "--layers", "1, a, 1"], "entry 2 ('a') is not a number"),
    (["create", "x", "--out", "{tmp}/x.pt", "--layers", "2, 1"], "must start and end with 1"),
    (["create", "x", "--out", "{tmp}/x.pt", "--dropout", "0, 0.5"], "has 2 entries"),
    (["create", "x", "--out", "{tmp}/x.pt", "--activation", "nope"], "Unknown activation"),
    (["create", "x", "--out", "{tmp}/x.pt", "--std", "abc"], "is not a number"),
    (["create", "../x", "--out", "{tmp}/x.pt"], "path separator"),
    (["create", "x", "--out", "{tmp}/x.txt"], "ending in .pt or .safetensors"),
    (["create", "x", "--out", "{tmp}/x.pt", "--seed", "abc"], "invalid int value"),
    (["create", "x"], "--out"),
    (["inspect", "{tmp}/missing.pt"], "no such file"),
    (["inspect", "{tmp}/junk.pt"], "truncated, damaged or not a torch file"),
    (["convert", "{tmp}/junk.pt", "{tmp}/out.safetensors"], "truncated"),
    (["merge", "--out", "{tmp}/m.pt", "{tmp}/junk.pt:x"], "is not a number"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
])
def test_user_errors_are_one_line_with_status_2(tmp_path, capsys, args, fragment):
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    status = main([a.replace("{tmp}", str(tmp_path)) for a in args])
    stderr = capsys.readouterr().err
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], stderr


def test_a_real_process_exits_2_without_traceback(tmp_path):
    done = run("create", "x", "--out", str(tmp_path / "x.pt"), "--layers", "1, a, 1")
    assert done.returncode == 2
    assert done.stderr.strip() == "error: Layer structure: entry 2 ('a') is not a number"


def test_existing_files_are_not_overwritten_without_asking(tmp_path):
    path = tmp_path / "x.pt"
    assert run("create", "x", "--out", str(path), "--sizes", "320", "--seed", "1").returncode == 0
    before = path.read_bytes()
    done = run("create", "x", "--out", str(path), "--sizes", "320", "--seed", "2")
    assert done.returncode == 2 and "already exists" in done.stderr and path.read_bytes() == before
    assert run("create", "x", "--out", str(path), "--sizes", "320", "--seed", "2", "--overwrite").returncode == 0
    assert path.read_bytes() != before


@pytest.mark.parametrize("command", ["create", "inspect", "convert", "merge", "set"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0 and "usage:" in capsys.readouterr().out


def test_inspect_describes_a_set(tmp_path):
    from hypernetwork_ext.stack import write_set_file
    assert run("create", "style", "--out", str(tmp_path / "style.pt"), "--sizes", "768").returncode == 0
    (tmp_path / "sub").mkdir()
    assert run("create", "v1.5", "--out", str(tmp_path / "sub" / "v1.5.safetensors"), "--sizes", "768").returncode == 0
    spec = {"mix": [{"network": "style", "weight": 2},
                    {"sequence": ["v1.5", {"network": "face", "strength": 0.5}], "weight": 1}], "strength": 0.8}
    write_set_file(tmp_path / "combo.hnset.json", spec)

    done = run("inspect", str(tmp_path / "combo.hnset.json"), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["kind"] == "set" and report["name"] == "combo" and report["mode"] == "mix"
    assert report["strength"] == 0.8 and report["all_members_present"] is False
    assert report["members"] == [
        {"name": "style", "present": True, "path": str(tmp_path / "style.pt")},
        {"name": "v1.5", "present": True, "path": str(tmp_path / "sub" / "v1.5.safetensors")},
        {"name": "face", "present": False, "path": None}]
    assert report["set"]["mix"][1]["sequence"][1] == {"network": "face", "strength": 0.5}

    text = run("inspect", str(tmp_path / "combo.hnset.json")).stdout
    assert "mix of 2 at strength 0.8" in text and "style  weight 2" in text and "face  strength 0.5" in text
    assert f"face (missing from {tmp_path})" in text

    (tmp_path / "old.hns").write_text("['style', ('v1.5', 0.5)]")  # the old extension's sets
    text = run("inspect", str(tmp_path / "old.hns")).stdout
    assert "sequence of 2" in text and "all present" in text, text
