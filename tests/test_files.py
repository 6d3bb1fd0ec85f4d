import errno
import itertools
import os
import random
import zipfile
from collections import OrderedDict

import pytest
import torch

from hypernetwork_ext import HypernetworkFileError, files, load, save
from hypernetwork_ext.config import activation_names

from webui_reference import (RECORDS_1_6, RECORDS_1_8, old_extension_residual_forward, webui_apply, webui_load,
                             webui_safe_check)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_round_trip_is_bit_identical(tmp_path, make_network, suffix):
    network = make_network(seed=1, activation="elu", layer_norm=True, dropout_structure=(0, 0.2, 0), name="スタイル")
    network.step, network.sd_checkpoint, network.sd_checkpoint_name = 1500, "abcdef1234", "model-v1"
    network.optional_info = "notes"
    path = save(network, tmp_path / f"n{suffix}")
    loaded = load(path)
    assert _same_weights(network, loaded)
    assert loaded.config == network.config
    assert (loaded.name, loaded.step, loaded.sd_checkpoint, loaded.sd_checkpoint_name, loaded.optional_info) == \
        ("スタイル", 1500, "abcdef1234", "model-v1", "notes")


def test_same_seed_gives_identical_files(tmp_path, make_network):
    save(make_network(seed=9), tmp_path / "a.pt")
    save(make_network(seed=9), tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def test_convert_both_ways(tmp_path, make_network):
    network = make_network(seed=2, activation="swish")
    save(network, tmp_path / "a.pt")
    files.convert(tmp_path / "a.pt", tmp_path / "b.safetensors")
    files.convert(tmp_path / "b.safetensors", tmp_path / "c.pt")
    assert _same_weights(network, load(tmp_path / "c.pt"))
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "c.pt").read_bytes()


def test_pt_passes_the_webui_pickle_check_while_naive_torch_save_does_not(tmp_path, make_network):
    network = make_network(seed=3, activation="relu", layer_norm=True)
    path = save(network, tmp_path / "ours.pt")
    webui_safe_check(path, RECORDS_1_8)
    webui_safe_check(path, RECORDS_1_6)
    torch.save(files.to_webui_dict(network), tmp_path / "naive.pt")
    names = zipfile.ZipFile(tmp_path / "naive.pt").namelist()
    if any(".format_version" in n or ".storage_alignment" in n for n in names):  # current torch
        with pytest.raises(ValueError, match="bad file inside"):
            webui_safe_check(tmp_path / "naive.pt", RECORDS_1_8)
    files.save_optimizer_state(path, "AdamW", torch.optim.AdamW(network.parameters()).state_dict())
    webui_safe_check(files.optimizer_sidecar_path(path), RECORDS_1_6)


CASES = list(itertools.product(
    activation_names(), [False, True], [(0, 0, 0), (0, 0.3, 0)]))


@pytest.mark.parametrize("activation, layer_norm, dropout", CASES)
def test_webui_formula_gives_our_outputs(tmp_path, make_network, activation, layer_norm, dropout):
    network = make_network(seed=5, activation=activation, layer_norm=layer_norm, dropout_structure=dropout)
    path = save(network, tmp_path / "n.pt")
    webui_safe_check(path)
    webui_layers = webui_load(torch.load(path, map_location="cpu", weights_only=False))
    ours = load(path)
    x = torch.randn(2, 7, 48)
    for strength in (1.0, 0.5, 0.0, 1.7):
        for size in ours.sizes:
            x = torch.randn(2, 7, size)
            expected_k, expected_v = webui_apply([(webui_layers, strength)], x)
            pair = ours.pair_for(size)
            assert torch.allclose(pair.k(x, strength), expected_k, atol=1e-6, rtol=1e-5)
            assert torch.allclose(pair.v(x, strength), expected_v, atol=1e-6, rtol=1e-5)


