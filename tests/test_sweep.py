"""Sweeps (training/sweep.py), the `sweep` command and the Sweep tab's handler, on the tiny model: every
combination trained from the same start, the same sweep giving the same files, a stop request, failures, the
results table, its files and chart, and bad inputs reported before anything loads or is lost."""

import csv
import json
import sys

import numpy as np
import pytest
from PIL import Image

from hypernetwork_ext import ConfigError, Hypernetwork, files
from hypernetwork_ext.cli import build_parser, main
from hypernetwork_ext.models.tiny import TINY_ATTENTION_WIDTHS
from hypernetwork_ext.training import LossPoint, TrainingResult, TrainingSettings, train
from hypernetwork_ext.training.engine import TrainingError, prepare
from hypernetwork_ext.training.sweep import (PLOT_HEIGHT, SweepPlan, SweepRow, creation_start, curve_colour,
                                             file_start, override_line, prepare_sweep, render_sweep_chart, run_sweep,
                                             settings_variants)

from training_helpers import make_images, make_network, tiny_adapter

RELU = "layers=1,2,1; activation=relu"


def _settings(data, **changes):
    return TrainingSettings(**{"data_dir": str(data), "width": 64, "height": 64, "max_steps": 2, "learn_rate": "1e-3",
                               "save_every": 0, "preview_every": 0, **changes})


def _plan(starts, base, *lines, **options):
    return SweepPlan(tuple(starts), settings_variants([("", base)], [override_line(line) for line in lines]), **options)


def _trainer(adapter):
    """The standalone host's training of one combination."""
    def train_one(start, settings, output, log_dir, callbacks):
        return train(adapter, start, settings, output_path=output, log_dir=log_dir, callbacks=callbacks)
    return train_one


def _sweep(plan, out, adapter, **options):
    return run_sweep(prepare_sweep(plan, out, prepare), _trainer(adapter), **options)


def _fake_training(fail_when=lambda settings: None):
    """A host whose training takes no model: two steps of falling loss, or the error ``fail_when`` gives."""
    def train_one(start, settings, output, log_dir, callbacks):
        error = fail_when(settings)
        if error is not None:
            raise error
        points = [LossPoint(step, 1, step, 1.0 / step, 1e-3) for step in (1, 2)]
        files.save(files.load(start), output)
        return TrainingResult(files.load(output), output, log_dir, 2, False, points)
    return train_one


# --------------------------------------------------------------------------------------------
# what is swept, and the names
# --------------------------------------------------------------------------------------------

def test_every_start_meets_every_settings_variant_and_the_names_say_which(tmp_path):
    base = _settings(tmp_path)
    plan = _plan([creation_start(RELU, TINY_ATTENTION_WIDTHS), creation_start("layers=1,1", TINY_ATTENTION_WIDTHS)],
                 base, "learn_rate=1e-3,5e-4", "max_steps=3")
    combinations = plan.combinations()
    assert [c.name for c in combinations] == [
        "1_layers-1-2-1_activation-relu__learn_rate-1e-3", "2_layers-1-2-1_activation-relu__learn_rate-5e-4",
        "3_layers-1-1__learn_rate-1e-3", "4_layers-1-1__learn_rate-5e-4"]
    assert combinations[1].label == "layers=1,2,1 activation=relu × learn_rate=5e-4"
    assert [c.variant.settings.learn_rate for c in combinations] == ["1e-3", "5e-4"] * 2
    assert all(c.variant.settings.max_steps == 3 for c in combinations)  # one value: in every variant, in no name
    assert combinations[2].params == {"layers": "1,1", "learn_rate": "1e-3"}

    many = _plan([creation_start("layers=1,1", TINY_ATTENTION_WIDTHS)], base, "seed=" + ",".join(map(str, range(11))))
    assert [c.name[:3] for c in many.combinations()][::10] == ["01_", "11_"]  # numbered in run order, sortable
    files_plan = SweepPlan((creation_start("layers=1,1", TINY_ATTENTION_WIDTHS),),
                           settings_variants([("fast", base), ("slow", base.updated(learn_rate="1e-5"))],
                                             [override_line("preview.seed=1,2")]))
    assert [c.label for c in files_plan.combinations()] == [
        "layers=1,1 × fast preview.seed=1", "layers=1,1 × fast preview.seed=2",
        "layers=1,1 × slow preview.seed=1", "layers=1,1 × slow preview.seed=2"]
    assert override_line("learn_rate=5e-3:100, 1e-5 | 1e-3") == ("learn_rate", ("5e-3:100, 1e-5", "1e-3"))
    assert override_line("Preview-Seed=1,2") == ("preview.seed", ("1", "2"))
    assert creation_start("layers=1, 2, 1; activation=swish; layer-norm", (48,)).config.layer_norm


