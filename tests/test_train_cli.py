
import pytest
import torch

from hypernetwork_ext import files
from hypernetwork_ext.cli import main
from hypernetwork_ext.training import TrainingSettings

from training_helpers import make_images, make_network
from webui_reference import webui_load, webui_safe_check


def test_every_setting_has_a_flag_and_flags_override_the_settings_file(tmp_path):
    from hypernetwork_ext.cli import build_parser
    import argparse
    import dataclasses
    from hypernetwork_ext.train_cli import settings_from_args
    parser = build_parser()
    args = parser.parse_args(["train", "--hypernetwork", "x.pt", "--data", "d", "--steps", "300", "--lr",
                              "1e-3:100, 1e-4", "--batch-size", "3", "--preview-prompt", "a cat", "--preview-seed",
                              "5", "--cosine", "--cosine-cycle-steps", "50", "--no-flip", "--shuffle-tags",
                              "--clip-mode", "norm", "--clip-value", "0.5", "--timesteps-curriculum", "restart",
                              "--timesteps-start-max", "99", "--timesteps-ramp-steps", "100"])
    keys = {f.name for f in dataclasses.fields(TrainingSettings)} | {
        "preview.prompt", "preview.seed", "cosine.enabled", "cosine.cycle_steps", "timesteps.curriculum",
        "timesteps.start_max", "timesteps.ramp_steps"}
    flags = argparse.Namespace(**{k: v for k, v in vars(args).items() if k in keys or "." in k})
    base = TrainingSettings(batch_size=7, width=256, height=256)
    settings = settings_from_args(flags, base)
    assert (settings.data_dir, settings.max_steps, settings.learn_rate, settings.batch_size) == ("d", 300, "1e-3:100, 1e-4", 3)
    assert settings.width == 256  # not given on the command line: kept from the settings file
    assert settings.preview.prompt == "a cat" and settings.preview.seed == 5
    assert settings.cosine.enabled and settings.cosine.cycle_steps == 50
    assert settings.flip is False and settings.shuffle_tags is True and settings.clip_mode == "norm"
    assert (settings.timesteps.curriculum, settings.timesteps.start_max, settings.timesteps.ramp_steps) == \
        ("restart", 99, 100)


def test_train_command_writes_back_and_resumes(tmp_path, capsys):
    make_images(tmp_path / "data", 4, sizes=((64, 64),))
    network = make_network(tmp_path / "n.pt")
    common = ["--data", str(tmp_path / "data"), "--width", "64", "--height", "64", "--lr", "1e-3",
              "--batch-size", "2", "--save-every", "2", "--preview-every", "0", "--log-dir", str(tmp_path / "logs")]
    assert main(["train", "--hypernetwork", str(network), "--steps", "2", *common]) == 0
    out = capsys.readouterr().out
    assert "DEMONSTRATION model" in out and "loss_chart.png" in out
    assert files.load(network).step == 2  # written back to --hypernetwork
    copy = next((tmp_path / "logs").rglob("tiny-2.pt"))
    (tmp_path / "settings.json").write_text(TrainingSettings(
        data_dir=str(tmp_path / "data"), width=64, height=64, learn_rate="1e-3", batch_size=2, max_steps=4,
        save_every=0, preview_every=0, log_dir=str(tmp_path / "logs")).to_json())
    assert main(["train", "--hypernetwork", str(network), "--settings", str(tmp_path / "settings.json"),
                 "--resume", str(copy), "--out", str(tmp_path / "resumed.pt")]) == 0
    assert files.load(tmp_path / "resumed.pt").step == 4


@pytest.mark.parametrize("args, fragment", [
    (["--steps", "abc"], "--steps: 'abc' is not a number"),
    (["--steps", "0"], "Max steps (0) must be at least 1"),
    (["--lr", "fast"], "Learning rate: 'fast'"),
    (["--model", "/nowhere/model.safetensors"], "--model '/nowhere/model.safetensors'"),
    (["--settings", "{tmp}/missing.json"], "cannot be read"),
    (["--hypernetwork", "{tmp}/missing.pt"], "does not exist"),
])
def test_train_command_errors(tmp_path, capsys, args, fragment):
    make_images(tmp_path / "data", 2, sizes=((64, 64),))
    network = make_network(tmp_path / "n.pt")
    full = ["train", "--hypernetwork", str(network), "--data", str(tmp_path / "data"), "--width", "64", "--height", "64"]
    full += [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(full) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and fragment in err[0], err


@pytest.mark.parametrize("args, fragment", [
    (["--optimizer", "Adamm"], "Unknown optimizer 'Adamm'; choose one of: AdamW"),
    (["--data", "{tmp}/nowhere"], "does not exist or is not a folder"),
    (["--preview-sampler", "totally bogus"], "Preview sampler 'totally bogus' is not offered here; choose one of: "
                                             "DDIM, Euler"),
    (["--hypernetwork", "{tmp}/default-sizes.pt"], "(its modules: 768, 320, 640, 1024, 1280; the model's widths: "
                                                   "48, 32, 64); create one that fits with `python -m hypernetwork_ext "
                                                   "create x --out x-fit.pt --model tiny`"),
    (["--template", "{tmp}/missing.txt"], "does not exist"),
])
def test_input_errors_are_reported_before_the_model_loads(tmp_path, capsys, monkeypatch, args, fragment):
    from hypernetwork_ext import train_cli
    monkeypatch.setattr(train_cli, "load_adapter", lambda *a, **k: pytest.fail("the model was loaded first"))
    assert main(["create", "x", "--out", str(tmp_path / "default-sizes.pt")]) == 0
    make_images(tmp_path / "data", 2, sizes=((64, 64),))
    network = make_network(tmp_path / "n.pt")
    full = ["train", "--hypernetwork", str(network), "--data", str(tmp_path / "data"), "--width", "64", "--height", "64"]
    assert main(full + [a.replace("{tmp}", str(tmp_path)) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and fragment in err[0], err


def test_choices_are_taken_in_any_case_and_trained_on_is_recorded(tmp_path, capsys):
    make_images(tmp_path / "data", 2, sizes=((64, 64),))
    assert main(["create", "fit", "--out", str(tmp_path / "fit.pt"), "--model", "tiny"]) == 0
    assert files.load(tmp_path / "fit.pt").sizes == (48, 32, 64)  # the built-in model's widths
    assert main(["train", "--hypernetwork", str(tmp_path / "fit.pt"), "--data", str(tmp_path / "data"), "--width", "64",
                 "--height", "64", "--steps", "1", "--save-every", "0", "--preview-every", "1", "--preview-width", "64",
                 "--preview-height", "64", "--preview-steps", "2", "--log-dir", str(tmp_path / "logs"),
                 "--optimizer", "adamw", "--clip-mode", "Norm", "--loss", "SIMPLE", "--latent-sampling", "Random",
                 "--preview-sampler", "euler"]) == 0
    saved = TrainingSettings.load(next((tmp_path / "logs").rglob("settings.json")))
    assert (saved.optimizer, saved.clip_mode, saved.loss, saved.latent_sampling) == ("AdamW", "norm", "simple", "random")
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "fit.pt")]) == 0
    assert "trained on     tiny (built-in demonstration model)" in capsys.readouterr().out


