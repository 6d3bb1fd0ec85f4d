"""What a person sees on the command line: no other library's chatter (unless --verbose), one error line,
help that explains every flag, and Ctrl+C that stops and saves like the tabs' Interrupt."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hypernetwork_ext import files
from hypernetwork_ext.cli import build_parser, main
from hypernetwork_ext.training import Callbacks, TrainingSettings, train
from hypernetwork_ext.training.engine import TrainingError
from hypernetwork_ext.training.settings import SETTINGS_INFO
from hypernetwork_ext.train_cli import flag_for, off_flag_for

from training_helpers import make_images, make_network, same_tensors, tiny_adapter, weights_of

ROOT = Path(__file__).resolve().parents[1]
# what ldm, lightning and setuptools print or warn while the tiny model loads
CHATTER = ("pkg_resources", "LightningDeprecationWarning", "xformers", "making attention of type",
           "DiffusionWrapper has", "Warning")


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "hypernetwork_ext", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _chatter(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(marker in line for marker in CHATTER)]


@pytest.fixture
def bad_data_args(tmp_path):
    network = make_network(tmp_path / "n.pt")
    return ["train", "--hypernetwork", str(network), "--data", str(tmp_path / "missing"), "--steps", "3",
            "--width", "64", "--height", "64", "--log-dir", str(tmp_path / "logs")]


def test_an_error_is_one_line_with_no_library_chatter_and_no_progress_bar(bad_data_args):
    run = _run(*bad_data_args)
    assert run.returncode == 2
    assert run.stderr.splitlines() == [f"error: Dataset directory '{bad_data_args[4]}' does not exist or is not a "
                                       f"folder"], run.stderr
    assert not _chatter(run.stdout), run.stdout
    assert "%|" not in run.stdout and "/3 [" not in run.stdout, run.stdout  # no progress bar was drawn


def test_verbose_shows_what_the_libraries_print(tmp_path):
    network = make_network(tmp_path / "n.pt")
    args = ["train", "--hypernetwork", str(network), "--data", str(make_images(tmp_path / "data", 2)), "--steps", "1",
            "--width", "64", "--height", "64", "--log-dir", str(tmp_path / "logs")]
    quiet = _run(*args, "--out", str(tmp_path / "quiet.pt"))
    verbose = _run(*args, "--out", str(tmp_path / "verbose.pt"), "--verbose")
    assert quiet.returncode == 0 and verbose.returncode == 0, quiet.stderr + verbose.stderr
    assert not _chatter(quiet.stdout + quiet.stderr), quiet.stdout + quiet.stderr
    assert "DiffusionWrapper has" in verbose.stdout and "making attention of type" in verbose.stdout, verbose.stdout


def test_the_demo_prints_only_its_own_lines(tmp_path):
    run = _run("demo", "--out", str(tmp_path / "demo"), "--steps", "1")
    assert run.returncode == 0, run.stderr
    assert not _chatter(run.stdout + run.stderr), run.stdout + run.stderr
    assert run.stderr == ""
    assert "DEMONSTRATION model" in run.stdout and "hypernetwork:" in run.stdout


# --------------------------------------------------------------------------------------------
# help
# --------------------------------------------------------------------------------------------

def _help(command: str, capsys) -> str:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return " ".join(capsys.readouterr().out.split())  # unwrapped: one space between words


@pytest.mark.parametrize("spec", [s for s in SETTINGS_INFO if s.options()], ids=lambda s: s.key)
def test_help_of_a_setting_with_a_list_of_values_names_them_and_the_default(spec, capsys):
    text = _help("train", capsys)
    text = text[text.index("Training: Every training setting"):]  # the option list, not the usage line
    entry = text[text.index(flag_for(spec.key) + " "):]
    entry = entry[:entry.index("(default: ")] + entry[entry.index("(default: "):].split(")")[0]
    assert all(choice in entry for choice in spec.options()), entry
    assert f"(default: {spec.default()}" in entry, entry


def test_help_of_switches_names_both_flags_and_the_one_in_effect(capsys):
    text = _help("train", capsys)
    assert "--no-no-" not in text
    assert "--no-crop, --crop Do not crop: keep aspect ratios (bucketing)." in text
    assert "(default: --no-crop)" in text  # on unless --crop
    assert "--flip, --no-flip Random horizontal flip." in text and "(default: --no-flip)" in text
    assert "--cosine, --no-cosine" in text


def test_help_explains_the_schedule_syntax_and_shows_the_tab_labels(capsys):
    text = _help("train", capsys)
    assert "5e-3:100, 1e-3:1000, 1e-5 trains at 5e-3 until step 100" in text
    for spec in SETTINGS_INFO:  # the tab's labels and notes: one table for both
        assert f"{spec.label}. {spec.info}" in text, spec.key
    assert text.index("Training: Every training setting") < text.index("Advanced options:")


def test_every_flag_of_every_command_has_a_sentence():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, command in commands.items():
        for action in command._actions:
            if action.dest != "help":
                assert action.help and len(action.help.split()) >= 3, (name, action.dest)


def test_the_crop_switch_sets_the_setting_both_ways():
    parser = build_parser()
    assert vars(parser.parse_args(["train", "--hypernetwork", "x", "--crop"]))["no_crop"] is False
    assert vars(parser.parse_args(["train", "--hypernetwork", "x", "--no-crop"]))["no_crop"] is True
    assert off_flag_for("flip") == "--no-flip"


# --------------------------------------------------------------------------------------------
# Ctrl+C
# --------------------------------------------------------------------------------------------

def test_ctrl_c_stops_after_the_step_and_saves_the_result_like_interrupt(tmp_path):
    make_images(tmp_path / "data", 4, sizes=((64, 64),))
    network = make_network(tmp_path / "n.pt")
    logs = tmp_path / "logs"
    child = subprocess.Popen(
        [sys.executable, "-m", "hypernetwork_ext", "train", "--hypernetwork", str(network), "--data",
         str(tmp_path / "data"), "--width", "64", "--height", "64", "--steps", "100000", "--save-every", "1",
         "--preview-every", "0", "--lr", "1e-3", "--log-dir", str(logs)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 300
        while not list(logs.rglob("tiny-2.pt")):  # two steps done: training runs
            assert child.poll() is None and time.monotonic() < deadline, child.communicate()
            time.sleep(0.2)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=300)
    finally:
        child.kill()
    assert child.returncode == 130, (out, err)
    assert err == "", err
    step = int(re.search(r"Interrupted at step (\d+)", out).group(1))
    assert f"Training interrupted at step {step}; saved {network}" in out
    saved = files.load(network)  # the result went to --hypernetwork, as Interrupt does in the tabs
    assert saved.step == step >= 2
    assert same_tensors(weights_of(network), weights_of(next(logs.rglob(f"tiny-{step}.pt"))))
    assert files.load_optimizer_state(network) is not None


def test_a_keyboard_interrupt_inside_a_step_names_the_step_and_the_saved_weights(tmp_path):
    make_images(tmp_path / "data", 2, sizes=((64, 64),))
    network = make_network(tmp_path / "n.pt")

    def stop_at_step_2(step, total):
        if step == 2:
            raise KeyboardInterrupt

    settings = TrainingSettings(data_dir=str(tmp_path / "data"), width=64, height=64, max_steps=5,
                                save_every=0, preview_every=0, log_dir=str(tmp_path / "logs"))
    with pytest.raises(TrainingError) as caught:
        train(tiny_adapter(), network, settings, callbacks=Callbacks(progress=stop_at_step_2))
    message = str(caught.value)
    assert message.startswith("Interrupted at step 2"), message
    assert message.endswith("the last good weights are saved as " + str(next((tmp_path / "logs").rglob("tiny-2.pt"))))
