"""Folding affine hypernetworks into key/value projection weights: exact undo, same output as the formula."""

import pytest
import torch
from torch import nn

from hypernetwork_ext import Hypernetwork, HypernetworkConfig, stack
from hypernetwork_ext.applier import affine_maps, affine_tail
from hypernetwork_ext.projection_fold import ProjectionFold


def _network(activation="linear", seed=1, sizes=(48,)):
    return Hypernetwork.create(HypernetworkConfig(sizes=sizes, activation=activation, init_std=0.1), f"n{seed}",
                               seed=seed).eval()


def _attention(dtype=torch.float32, bias=False):
    """ldm's attention layer (its own forward: softmax attention over to_k, to_v, then to_out)."""
    from ldm.modules.attention import CrossAttention
    torch.manual_seed(3)
    layer = CrossAttention(query_dim=32, context_dim=48, heads=2, dim_head=16).eval()
    if bias:
        layer.to_k = nn.Linear(48, 32, bias=True)
        layer.to_v = nn.Linear(48, 32, bias=True)
    return layer.to(dtype)


def _attend(layer, x, k_in, v_in):
    """The layer's attention with separate key and value inputs, as the WebUI's attention functions compute it."""
    heads = layer.heads
    q, k, v = layer.to_q(x), layer.to_k(k_in), layer.to_v(v_in)
    q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
    return layer.to_out(out)


def _fold(fold, layer, transform):
    k_map, v_map = affine_maps(transform, 48, "cpu")
    fold.fold_attention(layer.to_k, layer.to_v, layer.to_out[0], k_map, v_map)


@pytest.mark.parametrize("bias", [False, True])
def test_restore_gives_back_the_exact_weights_and_no_parameter_is_added(bias):
    layer = _attention(bias=bias)
    before = {name: tensor.detach().clone() for name, tensor in layer.state_dict().items()}
    fold = ProjectionFold()
    _fold(fold, layer, stack([(_network(), 0.7)]))
    assert layer.state_dict().keys() == before.keys()  # a bias-free projection stays bias-free (Lora keeps none)
    assert not torch.equal(layer.to_k.weight, before["to_k.weight"])
    _fold(fold, layer, stack([(_network(), 0.7)]))  # folding again starts from the originals
    fold.restore_all()
    assert all(torch.equal(layer.state_dict()[name], tensor) for name, tensor in before.items()) and len(fold) == 0


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.float16, 2e-2), (torch.bfloat16, 1e-1)])
def test_the_folded_layer_attends_as_the_formula_says(dtype, tolerance, bias):
    """to_k(A x + b) with the key bias left out and the value bias moved into to_out: the same attention."""
    transform = stack([(_network(), 0.8)])
    layer = _attention(dtype, bias)
    x, context = torch.randn(2, 10, 32), torch.randn(2, 7, 48)
    with torch.no_grad():
        k_in, v_in = transform(context, context)
        expected = _attend(layer, x.to(dtype), k_in.to(dtype), v_in.to(dtype)).float()
        _fold(ProjectionFold(), layer, transform)
        folded = _attend(layer, x.to(dtype), context.to(dtype), context.to(dtype)).float()
    assert layer.to_k.weight.dtype == dtype and torch.allclose(folded, expected, atol=tolerance, rtol=tolerance)


def test_a_weight_changed_by_someone_else_after_the_fold_is_kept_on_restore():
    layer = _attention()
    fold = ProjectionFold()
    _fold(fold, layer, stack([(_network(), 1.0)]))
    assert fold.all_intact()
    new_weights = torch.randn_like(layer.to_k.weight)
    layer.load_state_dict({"to_k.weight": new_weights}, strict=False)  # a model reloaded in place
    assert not fold.all_intact()
    fold.restore_all()
    assert torch.equal(layer.to_k.weight, new_weights)


def test_affine_tail_splits_a_stack_after_its_last_nonlinear_network():
    relu, linear_a, linear_b = _network("relu", 1), _network("linear", 2), _network("linear", 3)
    context = torch.randn(1, 5, 48)
    split = affine_tail(stack([(relu, 1.0), (linear_a, 0.5), (linear_b, 1.0)]), 48, "cpu")
    head, (k_map, v_map) = split
    with torch.no_grad():
        expected_k, expected_v = stack([(relu, 1.0), (linear_a, 0.5), (linear_b, 1.0)])(context, context)
        head_k, head_v = head(context, context)
    as_float = {"dtype": torch.float64}
    assert torch.allclose((head_k.double() @ k_map.weight.T + k_map.bias), expected_k.to(**as_float), atol=1e-5)
    assert torch.allclose((head_v.double() @ v_map.weight.T + v_map.bias), expected_v.to(**as_float), atol=1e-5)
    assert affine_tail(stack([(linear_a, 1.0), (relu, 1.0)]), 48, "cpu") is None  # nothing affine at the end
    assert affine_tail(stack([(linear_a, 1.0), (linear_b, 0.3)]), 48, "cpu")[0] is None  # all of it folds
    assert affine_tail(stack([(relu, 1.0)]), 32, "cpu")[0] is None  # no module at this width: nothing to run
