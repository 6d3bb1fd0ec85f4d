"""The standalone app, served on 127.0.0.1, driven in headless Chromium: create, a short training run whose
progress shows while it runs, and an image from the trained network; Train_Gamma's layout (height, closed
accordions that still submit their values and open to show a message). A screenshot of each tab is kept in
tests/artifacts/."""

import json
import re

import pytest

from browser import (ARTIFACTS, chromium_page, choose, fill, free_port, open_tab, record_html, recorded_html,
                     screenshot, wait_for_text)
from training_helpers import make_images, make_network

# Train_Gamma's height in this app at 1280 px before its layout came from the settings table (every setting in one
# column, commit 3c70bad): document.querySelector('#hnext_train_tab').scrollHeight, measured the same way
TRAIN_TAB_HEIGHT_BEFORE = 3659


@pytest.fixture
def app_page(tmp_path):
    from hypernetwork_ext.ui.app import launch
    folder = tmp_path / "hypernetworks"
    port = free_port()
    app = launch(folder, port, block=False)
    try:
        with chromium_page() as page:
            page.goto(f"http://127.0.0.1:{port}/")
            yield page, folder, tmp_path
    finally:
        app.close()


def test_create_train_and_generate_in_the_browser(app_page):
    page, folder, tmp_path = app_page

    fill(page, {"hnext_create_name": "browser_net", "hnext_create_layers": "1, a, 1"})
    page.click("#hnext_create_button")
    wait_for_text(page, "hnext_create_layers_message", "is not a number")  # beside the input
    assert not list(folder.iterdir())
    fill(page, {"hnext_create_layers": "1, 3, 1"})
    page.click("#hnext_create_button")
    wait_for_text(page, "hnext_create_output", "Created:")
    assert (folder / "browser_net.pt").exists(), (page.inner_text("#hnext_create_output"), list(folder.iterdir()))
    assert "not a number" not in page.inner_text("#hnext_create_layers_message")  # the message went away
    screenshot(page, "app_create_tab")

    labels = page.locator("#hnext_create_sizes label").all_inner_texts()
    assert [label.strip() for label in labels] == ["48", "32", "64"]  # the app's model's attention widths
    fill(page, {"hnext_create_name": "browser_out", "hnext_create_layers": "1, 2, 1"})
    choose(page, "hnext_create_activation", "relu", refresh_id="hnext_create_sizes_refresh")
    page.check("#hnext_create_activate_output input")
    page.check("#hnext_create_use_dropout input")  # the dropout structure is in view beside it
    fill(page, {"hnext_create_dropout": "0, 0.1, 0"})
    page.click("#hnext_create_button")
    wait_for_text(page, "hnext_create_output", "browser_out.pt")
    from hypernetwork_ext import load
    created = load(folder / "browser_out.pt")
    assert created.config.activate_output and created.config.dropout_structure == (0, 0.1, 0)

    open_tab(page, "Train_Gamma")
    page.click("#hnext_train_train")
    wait_for_text(page, "hnext_train_hypernetwork_message", "Choose a hypernetwork to train")  # beside the input
    choose(page, "hnext_train_hypernetwork", "browser_net", refresh_id="hnext_train_refresh")
    make_images(tmp_path / "data", 4, sizes=((64, 64),))
    fill(page, {"hnext_train_data_dir": tmp_path / "data", "hnext_train_log_dir": tmp_path / "logs",
                "hnext_train_learn_rate": "1e-3", "hnext_train_width": 64, "hnext_train_height": 64,
                "hnext_train_max_steps": 6, "hnext_train_save_every": 0, "hnext_train_preview_every": 2,
                "hnext_train_preview_steps": 2, "hnext_train_preview_width": 64, "hnext_train_preview_height": 64})
    record_html(page, "hnext_train_output")
    page.click("#hnext_train_train")
    page.locator("#hnext_train_output img.hnext-chart").wait_for()
    screenshot(page, "app_train_tab_running")
    wait_for_text(page, "hnext_train_output", "Training finished at step 6")
    seen = recorded_html(page, "hnext_train_output")
    while_running = [html for html in seen if "Training finished" not in html]
    steps_shown = {int(m) for html in while_running for m in re.findall(r"Step: (\d+) of 6", html)}
    assert len(steps_shown) >= 2, seen  # the status changed while training ran
    assert any("hnext-chart" in html for html in while_running)  # the chart, before the end
    assert any("hnext-preview" in html for html in while_running)  # a preview, as soon as one was made
    assert page.locator("#hnext_train_output img.hnext-chart").count() == 1
    screenshot(page, "app_train_tab")

    fill(page, {"hnext_train_max_steps": 2000, "hnext_train_preview_every": 0})
    page.click("#hnext_train_train")
    wait_for_text(page, "hnext_train_output", "of 2000")
    page.click("#hnext_train_interrupt")
    wait_for_text(page, "hnext_train_output", "Training interrupted at step")

    open_tab(page, "Generate")
    choose(page, "hnext_generate_hypernetwork", "browser_net", refresh_id="hnext_generate_refresh")
    fill(page, {"hnext_generate_prompt": "a red cat", "hnext_generate_steps": 4})
    page.click("#hnext_generate_button")
    wait_for_text(page, "hnext_generate_message", "Generated with browser_net at strength 1")
    page.locator("#hnext_generate_image img").first.wait_for()
    screenshot(page, "app_generate_tab")