def test_demo_creates_trains_and_previews(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--steps", "6"]) == 0
    out = capsys.readouterr().out
    assert "DEMONSTRATION model" in out
    network = tmp_path / "demo" / "demo.pt"
    webui_safe_check(network)
    layers = webui_load(torch.load(network, map_location="cpu", weights_only=False))
    x = torch.randn(1, 5, 32)
    assert torch.allclose(layers[32][0](x), files.load(network).pair_for(32).k(x), atol=1e-6)
    logs = tmp_path / "demo" / "logs" / "demo"
    assert (logs / "loss_chart.png").stat().st_size > 1000
    assert len(list((logs / "images").glob("*.png"))) == 3
    assert (logs / "hypernetwork_loss.csv").read_text().count("\n") == 7


@pytest.mark.parametrize("set_file, text", [
    ("combo.hnset.json", '{"format": "hypernetwork-set", "version": 1, "mix": [{"network": "a", "weight": 2}, "b"]}'),
    ("combo.hns", "{'a': 2, 'b': 1}"),  # the old extension's sets
], ids=["hnset.json", "hns"])
def test_training_a_set_is_refused_before_any_model_loads(tmp_path, capsys, monkeypatch, set_file, text):
    from hypernetwork_ext import train_cli
    make_images(tmp_path / "data", 2, sizes=((64, 64),))
    make_network(tmp_path / "a.pt")
    (tmp_path / set_file).write_text(text)
    monkeypatch.setattr(train_cli, "load_adapter", lambda *a, **k: pytest.fail("the model was loaded"))
    for flag in ("--hypernetwork", "--resume"):
        before = (tmp_path / set_file).read_bytes()
        args = ["train", "--hypernetwork", str(tmp_path / (set_file if flag == "--hypernetwork" else "a.pt")),
                "--data", str(tmp_path / "data")]
        assert main(args + (["--resume", str(tmp_path / set_file)] if flag == "--resume" else [])) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0] == (f"error: {tmp_path / set_file} is a set of hypernetworks; sets apply, they "
                                            f"do not train: train one of its members (a, b) instead"), err
        assert (tmp_path / set_file).read_bytes() == before


def test_the_engine_refuses_a_set_too(tmp_path):
    """The WebUI's Train tab and its HTTP route list sets beside networks; they train through the engine."""
    from hypernetwork_ext import ConfigError
    from hypernetwork_ext.stack import write_set_file
    from hypernetwork_ext.training import train
    from training_helpers import tiny_adapter
    write_set_file(tmp_path / "combo.hnset.json", {"sequence": ["a"]})
    with pytest.raises(ConfigError, match="is a set of hypernetworks; sets apply, they do not train: train one of "
                                          r"its members \(a\) instead"):
        train(tiny_adapter(), tmp_path / "combo.hnset.json", TrainingSettings(data_dir=str(tmp_path)))


def test_train_shows_the_dataset_notes_and_fits_a_batch_larger_than_the_dataset(tmp_path, capsys):
    make_images(tmp_path / "data", 8, sizes=((64, 64),))
    (tmp_path / "data" / "000-image.txt").write_bytes("猫, 耳".encode("cp932"))
    network = make_network(tmp_path / "n.pt")
    assert main(["train", "--hypernetwork", str(network), "--data", str(tmp_path / "data"), "--width", "64",
                 "--height", "64", "--lr", "1e-3", "--batch-size", "16", "--grad-accum", "4", "--steps", "2",
                 "--save-every", "0", "--preview-every", "0", "--log-dir", str(tmp_path / "logs")]) == 0
    out = capsys.readouterr().out
    assert "note 000-image.png: caption is not UTF-8; read as Shift-JIS" in out
    assert "Batch size 16 is more than the 8 images of an epoch; training with batch size 8" in out
    assert "Gradient accumulation 4 is more than the 1 batch of an epoch; training with 1" in out
    assert "8 images a step (batch size 8 × gradient accumulation 1), 1 step per epoch" in out
    assert files.load(network).step == 2
