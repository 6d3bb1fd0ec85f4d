"""The catalogue of bad inputs: each row is an input a user could give, how to give it, and the message
it must produce. `tests/test_bad_inputs.py` runs every row; `python tests/bad_inputs.py` writes the
table in docs/bad-inputs.md from the same rows (a test checks that the file is up to date)."""

from __future__ import annotations

import json
import os
import zipfile
from unittest import mock
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from hypernetwork_ext import Hypernetwork, HypernetworkConfig, files
from hypernetwork_ext.config import parse_dropout_structure, parse_layer_structure, parse_name
from hypernetwork_ext.adapters.sampling import SAMPLERS
from hypernetwork_ext.training import TrainingSettings
from hypernetwork_ext.training.engine import check_widths, prepare, preview_sampler
from hypernetwork_ext.stack import read_set_file
from hypernetwork_ext.training.dataset import fit_batching, read_template, scan_folder
from hypernetwork_ext.training.schedule import StepSchedule
from hypernetwork_ext.training.sweep import (SweepPlan, creation_start, load_settings_file, override_line,
                                             prepare_sweep, settings_variants)


@dataclass(frozen=True)
class Row:
    group: str
    what: str
    run: Callable[[Path], object]  # an error row raises; a report row returns the dataset report's text
    expect: str  # the message contains this
    shown: str = "error"  # or where the dataset report lists it: "note" (used anyway) or "skipped"


def _file(content: bytes, name="bad.pt"):
    def run(tmp: Path):
        path = tmp / name
        path.write_bytes(content)
        return files.load(path)
    return run


def _saved(mutate, name="n.pt"):
    def run(tmp: Path):
        data = files.to_webui_dict(Hypernetwork.create(HypernetworkConfig(sizes=(16,)), "n", seed=1))
        mutate(data)
        torch.save(data, tmp / name)
        return files.load(tmp / name)
    return run


def _code_pickle(tmp: Path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp / 'marker'}",))
    torch.save({16: Payload()}, tmp / "evil.pt")
    return files.load(tmp / "evil.pt")


def _zip_bomb(tmp: Path):
    path = tmp / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\0" * 50_000_000)
    return files.load(path)


def _folder(setup):
    def run(tmp: Path):
        folder = tmp / "data"
        setup(folder)
        return scan_folder(folder, width=64, height=64, no_crop=True, use_alpha=False)
    return run


def _report(setup):
    """A dataset with one good image plus the case: what the dataset report says (training goes on)."""
    def run(tmp: Path):
        folder = tmp / "data"
        folder.mkdir()
        Image.new("RGB", (64, 64), "gray").save(folder / "good.png")
        setup(folder)
        return scan_folder(folder, width=64, height=64, no_crop=True, use_alpha=False)[1].summary()
    return run


def _batching(images: int, batch_size: int, grad_accum: int):
    """What the dataset report says when batch size or accumulation ask for more than the dataset holds."""
    def run(tmp: Path):
        folder = tmp / "data"
        folder.mkdir()
        for index in range(images):
            Image.new("RGB", (64, 64), "gray").save(folder / f"{index}.png")
        examples, report = scan_folder(folder, width=64, height=64, no_crop=True, use_alpha=False)
        report.changes += fit_batching(len(examples), batch_size, grad_accum).changes  # as the engine does
        return report.summary()
    return run


def _unreadable(folder: Path):
    """Reading the folder's listing fails as it does without permission (tests run as root, where chmod
    would not stop the read)."""
    folder.mkdir()
    with mock.patch.object(Path, "iterdir", side_effect=PermissionError(13, "Permission denied")):
        return scan_folder(folder, width=64, height=64, no_crop=True, use_alpha=False)


def _unreadable_caption(tmp: Path):
    """A caption whose reading fails as it does without permission (as root, chmod would not stop it)."""
    def setup(folder: Path):
        Image.new("RGB", (64, 64), "gray").save(folder / "locked.png")
        (folder / "locked.txt").write_text("a locked caption")
    with mock.patch.object(Path, "read_bytes", side_effect=PermissionError(13, "Permission denied")):
        return _report(setup)(tmp)


