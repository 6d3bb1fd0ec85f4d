"""Linear hypernetworks folded into the projections of the WebUI's attention (patches/attention_fold.py).

STAND-IN, for what images from the real WebUI cannot show (tests/test_real_a1111.py compares its images
with the plain WebUI's): that the key/value inputs are no longer touched per token, that the layers' weights
are back bit for bit after a change, during training and on unload, and a Lora merged into the same
weights (the stand-in ``networks`` module below plays the Lora extension's lazy merge)."""

import sys
import types

import pytest
import torch
from torch import nn

from hypernetwork_ext import Hypernetwork, HypernetworkConfig, files

import webui


class TinyUNet(nn.Module):
    """Two of ldm's attention layers (one cross-attention at width 48, one self-attention at 32) run with the
    stand-in's copy of the WebUI's attention forward."""

    def __init__(self, forward):
        super().__init__()
        from ldm.modules.attention import CrossAttention
        torch.manual_seed(0)
        self.cross = CrossAttention(query_dim=32, context_dim=48, heads=2, dim_head=16).eval()
        self.own = CrossAttention(query_dim=32, heads=2, dim_head=16).eval()
        self._attention = forward

    def forward(self, x, context):
        x = x + self._attention(self.cross, x, context)
        return x + self._attention(self.own, x, None)


@pytest.fixture
def folding(tmp_path):
    folder = tmp_path / "hypernetworks"
    folder.mkdir()
    with webui.standin_session(folder) as (modules, originals):
        unet = TinyUNet(modules["attention"].scaled_dot_product_attention_forward)
        weights = {name: tensor.detach().clone() for name, tensor in unet.state_dict().items()}
        inputs = torch.randn(2, 10, 32), torch.randn(2, 7, 48)
        yield types.SimpleNamespace(modules=modules, folder=folder, originals=originals, unet=unet, weights=weights,
                                    inputs=inputs)


def _save(folder, name, activation="linear", seed=1):
    network = Hypernetwork.create(HypernetworkConfig(sizes=(32, 48), activation=activation, init_std=0.1), name,
                                  seed=seed)
    files.save(network, folder / f"{name}.pt")


def _plain_webui(env, names, strengths):
    """The WebUI's own loading and formula (the stand-in's originals)."""
    hypernetwork = env.modules["hypernetwork"]
    env.modules["shared"].hypernetworks.update(env.originals["list_hypernetworks"](str(env.folder)))
    env.originals["load_hypernetworks"](names, strengths)
    with torch.no_grad():
        return env.unet(*env.inputs), hypernetwork


def _ours(env, names, strengths):
    env.modules["hypernetwork"].load_hypernetworks(names, strengths)
    with torch.no_grad():
        return env.unet(*env.inputs)


def _weights_are_the_originals(env):
    state = env.unet.state_dict()
    return state.keys() == env.weights.keys() and all(torch.equal(state[k], env.weights[k]) for k in state)


def _start(env):
    webui.load_extension()
    env.modules["callbacks"].model_loaded_callback(types.SimpleNamespace(model=types.SimpleNamespace(
        diffusion_model=env.unet)))


def test_a_linear_stack_goes_into_the_projections_and_gives_the_webuis_output(folding):
    _save(folding.folder, "a", seed=1)
    _save(folding.folder, "b", seed=2)
    expected, _ = _plain_webui(folding, ["a", "b"], [0.8, 1.0])
    _start(folding)
    ours = _ours(folding, ["a", "b"], [0.8, 1.0])
    assert torch.allclose(ours, expected, atol=1e-5)
    assert not _weights_are_the_originals(folding)
    context = folding.inputs[1]
    k_in, v_in = folding.modules["hypernetwork"].apply_hypernetworks(folding.modules["shared"].loaded_hypernetworks,
                                                                      context)
    assert k_in is context and v_in is context  # nothing runs on the tokens any more

    assert torch.allclose(_ours(folding, ["a", "b"], [0.3, 1.0]), _plain_webui(folding, ["a", "b"], [0.3, 1.0])[0],
                          atol=1e-5)  # a new strength: the fold follows
    _start(folding)  # (the plain run above put the WebUI's own functions back in the stand-in)
    _ours(folding, [], [])
    assert _weights_are_the_originals(folding)


