"""The latent cache on disk: the same training bit for bit, memory that does not hold the latents,
files that are never reused, and the setting in every place settings are set."""

import json

import pytest
import torch

from hypernetwork_ext import ConfigError
from hypernetwork_ext.cli import main
from hypernetwork_ext.training import Callbacks, TrainingSettings, train
from hypernetwork_ext.training import dataset as dataset_module
from hypernetwork_ext.training.dataset import (DiskLatentCache, MemoryLatentCache, TrainingDataset, encode_latents,
                                               open_latent_cache, scan_folder)

from training_helpers import make_images, make_network, same_tensors, tiny_adapter, weights_of

LATENT_CHANNELS = 4  # the tiny model's VAE


def _settings(tmp_path, **changes):
    base = dict(data_dir=str(tmp_path / "data"), width=64, height=64, learn_rate="2e-3", max_steps=4, batch_size=2,
                grad_accum=2, save_every=0, preview_every=0, seed=3, dataset_seed=4)
    return TrainingSettings(**{**base, **changes})


def _row_bytes(example, latents_per_row):
    return latents_per_row * LATENT_CHANNELS * (example.size[0] // 8) * (example.size[1] // 8) * 4


def _cache_files(folder):
    return {path.name: path.stat().st_size for path in folder.glob("*.latents")} if folder.exists() else {}


@pytest.mark.parametrize("latent_sampling, flip", [("once", False), ("random", True)])
def test_training_with_the_latents_on_disk_equals_training_with_them_in_memory(tmp_path, latent_sampling, flip):
    make_images(tmp_path / "data", 8)
    make_network(tmp_path / "start.pt", dropout_structure=(0, 0.2, 0))
    folder = tmp_path / "cache"
    seen = []
    results = {}
    for mode in ("memory", "disk"):
        settings = _settings(tmp_path, latent_cache=mode, latent_cache_dir=str(folder),
                             latent_sampling=latent_sampling, flip=flip)
        results[mode] = train(tiny_adapter(), tmp_path / "start.pt", settings, output_path=tmp_path / f"{mode}.pt",
                              log_dir=tmp_path / f"logs-{mode}",
                              callbacks=Callbacks(loss=lambda point: seen.append((mode, _cache_files(folder)))))
    assert same_tensors(weights_of(tmp_path / "memory.pt"), weights_of(tmp_path / "disk.pt"))
    assert [p.loss for p in results["memory"].losses] == [p.loss for p in results["disk"].losses]

    # while training on disk, one file per bucket size holds one row per image; none while in memory
    examples, _ = scan_folder(tmp_path / "data", width=64, height=64, no_crop=True, use_alpha=False)
    latents_per_row = (2 if flip else 1) * (2 if latent_sampling == "random" else 1)
    sizes = {example.size for example in examples}
    assert all(not files for mode, files in seen if mode == "memory")
    while_on_disk = [files for mode, files in seen if mode == "disk"]
    assert len(while_on_disk) == 4
    for files in while_on_disk:
        assert {name.split("-")[0] for name in files} == {f"{w}x{h}" for w, h in sizes}
        assert sum(files.values()) == sum(_row_bytes(example, latents_per_row) for example in examples)
    assert not folder.exists()  # removed when training ends: the cache is rebuilt every run


@pytest.fixture
def prepared(tmp_path):
    """A scanned folder of three bucket sizes: (examples, report, adapter)."""
    make_images(tmp_path / "data", 9)
    examples, report = scan_folder(tmp_path / "data", width=64, height=64, no_crop=True, use_alpha=False)
    return examples, report, tiny_adapter()


def _dataset(examples, report, cache=None):
    return TrainingDataset(examples, report, batch_size=3, grad_accum=1, templates=["[filewords]"], name="n", seed=1,
                           shuffle_tags=False, tag_dropout=0, flip=True, latent_sampling="random", latent_cache=cache)


def test_the_disk_cache_keeps_no_latent_in_memory_and_serves_the_same_batches(tmp_path, prepared):
    examples, report, adapter = prepared
    in_memory = _dataset(examples, report)
    encode_latents(examples, adapter.encode_images, flip=True, latent_sampling="random", seed=0)
    on_disk_examples, _ = scan_folder(tmp_path / "data", width=64, height=64, no_crop=True, use_alpha=False)
    cache = DiskLatentCache(on_disk_examples, tmp_path / "cache", keep_std=True)
    on_disk = _dataset(on_disk_examples, report, cache)
    encode_latents(on_disk_examples, adapter.encode_images, flip=True, latent_sampling="random", seed=0, cache=cache)

    assert all(e.latent_mean is None and e.latent_std is None and e.flipped_mean is None for e in on_disk_examples)
    files = _cache_files(tmp_path / "cache")
    assert len(files) == 3 and sum(files.values()) == sum(_row_bytes(e, 4) for e in on_disk_examples)
    for step in range(6):
        for a, b in zip(in_memory.micro_batches(step), on_disk.micro_batches(step)):
            assert a == b
            for one, other in zip(in_memory.materialize(a, step, 0).groups, on_disk.materialize(b, step, 0).groups):
                assert one.positions == other.positions and torch.equal(one.latents, other.latents)
    cache.close()
    assert not (tmp_path / "cache").exists()


def test_a_new_cache_removes_the_files_a_killed_run_left_and_nothing_else(tmp_path, prepared):
    examples, _, _ = prepared
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "64x64-killed.latents").write_bytes(b"\0" * 100)  # a run that died while writing
    (folder / "notes.txt").write_text("mine")
    cache = DiskLatentCache(examples, folder, keep_std=False)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    cache.close()
    assert folder.is_dir()  # not made by the cache: left in place


