import json
import math

import pytest

from hypernetwork_ext import ConfigError, HypernetworkFileError
from hypernetwork_ext.training import TrainingSettings
from hypernetwork_ext.training.schedule import CosineRestarts, StepSchedule


def test_webui_schedule_syntax():
    schedule = StepSchedule.parse("5e-3:100, 1e-3:1000, 1e-5", 2000)
    assert [schedule.rate_at(s) for s in (0, 99, 100, 999, 1000, 1999)] == [5e-3, 5e-3, 1e-3, 1e-3, 1e-5, 1e-5]
    assert StepSchedule.parse("0.00004", 6000).rate_at(5999) == 4e-5
    assert StepSchedule.parse("4e-05:2000, 4e-06:4000, 4e-07:6000", 6000).rate_at(4500) == 4e-7
    assert StepSchedule.parse("1e-3:-1", 10).rate_at(9) == 1e-3
    assert StepSchedule.parse(0.001, 10).rate_at(3) == 0.001
    assert StepSchedule.parse("1e-3:100, 1e-4", 50).segments == ((1e-3, 50),)  # lowered max steps: later entries unused


@pytest.mark.parametrize("text, fragment", [
    ("", "is empty"),
    ("abc", "'abc' in entry 1 is not a number"),
    ("1e-3:x", "step 'x' in entry 1 is not a whole number"),
    ("1e-3:100, 1e-4:50, 1e-5", "step 50 in entry 2 is not after step 100"),
    ("1e-3:100", "the schedule ends at step 100 but max steps is 1000"),
    ("1e-3, 1e-4", "entry 1 has no step, so it lasts to the end"),
    ("-1e-3", "must be a positive number"),
    ("nan", "must be a positive number"),
    ("1e-3:0, 1e-4", "must be positive"),
    ("1e-3:10,, 1e-4", "entry 2 is empty"),
])
def test_bad_schedules_say_why(text, fragment):
    with pytest.raises(ConfigError) as caught:
        StepSchedule.parse(text, 1000)
    assert fragment in str(caught.value) and caught.value.field == "learn_rate"


def closed_form(step, max_rate, min_rate, first, mult, warmup, decay):
    if mult == 1:
        cycle, position, length = step // first, step % first, first
    else:
        cycle = int(math.log(step / first * (mult - 1) + 1, mult)) if step >= first else 0
        position = step - first * (mult ** cycle - 1) / (mult - 1)
        length = first * mult ** cycle
    peak = max_rate * decay ** cycle
    if position < warmup:
        return min_rate + (peak - min_rate) * position / warmup
    return min_rate + (peak - min_rate) * (1 + math.cos(math.pi * (position - warmup) / (length - warmup))) / 2


@pytest.mark.parametrize("mult, warmup, decay", [(1, 0, 1), (1, 10, 0.5), (2, 5, 0.8)])
def test_cosine_with_restarts_matches_the_closed_form(mult, warmup, decay):
    schedule = CosineRestarts(1e-3, 1e-5, 50, mult, warmup, decay)
    for step in (0, 1, 5, 10, 25, 49, 50, 51, 99, 100, 149, 150, 151, 349, 350, 777):
        assert schedule.rate_at(step) == pytest.approx(closed_form(step, 1e-3, 1e-5, 50, mult, warmup, decay))
    assert schedule.cycle_ends_at(50) and not schedule.cycle_ends_at(49) and not schedule.cycle_ends_at(0)


@pytest.mark.parametrize("args, fragment", [
    ((1e-3, 2e-3, 10), "minimum learning rate"), ((1e-3, 0, 0), "steps per cycle"),
    ((1e-3, 0, 10, 0.5), "cycle length multiplier"), ((1e-3, 0, 10, 1, 10), "warmup steps"),
    ((1e-3, 0, 10, 1, 0, 0), "decay per cycle"),
])
def test_cosine_settings_are_checked(args, fragment):
    with pytest.raises(ConfigError, match=fragment):
        CosineRestarts(*args)


def test_settings_round_trip(tmp_path):
    settings = TrainingSettings(data_dir="d", learn_rate="5e-3:100, 1e-5", max_steps=300, batch_size=4,
                                cosine={"enabled": True, "cycle_steps": 100}, preview={"prompt": "日本", "seed": 7})
    path = settings.save(tmp_path / "s.json")
    assert TrainingSettings.load(path) == settings
    assert json.loads(path.read_text(encoding="utf-8"))["version"] == 1


@pytest.mark.parametrize("data, fragment", [
    ({"version": 99}, "newer version"),
    ({"bogus": 1, "other": 2}, "unknown settings: bogus, other"),
    ({"preview": {"colour": 1}}, "unknown setting: preview.colour"),
    ({"format": "something-else"}, "not a training-settings file"),
    ({"batch_size": 0}, "Batch size (0) must be at least 1"),
    ({"batch_size": "x"}, "Batch size must be a whole number"),
    ({"max_steps": -5}, "Max steps (-5) must be at least 1"),
    ({"width": 500}, "must be a multiple of 8"),
    ({"learn_rate": "1e-3:10", "max_steps": 100}, "the schedule ends at step 10"),
    ({"clip_mode": "value", "clip_value": "big"}, "Gradient clip value"),
    ({"latent_sampling": "sometimes"}, "Latent sampling must be one of once, deterministic, random"),
    ({"tag_dropout": 1.5}, "Tag dropout"),
])
def test_bad_settings_say_why(tmp_path, data, fragment):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(HypernetworkFileError) as caught:
        TrainingSettings.load(path)
    assert fragment in str(caught.value)


def test_settings_file_that_is_not_json(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(HypernetworkFileError, match="not valid JSON"):
        TrainingSettings.load(tmp_path / "bad.json")
