import csv
import math

import pytest
import torch

from hypernetwork_ext import ConfigError, files
from hypernetwork_ext.training import Callbacks, TrainingError, TrainingSettings, train

from training_helpers import (make_images, make_network, same_optimizer_state, same_tensors, tiny_adapter,
                              weights_of)


def settings(tmp_path, **changes):
    base = dict(data_dir=str(tmp_path / "data"), log_dir=str(tmp_path / "logs"), width=64, height=64,
                learn_rate="2e-3", max_steps=6, batch_size=2, grad_accum=2, save_every=0, preview_every=0,
                seed=3, dataset_seed=4, preview={"steps": 3, "width": 64, "height": 64, "seed": 11})
    base.update(changes)
    return TrainingSettings(**base)


@pytest.fixture
def workspace(tmp_path):
    make_images(tmp_path / "data", 8)
    make_network(tmp_path / "start.pt", activation="relu", dropout_structure=(0, 0.2, 0))
    return tmp_path


def run(tmp_path, name, kind="ldm", **changes):
    out = tmp_path / f"{name}.pt"
    result = train(tiny_adapter(kind), tmp_path / "start.pt", settings(tmp_path, **changes), output_path=out,
                   log_dir=tmp_path / f"logs-{name}")
    return result, out


@pytest.mark.parametrize("kind", ["ldm", "diffusers"])
def test_previews_do_not_change_training(workspace, kind):
    with_previews, a = run(workspace, "previews", kind, preview_every=2)
    without, b = run(workspace, "plain", kind)
    assert len(with_previews.previews) == 3 and not without.previews
    assert same_tensors(weights_of(a), weights_of(b))  # bit-identical, dropout included
    assert same_optimizer_state(files.load_optimizer_state(a)[1], files.load_optimizer_state(b)[1])
    assert [p.loss for p in with_previews.losses] == [p.loss for p in without.losses]


class DisturbingPreviewAdapter:
    """A preview that draws from every global generator (torch, random, numpy)."""

    def __init__(self):
        self.inner = tiny_adapter()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def render_preview(self, request):
        import random
        import numpy
        torch.rand(1000)
        random.random()
        numpy.random.rand(10)
        image = self.inner.render_preview(request)
        torch.randn(77)
        return image


def test_a_preview_that_uses_global_randomness_still_changes_nothing(workspace):
    with_previews = train(DisturbingPreviewAdapter(), workspace / "start.pt", settings(workspace, preview_every=1),
                          output_path=workspace / "d.pt", log_dir=workspace / "logs-d")
    _, plain = run(workspace, "plain")
    assert len(with_previews.previews) == 6
    assert same_tensors(weights_of(workspace / "d.pt"), weights_of(plain))


class FailingPreviewAdapter(DisturbingPreviewAdapter):
    def render_preview(self, request):
        raise AttributeError("'NoneType' object has no attribute 'alwayson_scripts'")


def test_a_failing_preview_names_the_preview_and_keeps_the_steps_before_it(workspace):
    with pytest.raises(TrainingError, match=r"^the preview at step 2 failed: AttributeError: 'NoneType' object .*; "
                                            r"the last good weights are saved as .*tiny-2.pt$"):
        train(FailingPreviewAdapter(), workspace / "start.pt", settings(workspace, preview_every=2),
              output_path=workspace / "f.pt", log_dir=workspace / "logs-f")
    _, plain = run(workspace, "plain", max_steps=2)
    assert same_tensors(weights_of(workspace / "logs-f" / "hypernetworks" / "tiny-2.pt"), weights_of(plain))


@pytest.mark.parametrize("kind", ["ldm", "diffusers"])
def test_resume_from_a_saved_copy_equals_an_uninterrupted_run(workspace, kind):
    full, full_out = run(workspace, "full", kind, save_every=3)
    first, _ = run(workspace, "first", kind, max_steps=3, save_every=3)
    copy = first.saved[0]
    assert copy.name == "tiny-3.pt" and files.load(copy).step == 3
    assert files.load_optimizer_state(copy) is not None  # the copy's sidecar carries the copy's own hash
    resumed = train(tiny_adapter(kind), workspace / "start.pt", settings(workspace), resume_from=copy,
                    output_path=workspace / "resumed.pt", log_dir=workspace / "logs-resumed")
    assert resumed.steps_done == 6
    assert same_tensors(weights_of(full_out), weights_of(workspace / "resumed.pt"))
    assert same_optimizer_state(files.load_optimizer_state(full_out)[1],
                                files.load_optimizer_state(workspace / "resumed.pt")[1])


def test_stops_exactly_at_max_steps_with_and_without_cosine(workspace):
    plain, _ = run(workspace, "steps", max_steps=5)
    cosine, _ = run(workspace, "cosine", max_steps=5,
                    cosine={"enabled": True, "min_rate": 1e-5, "cycle_steps": 2, "warmup_steps": 0})
    assert [p.step for p in plain.losses] == [1, 2, 3, 4, 5]
    assert [p.step for p in cosine.losses] == [1, 2, 3, 4, 5]
    # closed form: within a cycle of 2 the rate goes max -> middle of the cosine
    assert cosine.losses[0].learn_rate == pytest.approx(2e-3)
    assert cosine.losses[1].learn_rate == pytest.approx(1e-5 + (2e-3 - 1e-5) * 0.5)
    assert cosine.losses[2].learn_rate == pytest.approx(2e-3)


