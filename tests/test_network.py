import pytest
import torch

from hypernetwork_ext import Hypernetwork, HypernetworkConfig


def _weights(network):
    return [t.clone() for t in network.state_dict().values()]


def test_seeded_creation_is_reproducible_and_leaves_global_rng_alone(make_network):
    before = torch.random.get_rng_state()
    a, b = make_network(seed=7), make_network(seed=7)
    assert torch.equal(before, torch.random.get_rng_state())
    assert all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(b)))
    c = make_network(seed=8)
    assert not torch.equal(a.pair_for(48).k.linear[0].weight, c.pair_for(48).k.linear[0].weight)


@pytest.mark.parametrize("init", ["Normal", "KaimingUniform", "KaimingNormal", "XavierUniform", "XavierNormal"])
def test_key_and_value_modules_start_different(make_network, init):
    network = make_network(seed=3, weight_init=init, activation="relu")
    for size in network.sizes:
        pair = network.pair_for(size)
        assert not torch.equal(pair.k.linear[0].weight, pair.v.linear[0].weight)
        assert torch.count_nonzero(pair.k.linear[0].bias) == 0  # biases start at zero, as in the WebUI


def test_normal_init_uses_the_requested_std(make_network):
    network = make_network(seed=1, sizes=(512,), init_std=0.02)
    std = network.pair_for(512).k.linear[0].weight.std().item()
    assert 0.019 < std < 0.021


def test_layer_norm_starts_as_identity(make_network):
    network = make_network(seed=1, layer_norm=True, activation="relu")
    norms = [m for m in network.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(torch.all(n.weight == 1) and torch.all(n.bias == 0) for n in norms)


# The WebUI's Sequential layouts, from webui-interfaces.md §2.5.
@pytest.mark.parametrize("config, indices", [
    (dict(layer_structure=(1, 2, 1)), [0, 1]),
    (dict(layer_structure=(1, 2, 1), activation="relu"), [0, 2]),
    (dict(layer_structure=(1, 2, 1), activation="relu", layer_norm=True), [0, 2, 3, 4]),
    (dict(layer_structure=(1, 2, 2, 1), activation="swish", layer_norm=True, dropout_structure=(0, .3, .3, 0)),
     [0, 2, 4, 6, 8, 9]),
    (dict(layer_structure=(1, 2, 2, 1), activation="relu", activate_output=True, dropout_structure=(0, .3, 0, 0)),
     [0, 3, 5]),
])
def test_state_dict_layout_matches_the_webui(config, indices):
    network = Hypernetwork.create(HypernetworkConfig(sizes=(8,), **config), seed=0)
    keys = network.pair_for(8).k.state_dict().keys()
    assert sorted({int(k.split(".")[1]) for k in keys}) == indices


def test_strength_applies_in_eval_and_is_one_in_training(make_network):
    network = make_network(seed=2, activation="relu")
    module = network.pair_for(48).k
    x = torch.randn(2, 5, 48)
    delta = module.linear(x)
    assert torch.allclose(module(x, 0.5), x + 0.5 * delta)
    module.train()
    assert torch.equal(module(x, 0.5), x + delta)  # A7: training always uses strength 1


def test_residual_linear_shortcut_starts_equal_to_interpolation():
    interp = Hypernetwork.create(HypernetworkConfig(sizes=(24,), residual=True, activation="relu"), seed=4)
    linear = Hypernetwork.create(HypernetworkConfig(sizes=(24,), residual=True, activation="relu",
                                                    residual_shortcut="linear"), seed=4)
    x = torch.randn(3, 24)
    assert torch.allclose(interp.pair_for(24).k(x), linear.pair_for(24).k(x), atol=1e-6)
    assert all(p.requires_grad is False for p in linear.parameters())  # inference networks build no graphs
    shortcut = linear.pair_for(24).k.linear[0].upsample_layer.weight
    assert shortcut in list(linear.parameters())  # part of the parameters, so training reaches it
