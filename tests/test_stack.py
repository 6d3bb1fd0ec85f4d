import pytest
import torch

from hypernetwork_ext import ConfigError, HypernetworkFileError, apply_plain, files, merge, stack
from hypernetwork_ext.stack import Applied, Mix, Sequence, build_set, parse_hns, parse_set, read_set_file, write_set_file

from webui_reference import webui_apply, webui_load


def test_stack_applies_in_order_like_the_webui(tmp_path, make_network):
    a, b = make_network(seed=1, activation="relu"), make_network(seed=2, activation="tanh")
    webui = [(webui_load(files.to_webui_dict(n)), s) for n, s in ((a, 0.6), (b, 0.4))]
    x = torch.randn(2, 5, 48)
    ours = apply_plain(stack([(a, 0.6), (b, 0.4)]), x)
    expected = webui_apply(webui, x)
    assert all(torch.allclose(o, e, atol=1e-6) for o, e in zip(ours, expected))
    reversed_order = apply_plain(stack([(b, 0.4), (a, 0.6)]), x)
    assert not torch.allclose(reversed_order[0], ours[0])


def test_width_without_a_module_passes_through(make_network):
    network = make_network(seed=1, sizes=(48,))
    x = torch.randn(1, 3, 32)
    k, v = apply_plain(stack([(network, 1.0)]), x)
    assert k is x and v is x


def test_mix_is_the_weighted_mean_of_its_branches(make_network):
    a, b = make_network(seed=1, activation="relu"), make_network(seed=2, activation="relu")
    x = torch.randn(2, 4, 48)
    ka, va = Applied(a)(x, x)
    kb, vb = Applied(b)(x, x)
    k, v = Mix(((Applied(a), 3.0), (Applied(b), 1.0)))(x, x)
    assert torch.allclose(k, 0.75 * ka + 0.25 * kb, atol=1e-6) and torch.allclose(v, 0.75 * va + 0.25 * vb, atol=1e-6)
    half_k, _ = Mix(((Applied(a), 3.0), (Applied(b), 1.0)), strength=0.5)(x, x)
    assert torch.allclose(half_k, x + 0.5 * (k - x), atol=1e-6)


def test_set_files_round_trip_and_resolve(tmp_path, make_network):
    networks = {"style": make_network(seed=1), "face": make_network(seed=2, activation="relu")}
    spec = {"mix": [{"network": "style", "weight": 2}, {"sequence": ["face", {"network": "style", "strength": 0.5}],
                                                         "weight": 1}]}
    path = write_set_file(tmp_path / "combo.hnset.json", spec, description="two styles")
    loaded = read_set_file(path)
    assert loaded == parse_set(spec)
    transform = build_set(loaded, networks.__getitem__, strength=0.8)
    assert isinstance(transform, Mix) and transform.strength == 0.8
    assert isinstance(transform.items[1][0], Sequence)
    x = torch.randn(1, 2, 48)
    transform(x, x)


@pytest.mark.parametrize("document, fragment", [
    ("{", "not valid JSON"),
    ('{"mix": []}', "not a hypernetwork set"),
    ('{"format": "hypernetwork-set", "version": 99, "network": "a"}', "newer version"),
    ('{"format": "hypernetwork-set", "mix": []}', "'mix' must be a non-empty list"),
    ('{"format": "hypernetwork-set", "mix": [{"network": "a", "weight": -1}]}', "must not be negative"),
    ('{"format": "hypernetwork-set", "mix": [{"network": "a", "weight": 0}]}', "add up to 0"),
    ('{"format": "hypernetwork-set", "network": "a", "sequence": ["b"]}', "exactly one of"),
    ('{"format": "hypernetwork-set", "network": "a", "strength": "high"}', "must be a finite number"),
    ('{"format": "hypernetwork-set", "network": ""}', "must be a hypernetwork name"),
])
def test_bad_set_files_say_what_is_wrong(tmp_path, document, fragment):
    path = tmp_path / "bad.hnset.json"
    path.write_text(document)
    with pytest.raises(HypernetworkFileError, match=fragment):
        read_set_file(path)


def test_old_hns_files_are_read_without_running_code(tmp_path):
    assert parse_hns("['a', ('b', 0.5)]") == parse_set({"sequence": ["a", {"network": "b", "strength": 0.5}]})
    assert parse_hns("{'a': 1, 'b': 3}") == parse_set({"mix": [{"network": "a", "weight": 1}, {"network": "b", "weight": 3}]})
    assert parse_hns("{'a': 0.7}") == parse_set({"network": "a", "strength": 0.7})
    assert parse_hns("{\"['a', 'b']\": 1, 'c': 1}")["mix"][0] == {**parse_set({"sequence": ["a", "b"]}), "weight": 1.0}
    marker = tmp_path / "marker"
    with pytest.raises(ConfigError, match="not a valid .hns structure"):
        parse_hns(f"__import__('os').system('touch {marker}')")
    assert not marker.exists()
    (tmp_path / "old.hns").write_text("[('a', 0.6), 'b']")
    assert read_set_file(tmp_path / "old.hns")["sequence"][0] == {"network": "a", "strength": 0.6}


def test_merge_is_the_weighted_sum_of_weights(tmp_path, make_network):
    a, b = make_network(seed=1, activation="relu", name="a"), make_network(seed=2, activation="relu", name="b")
    merged = merge([(a, 0.25), (b, 0.75)], "m")
    for key, tensor in merged.state_dict().items():
        assert torch.allclose(tensor, 0.25 * a.state_dict()[key] + 0.75 * b.state_dict()[key], atol=1e-7)
    path = files.save(merged, tmp_path / "m.pt")
    assert files.load(path).name == "m"


def test_merge_refuses_different_structures(make_network):
    with pytest.raises(ConfigError, match="does not have the structure of"):
        merge([(make_network(seed=1), 0.5), (make_network(seed=2, activation="relu"), 0.5)])
    with pytest.raises(ConfigError, match="does not have the structure of"):
        merge([(make_network(seed=1), 0.5), (make_network(seed=2, sizes=(48,)), 0.5)])
    with pytest.raises(ConfigError, match="at least two"):
        merge([(make_network(seed=1), 1.0)])