def test_loss_csv_settings_json_and_final_file(workspace):
    result, out = run(workspace, "files", save_every=2, preview_every=3)
    rows = list(csv.DictReader(open(result.log_dir / "hypernetwork_loss.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(float(r["loss"])) for r in rows) and rows[0]["learn_rate"] == "0.002"
    assert TrainingSettings.load(result.log_dir / "settings.json") == settings(workspace, save_every=2, preview_every=3)
    assert [p.name for p in result.saved] == ["tiny-2.pt", "tiny-4.pt", "tiny-6.pt"]
    assert [p.name for p in result.previews] == ["tiny-3.png", "tiny-6.png"]
    network = files.load(out)
    assert network.step == 6 and not network.training
    for copy in result.saved:  # each copy's optimizer state matches its own file
        assert files.load_optimizer_state(copy) is not None


def test_training_over_the_source_keeps_the_starting_point(workspace):
    before = (workspace / "start.pt").read_bytes()
    result = train(tiny_adapter(), workspace / "start.pt", settings(workspace, max_steps=2),
                   log_dir=workspace / "logs-inplace")
    kept = result.log_dir / "hypernetworks" / "tiny-0-start.pt"
    assert kept.read_bytes() == before
    assert files.load(workspace / "start.pt").step == 2


def test_interrupt_stops_and_saves(workspace):
    calls = []
    callbacks = Callbacks(should_stop=lambda: len(calls) >= 2, progress=lambda step, total: calls.append(step))
    result = train(tiny_adapter(), workspace / "start.pt", settings(workspace), output_path=workspace / "i.pt",
                   callbacks=callbacks, log_dir=workspace / "logs-i")
    assert result.interrupted and result.steps_done == 2 and files.load(workspace / "i.pt").step == 2


class NanAdapter:
    """Wraps the tiny adapter; the loss becomes NaN once two steps are done (from step 3 on)."""

    def __init__(self):
        self.inner = tiny_adapter()
        self.steps_done = 0
        self.callbacks = Callbacks(progress=self.count)

    def count(self, step, total):
        self.steps_done = step

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def loss(self, *args, **kwargs):
        loss = self.inner.loss(*args, **kwargs)
        return loss * float("nan") if self.steps_done >= 2 else loss


def test_nan_loss_stops_loudly_and_never_writes_nan(workspace):
    adapter = NanAdapter()
    with pytest.raises(TrainingError, match=r"loss became nan at step 3.*last good weights are saved as .*tiny-2.pt"):
        train(adapter, workspace / "start.pt", settings(workspace), output_path=workspace / "n.pt",
              log_dir=workspace / "logs-nan", callbacks=adapter.callbacks)
    saved = workspace / "logs-nan" / "hypernetworks" / "tiny-2.pt"
    assert all(torch.isfinite(t).all() for t in weights_of(saved).values())
    assert not (workspace / "n.pt").exists()


def test_nan_loss_skip_policy(workspace):
    adapter = NanAdapter()
    result = train(adapter, workspace / "start.pt", settings(workspace, nan_policy="skip", max_steps=3),
                   output_path=workspace / "s.pt", log_dir=workspace / "logs-skip", callbacks=adapter.callbacks)
    assert result.steps_done == 3 and len(result.losses) == 2
    assert all(torch.isfinite(t).all() for t in weights_of(workspace / "s.pt").values())


def test_already_trained_is_a_clear_message(workspace):
    with pytest.raises(ConfigError, match="already been trained for 6 steps"):
        _, out = run(workspace, "done")
        train(tiny_adapter(), out, settings(workspace), log_dir=workspace / "logs-again")


def test_training_learns(tmp_path):
    make_images(tmp_path / "data", 4, sizes=((64, 64),))
    make_network(tmp_path / "start.pt", activation="linear", init_std=0.01)
    result, _ = run(tmp_path, "learn", max_steps=60, batch_size=4, grad_accum=1, learn_rate="3e-3")
    losses = [p.loss for p in result.losses]
    fifth = len(losses) // 5
    first, last = sum(losses[:fifth]) / fifth, sum(losses[-fifth:]) / fifth
    print(f"mean loss, first 20% of steps: {first:.5f}; last 20%: {last:.5f}")
    assert last < first


class CountingAdapter:
    """The tiny adapter, counting the images it encodes."""

    def __init__(self, kind="ldm"):
        self.inner = tiny_adapter(kind)
        self.encoded = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_images(self, pixels):
        self.encoded += pixels.shape[0]
        return self.inner.encode_images(pixels)


@pytest.mark.parametrize("kind", ["ldm", "diffusers"])
def test_a_network_for_other_widths_names_the_model_widths_and_the_fix_before_encoding(tmp_path, kind):
    make_images(tmp_path / "data", 2, sizes=((64, 64),))
    from hypernetwork_ext import Hypernetwork, HypernetworkConfig, save
    save(Hypernetwork.create(HypernetworkConfig(sizes=(2048, 640)), "xl", seed=1), tmp_path / "start.pt")
    adapter = CountingAdapter(kind)
    with pytest.raises(ConfigError) as caught:
        train(adapter, tmp_path / "start.pt", settings(tmp_path), log_dir=tmp_path / "logs-xl")
    message = str(caught.value)
    assert "has no module for any attention width of this model (its modules: 2048, 640; " in message
    assert "the model's widths: 48, 32, 64" in message
    assert "`python -m hypernetwork_ext create xl --out xl-fit.pt --sizes 48,32,64`" in message
    assert adapter.encoded == 0  # said before the images were encoded


def test_input_errors_come_before_any_image_is_encoded(tmp_path):
    make_images(tmp_path / "data", 2, sizes=((64, 64),))
    make_network(tmp_path / "start.pt")
    adapter = CountingAdapter()
    with pytest.raises(ConfigError, match="Preview sampler 'totally bogus' is not offered here; choose one of: DDIM, Euler"):
        train(adapter, tmp_path / "start.pt", settings(tmp_path, preview={"sampler": "totally bogus"}))
    assert adapter.encoded == 0


def test_preview_sampler_names_any_case_and_euler_differs_from_ddim(workspace):
    euler, _ = run(workspace, "euler", preview_every=6, preview={"sampler": "euler", "steps": 4, "width": 64,
                                                                  "height": 64, "seed": 11})
    ddim, _ = run(workspace, "ddim", preview_every=6, preview={"sampler": "DDIM", "steps": 4, "width": 64,
                                                                "height": 64, "seed": 11})
    from PIL import Image
    import numpy as np
    a, b = (np.asarray(Image.open(r.previews[0])) for r in (euler, ddim))
    assert a.shape == b.shape and not np.array_equal(a, b)  # the name is not ignored


@pytest.mark.parametrize("sampler", ["DDIM", "Euler"])
@pytest.mark.parametrize("v_prediction", [False, True])
def test_each_preview_sampler_reaches_the_image_an_exact_model_points_to(sampler, v_prediction):
    """With a model that knows the one image its data holds, a correct sampler ends exactly on that image."""
    from hypernetwork_ext.adapters.sampling import sample
    alphas = torch.cumprod(1 - torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2, 0)
    target = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(3))

    def exact(x, t):
        a = alphas[t].view(-1, 1, 1, 1)
        eps = (x - a.sqrt() * target) / (1 - a).sqrt()
        return a.sqrt() * eps - (1 - a).sqrt() * target if v_prediction else eps

    out = sample(sampler, exact, alphas, (1, 4, 4, 4), 12, 7.0, 1, v_prediction, "cpu", torch.float32)
    assert torch.allclose(out, target, atol=1e-4)


def test_learns_where_ldms_own_checkpointing_is_on(tmp_path):
    # Every SD config sets use_checkpoint: True (so the WebUI's models have it). ldm's checkpoint passes
    # gradients only to a block's own parameters: the hypernetwork inside it never learned (found in the
    # real A1111 1.8, where training ran and saved unchanged weights).
    make_images(tmp_path / "data", 2, sizes=((64, 64),))
    make_network(tmp_path / "start.pt", activation="linear")
    adapter = tiny_adapter("ldm")
    flagged = [(m, flag) for m in adapter.model.model.diffusion_model.modules() for flag in ("checkpoint", "use_checkpoint")
               if isinstance(getattr(m, flag, None), bool)]
    assert flagged
    for module, flag in flagged:
        setattr(module, flag, True)
    try:
        for checkpointing in (False, True):
            out = tmp_path / f"out-{checkpointing}.pt"
            train(adapter, tmp_path / "start.pt", settings(tmp_path, max_steps=1, batch_size=1, grad_accum=1,
                                                           gradient_checkpointing=checkpointing),
                  output_path=out, log_dir=tmp_path / f"logs-{checkpointing}")
            assert not same_tensors(weights_of(tmp_path / "start.pt"), weights_of(out)), checkpointing
            assert all(getattr(module, flag) is True for module, flag in flagged)  # the model's flags come back
    finally:
        for module, flag in flagged:
            setattr(module, flag, False)


@pytest.mark.parametrize("kind", ["ldm", "diffusers"])
def test_no_gradient_of_the_model_is_computed_or_kept(workspace, kind):
    """The WebUI loads its model with every parameter requiring grad; training the hypernetwork must not fill
    (or compute) the model's 860M gradients."""
    adapter = tiny_adapter(kind)
    model = adapter.model if kind == "ldm" else adapter.unet
    model.requires_grad_(True)
    train(adapter, workspace / "start.pt", settings(workspace, max_steps=2), output_path=workspace / "o.pt",
          log_dir=workspace / "logs-frozen")
    assert all(parameter.grad is None for parameter in model.parameters())
    assert all(parameter.requires_grad for parameter in model.parameters())  # left as the WebUI had them
