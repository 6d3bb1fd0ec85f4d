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


# -- the layout, from the settings table ---------------------------------------------------------------

def _train_page(tmp_path, start=lambda name, settings, task_id=None: "ok", **options):
    gr = pytest.importorskip("gradio")
    from gradio_config import PageConfig
    from hypernetwork_ext.ui import train_tab
    with gr.Blocks() as blocks:
        txt2img = options.pop("txt2img", None)
        params = txt2img(gr) if txt2img else None
        train_tab.build(gr, lambda: ["style"], start, txt2img_preview_params=params, **options)
    return PageConfig(blocks)


def test_train_gamma_puts_related_settings_side_by_side_and_folds_the_rarely_used(tmp_path):
    page = _train_page(tmp_path)
    for first, second in [("batch_size", "grad_accum"), ("width", "height"), ("save_every", "preview_every"),
                          ("data_dir", "log_dir"), ("preview_width", "preview_height"), ("adam_beta1", "weight_decay")]:
        row = page.row_of(f"hnext_train_{first}")
        assert row is not None and row == page.row_of(f"hnext_train_{second}"), (first, second)
    assert page.row_of("hnext_train_batch_size") != page.row_of("hnext_train_width")
    for size in ("width", "height", "preview_width", "preview_height"):
        component = page.component(f"hnext_train_{size}")
        assert component["type"] == "slider", size
        assert (component["props"]["minimum"], component["props"]["maximum"], component["props"]["step"]) == (64, 2048, 8)
    always_shown = ["hypernetwork", "data_dir", "log_dir", "learn_rate", "batch_size", "grad_accum", "width", "height",
                    "max_steps", "save_every", "preview_every", "train", "interrupt"]
    assert [key for key in always_shown if page.accordion_of(f"hnext_train_{key}")] == []
    folded = {"preview_prompt": "Previews", "preview_seed": "Previews", "optimizer": "Optimizer",
              "adam_beta1": "Optimizer", "cosine_enabled": "Cosine annealing schedule",
              "cosine_cycle_steps": "Cosine annealing schedule", "clip_mode": "Gradient clipping",
              "clip_value": "Gradient clipping", "mixed_precision": "Advanced options", "shuffle_tags":
              "Images and captions", "settings_file": "Training settings file"}
    assert {key: page.accordion_of(f"hnext_train_{key}") for key in folded} == folded
    accordions = [block for block in page.config["components"] if block["type"] == "accordion"]
    assert len(accordions) == 7 and not any(block["props"]["open"] for block in accordions)  # closed at first
    assert page.props("hnext_train_learn_rate")["value"] == "0.00004"
    assert TrainingSettings().learn_rate == "0.00004"  # the command line's default too


def test_every_setting_of_a_row_is_in_one_group():
    from hypernetwork_ext.ui.train_tab import layout_rows
    from hypernetwork_ext.training.settings import GROUPS
    placed = [spec.key for group in GROUPS for row in layout_rows(group) for spec in row]
    assert sorted(placed) == sorted(f.key for f in FIELDS)  # each setting once
    for spec in FIELDS:
        if spec.slider:
            minimum, maximum, _ = spec.slider
            assert minimum <= spec.default() <= maximum, spec.key


def test_the_template_is_a_list_of_the_hosts_templates_that_also_takes_a_path_or_text(tmp_path):
    template = tmp_path / "style_filewords.txt"
    template.write_text("a painting in the style of [name], [filewords]\n")
    started = []
    page = _train_page(tmp_path, start=lambda name, settings, task_id=None: started.append(settings) or "ok",
                       templates=lambda: {"style_filewords.txt": str(template), "none.txt": str(tmp_path / "none.txt")})
    assert page.choices("hnext_train_template") == ["none.txt", "style_filewords.txt"]
    assert page.props("hnext_train_template")["allow_custom_value"] is True
    assert page.props("hnext_train_template")["value"] == "[filewords]"
    assert page.has("hnext_train_template_refresh")
    train = page.handler("hnext_train_template")
    for chosen, used in [("style_filewords.txt", str(template)), ("[name], [filewords]", "[name], [filewords]"),
                         (str(template), str(template))]:
        text, problems = train(hnext_train_hypernetwork="style", hnext_train_template=chosen)
        assert problems == {} and started[-1].template == used, (chosen, text)


