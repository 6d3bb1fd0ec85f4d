
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
                              "--clip-mode", "norm", "--clip-value", "0.5"])
    keys = {f.name for f in dataclasses.fields(TrainingSettings)} | {"preview.prompt", "preview.seed",
                                                                       "cosine.enabled", "cosine.cycle_steps"}
    flags = argparse.Namespace(**{k: v for k, v in vars(args).items() if k in keys or "." in k})
    base = TrainingSettings(batch_size=7, width=256, height=256)
    settings = settings_from_args(flags, base)
    assert (settings.data_dir, settings.max_steps, settings.learn_rate, settings.batch_size) == ("d", 300, "1e-3:100, 1e-4", 3)
    assert settings.width == 256  # not given on the command line: kept from the settings file
    assert settings.preview.prompt == "a cat" and settings.preview.seed == 5
    assert settings.cosine.enabled and settings.cosine.cycle_steps == 50
    assert settings.flip is False and settings.shuffle_tags is True and settings.clip_mode == "norm"


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
