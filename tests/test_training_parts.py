import pytest
import torch

from hypernetwork_ext import ConfigError, FastApplier
from hypernetwork_ext.training import TrainingSettings, train
from hypernetwork_ext.training.optimizers import available_optimizers, build_optimizer

from training_helpers import make_images, make_network, tiny_adapter, weights_of


@pytest.mark.parametrize("kind, key", [("simple", "loss_simple"), ("vlb", "loss_vlb"), ("full", "loss")])
def test_ldm_loss_kinds_equal_ldms_own_losses(kind, key):
    adapter = tiny_adapter()
    model = adapter.model
    latents = torch.randn(2, 4, 8, 8)
    cond = model.get_learned_conditioning(["a", "b"])
    torch.manual_seed(5)
    ours = adapter.loss(latents, cond, None, kind)
    torch.manual_seed(5)
    t = torch.randint(0, model.num_timesteps, (2,))
    noise = torch.randn_like(latents)
    _, theirs = model.p_losses(latents, cond, t, noise=noise)
    assert ours.item() == pytest.approx(theirs[f"val/{key}"].item(), rel=1e-5)


def test_alpha_weights_scale_the_loss_per_pixel():
    adapter = tiny_adapter()
    latents = torch.randn(1, 4, 8, 8)
    cond = adapter.model.get_learned_conditioning(["a"])
    torch.manual_seed(1)
    plain = adapter.loss(latents, cond, None, "simple")
    torch.manual_seed(1)
    doubled = adapter.loss(latents, cond, torch.full((1, 1, 8, 8), 2.0), "simple")
    assert doubled.item() == pytest.approx(2 * plain.item(), rel=1e-5)


def _settings(tmp_path, **changes):
    base = dict(data_dir=str(tmp_path / "data"), width=64, height=64, max_steps=3, batch_size=2, save_every=0,
                preview_every=0, learn_rate="1.0")
    base.update(changes)
    return TrainingSettings(**base)


def test_clipping_by_value_limits_each_gradient_element(tmp_path):
    make_images(tmp_path / "data", 4, sizes=((64, 64),))
    make_network(tmp_path / "start.pt")
    before = weights_of(tmp_path / "start.pt")
    train(tiny_adapter(), tmp_path / "start.pt", _settings(tmp_path, optimizer="SGD", clip_mode="value",
                                                           clip_value="1e-6"),
          output_path=tmp_path / "clipped.pt", log_dir=tmp_path / "logs")
    after = weights_of(tmp_path / "clipped.pt")
    biggest = max((after[k] - before[k]).abs().max().item() for k in before)
    assert 0 < biggest <= 3e-6 + 1e-8  # 3 SGD steps at lr 1, each element clipped to 1e-6 (+ float rounding)


def test_clipping_by_norm_limits_the_total_norm(tmp_path):
    make_images(tmp_path / "data", 4, sizes=((64, 64),))
    make_network(tmp_path / "start.pt")
    before = weights_of(tmp_path / "start.pt")
    train(tiny_adapter(), tmp_path / "start.pt", _settings(tmp_path, optimizer="SGD", clip_mode="norm",
                                                           clip_value="1e-4", max_steps=1),
          output_path=tmp_path / "clipped.pt", log_dir=tmp_path / "logs")
    after = weights_of(tmp_path / "clipped.pt")
    total = torch.sqrt(sum(((after[k] - before[k]) ** 2).sum() for k in before)).item()
    assert total == pytest.approx(1e-4, rel=1e-3)  # one SGD step at lr 1 moves exactly the clipped norm


def test_optimizer_choice(tmp_path):
    assert available_optimizers()[0] == "AdamW" and "SGD" in available_optimizers()
    params = [torch.nn.Parameter(torch.zeros(2))]
    optimizer, name = build_optimizer(TrainingSettings(adam_beta1=0.8, adam_beta2=0.95, weight_decay=0.1), params, 1e-3)
    group = optimizer.param_groups[0]
    assert name == "AdamW" and group["betas"] == (0.8, 0.95) and group["weight_decay"] == 0.1
    with pytest.raises(ConfigError, match="Unknown optimizer 'Adamm'"):
        build_optimizer(TrainingSettings(optimizer="Adamm"), params, 1e-3)
    import importlib.util
    if importlib.util.find_spec("dadaptation") is None:
        with pytest.raises(ConfigError, match="needs the package 'dadaptation'"):
            build_optimizer(TrainingSettings(optimizer="DAdaptAdam"), params, 1e-3)


