import pytest
import torch

from hypernetwork_ext import FastApplier, apply_plain, stack
from hypernetwork_ext.stack import Applied, Mix


def _max_error(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b))


@pytest.fixture
def linear_stack(make_network):
    return stack([(make_network(seed=i, sizes=(768, 320)), s) for i, s in ((1, 1.0), (2, 0.7), (3, 0.4))])


def test_fold_equals_plain_for_linear_stacks(linear_stack, capsys):
    applier = FastApplier(linear_stack)
    for width in (768, 320):
        x = torch.randn(2, 77, width)
        with torch.no_grad():
            fast = applier(x)
        error = _max_error(fast, apply_plain(linear_stack, x))
        print(f"fold width {width}: max abs error {error:.2e}")
        assert error < 1e-4
        assert applier._plan(width, x.device) is not None  # it really was folded


def test_projection_fold_equals_projecting_the_plain_inputs(linear_stack):
    applier = FastApplier(linear_stack)
    x = torch.randn(2, 64, 320)
    to_k, to_v = torch.nn.Linear(320, 320, bias=False), torch.nn.Linear(320, 320, bias=False)
    with torch.no_grad():
        fast = applier.project(x, to_k, to_v)
        k_in, v_in = apply_plain(linear_stack, x)
        error = _max_error(fast, (to_k(k_in), to_v(v_in)))
    print(f"projection fold: max abs error {error:.2e}")
    assert error < 1e-4
    with torch.no_grad():
        to_k.weight.mul_(2)  # weights changed in place: the folded copy must follow
        assert _max_error(applier.project(x, to_k, to_v), (to_k(k_in), to_v(v_in))) < 1e-4


def test_nonlinear_and_mixed_transforms_match_plain(make_network):
    swish = [make_network(seed=i, sizes=(768, 320), activation="swish", layer_norm=i == 1) for i in range(3)]
    linear = make_network(seed=9, sizes=(768, 320))
    for transform in (stack([(n, 0.8) for n in swish]),
                      Mix(((Applied(swish[0]), 1.0), (Applied(linear, 0.5), 2.0)), strength=0.7),
                      Mix(((Applied(linear), 1.0), (Applied(make_network(seed=5, sizes=(768, 320)), 0.5), 2.0)))):
        applier = FastApplier(transform)
        for width in (768, 320):
            x = torch.randn(2, 9, width)
            with torch.no_grad():
                assert _max_error(applier(x), apply_plain(transform, x)) < 1e-5
                to_k, to_v = torch.nn.Linear(width, 64), torch.nn.Linear(width, 64)
                k_in, v_in = apply_plain(transform, x)
                assert _max_error(applier.project(x, to_k, to_v), (to_k(k_in), to_v(v_in))) < 1e-4


def test_text_context_is_computed_once_per_conditioning(linear_stack, monkeypatch):
    applier = FastApplier(linear_stack)
    calls = []
    original = applier._compute
    monkeypatch.setattr(applier, "_compute", lambda *a: calls.append(1) or original(*a))
    cond = torch.randn(2, 77, 768)
    with torch.no_grad():
        first = applier(cond)
        for _ in range(5):
            assert applier(cond)[0] is first[0]  # same tensor: cached
        assert applier(cond.clone())[0] is first[0]  # same content in a new tensor (each sampling step): cached
        assert len(calls) == 1
        cond.add_(1.0)  # the conditioning changed
        changed = applier(cond)
        assert len(calls) == 2 and _max_error(changed, apply_plain(linear_stack, cond)) < 1e-4


def test_cache_invalidates_on_a_strength_change(make_network):
    network = make_network(seed=1, sizes=(768,))
    applier = FastApplier(stack([(network, 1.0)]))
    cond = torch.randn(1, 77, 768)
    with torch.no_grad():
        full = applier(cond)
        applier.set_transform(stack([(network, 0.5)]))
        half = applier(cond)
    expected = apply_plain(stack([(network, 0.5)]), cond)
    assert _max_error(half, expected) < 1e-5
    assert not torch.allclose(half[0], full[0])