def test_webui_formula_with_deeper_structures(tmp_path, make_network):
    for config in (dict(layer_structure=(1, 2, 2, 1), activation="relu", activate_output=True,
                        dropout_structure=(0, 0.3, 0, 0)),
                   dict(layer_structure=(1, 1.5, 1), activation="tanh"),
                   dict(layer_structure=(1, 1), activation="linear")):
        network = make_network(seed=6, **config)
        path = save(network, tmp_path / "n.pt")
        webui_layers = webui_load(torch.load(path, map_location="cpu", weights_only=False))
        x = torch.randn(1, 4, 32)
        assert torch.allclose(network.pair_for(32).k(x, 0.8), webui_apply([(webui_layers, 0.8)], x)[0], atol=1e-6)


def test_loads_files_the_webui_wrote_with_legacy_defaults(tmp_path):
    """A file from before the WebUI stored dropout_structure/activate_output: legacy rules apply."""
    dim = 16
    k = OrderedDict([("linear.0.weight", torch.randn(32, dim)), ("linear.0.bias", torch.randn(32)),
                     ("linear.3.weight", torch.randn(32, 32)), ("linear.3.bias", torch.randn(32)),
                     ("linear.5.weight", torch.randn(dim, 32)), ("linear.5.bias", torch.randn(dim))])
    v = OrderedDict((key, t + 1) for key, t in k.items())
    # [1,2,2,1], relu, use_dropout, last_layer_dropout missing -> False -> [0, 0.3, 0, 0]; activate_output -> True
    data = {dim: (k, v), "layer_structure": [1, 2, 2, 1], "activation_func": "relu", "use_dropout": True,
            "name": "legacy", "step": 10, "extra_key_from_another_tool": [1, 2]}
    torch.save(data, tmp_path / "legacy.pt")
    ours = load(tmp_path / "legacy.pt")
    assert ours.config.dropout_structure == (0, 0.3, 0, 0) and ours.config.activate_output
    x = torch.randn(3, dim)
    reference = webui_load(data)
    assert torch.allclose(ours.pair_for(dim).v(x), reference[dim][1](x), atol=1e-6)


