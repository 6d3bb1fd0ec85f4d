"""The noise curriculum: which timesteps training draws at each step (settings ``timesteps``)."""

import pytest
import torch

from hypernetwork_ext import ConfigError, files
from hypernetwork_ext.training import Callbacks, TrainingSettings, train
from hypernetwork_ext.training.engine import _seed

from training_helpers import make_images, make_network, same_optimizer_state, same_tensors, tiny_adapter, weights_of

BATCH, ACCUMULATION = 2, 2  # 4 timesteps a step


class RecordingAdapter:
    """The tiny adapter, keeping the timesteps and noise of every loss it computes, by step."""

    def __init__(self, kind="ldm"):
        self.inner = tiny_adapter(kind)
        self.step = 0
        self.draws: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (completed steps, t, noise)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def loss(self, latents, cond, weights, kind, t, noise):
        self.draws.append((self.step, t.clone(), noise.clone()))
        return self.inner.loss(latents, cond, weights, kind, t=t, noise=noise)

    def progress(self, done, _total):
        self.step = done

    def timesteps_at(self, step) -> list[int]:
        return [value for at, t, _ in self.draws if at == step for value in t.tolist()]


@pytest.fixture
def workspace(tmp_path):
    make_images(tmp_path / "data", 8, sizes=((64, 64),))  # one size: each micro-batch is one group, in order
    make_network(tmp_path / "start.pt", activation="relu", dropout_structure=(0, 0.2, 0))
    return tmp_path


def settings(tmp_path, **changes):
    base = dict(data_dir=str(tmp_path / "data"), log_dir=str(tmp_path / "logs"), width=64, height=64,
                learn_rate="2e-3", max_steps=6, batch_size=BATCH, grad_accum=ACCUMULATION, save_every=0,
                preview_every=0, seed=3, dataset_seed=4)
    base.update(changes)
    return TrainingSettings(**base)


def run(tmp_path, name, adapter=None, resume_from=None, **changes):
    adapter = adapter or RecordingAdapter()
    result = train(adapter, tmp_path / "start.pt", settings(tmp_path, **changes), output_path=tmp_path / f"{name}.pt",
                   log_dir=tmp_path / f"logs-{name}", resume_from=resume_from,
                   callbacks=Callbacks(progress=getattr(adapter, "progress", None)))
    return result, adapter


def test_off_draws_every_timestep_and_the_noise_exactly_as_before_curricula(workspace):
    _, adapter = run(workspace, "off")
    assert len(adapter.draws) == 6 * ACCUMULATION
    for index, (step, t, noise) in enumerate(adapter.draws):
        with torch.random.fork_rng():  # the draw of the engine before the curriculum existed
            torch.manual_seed(_seed(3, step, index % ACCUMULATION))
            expected_t = torch.randint(0, 1000, (BATCH,))
            expected_noise = torch.randn(noise.shape)
        assert torch.equal(t, expected_t) and torch.equal(noise, expected_noise), (step, t, expected_t)


def test_a_linear_ramp_moves_the_range_then_stays(workspace):
    ramp = {"curriculum": "linear", "start_min": 0, "start_max": 9, "min": 990, "max": 999, "ramp_steps": 4}
    _, adapter = run(workspace, "linear", timesteps=ramp)
    expected = {0: (0, 9), 2: (495, 504), 4: (990, 999), 5: (990, 999)}  # halfway at step 2, the end from step 4
    for step, (lowest, highest) in expected.items():
        drawn = adapter.timesteps_at(step)
        assert len(drawn) == BATCH * ACCUMULATION and all(lowest <= t <= highest for t in drawn), (step, drawn)
    assert settings(workspace, timesteps=ramp).timestep_range(1000).range_at(1) == (248, 256)


def test_a_restarting_ramp_begins_again_every_ramp_steps(workspace):
    ramp = {"curriculum": "restart", "start_min": 0, "start_max": 9, "min": 990, "max": 999, "ramp_steps": 3}
    _, adapter = run(workspace, "restart", timesteps=ramp)
    for steps, (lowest, highest) in {(0, 3): (0, 9), (1, 4): (330, 339), (2, 5): (660, 669)}.items():
        for step in steps:
            drawn = adapter.timesteps_at(step)
            assert drawn and all(lowest <= t <= highest for t in drawn), (step, drawn)


def test_resuming_mid_ramp_equals_an_uninterrupted_run(workspace):
    ramp = {"curriculum": "linear", "start_max": 99, "ramp_steps": 5}
    full, _ = run(workspace, "full", save_every=3, timesteps=ramp)
    first, _ = run(workspace, "first", max_steps=3, save_every=3, timesteps=ramp)
    resumed, _ = run(workspace, "resumed", resume_from=first.saved[0], timesteps=ramp)
    assert resumed.steps_done == 6  # steps 4 to 6 drew from the ramp's range at those steps, not from its start
    assert same_tensors(weights_of(workspace / "full.pt"), weights_of(workspace / "resumed.pt"))
    assert same_optimizer_state(files.load_optimizer_state(workspace / "full.pt")[1],
                                files.load_optimizer_state(workspace / "resumed.pt")[1])
    assert [p.loss for p in full.losses[3:]] == [p.loss for p in resumed.losses]


def test_a_range_beyond_the_models_timesteps_is_refused_before_anything_is_written(workspace):
    with pytest.raises(ConfigError) as caught:
        run(workspace, "beyond", timesteps={"max": 1000})
    assert caught.value.field == "timesteps.max"
    assert str(caught.value) == "Highest timestep (1000) is beyond this model's last timestep: its timesteps run from 0 to 999"
    assert not (workspace / "logs-beyond").exists() and not (workspace / "beyond.pt").exists()


def test_the_curriculum_survives_the_settings_file_and_old_files_train_without_one(tmp_path):
    settings = TrainingSettings(timesteps={"curriculum": "restart", "min": 100, "max": 900, "start_min": 0,
                                           "start_max": 50, "ramp_steps": 250})
    assert TrainingSettings.load(settings.save(tmp_path / "s.json")) == settings
    (tmp_path / "old.json").write_text('{"format": "hypernetwork-training-settings", "version": 1, "max_steps": 10}')
    assert TrainingSettings.load(tmp_path / "old.json").timesteps.curriculum == "off"