def _set_file(text: str, name="combo.hnset.json"):
    def write(tmp: Path) -> Path:
        (tmp / name).write_text(text, encoding="utf-8")
        return tmp / name
    return write


def _train(starting_file):
    """What every host runs before it loads a model to train the file; a set is refused there."""
    def run(tmp: Path):
        return prepare(starting_file(tmp), TrainingSettings(data_dir=str(tmp)))
    return run


_A_SET = _set_file('{"format": "hypernetwork-set", "version": 1, "mix": [{"network": "a", "weight": 2}, "b"]}')


def _settings(data):
    def run(tmp: Path):
        (tmp / "s.json").write_text(data if isinstance(data, str) else json.dumps(data))
        return TrainingSettings.load(tmp / "s.json")
    return run


def _template(text):
    def run(tmp: Path):
        return read_template(text)
    return run


def _created(spec: str):
    from hypernetwork_ext.models.tiny import TINY_ATTENTION_WIDTHS
    return creation_start(spec, TINY_ATTENTION_WIDTHS)


def _variants(*lines: str):
    return settings_variants([("", TrainingSettings())], [override_line(line) for line in lines])


def _sweep_into_a_used_folder(tmp: Path):
    (tmp / "out").mkdir()
    (tmp / "out" / "sweep_results.json").write_text("{}")
    return prepare_sweep(SweepPlan((_created("layers=1,1"),)), tmp / "out", lambda *a: None)


def _sweep_without_its_dataset(tmp: Path):
    """What every host checks for each combination before it loads a model."""
    variants = settings_variants([("", TrainingSettings(data_dir=str(tmp / "nowhere")))])
    return prepare_sweep(SweepPlan((_created("layers=1,1"),), variants), tmp / "out", prepare)


