import numpy as np
import pytest
import torch
from PIL import Image

from hypernetwork_ext import ConfigError
from hypernetwork_ext.training import TrainingSettings, train
from hypernetwork_ext.training.dataset import (TrainingDataset, encode_latents, read_caption, scan_folder,
                                               target_size)

from training_helpers import make_images, make_network, tiny_adapter


def _rgb(width, height, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.fixture
def mixed_folder(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    _rgb(512, 768, 1).save(folder / "portrait.png")
    _rgb(768, 512, 2).save(folder / "landscape.png")
    _rgb(512, 512, 3).save(folder / "square.png")
    _rgb(512, 512, 4).convert("CMYK").save(folder / "cmyk.jpg")
    palette = _rgb(512, 512, 5).convert("P", palette=Image.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    palette.save(folder / "palette.png", transparency=0)
    sixteen = (np.random.default_rng(6).integers(0, 65535, (512, 512))).astype(np.uint16)
    Image.fromarray(sixteen).save(folder / "sixteen.png")
    whole = folder / "truncated-source.png"
    _rgb(512, 512, 7).save(whole)
    (folder / "truncated.png").write_bytes(whole.read_bytes()[:2000])
    whole.unlink()
    (folder / "notes.txt").write_text("a stray text file")
    (folder / "portrait.txt").write_text("portrait, person")
    return folder


def test_mixed_folder_trains_with_batch_4_and_reports_what_it_skipped(tmp_path, mixed_folder):
    make_network(tmp_path / "start.pt")
    settings = TrainingSettings(data_dir=str(mixed_folder), width=64, height=64, max_steps=4, batch_size=4,
                                learn_rate="1e-3", save_every=0, preview_every=0)
    used = set()
    result = train(tiny_adapter(), tmp_path / "start.pt", settings, output_path=tmp_path / "out.pt",
                   log_dir=tmp_path / "logs")
    report = result.dataset_report
    assert sorted(p.split("/")[-1] for p in report.used) == ["cmyk.jpg", "landscape.png", "palette.png",
                                                             "portrait.png", "sixteen.png", "square.png"]
    skipped = {problem.path.split("/")[-1]: problem.reason for problem in report.skipped}
    assert set(skipped) == {"truncated.png", "notes.txt"}
    assert "truncated or damaged" in skipped["truncated.png"]
    assert "no image of the same name" in skipped["notes.txt"]
    notes = {problem.path.split("/")[-1]: problem.reason for problem in report.notes}
    assert "CMYK" in notes["cmyk.jpg"] and "16-bit" in notes["sixteen.png"]
    assert result.steps_done == 4

    # 6 images at batch 4: one batch of 4 different images an epoch; the 2 others wait, and every image takes part
    examples, _ = scan_folder(mixed_folder, width=64, height=64, no_crop=True, use_alpha=False)
    dataset = TrainingDataset(examples, report, batch_size=4, grad_accum=1, templates=["[filewords]"], name="n",
                              seed=0, shuffle_tags=False, tag_dropout=0, flip=False, latent_sampling="once")
    for epoch in range(6):
        batches = dataset.epoch_batches(epoch)
        assert len(batches) == 1 and len(set(batches[0])) == 4
        used.update(batches[0])
    assert used == set(range(len(examples)))


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    Image.fromarray(np.full((64, 64), 32768, dtype=np.uint16)).save(folder / "grey.png")
    examples, _ = scan_folder(folder, width=64, height=64, no_crop=True, use_alpha=False)
    from hypernetwork_ext.training.dataset import load_pixels
    assert load_pixels(examples[0]).mean().item() == pytest.approx(0.0, abs=0.01)  # mid grey, not white


def test_no_crop_sizes_and_buckets():
    assert target_size(512, 768, 512, 512, True) == (344, 512)  # long side to 512, multiples of 8
    assert target_size(768, 512, 512, 512, True) == (512, 344)
    assert target_size(1000, 1000, 512, 512, True) == (512, 512)
    assert target_size(512, 768, 512, 512, False) == (512, 512)


def test_step_accounting_64_images_batch_1_accumulation_8(tmp_path):
    folder = make_images(tmp_path / "d", 64, sizes=((64, 64),))
    examples, report = scan_folder(folder, width=64, height=64, no_crop=True, use_alpha=False)
    dataset = TrainingDataset(examples, report, batch_size=1, grad_accum=8, templates=["[filewords]"], name="n",
                              seed=0, shuffle_tags=False, tag_dropout=0, flip=False, latent_sampling="once")
    assert dataset.steps_per_epoch == 8
    steps = [dataset.micro_batches(step) for step in range(8)]
    assert all(len(micro) == 8 and all(len(b) == 1 for b in micro) for micro in steps)  # 8 images a step
    assert sorted(i for micro in steps for batch in micro for i in batch) == list(range(64))  # one epoch = each once
    assert dataset.micro_batches(8) != dataset.micro_batches(0)  # next epoch, new order


def test_alpha_weight_reads_the_real_alpha(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., :3] = 128
    rgba[:, :32, 3] = 255  # left half opaque, right half transparent
    Image.fromarray(rgba, "RGBA").save(folder / "half.png")
    _rgb(64, 64).save(folder / "opaque.png")
    examples, _ = scan_folder(folder, width=64, height=64, no_crop=True, use_alpha=True)
    weights = {e.path.split("/")[-1]: e.weight for e in examples}
    half = weights["half.png"]
    assert half.shape == (8, 8) and half[:, :4].min() > 1.5 and half[:, 4:].max() == 0
    assert torch.equal(weights["opaque.png"], torch.ones(8, 8))


def test_captions(tmp_path):
    (tmp_path / "12-a cat.png").write_bytes(b"")
    assert read_caption(tmp_path / "12-a cat.png") == ("a cat", None)
    (tmp_path / "x.png").write_bytes(b"")
    (tmp_path / "x.txt").write_bytes("café, ねこ".encode("utf-16"))
    caption, note = read_caption(tmp_path / "x.png")
    assert caption == "café, ねこ" and "UTF-16" in note
    (tmp_path / "y.png").write_bytes(b"")
    (tmp_path / "y.txt").write_bytes("café".encode("cp1252"))
    assert read_caption(tmp_path / "y.png")[0] == "café"


def test_templates_shuffle_and_dropout_are_seeded(tmp_path):
    folder = make_images(tmp_path / "d", 2, sizes=((64, 64),))
    examples, report = scan_folder(folder, width=64, height=64, no_crop=True, use_alpha=False)
    make = lambda seed: TrainingDataset(examples, report, batch_size=1, grad_accum=1,  # noqa: E731
                                        templates=["a photo of [filewords] by [name]", "[name], [filewords]"],
                                        name="artist", seed=seed, shuffle_tags=True, tag_dropout=0.3,
                                        flip=False, latent_sampling="once")
    import random
    first = [make(1).caption_for(0, random.Random(i)) for i in range(20)]
    assert first == [make(1).caption_for(0, random.Random(i)) for i in range(20)]
    assert len(set(first)) > 3 and all("artist" in c for c in first)


@pytest.mark.parametrize("setup, fragment", [
    (lambda p: None, "does not exist"),
    (lambda p: p.mkdir(), "the folder is empty"),
    (lambda p: (p.mkdir(), (p / "a.txt").write_text("x"), (p / "b.bin").write_bytes(b"123")), "No usable images"),
])
def test_unusable_dataset_folders(tmp_path, setup, fragment):
    folder = tmp_path / "data"
    setup(folder)
    with pytest.raises(ConfigError, match=fragment):
        scan_folder(folder, width=64, height=64, no_crop=True, use_alpha=False)


def test_latent_sampling_modes(tmp_path):
    folder = make_images(tmp_path / "d", 2, sizes=((64, 64),))
    adapter = tiny_adapter()
    results = {}
    for mode in ("once", "deterministic", "random"):
        examples, report = scan_folder(folder, width=64, height=64, no_crop=True, use_alpha=False)
        encode_latents(examples, adapter.encode_images, flip=False, latent_sampling=mode, seed=0)
        dataset = TrainingDataset(examples, report, batch_size=1, grad_accum=1, templates=["[filewords]"],
                                  name="n", seed=0, shuffle_tags=False, tag_dropout=0, flip=False,
                                  latent_sampling=mode)
        results[mode] = (examples[0], dataset)
    once, deterministic = results["once"][0], results["deterministic"][0]
    assert torch.equal(deterministic.latent_std, torch.zeros_like(deterministic.latent_std))
    assert not torch.equal(once.latent_mean, deterministic.latent_mean)  # once = one sample, not the mean
    ds = results["random"][1]
    a = ds.materialize([0], step=0, micro=0).groups[0].latents
    b = ds.materialize([0], step=1, micro=0).groups[0].latents
    assert not torch.equal(a, b) and torch.equal(a, ds.materialize([0], step=0, micro=0).groups[0].latents)


def test_flip_uses_mirrored_latents_about_half_the_time(tmp_path):
    folder = make_images(tmp_path / "d", 1, sizes=((64, 64),))
    adapter = tiny_adapter()
    examples, report = scan_folder(folder, width=64, height=64, no_crop=True, use_alpha=False)
    encode_latents(examples, adapter.encode_images, flip=True, latent_sampling="deterministic", seed=0)
    dataset = TrainingDataset(examples, report, batch_size=1, grad_accum=1, templates=["[filewords]"], name="n",
                              seed=0, shuffle_tags=False, tag_dropout=0, flip=True, latent_sampling="deterministic")
    example = examples[0]
    assert not torch.equal(example.latent_mean, example.flipped_mean)
    picks = [torch.equal(dataset.materialize([0], step, 0).groups[0].latents[0], example.flipped_mean) for step in range(40)]
    assert 10 < sum(picks) < 30


def _dataset(examples, report, batch_size, grad_accum=1, **overrides):
    options = dict(templates=["[filewords]"], name="n", seed=0, shuffle_tags=False, tag_dropout=0, flip=False,
                   latent_sampling="once")
    return TrainingDataset(examples, report, batch_size=batch_size, grad_accum=grad_accum, **{**options, **overrides})


def test_an_epoch_shows_every_image_once_in_exactly_images_over_batch_steps(tmp_path):
    folder = make_images(tmp_path / "d", 8)  # three aspect ratios: buckets of 3, 3 and 2 images
    examples, report = scan_folder(folder, width=64, height=64, no_crop=True, use_alpha=False)
    dataset = _dataset(examples, report, batch_size=2)
    assert dataset.steps_per_epoch == 4
    for epoch in range(3):
        shown = [i for step in range(4 * epoch, 4 * epoch + 4) for batch in dataset.micro_batches(step) for i in batch]
        assert sorted(shown) == list(range(8))


def _aspect(tensor):
    return tensor.shape[-1] / tensor.shape[-2]


def test_small_buckets_keep_their_aspect_ratio(tmp_path):
    """Two 3:4 portraits among six 9:16 ones at batch 4: the portraits are trained at 3:4, not stretched to 9:16."""
    folder = tmp_path / "d"
    folder.mkdir()
    for index in range(6):
        _rgb(72, 128, index).save(folder / f"tall-{index}.png")
    for index in range(2):
        _rgb(96, 128, 10 + index).save(folder / f"portrait-{index}.png")
    examples, report = scan_folder(folder, width=128, height=128, no_crop=True, use_alpha=False)
    encode_latents(examples, tiny_adapter().encode_images, flip=False, latent_sampling="deterministic", seed=0)
    dataset = _dataset(examples, report, batch_size=4, latent_sampling="deterministic")
    trained = {}
    for step in range(dataset.steps_per_epoch):
        for micro, indices in enumerate(dataset.micro_batches(step)):
            batch = dataset.materialize(indices, step, micro)
            for group in batch.groups:
                for position, latent in zip(group.positions, group.latents):
                    trained[batch.paths[position].split("/")[-1]] = _aspect(latent)
    assert len(trained) == 8
    for name, aspect in trained.items():
        assert aspect == pytest.approx(9 / 16 if name.startswith("tall") else 3 / 4, rel=0.03), name


def test_a_nearly_equal_aspect_joins_a_bucket_with_a_small_crop_and_a_note(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    for index in range(3):
        _rgb(256, 176, index).save(folder / f"wide-{index}.png")
    _rgb(256, 168, 9).save(folder / "wider.png")  # 4.5% wider than the others
    examples, report = scan_folder(folder, width=256, height=256, no_crop=True, use_alpha=False)
    dataset = _dataset(examples, report, batch_size=4)
    assert [sorted(members) for members in dataset.buckets.values()] == [[0, 1, 2, 3]]
    notes = {problem.path.split("/")[-1]: problem.reason for problem in report.notes}
    assert "trained at 256x176" in notes["wider.png"] and "5% of its width cropped" in notes["wider.png"]
    from hypernetwork_ext.training.dataset import load_pixels
    pixels = load_pixels(next(e for e in examples if e.path.endswith("wider.png")))
    assert tuple(pixels.shape) == (3, 176, 256)
    assert set(report.summary().splitlines()) >= {f"note wider.png: {notes['wider.png']}"}


@pytest.mark.parametrize("caption", ["猫, 耳", "かわいい, 女の子, 猫耳", "猫のTシャツ, ｶﾀｶﾅ", "青い空、白い雲"])
def test_shift_jis_captions_are_read_as_japanese(tmp_path, caption):
    (tmp_path / "x.png").write_bytes(b"")
    (tmp_path / "x.txt").write_bytes(caption.encode("cp932"))
    text, note = read_caption(tmp_path / "x.png")
    assert text == caption and "Shift-JIS" in note


@pytest.mark.parametrize("caption", ["café", "garçon, façade", "it’s a dog", "élan", "ÉCOLE", "crème brûlée",
                                     "señor", "Ça va, Æsir"])
def test_western_captions_are_still_read_as_cp1252(tmp_path, caption):
    (tmp_path / "x.png").write_bytes(b"")
    (tmp_path / "x.txt").write_bytes(caption.encode("cp1252"))
    text, note = read_caption(tmp_path / "x.png")
    assert text == caption and "cp1252" in note