def _txt2img(gr):
    """The txt2img controls the WebUI hands over, in its order: prompt, negative prompt, steps, sampler, CFG
    scale, seed, width, height."""
    return [gr.Textbox(value="a red lighthouse", elem_id="txt2img_prompt"),
            gr.Textbox(value="blurry", elem_id="txt2img_neg_prompt"),
            gr.Slider(1, 150, value=7, step=1, elem_id="txt2img_steps"),
            gr.Dropdown(choices=["Euler", "DDIM"], value="Euler", elem_id="txt2img_sampling"),
            gr.Slider(1, 30, value=5.5, step=0.5, elem_id="txt2img_cfg_scale"),
            gr.Number(value=42, elem_id="txt2img_seed"),
            gr.Slider(64, 2048, value=128, step=8, elem_id="txt2img_width"),
            gr.Slider(64, 2048, value=96, step=8, elem_id="txt2img_height")]


def test_previews_read_the_txt2img_tab_when_the_box_is_ticked(tmp_path):
    from hypernetwork_ext.training.settings import PreviewSettings
    from hypernetwork_ext.ui.train_tab import FROM_TXT2IMG_LABEL
    started = []
    page = _train_page(tmp_path, start=lambda name, settings, task_id=None: started.append(settings) or "ok",
                       txt2img=_txt2img)
    box = "hnext_train_preview_from_txt2img"
    assert page.props(box)["label"] == FROM_TXT2IMG_LABEL and page.props(box)["value"] is False
    assert page.accordion_of(box) == "Previews"
    train = page.handler(box)
    train(hnext_train_hypernetwork="style", hnext_train_preview_prompt="my own preview")
    assert started[-1].preview == PreviewSettings(prompt="my own preview")  # unticked: the tab's own
    train(hnext_train_hypernetwork="style", hnext_train_preview_prompt="my own preview", **{box: True})
    assert started[-1].preview == PreviewSettings(prompt="a red lighthouse", negative_prompt="blurry", steps=7,
                                                  sampler="Euler", cfg_scale=5.5, seed=42, width=128, height=96)
    assert not _train_page(tmp_path).has(box)  # a host without a txt2img tab (the app, Forge): no such box


def test_the_webui_host_offers_its_templates_and_txt2img_controls(tmp_path):
    gr = pytest.importorskip("gradio")
    import webui
    from gradio_config import PageConfig
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "hypernetwork.txt").write_text("[filewords]\n")
    modules = webui.reset(tmp_path / "hypernetworks")
    modules["shared"].cmd_opts.textual_inversion_templates_dir = str(tmp_path / "templates")
    try:
        webui.load_extension()
        callbacks = modules["callbacks"]
        with gr.Blocks() as blocks:
            params = callbacks.UiTrainTabParams(_txt2img(gr))
            with gr.Tabs(elem_id="train_tabs"):
                callbacks.ui_train_tabs_callback(params)
        page = PageConfig(blocks)
        assert page.choices("hnext_train_template") == ["hypernetwork.txt"]
        assert page.has("hnext_train_preview_from_txt2img")
        assert page.has("hnext_train_tab") and page.has("hnext_create_tab")  # elem_ids a page can measure
    finally:
        webui.unload_extension()


# -- the loss chart -----------------------------------------------------------------------------------