ROWS: list[Row] = [
    Row("layer structure", "empty", lambda t: parse_layer_structure(""), "Layer structure is empty"),
    Row("layer structure", "letters", lambda t: parse_layer_structure("1, a, 1"), "entry 2 ('a') is not a number"),
    Row("layer structure", "NaN", lambda t: parse_layer_structure("1, nan, 1"), "entry 2 ('nan') is not a finite number"),
    Row("layer structure", "negative", lambda t: parse_layer_structure("1, -2, 1"), "entry 2 (-2) must be a positive number"),
    Row("layer structure", "one entry", lambda t: parse_layer_structure("1"), "needs at least two entries"),
    Row("layer structure", "first or last not 1", lambda t: parse_layer_structure("2, 2, 1"), "must start and end with 1"),
    Row("dropout structure", "wrong length", lambda t: parse_dropout_structure("0, 0.3", (1, 2, 1)), "has 2 entries but the layer structure"),
    Row("dropout structure", "letters", lambda t: parse_dropout_structure("0, x, 0", (1, 2, 1)), "entry 2 ('x') is not a number"),
    Row("dropout structure", "NaN", lambda t: parse_dropout_structure("0, nan, 0", (1, 2, 1)), "is not a finite number"),
    Row("dropout structure", "negative", lambda t: parse_dropout_structure("0, -0.1, 0", (1, 2, 1)), "must be at least 0 and below 1"),
    Row("dropout structure", "1 or more", lambda t: parse_dropout_structure("0, 1, 0", (1, 2, 1)), "must be at least 0 and below 1"),
    Row("dropout structure", "first not 0", lambda t: parse_dropout_structure("0.2, 0.1, 0", (1, 2, 1)), "entry 1 (0.2) must be 0"),
    Row("name", "empty", lambda t: parse_name(""), "Name is empty"),
    Row("name", "`../`", lambda t: parse_name("../x"), "contains a path separator"),
    Row("name", "`/`", lambda t: parse_name("a/b"), "contains a path separator"),
    Row("name", "NUL", lambda t: parse_name("a\0b"), "contains a path separator or control character"),
    Row("name", "only symbols", lambda t: parse_name("!!!"), "needs at least one letter or digit"),
    Row("name", "very long", lambda t: parse_name("x" * 200), "keep it under 150"),
    Row("name", "reserved Windows name", lambda t: parse_name("CON"), "is reserved on Windows"),
    Row("dataset", "missing folder", _folder(lambda f: None), "does not exist or is not a folder"),
    Row("dataset", "empty folder", _folder(lambda f: f.mkdir()), "the folder is empty"),
    Row("dataset", "only unusable files", _folder(lambda f: (f.mkdir(), (f / "a.bin").write_bytes(b"12"))), "No usable images"),
    Row("dataset", "a file instead of a folder", _folder(lambda f: f.write_bytes(b"x")), "does not exist or is not a folder"),
    Row("dataset", "a folder that cannot be read", lambda t: _unreadable(t / "data"), "cannot be read (Permission denied)"),
    Row("dataset", "caption in Shift-JIS", _report(lambda f: (
        Image.new("RGB", (64, 64)).save(f / "cat.png"), (f / "cat.txt").write_bytes("猫, 耳".encode("shift_jis")))),
        "cat.png: caption is not UTF-8; read as Shift-JIS (cp932)", shown="note"),
    Row("dataset", "caption in cp1252 (Western Windows)", _report(lambda f: (
        Image.new("RGB", (64, 64)).save(f / "cafe.png"), (f / "cafe.txt").write_bytes("café, garçon".encode("cp1252")))),
        "cafe.png: caption is not UTF-8; read as cp1252", shown="note"),
    Row("dataset", "caption in UTF-16", _report(lambda f: (
        Image.new("RGB", (64, 64)).save(f / "cat.png"), (f / "cat.txt").write_bytes("猫, 耳".encode("utf-16")))),
        "caption read as UTF-16", shown="note"),
    Row("dataset", "a caption that cannot be read", _unreadable_caption, "its caption locked.txt cannot be read (Permission denied)",
        shown="skipped"),
    Row("dataset", "batch size larger than the dataset", _batching(8, 16, 1),
        "Batch size 16 is more than the 8 images of an epoch; training with batch size 8", shown="note"),
    Row("dataset", "gradient accumulation larger than the batches of an epoch", _batching(8, 2, 8),
        "Gradient accumulation 8 is more than the 4 batches of an epoch; training with 4, so that a step holds "
        "one epoch", shown="note"),
    Row("dataset", "a damaged image among good ones", _report(lambda f: (f / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")),
        "broken.png: not an image PIL can read", shown="skipped"),
    Row("training settings", "zero steps", lambda t: TrainingSettings(max_steps=0), "Max steps (0) must be at least 1"),
    Row("training settings", "negative batch size", lambda t: TrainingSettings(batch_size=-1), "Batch size (-1) must be at least 1"),
    Row("training settings", "negative interval", lambda t: TrainingSettings(save_every=-5), "Save every (-5) must be at least 0"),
    Row("training settings", "schedule that does not parse", lambda t: StepSchedule.parse("fast", 100), "'fast' in entry 1 is not a number"),
    Row("training settings", "schedule that goes backwards", lambda t: StepSchedule.parse("1e-3:100, 1e-4:50, 1e-5", 200), "is not after step 100"),
    Row("training settings", "schedule that ends early", lambda t: StepSchedule.parse("1e-3:100", 200), "the schedule ends at step 100"),
    Row("training settings", "unknown optimizer", lambda t: TrainingSettings(optimizer="Adamm"), "Unknown optimizer 'Adamm'; choose one of: AdamW"),
    Row("training settings", "preview sampler the preview does not offer", lambda t: preview_sampler("totally bogus", tuple(SAMPLERS)),
        "Preview sampler 'totally bogus' is not offered here; choose one of: DDIM, Euler"),
    Row("training settings", "a hypernetwork with none of the model's widths", lambda t: check_widths(
        Hypernetwork.create(HypernetworkConfig(), "x", seed=1), (48, 32, 64), "tiny"),
        "the model's widths: 48, 32, 64); create one that fits with `python -m hypernetwork_ext create x --out x-fit.pt --model tiny`"),
    Row("training settings", "noise curriculum: lowest timestep above the highest",
        lambda t: TrainingSettings(timesteps={"min": 800, "max": 200}), "Lowest timestep (800) is above the highest timestep (200)"),
    Row("training settings", "noise curriculum: start range the wrong way round",
        lambda t: TrainingSettings(timesteps={"curriculum": "linear", "start_min": 50, "start_max": 10}),
        "Lowest timestep at the ramp's start (50) is above the highest timestep at the ramp's start (10)"),
    Row("training settings", "noise curriculum: a negative timestep",
        lambda t: TrainingSettings(timesteps={"min": -1}), "Lowest timestep (-1) must be 0 or more"),
    Row("training settings", "noise curriculum: beyond the model's last timestep",
        lambda t: TrainingSettings(timesteps={"max": 1000}).timestep_range(1000),
        "Highest timestep (1000) is beyond this model's last timestep: its timesteps run from 0 to 999"),
    Row("training settings", "noise curriculum: restart every 0 steps",
        lambda t: TrainingSettings(timesteps={"curriculum": "restart", "ramp_steps": 0}),
        "Curriculum ramp steps (0) must be at least 1"),
    Row("training settings", "noise curriculum: unknown kind",
        lambda t: TrainingSettings(timesteps={"curriculum": "cosine"}), "must be one of off, linear, restart; got 'cosine'"),
    Row("prompt template", "empty template", _template("   "), "The prompt template is empty"),
    Row("prompt template", "missing template file", _template("nowhere.txt"), "does not exist"),
    Row("settings JSON", "not JSON", _settings("{nope"), "not valid JSON"),
    Row("settings JSON", "from a newer version", _settings({"version": 99}), "newer version"),
    Row("settings JSON", "unknown keys", _settings({"colour": 1}), "unknown setting: colour"),
    Row("settings JSON", "text where a number belongs", _settings({"tag_dropout": "lots"}), "wrong kind"),
    Row("settings JSON", "text in a switched-off part", _settings({"cosine": {"min_rate": "x"}}), "Cosine min rate must be a number"),
    Row("sweep", "nothing to sweep", lambda t: SweepPlan(()), "Nothing to sweep: give a starting hypernetwork or a creation variant"),
    Row("sweep", "an override of an unknown setting", lambda t: override_line("lern_rate=1e-3,5e-4"),
        "unknown setting 'lern_rate' (did you mean learn_rate?)"),
    Row("sweep", "an override without '='", lambda t: override_line("learn_rate"), "write key=value1,value2"),
    Row("sweep", "an override without values", lambda t: override_line("seed="), "seed has no values after '='"),
    Row("sweep", "a value listed twice", lambda t: override_line("seed=1,1"), "seed lists 1 twice"),
    Row("sweep", "a setting swept on two lines", lambda t: _variants("seed=1,2", "seed=3,4"), "seed is swept on two lines"),
    Row("sweep", "an override value the setting does not take", lambda t: _variants("max_steps=0,10"),
        "Settings max_steps=0: Max steps (0) must be at least 1"),
    Row("sweep", "an on/off setting given another word", lambda t: _variants("flip=maybe"),
        "Settings flip=maybe: flip: 'maybe' is neither on nor off; write true or false"),
    Row("sweep", "a creation variant with an unknown key", lambda t: _created("layers=1,2,1; colour=red"),
        "unknown key 'colour'; use sizes, layers, activation"),
    Row("sweep", "a creation variant with a bad layer structure", lambda t: _created("layers=1,a,1"),
        "Creation variant: Layer structure: entry 2 ('a') is not a number"),
    Row("sweep", "the same network twice", lambda t: SweepPlan((_created("layers=1,1"), _created("layers=1, 1; init=normal"))),
        "are the same network; give it once"),
    Row("sweep", "a settings file that is missing", lambda t: load_settings_file(t / "missing.json"), "cannot be read"),
    Row("sweep", "an output folder holding an earlier sweep's results", _sweep_into_a_used_folder,
        "already holds results of a sweep (sweep_results.json); choose another output folder, or allow overwriting"),
    Row("sweep", "a combination whose dataset folder is missing", _sweep_without_its_dataset,
        "layers=1,1: Dataset directory"),
    Row("hypernetwork file", "empty", _file(b""), "the file is empty"),
    Row("hypernetwork file", "random bytes", _file(bytes(range(256)) * 4), "truncated, damaged or not a torch file"),
    Row("hypernetwork file", "truncated", lambda t: (_saved(lambda d: None)(t), (t / "n.pt").write_bytes((t / "n.pt").read_bytes()[:500]), files.load(t / "n.pt")), "truncated"),
    Row("hypernetwork file", "a checkpoint instead", _saved(lambda d: (d.clear(), d.update({"state_dict": {}}))), "this is a Stable Diffusion checkpoint"),
    Row("hypernetwork file", "an embedding instead", _saved(lambda d: (d.clear(), d.update({"string_to_param": {}}))), "textual-inversion embedding"),
    Row("hypernetwork file", "a pickle that would run code", _code_pickle, "not plain weights"),
    Row("hypernetwork file", "a zip bomb", _zip_bomb, "compressed records"),
    Row("hypernetwork file", "mismatched sizes", _saved(lambda d: d.update({"layer_structure": [1, 3, 1]})), "has shape [32, 16] but"),
    Row("hypernetwork file", "a set where one network belongs (convert, merge)", lambda t: files.load(_A_SET(t)),
        "this is a set of hypernetworks, not a single one"),
    Row("hypernetwork set", "training a set", _train(_A_SET),
        "is a set of hypernetworks; sets apply, they do not train: train one of its members (a, b) instead"),
    Row("hypernetwork set", "training an old .hns set", _train(_set_file("['a', ('b', 0.5)]", "combo.hns")),
        "is a set of hypernetworks; sets apply, they do not train: train one of its members (a, b) instead"),
    Row("hypernetwork set", "inspecting a missing set", lambda t: read_set_file(t / "nothing.hnset.json"), "no such file"),
    Row("hypernetwork set", "inspecting a set that is not JSON", lambda t: read_set_file(_set_file("{mix: [a]")(t)),
        "not valid JSON (line 1"),
    Row("hypernetwork set", "inspecting a JSON file that is not a set", lambda t: read_set_file(_set_file('{"mix": ["a"]}')(t)),
        'not a hypernetwork set (expected "format": "hypernetwork-set")'),
    Row("hypernetwork set", "inspecting a set with an empty mix",
        lambda t: read_set_file(_set_file('{"format": "hypernetwork-set", "mix": []}')(t)), "'mix' must be a non-empty list"),
    Row("hypernetwork set", "inspecting a .hns set that is not a literal", lambda t: read_set_file(_set_file("__import__('os')", "x.hns")(t)),
        "not a valid .hns structure"),
]


def render() -> str:
    lines = ["# Bad inputs and their messages", "",
             "Generated from `tests/bad_inputs.py` by `python tests/bad_inputs.py`; `tests/test_bad_inputs.py` runs "
             "every row and checks this file is current.", "",
             f"{len(ROWS)} rows. *error*: nothing is started or loaded and the message says why; *note* / *skipped*: "
             "the dataset report beside the training output lists the file (used anyway / left out) with the message.",
             "", "| input | case | shown as | message contains |", "|---|---|---|---|"]
    for row in ROWS:
        expect = row.expect.replace("|", "\\|")
        lines.append(f"| {row.group} | {row.what} | {row.shown} | {expect} |")
    return "\n".join(lines) + "\n"


DOC = Path(__file__).resolve().parent.parent / "docs" / "bad-inputs.md"

if __name__ == "__main__":
    DOC.write_text(render(), encoding="utf-8")
    print(f"wrote {DOC} ({len(ROWS)} rows)")