def test_auto_puts_the_latents_on_disk_when_they_would_not_fit_in_memory(tmp_path, prepared, monkeypatch):
    examples, _, _ = prepared
    assert dataset_module.physical_memory_bytes() > 2 ** 20
    latent_bytes = dataset_module.estimated_latent_bytes(examples, flip=False)
    assert latent_bytes == sum(_row_bytes(e, 2) for e in examples)  # mean and std of every image
    for memory, kind in ((latent_bytes * 4 - 1, DiskLatentCache), (latent_bytes * 4 + 1, MemoryLatentCache)):
        monkeypatch.setattr(dataset_module, "physical_memory_bytes", lambda: memory)
        cache = open_latent_cache("auto", examples, flip=False, latent_sampling="once", folder=tmp_path / "cache")
        assert isinstance(cache, kind)
        cache.close()


def test_bad_latent_cache_settings_say_what_to_do(tmp_path, prepared):
    with pytest.raises(ConfigError) as caught:
        TrainingSettings(latent_cache="ram")
    assert caught.value.field == "latent_cache"
    assert str(caught.value).endswith("Latent cache must be one of auto, memory, disk; got 'ram'")
    examples, _, _ = prepared
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match="latent cache folder .*a-file.* cannot be made") as caught:
        open_latent_cache("disk", examples, flip=False, latent_sampling="once", folder=tmp_path / "a-file")
    assert caught.value.field == "latent_cache_dir"


def test_the_setting_is_a_flag_and_a_control_and_older_settings_files_still_load(tmp_path, capsys):
    from hypernetwork_ext.ui.train_tab import FIELDS, default_values, settings_from_values

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    assert "--latent-cache" in help_text and "--latent-cache-dir" in help_text

    make_images(tmp_path / "data", 2, sizes=((64, 64),))
    network = make_network(tmp_path / "n.pt")
    assert main(["train", "--hypernetwork", str(network), "--data", str(tmp_path / "data"), "--latent-cache", "ram"]) == 2
    assert "error: Latent cache must be one of auto, memory, disk; got 'ram'" in capsys.readouterr().err

    keys = [f.key for f in FIELDS]
    values = default_values()
    values[keys.index("latent_cache")] = "disk"
    values[keys.index("latent_cache_dir")] = str(tmp_path / "cache")
    settings, errors = settings_from_values(values)
    assert not errors and (settings.latent_cache, settings.latent_cache_dir) == ("disk", str(tmp_path / "cache"))

    saved = json.loads(TrainingSettings().to_json())
    del saved["latent_cache"], saved["latent_cache_dir"]  # a file written before the setting existed
    (tmp_path / "old.json").write_text(json.dumps(saved))
    loaded = TrainingSettings.load(tmp_path / "old.json")
    assert (loaded.latent_cache, loaded.latent_cache_dir) == ("auto", "")