def test_learning_rate_free_prodigy_trains_and_resumes(tmp_path):
    pytest.importorskip("prodigyopt")
    from hypernetwork_ext import files
    make_images(tmp_path / "data", 4, sizes=((64, 64),))
    make_network(tmp_path / "start.pt")
    first = train(tiny_adapter(), tmp_path / "start.pt", _settings(tmp_path, optimizer="Prodigy", max_steps=2,
                                                                   save_every=1),
                  output_path=tmp_path / "p.pt", log_dir=tmp_path / "logs")
    name, state = files.load_optimizer_state(tmp_path / "p.pt")
    assert name == "Prodigy" and "d" in state["param_groups"][0]
    assert any(not torch.equal(a, b) for a, b in zip(weights_of(tmp_path / "p.pt").values(),
                                                      weights_of(tmp_path / "start.pt").values()))
    full = weights_of(tmp_path / "p.pt")
    train(tiny_adapter(), tmp_path / "start.pt", _settings(tmp_path, optimizer="Prodigy", max_steps=2),
          resume_from=first.saved[0], output_path=tmp_path / "resumed.pt", log_dir=tmp_path / "logs2")
    resumed = weights_of(tmp_path / "resumed.pt")
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_a_different_saved_optimizer_starts_fresh_and_says_so(tmp_path):
    make_images(tmp_path / "data", 4, sizes=((64, 64),))
    make_network(tmp_path / "start.pt")
    first = train(tiny_adapter(), tmp_path / "start.pt", _settings(tmp_path, learn_rate="1e-3", max_steps=1),
                  output_path=tmp_path / "one.pt", log_dir=tmp_path / "logs1")
    said = []
    from hypernetwork_ext.training import Callbacks
    train(tiny_adapter(), tmp_path / "one.pt", _settings(tmp_path, learn_rate="1e-3", optimizer="SGD", max_steps=2),
          output_path=tmp_path / "two.pt", log_dir=tmp_path / "logs2", callbacks=Callbacks(status=said.append))
    assert first.steps_done == 1
    assert any("saved optimizer state is for AdamW, not SGD" in line for line in said)


def test_training_uses_strength_one_whatever_the_applier_would_use(tmp_path):
    """The engine attaches the network at strength 1 and in train mode; modules ignore strength there."""
    from hypernetwork_ext import Applied, load
    make_network(tmp_path / "n.pt", activation="linear", init_std=0.1)
    network = load(tmp_path / "n.pt").train()
    x = torch.randn(1, 5, 32)
    k_half, _ = FastApplier(Applied(network, 0.5))(x)
    k_one, _ = FastApplier(Applied(network, 1.0))(x)
    assert torch.equal(k_half, k_one)


@pytest.mark.parametrize("kind", ["ldm", "diffusers"])
def test_gradient_checkpointing_gives_the_same_training(tmp_path, kind):
    make_images(tmp_path / "data", 4, sizes=((64, 64),))
    make_network(tmp_path / "start.pt")
    for name, on in (("plain", False), ("checkpointed", True)):
        train(tiny_adapter(kind), tmp_path / "start.pt", _settings(tmp_path, learn_rate="1e-3", gradient_checkpointing=on),
              output_path=tmp_path / f"{name}.pt", log_dir=tmp_path / f"logs-{name}")
    plain, checkpointed = weights_of(tmp_path / "plain.pt"), weights_of(tmp_path / "checkpointed.pt")
    assert all(torch.allclose(plain[k], checkpointed[k], atol=1e-7) for k in plain)
    assert any(not torch.equal(plain[k], weights_of(tmp_path / "start.pt")[k]) for k in plain)


def test_tensorboard_missing_is_said_not_fatal(tmp_path):
    import importlib.util
    if importlib.util.find_spec("tensorboard"):
        pytest.skip("tensorboard is installed here")
    from hypernetwork_ext.training import Callbacks
    make_images(tmp_path / "data", 2, sizes=((64, 64),))
    make_network(tmp_path / "start.pt")
    said = []
    result = train(tiny_adapter(), tmp_path / "start.pt", _settings(tmp_path, learn_rate="1e-3", tensorboard=True,
                                                                    max_steps=1),
                   output_path=tmp_path / "o.pt", log_dir=tmp_path / "logs", callbacks=Callbacks(status=said.append))
    assert result.steps_done == 1 and any("tensorboard package is not installed" in line for line in said)


@pytest.mark.parametrize("count", [1, 2, 50])
def test_the_chart_shows_the_loss_and_rate_from_the_first_step(count):
    from hypernetwork_ext.training import chart
    from hypernetwork_ext.training.engine import LossPoint
    points = [LossPoint(step, 1, step, 1.0 / step, 1e-4) for step in range(1, count + 1)]
    drawn = chart.Chart(points)

    def colours_inside(panel):  # inside the frame: the labels outside it share the colours
        left, top, right, bottom = drawn.panels[panel]
        return {colour for _, colour in drawn.render().crop((left + 1, top + 1, right, bottom)).getcolors(100_000)}

    assert chart.AVERAGE_COLOUR in colours_inside("loss") and chart.RATE_COLOUR in colours_inside("rate")


@pytest.mark.parametrize("parameterization", ["eps", "v"])
def test_vlb_weights_equal_latent_diffusions_own(parameterization):
    """The diffusers and fork adapters weight the "vlb" loss as ldm does (for v prediction: all ones)."""
    from hypernetwork_ext.adapters.sampling import betas_of, lvlb_weights
    from training_helpers import tiny_model

    model = tiny_model()
    model.parameterization = parameterization
    model.register_schedule(given_betas=model.betas.double().numpy(), timesteps=model.num_timesteps)
    ours = lvlb_weights(model.betas, parameterization == "v")
    assert torch.allclose(ours, model.lvlb_weights.float(), rtol=1e-5)
    assert torch.allclose(lvlb_weights(betas_of(model.alphas_cumprod), parameterization == "v"), ours, rtol=1e-4)
