"""Our attention processors compute what the models' own attention computes on hypernetwork-transformed
key/value inputs (the WebUI's formula), for ldm's CrossAttention and diffusers' Attention."""


import pytest
import torch

from hypernetwork_ext import FastApplier, Hypernetwork, HypernetworkConfig, stack
from hypernetwork_ext.attention import HypernetworkAttention, install


class _Before(torch.nn.Module):
    """to_k replaced by to_k(module(x, strength)): the plain definition, for the model's own attention."""

    def __init__(self, module, strength, projection):
        super().__init__()
        self.module, self.strength, self.projection = module, strength, projection

    def forward(self, x):
        return self.projection(self.module(x, self.strength))


def _network(width_list, activation):
    return Hypernetwork.create(HypernetworkConfig(sizes=width_list, activation=activation, init_std=0.1), "n", seed=3)


@pytest.mark.parametrize("activation", ["linear", "swish"])
@pytest.mark.parametrize("self_attention", [True, False])
def test_ldm_attention_matches_the_original_forward(activation, self_attention):
    from ldm.modules.attention import CrossAttention
    torch.manual_seed(0)
    attn = CrossAttention(query_dim=32, context_dim=None if self_attention else 48, heads=2, dim_head=16).eval()
    network = _network((32, 48), activation)
    x, context = torch.randn(2, 10, 32), None if self_attention else torch.randn(2, 7, 48)
    width = 32 if self_attention else 48
    pair = network.pair_for(width)
    with torch.no_grad():
        ours = HypernetworkAttention(FastApplier(stack([(network, 0.7)])))(attn, x, context)
        original_k, original_v = attn.to_k, attn.to_v
        attn.to_k, attn.to_v = _Before(pair.k, 0.7, original_k), _Before(pair.v, 0.7, original_v)
        expected = CrossAttention.forward(attn, x, context)
        attn.to_k, attn.to_v = original_k, original_v
    assert torch.allclose(ours, expected, atol=1e-5)
    assert not torch.allclose(ours, CrossAttention.forward(attn, x, context), atol=1e-4)  # it did something


def test_install_swaps_and_undo_restores():
    from ldm.modules.attention import CrossAttention
    model = torch.nn.Sequential(CrossAttention(32, heads=2, dim_head=16), CrossAttention(32, heads=2, dim_head=16))
    undo = install(model, HypernetworkAttention())
    assert all("forward" in m.__dict__ for m in model)
    undo()
    assert all("forward" not in m.__dict__ for m in model)


@pytest.mark.parametrize("activation", ["linear", "swish"])
def test_diffusers_processor_matches_attnprocessor2_0(activation):
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0
    from hypernetwork_ext.adapters.diffusers import HypernetworkAttnProcessor
    torch.manual_seed(0)
    attn = Attention(query_dim=32, cross_attention_dim=48, heads=2, dim_head=16).eval()
    network = _network((32, 48), activation)
    x, context = torch.randn(2, 10, 32), torch.randn(2, 7, 48)
    pair = network.pair_for(48)
    with torch.no_grad():
        ours = HypernetworkAttnProcessor(FastApplier(stack([(network, 0.5)])))(attn, x, context)
        original_k, original_v = attn.to_k, attn.to_v
        attn.to_k, attn.to_v = _Before(pair.k, 0.5, original_k), _Before(pair.v, 0.5, original_v)
        expected = AttnProcessor2_0()(attn, x, context)
        attn.to_k, attn.to_v = original_k, original_v
        plain_ours = HypernetworkAttnProcessor(None)(attn, x, context)
        plain_theirs = AttnProcessor2_0()(attn, x, context)
    assert torch.allclose(ours, expected, atol=1e-5)
    assert torch.allclose(plain_ours, plain_theirs, atol=1e-6)


def test_diffusers_adapter_attach_and_undo():
    from training_helpers import tiny_adapter
    adapter = tiny_adapter("diffusers")
    before = {name: type(p) for name, p in adapter.unet.attn_processors.items()}
    undo = adapter.attach(FastApplier(None))
    assert {type(p).__name__ for p in adapter.unet.attn_processors.values()} == {"HypernetworkAttnProcessor"}
    undo()
    assert {name: type(p) for name, p in adapter.unet.attn_processors.items()} == before