def _losses(steps, rate_schedule="5e-3:100, 1e-3:1000, 1e-5"):
    import math
    import random
    from hypernetwork_ext.training.engine import LossPoint
    schedule = TrainingSettings(learn_rate=rate_schedule, max_steps=max(steps, 1000)).learn_rate_schedule()
    noise = random.Random(0)
    return [LossPoint(s, s // 50, s % 50, 0.15 + 0.1 * math.exp(-s / 300) + noise.random() * 0.08, schedule.rate_at(s))
            for s in range(1, steps + 1)]


def test_chart_ticks_are_round_numbers_written_exactly():
    from hypernetwork_ext.training.chart import nice_ticks, tick_labels
    assert nice_ticks(0.153, 0.318, 6) == [0.15, 0.2, 0.25, 0.3, 0.35]
    assert tick_labels(nice_ticks(0, 5e-3, 3)) == ["0", "0.0025", "0.005"]
    assert tick_labels(nice_ticks(0, 4e-5, 3)) == ["0", "2e-05", "4e-05"]
    assert nice_ticks(1, 2000, 12, minimum_step=1) == list(range(0, 2001, 200))
    assert nice_ticks(3, 3, 12, minimum_step=1) == [2, 3, 4]  # one step: whole numbers around it
    import random
    draw = random.Random(1)
    for _ in range(2000):  # any range: round ticks that cover it, no more than asked where that is possible
        low = draw.uniform(-5, 5) * 10 ** draw.randint(-8, 5)
        high = low + draw.uniform(0, 3) * 10 ** draw.randint(-8, 5)
        most = draw.randint(2, 12)
        ticks = nice_ticks(low, high, most)
        step = ticks[1] - ticks[0]  # within a millionth of a step is on the axis's end, to the eye
        assert ticks[0] <= low + step / 1e6 and ticks[-1] >= high - step / 1e6, (low, high, most, ticks)
        assert len(ticks) <= max(most, 3) and ticks == sorted(set(ticks)), (low, high, most, ticks)
        assert len(set(tick_labels(ticks))) == len(ticks)


@pytest.mark.parametrize("steps", [1, 2, 7, 150, 2000, 100_000])
def test_chart_labels_never_overlap_and_both_panels_share_the_steps(steps):
    from hypernetwork_ext.training.chart import HEIGHT, WIDTH, Chart
    points = _losses(min(steps, 2000))
    if steps > 2000:  # a long run: the last 2000 points, as the status shows them
        points = [type(p)(p.step + steps - 2000, p.epoch, p.epoch_step, p.loss, p.learn_rate) for p in points]
    chart = Chart(points)
    boxes = [label.box for label in chart.labels]
    for index, (left, top, right, bottom) in enumerate(boxes):
        assert 0 <= left < right <= WIDTH and 0 <= top < bottom <= HEIGHT, chart.labels[index]
        for other in boxes[index + 1:]:
            overlap = min(right, other[2]) > max(left, other[0]) and min(bottom, other[3]) > max(top, other[1])
            assert not overlap, (chart.labels[index], other)
    texts = [label.text for label in chart.labels]
    assert "step" in texts and "learning rate" in texts and any(t.startswith("moving average") for t in texts)
    assert sum(t.isdigit() for t in texts) >= 2  # step numbers under the axis


def test_chart_shows_raw_loss_average_and_rate_in_their_colours_and_places():
    import numpy as np
    from hypernetwork_ext.training.chart import AVERAGE_COLOUR, LOSS_COLOUR, RATE_COLOUR, Chart
    chart = Chart(_losses(2000))
    pixels = np.asarray(chart.render())
    legend = next(label for label in chart.labels if label.text == "learning rate")

    def rows_with(colour):
        return np.nonzero(np.all(pixels == colour, axis=-1).any(axis=1))[0]
    loss_rows, average_rows, rate_rows = rows_with(LOSS_COLOUR), rows_with(AVERAGE_COLOUR), rows_with(RATE_COLOUR)
    assert len(loss_rows) > 50 and len(average_rows) > 20 and len(rate_rows) > 5
    lower_panel = legend.box[1]  # the learning-rate panel starts below its title
    assert loss_rows.max() < lower_panel and average_rows[average_rows > 40].max() < lower_panel
    assert (rate_rows >= lower_panel).sum() > 5  # the rate is drawn in its own panel