def test_a_sweep_in_the_browser(app_page):
    """Two new networks × one settings file, two steps each on the tiny model: the table's two rows, a preview of
    each side by side, and the chart of both loss curves."""
    from hypernetwork_ext.training import TrainingSettings
    page, folder, tmp_path = app_page
    settings = TrainingSettings(data_dir=str(make_images(tmp_path / "data", 2, sizes=((64, 64),))), width=64,
                                height=64, max_steps=2, learn_rate="1e-3", save_every=0, preview_every=2,
                                preview={"steps": 2, "width": 64, "height": 64, "seed": 1})
    settings.save(tmp_path / "tiny.json")
    out = tmp_path / "sweep"
    open_tab(page, "Sweep")
    fill(page, {"hnext_sweep_creation": "layers=1,2,1; activation=relu\nlayers=1,1", "hnext_sweep_out_dir": out,
                "hnext_sweep_settings_files": tmp_path / "tiny.json", "hnext_sweep_overrides": "lern_rate=1e-3"})
    page.click("#hnext_sweep_run")
    wait_for_text(page, "hnext_sweep_overrides_message", "unknown setting 'lern_rate' (did you mean learn_rate?)")
    assert not out.exists()  # nothing was started
    fill(page, {"hnext_sweep_overrides": ""})
    page.click("#hnext_sweep_run")
    wait_for_text(page, "hnext_sweep_status", "Sweep finished: 2 of 2 combinations trained")
    rows = page.locator("#hnext_sweep_table tbody tr")
    assert rows.count() == 2, page.inner_html("#hnext_sweep_table")
    assert rows.nth(0).inner_text().split("\t")[:3] == ["1", "layers=1,2,1 activation=relu", "finished"]
    assert rows.nth(1).inner_text().split("\t")[:3] == ["2", "layers=1,1", "finished"]
    page.locator("#hnext_sweep_chart img").first.wait_for()
    page.locator("#hnext_sweep_gallery img").nth(1).wait_for()  # both previews
    assert "unknown setting" not in page.inner_text("#hnext_sweep_overrides_message")  # the message went away
    assert sorted(path.name for path in out.glob("*.pt")) == ["1_layers-1-2-1_activation-relu.pt", "2_layers-1-1.pt"]
    screenshot(page, "app_sweep_tab")

    fill(page, {"hnext_sweep_overrides": "max_steps=2000\npreview_every=0", "hnext_sweep_out_dir": tmp_path / "long"})
    page.click("#hnext_sweep_run")
    wait_for_text(page, "hnext_sweep_status", "of 2000")
    page.click("#hnext_sweep_interrupt")
    wait_for_text(page, "hnext_sweep_status", "Sweep interrupted: 1 of 2 combinations trained, 1 skipped")
    assert [path.name for path in (tmp_path / "long").glob("*.pt")] == ["1_layers-1-2-1_activation-relu.pt"]