# --------------------------------------------------------------------------------------------
# one sweep on the tiny model, looked at from several sides
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A file start and a created one, each with two settings that train alike (only the CSV's spacing differs),
    previews at step 2."""
    tmp = tmp_path_factory.mktemp("sweep")
    data = make_images(tmp / "data", 2, sizes=((64, 64),))
    start = make_network(tmp / "start.pt")
    base = _settings(data, preview_every=2, preview={"steps": 2, "width": 64, "height": 64, "seed": 3})
    plan = _plan([file_start(start), creation_start(RELU, TINY_ATTENTION_WIDTHS)], base, "csv_every=1,2")
    start_bytes = start.read_bytes()
    adapter = tiny_adapter()
    result = _sweep(plan, tmp / "out", adapter)
    return {"tmp": tmp, "plan": plan, "start": start, "start_bytes": start_bytes, "result": result,
            "adapter": adapter, "out": tmp / "out"}


def test_each_combination_has_its_own_output_and_log_folder_and_the_results(swept):
    out, result = swept["out"], swept["result"]
    names = [c.name for c in swept["plan"].combinations()]
    assert [row.outcome for row in result.rows] == ["finished"] * 4 and result.finished and not result.interrupted
    network_names = ["tiny", "tiny", "layers-1-2-1_activation-relu", "layers-1-2-1_activation-relu"]
    for name, network_name, row in zip(names, network_names, result.rows):
        assert files.load(out / f"{name}.pt").step == 2 and row.output == str(out / f"{name}.pt")
        assert (out / "logs" / name / "settings.json").is_file() and row.log_dir == str(out / "logs" / name)
        assert row.previews == [str(out / "logs" / name / "images" / f"{network_name}-2.png")]
        assert row.steps == 2 and [step for step, _ in row.curve] == [1, 2] and row.lowest_loss <= row.final_loss
    document = json.loads((out / "sweep_results.json").read_text())
    assert document["format"] == "hypernetwork-sweep-results" and document["finished"]
    assert [row["name"] for row in document["rows"]] == names and document["rows"][0]["curve"] == result.rows[0].curve
    with open(out / "sweep_results.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [row["name"] for row in table] == names and table[3]["outcome"] == "finished"
    assert float(table[0]["final_loss"]) == pytest.approx(result.rows[0].final_loss)


def _colours(image, rows: slice) -> set:
    return {tuple(pixel) for pixel in np.asarray(image.convert("RGB"))[rows].reshape(-1, 3)}


def test_the_chart_has_one_curve_per_combination(swept):
    chart = Image.open(swept["out"] / "sweep_chart.png")
    assert all(curve_colour(index) in _colours(chart, slice(PLOT_HEIGHT, None)) for index in (1, 2, 3, 4))  # legend
    assert curve_colour(4) in _colours(chart, slice(0, PLOT_HEIGHT))  # drawn last, over its twin

    rows = [SweepRow(1, "a", "fast", {}, curve=[[1, 1.0], [2, 0.5], [3, 0.2]]),
            SweepRow(2, "b", "slow", {}, curve=[[1, 1.0], [2, 0.9], [3, 0.8]]),
            SweepRow(3, "c", "skipped", {}, outcome="skipped")]
    plot = _colours(render_sweep_chart(rows, window=1), slice(0, PLOT_HEIGHT))
    assert curve_colour(1) in plot and curve_colour(2) in plot and curve_colour(3) not in plot


def test_every_combination_starts_from_the_same_weights_as_training_it_alone(swept, tmp_path):
    out, plan = swept["out"], swept["plan"]
    names = [c.name for c in plan.combinations()]
    assert swept["start"].read_bytes() == swept["start_bytes"]  # the file start was only read
    created = plan.starts[1]
    fresh = files.save(Hypernetwork.create(created.config, "layers-1-2-1_activation-relu", seed=0), tmp_path / "c.pt")
    assert (out / "starts" / "layers-1-2-1_activation-relu.pt").read_bytes() == fresh.read_bytes()
    # the two settings of a start train alike, so any weights carried from one combination to the next would show
    assert (out / f"{names[0]}.pt").read_bytes() == (out / f"{names[1]}.pt").read_bytes()
    assert (out / f"{names[2]}.pt").read_bytes() == (out / f"{names[3]}.pt").read_bytes()
    assert (out / f"{names[0]}.pt").read_bytes() != (out / f"{names[2]}.pt").read_bytes()
    alone = train(swept["adapter"], swept["start"], plan.variants[0].settings, output_path=tmp_path / "alone.pt",
                  log_dir=tmp_path / "alone")
    assert alone.output_path.read_bytes() == (out / f"{names[0]}.pt").read_bytes()


def test_the_same_sweep_twice_gives_bit_identical_files(swept):
    again = _sweep(swept["plan"], swept["tmp"] / "again", swept["adapter"])
    for first, second in zip(swept["result"].rows, again.rows):
        for suffix in ("", ".optim"):
            assert open(first.output + suffix, "rb").read() == open(second.output + suffix, "rb").read(), first.name
        assert (first.curve, first.final_loss, first.lowest_loss) == (second.curve, second.final_loss,
                                                                       second.lowest_loss)
        assert Image.open(first.previews[0]).tobytes() == Image.open(second.previews[0]).tobytes()


def test_an_output_folder_with_results_is_refused_unless_overwriting_and_nothing_is_lost(swept):
    out, plan = swept["out"], swept["plan"]
    before = {path: path.read_bytes() for path in out.iterdir() if path.is_file()}
    with pytest.raises(ConfigError, match="already holds results of a sweep"):
        prepare_sweep(plan, out, prepare)
    assert {path: path.read_bytes() for path in out.iterdir() if path.is_file()} == before
    assert len(prepare_sweep(plan, out, prepare, overwrite=True).combinations) == 4


# --------------------------------------------------------------------------------------------
# stopping, failing, TensorBoard
# --------------------------------------------------------------------------------------------

def test_a_stop_request_ends_the_current_combination_at_its_next_step_and_skips_the_rest(tmp_path):
    data = make_images(tmp_path / "data", 2, sizes=((64, 64),))
    plan = _plan([file_start(make_network(tmp_path / "start.pt"))], _settings(data, max_steps=6), "seed=1,2,3")
    seen = {}
    result = _sweep(plan, tmp_path / "out", tiny_adapter(), on_change=lambda r: seen.update(result=r),
                    should_stop=lambda: "result" in seen and seen["result"].step >= 2)
    assert [row.outcome for row in result.rows] == ["interrupted", "skipped", "skipped"] and result.interrupted
    first, skipped = result.rows[0], result.rows[1:]
    assert first.steps == 2 and files.load(first.output).step == 2  # its result so far is kept
    assert all(row.output is None and row.steps == 0 for row in skipped)
    assert sorted(path.name for path in (tmp_path / "out").glob("*.pt")) == [f"{plan.combinations()[0].name}.pt"]
    document = json.loads((tmp_path / "out" / "sweep_results.json").read_text())
    assert [row["outcome"] for row in document["rows"]] == ["interrupted", "skipped", "skipped"]


def test_a_failed_combination_is_recorded_and_the_sweep_goes_on(tmp_path):
    plan = _plan([file_start(make_network(tmp_path / "start.pt"))], _settings(tmp_path), "learn_rate=10,1e-3")
    diverges = _fake_training(lambda settings: TrainingError("the loss became nan at step 2; training stopped")
                              if settings.learn_rate == "10" else None)
    result = run_sweep(prepare_sweep(plan, tmp_path / "out", lambda *a: None), diverges)
    failed, finished = result.rows
    assert failed.outcome == "failed" and "the loss became nan at step 2" in failed.message and failed.output is None
    assert finished.outcome == "finished" and finished.final_loss == pytest.approx(0.75)  # (1 + 1/2) / 2
    assert "the loss became nan" in (tmp_path / "out" / "sweep_results.csv").read_text()


def test_a_second_ctrl_c_stops_the_sweep_at_once(tmp_path):
    plan = _plan([file_start(make_network(tmp_path / "start.pt"))], _settings(tmp_path), "seed=1,2")

    def stopped_at_once(settings):
        if settings.seed == 2:
            error = TrainingError("Interrupted at step 1; the result was not written")
            error.__cause__ = KeyboardInterrupt()
            return error
    with pytest.raises(TrainingError, match="Interrupted at step 1"):
        run_sweep(prepare_sweep(plan, tmp_path / "out", lambda *a: None), _fake_training(stopped_at_once))
    document = json.loads((tmp_path / "out" / "sweep_results.json").read_text())
    assert not document["finished"] and [row["outcome"] for row in document["rows"]] == ["finished", "waiting"]


def test_tensorboard_gets_each_combination_s_parameters_and_results_when_installed(tmp_path, monkeypatch):
    import types
    written = []

    class SummaryWriter:
        def __init__(self, folder):
            self.folder = folder

        def add_hparams(self, hparams, metrics, run_name=None):
            written.append((self.folder, hparams, metrics, run_name))

        def close(self):
            pass
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=SummaryWriter))
    plan = _plan([creation_start(RELU, TINY_ATTENTION_WIDTHS)], _settings(tmp_path), "learn_rate=1e-3,5e-4")
    run_sweep(prepare_sweep(plan, tmp_path / "out", lambda *a: None), _fake_training())
    assert [(hparams, run) for _, hparams, _, run in written] == [
        ({"layers": "1,2,1", "activation": "relu", "learn_rate": lr}, name)
        for lr, name in (("1e-3", "1_layers-1-2-1_activation-relu__learn_rate-1e-3"),
                         ("5e-4", "2_layers-1-2-1_activation-relu__learn_rate-5e-4"))]
    assert written[0][0] == str(tmp_path / "out" / "tensorboard")
    assert written[0][2] == {"sweep/final_loss": 0.75, "sweep/lowest_loss": 0.75, "sweep/steps": 2.0}

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not installed: the import fails
    result = run_sweep(prepare_sweep(plan, tmp_path / "without", lambda *a: None), _fake_training())
    assert [row.outcome for row in result.rows] == ["finished"] * 2 and len(written) == 2


# --------------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------------

def test_the_sweep_command_prints_the_table_and_writes_the_results(tmp_path, capsys):
    data = make_images(tmp_path / "data", 2, sizes=((64, 64),))
    start = make_network(tmp_path / "start.pt")
    out = tmp_path / "out"
    assert main(["sweep", "--hypernetwork", str(start), "--data", str(data), "--width", "64", "--height", "64",
                 "--steps", "2", "--save-every", "0", "--preview-every", "0", "--set", "learn_rate=1e-3,5e-4",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Sweep of 2 combinations (1 starting point × 2 training settings)" in printed
    table = printed[printed.index("#  combination"):].splitlines()
    assert table[1].startswith("1  start × learn_rate=1e-3  finished") and table[1].endswith("1_start__learn_rate-1e-3.pt")
    assert table[2].startswith("2  start × learn_rate=5e-4  finished")
    assert f"chart:    {out / 'sweep_chart.png'}" in printed
    assert [row["steps"] for row in json.loads((out / "sweep_results.json").read_text())["rows"]] == [2, 2]
    assert files.load(out / "2_start__learn_rate-5e-4.pt").step == 2
    assert (out / "logs" / "1_start__learn_rate-1e-3" / "loss_chart.png").is_file()  # each run's own chart, as train's


@pytest.mark.parametrize("args, fragment", [
    ([], "Nothing to sweep: give --hypernetwork PATH and/or --create SPEC"),
    (["--create", RELU, "--set", "lern_rate=1e-3,5e-4"],
     "--set 'lern_rate=1e-3,5e-4': unknown setting 'lern_rate' (did you mean learn_rate?)"),
    (["--create", RELU, "--settings", "{tmp}/broken.json"], "broken.json: not valid JSON (line 1"),
    (["--create", RELU, "--settings", "{tmp}/missing.json"], "missing.json: cannot be read"),
    (["--create", "layers=1,a,1"], "--create 'layers=1,a,1': Layer structure: entry 2 ('a') is not a number"),
    (["--create", "layers=1,2,1; colour=red"], "--create 'layers=1,2,1; colour=red': unknown key 'colour'"),
    (["--create", RELU, "--create", "activation=relu;layers=1, 2, 1"], "Starting points 'layers=1,2,1 activation=relu' "
                                                                       "and 'activation=relu layers=1,2,1' are the same"),
    (["--create", RELU, "--settings", "{tmp}/a.json", "{tmp}/a.json"], "Training settings 'a' is listed twice"),
    (["--create", RELU, "--set", "learn_rate=1e-3,1e-3"], "learn_rate lists 1e-3 twice"),
    (["--create", RELU, "--set", "max_steps=0,2"], "Settings max_steps=0: Max steps (0) must be at least 1"),
    (["--create", RELU, "--data", "{tmp}/nowhere"],
     "layers=1,2,1 activation=relu: Dataset directory '{tmp}/nowhere' does not exist"),
    (["--hypernetwork", "{tmp}/missing.pt"], "Starting hypernetwork '{tmp}/missing.pt' does not exist"),
    (["--create", "sizes=768; layers=1,2,1"], "has no module for any attention width of this model"),
])
def test_bad_inputs_are_one_line_each_before_the_model_loads(tmp_path, capsys, monkeypatch, args, fragment):
    from hypernetwork_ext import sweep_cli
    monkeypatch.setattr(sweep_cli, "load_adapter", lambda *a, **k: pytest.fail("the model was loaded first"))
    (tmp_path / "broken.json").write_text("{nope")
    TrainingSettings().save(tmp_path / "a.json")
    data = make_images(tmp_path / "data", 1, sizes=((64, 64),))
    full = ["sweep", "--data", str(data), "--width", "64", "--height", "64", "--steps", "2", "--out", str(tmp_path / "out")]
    assert main(full + [arg.replace("{tmp}", str(tmp_path)) for arg in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and fragment.replace("{tmp}", str(tmp_path)) in err[0], err
    assert not (tmp_path / "out" / "sweep_results.json").exists()


def test_every_flag_of_the_sweep_command_says_what_it_does_and_its_default(capsys):
    sweep = next(a for a in build_parser()._actions if a.dest == "command").choices["sweep"]
    own = [action for action in sweep._actions if action.container.title not in ("Training", "Advanced options")]
    for action in own:
        if action.dest == "help":
            continue
        assert action.help and len(action.help.split()) >= 5, action.dest
        assert action.required or action.nargs == 0 or "default" in action.help or action.default not in (None, 0, ""), \
            action.dest  # the help formatter shows any other default
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 0)" in text and "(default: 20)" in text and "--lr SCHEDULE" in text  # train's flags too


# --------------------------------------------------------------------------------------------
# the Sweep tab's handler and the app
# --------------------------------------------------------------------------------------------

def test_the_tab_marks_each_bad_input_beside_it(tmp_path):
    from hypernetwork_ext.ui.sweep_tab import SweepForm, plan_from_form
    (tmp_path / "broken.json").write_text("{nope")
    find = {"style": make_network(tmp_path / "style.pt")}.get
    plan, errors = plan_from_form(SweepForm(hypernetworks=["style", "gone"], creation="layers=1,1\nlayers=1,x,1",
                                            settings_files=str(tmp_path / "broken.json"),
                                            overrides="# comment\nlearn_rate=1e-3\nlern_rate=1", out_dir=""), find)
    assert plan is None
    assert errors["hypernetworks"] == "gone is not in the list any more; press refresh"
    assert errors["creation"].startswith("Line 2: Layer structure: entry 2 ('x') is not a number")
    assert errors["settings_files"].startswith("Line 1: ") and "not valid JSON" in errors["settings_files"]
    assert errors["overrides"].startswith("Line 3: unknown setting 'lern_rate'")
    assert errors["out_dir"] == "Give the folder the results go to"
    assert plan_from_form(SweepForm(out_dir="x"), find)[1] == {"creation": "Nothing to sweep: give a starting "
                                                                          "hypernetwork or a creation variant"}
    plan, errors = plan_from_form(SweepForm(hypernetworks=["style"], creation="layers=1,1", overrides="seed=1,2",
                                            out_dir="x"), find)
    assert not errors and len(plan.combinations()) == 4


def test_the_app_has_the_sweep_tab_and_checks_every_combination_before_loading_the_model(tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    from hypernetwork_ext import train_cli
    from hypernetwork_ext.ui.app import StandaloneSweep, build_app
    config = str(build_app(tmp_path / "hypernetworks").get_config_file())
    assert "'Sweep'" in config and "hnext_sweep_run" in config and "hnext_sweep_interrupt" in config
    monkeypatch.setattr(train_cli, "load_adapter", lambda *a, **k: pytest.fail("the model was loaded first"))
    import threading
    sweeps = StandaloneSweep("tiny", None, threading.Lock())
    plan = _plan([creation_start(RELU, TINY_ATTENTION_WIDTHS)], _settings(tmp_path / "nowhere"), "seed=1,2")
    with pytest.raises(ConfigError, match="does not exist or is not a folder"):
        sweeps.run(plan, tmp_path / "out", False, lambda result: None)