def test_cache_invalidates_when_weights_change(make_network):
    network = make_network(seed=1, sizes=(768,), activation="relu")
    transform = stack([(network, 1.0)])
    applier = FastApplier(transform)
    cond = torch.randn(1, 77, 768)
    with torch.no_grad():
        before = applier(cond)
        network.pair_for(768).k.linear[0].weight.mul_(3)
        after = applier(cond)
    assert _max_error(after, apply_plain(transform, cond)) < 1e-6
    assert not torch.allclose(before[0], after[0])


def test_training_always_uses_the_plain_formula_at_strength_one(make_network):
    network = make_network(seed=1, sizes=(768, 320)).requires_grad_(True).train()
    applier = FastApplier(stack([(network, 0.3)]))
    x = torch.randn(1, 10, 320)
    k, _ = applier(x)
    pair = network.pair_for(320)
    assert torch.equal(k, x + pair.k.linear(x))  # strength 1, exact WebUI formula
    k.sum().backward()
    assert pair.k.linear[0].weight.grad is not None


def test_fast_path_off_is_the_plain_path(linear_stack):
    applier = FastApplier(linear_stack, fast=False)
    x = torch.randn(1, 4, 320)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(applier(x), apply_plain(linear_stack, x)))


def test_one_unet_evaluation_compares_the_text_context_at_most_once(make_network, monkeypatch):
    """Comparing tensor contents makes a GPU wait; the layers of one evaluation share the context object."""
    import hypernetwork_ext.applier as applier_module

    swish = stack([(make_network(seed=1, sizes=(768,), activation="swish"), 1.0)])
    applier = FastApplier(swish)
    comparisons = []
    original = applier_module._same
    monkeypatch.setattr(applier_module, "_same", lambda a, b: comparisons.append(1) or original(a, b))
    to_k, to_v = torch.nn.Linear(768, 64, bias=False), torch.nn.Linear(768, 64, bias=False)
    cond = torch.randn(2, 77, 768)
    with torch.no_grad():
        for step in range(3):
            step_cond = cond.clone()  # a sampler builds a new tensor with the same content each step
            for _layer in range(16):
                applier.project(step_cond, to_k, to_v)
    assert len(comparisons) == 2  # steps 2 and 3, once each; step 1 computed it and the rest were recognised
    with torch.no_grad():
        step_cond.add_(1.0)  # changed in place: recognised as changed, recomputed
        k, _ = applier.project(step_cond, to_k, to_v)
    assert _max_error((k,), (to_k(apply_plain(swish, step_cond)[0]),)) < 1e-4


def test_affine_networks_fold_into_the_projections_at_the_text_width(linear_stack, monkeypatch):
    applier = FastApplier(linear_stack)
    monkeypatch.setattr(applier, "_compute", lambda *a: pytest.fail("a folded network ran on the context"))
    to_k, to_v = torch.nn.Linear(768, 64, bias=False), torch.nn.Linear(768, 64, bias=False)
    cond = torch.randn(2, 77, 768)
    with torch.no_grad():
        fast = applier.project(cond, to_k, to_v)
        k_in, v_in = apply_plain(linear_stack, cond)
        assert _max_error(fast, (to_k(k_in), to_v(v_in))) < 1e-4


def test_works_under_inference_mode_with_inference_tensors(make_network, tmp_path):
    # Forge and reForge sample under torch.inference_mode and load the networks there too: reading the
    # version counter of such tensors raised "Inference tensors do not track version counter"
    from hypernetwork_ext import load, save
    paths = [save(make_network(seed=seed, activation=activation), tmp_path / f"{activation}.pt")
             for seed, activation in ((1, "linear"), (2, "relu"))]
    x = torch.randn(2, 77, 48)
    plain = [load(path) for path in paths]
    expected = apply_plain(stack([(plain[0], 0.7), (plain[1], 1.0)]), x, x)
    with torch.inference_mode():
        networks = [load(path) for path in paths]
        assert next(networks[0].parameters()).is_inference()
        applier = FastApplier(stack([(networks[0], 0.7), (networks[1], 1.0)]), cached_widths=(48,))
        context = x.clone()
        for _ in range(2):  # computed, then from the text-context cache
            k, v = applier(context, context)
            torch.testing.assert_close(k, expected[0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(v, expected[1], rtol=1e-5, atol=1e-5)