def test_compose_a_set_and_merge_in_the_browser(app_page):
    page, folder, _ = app_page
    from training_helpers import make_network
    make_network(folder / "style.pt", seed=1, activation="relu", init_std=0.3)
    make_network(folder / "detail.pt", seed=2, activation="relu", init_std=0.3)

    open_tab(page, "Sets and merges")
    choose(page, "hnext_sets_network_1", "style", refresh_id="hnext_sets_refresh")
    choose(page, "hnext_sets_network_2", "detail", refresh_id="hnext_sets_refresh")
    fill(page, {"hnext_sets_number_1": 0.5, "hnext_sets_number_2": 0.5, "hnext_sets_name": "style"})
    page.click("#hnext_sets_save")
    wait_for_text(page, "hnext_sets_name_message", "'style' is already the name of")  # beside the name
    fill(page, {"hnext_sets_name": "combo"})
    page.click("#hnext_sets_save")
    wait_for_text(page, "hnext_sets_output", "Saved the mix")
    assert (folder / "combo.hnset.json").exists()
    assert "already the name" not in page.inner_text("#hnext_sets_name_message")  # the message went away
    screenshot(page, "app_sets_tab")

    fill(page, {"hnext_sets_name": "merged"})
    page.click("#hnext_sets_merge")
    wait_for_text(page, "hnext_sets_output", "Merged 2 hypernetworks into")
    assert (folder / "merged.pt").exists()
    page.locator("#hnext_sets_mode label", has_text="Sequence").click()
    fill(page, {"hnext_sets_name": "chain"})
    page.click("#hnext_sets_save")
    wait_for_text(page, "hnext_sets_output", "Saved the sequence")
    assert (folder / "chain.hnset.json").exists()

    open_tab(page, "Generate")
    choose(page, "hnext_generate_hypernetwork", "combo", refresh_id="hnext_generate_refresh")
    fill(page, {"hnext_generate_prompt": "a red cat", "hnext_generate_steps": 4})
    page.click("#hnext_generate_button")
    wait_for_text(page, "hnext_generate_message", "Generated with combo at strength 1")
    page.locator("#hnext_generate_image img").first.wait_for()


def test_train_gamma_folds_the_rarely_used_settings_and_still_uses_them(app_page):
    page, folder, tmp_path = app_page
    make_network(folder / "layout_net.pt")
    open_tab(page, "Train_Gamma")
    page.locator("#hnext_train_learn_rate").wait_for()
    height = page.evaluate("() => document.querySelector('#hnext_train_tab').scrollHeight")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "app-train-tab-height.txt").write_text(
        f"Train_Gamma in the app at 1280 px: {TRAIN_TAB_HEIGHT_BEFORE} px before, {height} px now\n")
    assert height < TRAIN_TAB_HEIGHT_BEFORE / 2, height
    screenshot(page, "app_train_tab_layout")
    for elem_id in ("hnext_train_data_dir", "hnext_train_learn_rate", "hnext_train_batch_size", "hnext_train_width",
                    "hnext_train_max_steps", "hnext_train_preview_every", "hnext_train_train", "hnext_train_interrupt"):
        assert page.locator(f"#{elem_id}").first.is_visible(), elem_id
    assert page.locator("#hnext_train_preview_prompt textarea").is_hidden()  # in the closed Previews
    assert page.locator("#hnext_train_preview_from_txt2img").count() == 0  # the app has no txt2img tab to read

    choose(page, "hnext_train_hypernetwork", "layout_net", refresh_id="hnext_train_refresh")
    make_images(tmp_path / "data", 2, sizes=((64, 64),))
    fill(page, {"hnext_train_data_dir": tmp_path / "data", "hnext_train_log_dir": tmp_path / "logs",
                "hnext_train_learn_rate": "1e-3", "hnext_train_width": 64, "hnext_train_height": 64,
                "hnext_train_max_steps": 1, "hnext_train_save_every": 0, "hnext_train_preview_every": 0,
                "hnext_train_adam_beta1": 1.5, "hnext_train_preview_steps": 3,
                "hnext_train_template": "[name], [filewords]"})
    for accordion in ("optimizer", "previews"):  # closed again: the values stay in them
        page.click(f"#hnext_train_{accordion}_accordion .label-wrap")
    assert page.locator("#hnext_train_adam_beta1 input").is_hidden()
    page.click("#hnext_train_train")
    wait_for_text(page, "hnext_train_adam_beta1_message", "below 1")
    assert page.locator("#hnext_train_adam_beta1_message").first.is_visible()  # its accordion opened to show it
    screenshot(page, "app_train_tab_message_in_an_accordion")

    fill(page, {"hnext_train_adam_beta1": 0.8})
    page.click("#hnext_train_optimizer_accordion .label-wrap")
    assert page.locator("#hnext_train_adam_beta1 input").is_hidden()
    page.click("#hnext_train_train")
    wait_for_text(page, "hnext_train_output", "Training finished at step 1")
    assert page.locator("#hnext_train_adam_beta1_message").first.is_hidden()  # fixed: no message, no room taken
    used = json.loads(next((tmp_path / "logs").rglob("settings.json")).read_text())
    assert (used["adam_beta1"], used["preview"]["steps"], used["template"]) == (0.8, 3, "[name], [filewords]")
    assert (used["width"], used["height"]) == (64, 64)  # the sliders took the typed sizes
