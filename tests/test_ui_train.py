import dataclasses

import pytest

from hypernetwork_ext.training import TrainingSettings
from hypernetwork_ext.ui.train_tab import FIELDS, default_values, load_settings, save_settings, settings_from_values


def _leaf_keys(cls, prefix=""):
    keys = set()
    for field in dataclasses.fields(cls):
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        if dataclasses.is_dataclass(default):
            keys |= _leaf_keys(type(default), f"{field.name}.")
        else:
            keys.add(prefix + field.name)
    return keys


def test_every_training_setting_has_a_control():
    assert {f.key for f in FIELDS} == _leaf_keys(TrainingSettings)


def test_defaults_round_trip_into_settings():
    settings, errors = settings_from_values(default_values())
    assert not errors and settings == TrainingSettings()


def _values(**changes):
    values = default_values()
    keys = [f.key for f in FIELDS]
    for key, value in changes.items():
        values[keys.index(key.replace("__", "."))] = value
    return values


@pytest.mark.parametrize("changes, key, fragment", [
    ({"batch_size": "two"}, "batch_size", "is not a number"),
    ({"batch_size": 0}, "batch_size", "must be at least 1"),
    ({"max_steps": 1.5}, "max_steps", "must be a whole number"),
    ({"learn_rate": "1e-3:100", "max_steps": 1000}, "learn_rate", "the schedule ends at step 100"),
    ({"width": 500}, "width", "multiple of 8"),
    ({"tag_dropout": 2}, "tag_dropout", "below 1"),
    ({"timesteps__min": 800, "timesteps__max": 200}, "timesteps.min", "is above the highest timestep (200)"),
    ({"timesteps__ramp_steps": 0}, "timesteps.ramp_steps", "must be at least 1"),
])
def test_bad_values_get_a_message_beside_their_input(changes, key, fragment):
    settings, errors = settings_from_values(_values(**changes))
    assert settings is None and fragment in errors[key]


def test_settings_save_and_load(tmp_path):
    values = _values(learn_rate="4e-05:2000, 4e-06:4000, 4e-07", max_steps=6000, batch_size=2,
                     preview__prompt="my style", cosine__enabled=True)
    assert save_settings(values, tmp_path / "s.json").startswith("Saved")
    loaded, text = load_settings(tmp_path / "s.json")
    assert text.startswith("Loaded") and settings_from_values(loaded)[0] == settings_from_values(values)[0]
    (tmp_path / "bad.json").write_text('{"version": 99}')
    values, text = load_settings(tmp_path / "bad.json")
    assert values is None and "newer version" in text


def test_the_app_has_both_tabs(tmp_path):
    pytest.importorskip("gradio")
    from hypernetwork_ext.ui.app import build_app
    app = build_app(tmp_path / "hypernetworks")
    config = str(app.get_config_file())
    assert "Create Beta hypernetwork" in config and "Train_Gamma" in config and "hnext_train_learn_rate" in config
    assert "hnext_generate_strength" in config


def test_generate_shows_the_hypernetwork_at_its_strength(tmp_path):
    import numpy as np
    from hypernetwork_ext.ui.generate_tab import make_generate
    from training_helpers import make_network, tiny_adapter
    folder = tmp_path / "hypernetworks"
    folder.mkdir()
    make_network(folder / "style.pt", activation="relu", init_std=0.3)
    adapter = tiny_adapter()
    generate = make_generate(folder, lambda: adapter)
    args = ("a cat", "", 4, 5.0, 3, 64, 64)
    plain, message = generate("", 1.0, *args)
    zero, _ = generate("style", 0.0, *args)
    full, text = generate("style", 1.0, *args)
    assert "no hypernetwork" in message and "style at strength 1" in text
    assert np.array_equal(np.asarray(plain), np.asarray(zero))  # strength 0 is no hypernetwork
    assert not np.array_equal(np.asarray(plain), np.asarray(full))
    assert generate("missing", 1.0, *args)[0] is None


def test_the_app_offers_the_preview_samplers_and_checks_inputs_before_loading_the_model(tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    from hypernetwork_ext import ConfigError, train_cli
    from hypernetwork_ext.ui.app import StandaloneTraining, build_app
    from training_helpers import make_network
    config = build_app(tmp_path / "hypernetworks").get_config_file()
    sampler = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "hnext_train_preview_sampler")
    assert [c[0] if isinstance(c, (list, tuple)) else c for c in sampler["props"]["choices"]] == ["DDIM", "Euler"]
    make_network(tmp_path / "hypernetworks" / "style.pt")
    monkeypatch.setattr(train_cli, "load_adapter", lambda *a, **k: pytest.fail("the model was loaded first"))
    training = StandaloneTraining(tmp_path / "hypernetworks", "tiny")
    with pytest.raises(ConfigError, match="does not exist or is not a folder"):
        list(training.start("style", TrainingSettings(data_dir=str(tmp_path / "nowhere"))))


def test_the_app_lists_each_network_by_its_whole_name_and_finds_it(tmp_path):
    """Dots and brackets are part of a name; two files with one name are both listed, by file name."""
    from hypernetwork_ext import files
    from hypernetwork_ext.stack import write_set_file
    from hypernetwork_ext.ui.generate_tab import find_network, list_networks
    from training_helpers import make_network
    file_names = ["v1.5-style.pt", "a.b.pt", "a.c.safetensors", "style[v2].pt", "x.pt", "x.safetensors"]
    for index, file_name in enumerate(file_names):
        make_network(tmp_path / file_name, seed=index)
    files.save_optimizer_state(tmp_path / "a.b.pt", "AdamW", {"state": {}, "param_groups": []})
    write_set_file(tmp_path / "combo.hnset.json", {"sequence": ["a.b"]})  # a set applies (Generate), it does not train
    assert sorted(list_networks(tmp_path)) == ["a.b", "a.c", "style[v2]", "v1.5-style", "x.pt", "x.safetensors"]
    for name, file_name in [("v1.5-style", "v1.5-style.pt"), ("a.b", "a.b.pt"), ("a.c", "a.c.safetensors"),
                            ("style[v2]", "style[v2].pt"), ("x.pt", "x.pt"), ("x.safetensors", "x.safetensors")]:
        assert find_network(tmp_path, name) == tmp_path / file_name
    assert find_network(tmp_path, "x") is None and find_network(tmp_path, "combo") is None


def test_train_gamma_status_keeps_showing_the_dataset_notes(tmp_path):
    from hypernetwork_ext.training import train
    from hypernetwork_ext.ui.train_tab import TrainingStatus
    from training_helpers import make_images, make_network, tiny_adapter
    make_images(tmp_path / "data", 2, sizes=((64, 64),))
    (tmp_path / "data" / "000-image.txt").write_bytes("猫, 耳".encode("cp932"))
    settings = TrainingSettings(data_dir=str(tmp_path / "data"), width=64, height=64, max_steps=2, batch_size=1,
                                learn_rate="1e-3", save_every=0, preview_every=0, log_dir=str(tmp_path / "logs"))
    status = TrainingStatus(settings.max_steps)
    train(tiny_adapter(), make_network(tmp_path / "n.pt"), settings, callbacks=status.callbacks())
    page = status.html()
    assert "Training finished at step 2" in page  # the last status line, and still the dataset's notes beside it
    assert "note 000-image.png: caption is not UTF-8; read as Shift-JIS" in page