def test_a_nonlinear_network_before_a_linear_one_runs_on_the_inputs_the_linear_one_folds(folding):
    _save(folding.folder, "curvy", activation="relu", seed=1)
    _save(folding.folder, "flat", seed=2)
    expected, _ = _plain_webui(folding, ["curvy", "flat"], [1.0, 0.6])
    _start(folding)
    assert torch.allclose(_ours(folding, ["curvy", "flat"], [1.0, 0.6]), expected, atol=1e-5)
    assert not _weights_are_the_originals(folding)


def test_nothing_is_folded_while_the_network_trains_or_with_the_fast_path_off(folding):
    _save(folding.folder, "a")
    expected, _ = _plain_webui(folding, ["a"], [1.0])
    _start(folding)
    _ours(folding, ["a"], [1.0])
    network = folding.modules["shared"].loaded_hypernetworks[0].network
    network.train()
    trained = _ours(folding, ["a"], [1.0])
    assert _weights_are_the_originals(folding) and torch.equal(trained, expected)
    network.eval()
    _ours(folding, ["a"], [1.0])
    assert not _weights_are_the_originals(folding)
    folding.modules["callbacks"].ui_settings_callback()
    folding.modules["shared"].opts.set("hypernetwork_ext_fast_apply", False)
    assert torch.equal(_ours(folding, ["a"], [1.0]), expected) and _weights_are_the_originals(folding)


def test_unloading_the_extension_puts_every_weight_back(folding):
    _save(folding.folder, "a")
    _start(folding)
    _ours(folding, ["a"], [1.0])
    webui.unload_extension()
    assert _weights_are_the_originals(folding)
    folding.modules["shared"].loaded_hypernetworks.clear()
    with torch.no_grad():
        folding.unet(*folding.inputs)  # no hook is left to fold again
    assert _weights_are_the_originals(folding)


def test_a_lora_merged_into_the_same_weights_is_kept_and_folded_through(folding, monkeypatch):
    """STAND-IN of the Lora extension: at a Linear's first call with other networks wanted, it backs up the
    weight, then merges ``weight + delta`` in place; with none wanted it restores the backup."""
    lora = types.ModuleType("networks")
    lora.loaded_networks = []
    deltas = {id(folding.unet.cross.to_k): 0.05 * torch.randn(32, 48)}
    webui_linear_forward = nn.Linear.forward

    def lora_linear_forward(self, input):
        wanted = tuple(n.name for n in lora.loaded_networks)
        if getattr(self, "lora_current", ()) != wanted and id(self) in deltas:
            with torch.no_grad():
                if getattr(self, "lora_backup", None) is None:
                    self.lora_backup = self.weight.detach().clone()
                self.weight.copy_(self.lora_backup + (deltas[id(self)] if wanted else 0))
            self.lora_current = wanted
        return webui_linear_forward(self, input)

    monkeypatch.setitem(sys.modules, "networks", lora)
    monkeypatch.setattr(nn.Linear, "forward", lora_linear_forward)
    _save(folding.folder, "a")
    lora.loaded_networks = [types.SimpleNamespace(name="style_lora")]
    expected, _ = _plain_webui(folding, ["a"], [1.0])
    lora.loaded_networks = []
    hypernetwork_only, _ = _plain_webui(folding, ["a"], [1.0])
    _start(folding)
    lora.loaded_networks = [types.SimpleNamespace(name="style_lora")]
    assert torch.allclose(_ours(folding, ["a"], [1.0]), expected, atol=1e-5)
    lora.loaded_networks = []
    assert torch.allclose(_ours(folding, ["a"], [1.0]), hypernetwork_only, atol=1e-5)
    _ours(folding, [], [])
    assert _weights_are_the_originals(folding)


def test_with_a_lora_in_functional_mode_nothing_is_folded(folding, monkeypatch):
    """The Lora extension's "functional" mode adds its output computed from the layer's input: a fold would
    change that input, so the hypernetwork stays on the inputs."""
    lora = types.ModuleType("networks")
    lora.loaded_networks = [types.SimpleNamespace(name="style_lora")]
    monkeypatch.setitem(sys.modules, "networks", lora)
    _save(folding.folder, "a")
    expected, _ = _plain_webui(folding, ["a"], [1.0])
    _start(folding)
    monkeypatch.setattr(folding.modules["shared"].opts, "lora_functional", True, raising=False)
    assert torch.allclose(_ours(folding, ["a"], [1.0]), expected, atol=1e-5) and _weights_are_the_originals(folding)
    monkeypatch.setattr(folding.modules["shared"].opts, "lora_functional", False, raising=False)
    _ours(folding, ["a"], [1.0])
    assert not _weights_are_the_originals(folding)