def test_loads_novelai_linear1_linear2_files(tmp_path):
    dim = 16
    pair = [{"linear1.weight": torch.randn(2 * dim, dim), "linear1.bias": torch.randn(2 * dim),
             "linear2.weight": torch.randn(dim, 2 * dim), "linear2.bias": torch.randn(dim)} for _ in range(2)]
    torch.save({dim: pair, 24: [{k: torch.randn(*(s * 24 // 16 for s in t.shape)) for k, t in pair[0].items()}] * 2},
               tmp_path / "nai.pt")
    ours = load(tmp_path / "nai.pt")
    x = torch.randn(2, dim)
    expected = x + torch.nn.functional.linear(torch.nn.functional.linear(x, pair[0]["linear1.weight"], pair[0]["linear1.bias"]),
                                              pair[0]["linear2.weight"], pair[0]["linear2.bias"])
    assert torch.allclose(ours.pair_for(dim).k(x), expected, atol=1e-6)
    assert ours.name == "nai" and ours.sizes == (16, 24)


@pytest.mark.parametrize("upsample_linear", [False, True])
def test_loads_the_old_extensions_residual_files(tmp_path, upsample_linear):
    dim, structure = 16, [1, 2, 1]
    states = []
    for _ in range(2):
        state = OrderedDict()
        for i, (a, b) in enumerate(zip(structure, structure[1:])):
            n_in, n_out = dim * a, dim * b
            if upsample_linear:
                state[f"linear.{i}.upsample_layer.weight"] = torch.randn(n_out, n_in) * 0.1
            state[f"linear.{i}.linear.0.weight"] = torch.randn(n_out, n_in) * 0.1
            state[f"linear.{i}.linear.0.bias"] = torch.randn(n_out) * 0.1
            state[f"linear.{i}.linear.1.weight"] = 1 + torch.randn(n_out) * 0.1
            state[f"linear.{i}.linear.1.bias"] = torch.randn(n_out) * 0.1
        states.append(state)
    data = {dim: tuple(states), "layer_structure": structure, "activation_func": "relu", "is_layer_norm": True,
            "skip_connection": True, "upsample_linear": "Linear" if upsample_linear else None,
            "dropout_structure": [0, 0.1, 0.1], "activate_output": False, "name": "res"}
    torch.save(data, tmp_path / "res.pt")
    ours = load(tmp_path / "res.pt")
    assert ours.config.residual and ours.config.plain_webui_problems()
    x = torch.randn(2, 5, dim)
    for strength in (1.0, 0.6):
        expected = old_extension_residual_forward(states[1], dim, structure, "relu", True, strength, upsample_linear)(x)
        assert torch.allclose(ours.pair_for(dim).v(x, strength), expected, atol=1e-5)
    save(ours, tmp_path / "again.pt")
    assert _same_weights(ours, load(tmp_path / "again.pt"))


def test_refuses_a_pickle_that_would_run_code(tmp_path):
    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({16: Payload(), "name": "evil"}, tmp_path / "evil.pt")
    with pytest.raises(HypernetworkFileError, match="not plain weights .*may be malicious"):
        load(tmp_path / "evil.pt")
    assert not marker.exists()


@pytest.mark.parametrize("damage, fragment", [
    (lambda data: b"", "the file is empty"),
    (lambda data: data[: len(data) // 2], "truncated"),
    (lambda data: data[:100], "truncated"),
    (lambda data: random.Random(5).randbytes(4096), "truncated, damaged or not a torch file"),
    (lambda data: b"hello, not a model\n", "truncated, damaged or not a torch file"),
])
def test_damaged_files_give_one_clear_error(tmp_path, make_network, damage, fragment):
    path = save(make_network(seed=1), tmp_path / "n.pt")
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(HypernetworkFileError, match=fragment):
        load(path)


def test_damaged_safetensors(tmp_path, make_network):
    path = save(make_network(seed=1), tmp_path / "n.safetensors")
    raw = path.read_bytes()
    for data, fragment in [(b"", "empty"), (raw[: len(raw) // 2], "truncated"), (b"\xff" * 64, "truncated")]:
        path.write_bytes(data)
        with pytest.raises(HypernetworkFileError, match=fragment):
            load(path)
    from safetensors.torch import save_file
    save_file({"weight": torch.zeros(2)}, str(tmp_path / "lora.safetensors"))
    with pytest.raises(HypernetworkFileError, match="not a hypernetwork"):
        load(tmp_path / "lora.safetensors")


def test_wrong_shapes_and_non_hypernetworks(tmp_path, make_network):
    data = files.to_webui_dict(make_network(seed=1))
    data["layer_structure"] = [1, 3, 1]  # weights were made for 1, 2, 1
    torch.save(data, tmp_path / "shape.pt")
    with pytest.raises(HypernetworkFileError, match=r"linear.0.weight has shape \[96, 48\] but .* need \[144, 48\]"):
        load(tmp_path / "shape.pt")
    data["layer_structure"] = [1, 2, 1]
    data["activation_func"] = "relu"  # keys now shift to linear.0 / linear.2
    torch.save(data, tmp_path / "layout.pt")
    with pytest.raises(HypernetworkFileError, match="does not match its settings"):
        load(tmp_path / "layout.pt")
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1)}}, tmp_path / "ckpt.pt")
    with pytest.raises(HypernetworkFileError, match="Stable Diffusion checkpoint"):
        load(tmp_path / "ckpt.pt")
    torch.save({"string_to_param": {"*": torch.zeros(1, 768)}}, tmp_path / "emb.pt")
    with pytest.raises(HypernetworkFileError, match="textual-inversion embedding"):
        load(tmp_path / "emb.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(HypernetworkFileError, match="holds a list"):
        load(tmp_path / "list.pt")
    data = files.to_webui_dict(make_network(seed=1))
    data["dropout_structure"] = [0, 0.3]
    torch.save(data, tmp_path / "dropout.pt")
    with pytest.raises(HypernetworkFileError, match="unusable settings in the file: Dropout structure has 2 entries"):
        load(tmp_path / "dropout.pt")


def test_nan_weights_are_refused(tmp_path, make_network):
    data = files.to_webui_dict(make_network(seed=1))
    data[48][0]["linear.0.weight"][0, 0] = float("nan")
    torch.save(data, tmp_path / "nan.pt")
    with pytest.raises(HypernetworkFileError, match="NaN"):
        load(tmp_path / "nan.pt")


def test_optimizer_sidecar_is_kept_only_for_the_file_it_belongs_to(tmp_path, make_network):
    network = make_network(seed=1).requires_grad_(True)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    loss = sum(p.sum() for p in network.parameters())
    loss.backward()
    optimizer.step()
    path = save(network, tmp_path / "n.pt")
    files.save_optimizer_state(path, "AdamW", optimizer.state_dict())
    name, state = files.load_optimizer_state(path)
    assert name == "AdamW" and torch.equal(state["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    save(make_network(seed=2), path)  # the hypernetwork was replaced: the old optimizer state no longer applies
    assert files.load_optimizer_state(path) is None


@pytest.mark.parametrize("failure", [errno.ENOSPC, errno.EACCES])
def test_failed_write_keeps_the_old_file_and_says_so(tmp_path, make_network, monkeypatch, failure):
    path = save(make_network(seed=1), tmp_path / "n.pt")
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(failure, os.strerror(failure))

    monkeypatch.setattr(files.os, "fsync", fail)  # the disk fills up (or refuses) mid-write
    with pytest.raises(HypernetworkFileError, match=f"{os.strerror(failure)}.*previous file is unchanged"):
        save(make_network(seed=2), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["n.pt"]  # no temporary file left behind


def test_unknown_extension_is_refused(tmp_path, make_network):
    with pytest.raises(HypernetworkFileError, match="ending in .pt or .safetensors"):
        save(make_network(seed=1), tmp_path / "n.bin")


def test_stale_temporaries_of_a_killed_writer_are_cleaned_up(tmp_path, make_network):
    stale = tmp_path / ".n.pt.abc123.tmp"
    fresh = tmp_path / ".n.pt.def456.tmp"  # may belong to a writer that is still running
    stale.write_bytes(b"half")
    fresh.write_bytes(b"half")
    old = stale.stat().st_mtime - 2 * files.STALE_TEMPORARY_SECONDS
    os.utime(stale, (old, old))
    save(make_network(seed=1), tmp_path / "n.pt")
    assert not stale.exists() and fresh.exists()


def test_loading_ignores_a_host_that_replaced_torch_load(tmp_path, make_network, monkeypatch):
    # as the WebUI does (modules/safe.py): its checker prints a traceback for a file it refuses and returns
    # None, which would turn our one clear message into a page of console noise and a wrong one
    def host_checker(*args, **kwargs):
        raise AssertionError("the host's torch.load was called")
    monkeypatch.setattr(torch, "load", host_checker)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04 this is not a hypernetwork")
    with pytest.raises(HypernetworkFileError, match="truncated, damaged or not a torch file"):
        load(broken)
    good = save(make_network(), tmp_path / "good.pt")
    assert load(good).config == make_network().config


@pytest.fixture
def umask():
    """Sets the process umask for one test and puts the previous one back."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)],
                         ids=["umask 022", "umask 027", "umask 002"])
def test_new_files_get_the_mode_a_normal_write_gives(tmp_path, make_network, umask, mask, expected):
    """Another user, a container or a web server must be able to read what we write, as the umask allows."""
    umask(mask)
    network = save(make_network(seed=1), tmp_path / "n.pt")
    sidecar = files.save_optimizer_state(network, "AdamW", {"state": {}, "param_groups": []})
    safetensors = save(make_network(seed=1), tmp_path / "n.safetensors")
    for path in (network, sidecar, safetensors):
        assert oct(path.stat().st_mode & 0o777) == oct(expected), path.name


def test_replacing_a_file_keeps_its_mode(tmp_path, make_network, umask):
    path = save(make_network(seed=1), tmp_path / "n.pt")
    path.chmod(0o640)  # the user chose who may read it
    save(make_network(seed=2), path)
    assert oct(path.stat().st_mode & 0o777) == oct(0o640)
    path.chmod(0o666)
    save(make_network(seed=3), path)
    assert oct(path.stat().st_mode & 0o777) == oct(0o666)
