"""End to end in the real AUTOMATIC1111 WebUI 1.8 (built from ../shared/webui; see tests/real_webui.py).

Two starts share this module: first the plain WebUI (``--hypernetwork-ext-no-patches``) renders the
reference images and stops, then the WebUI with the extension serves every test. Generations are
64x64, 2 Euler steps, seed 1234, on the random-weight SD 1.5 checkpoint the build writes.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import pytest

import real_webui
from browser import ARTIFACTS, chromium_page, choose, fill, record_html, recorded_html, reveal, screenshot, wait_for_text
from hypernetwork_ext import load
from real_webui_checks import (A1111_CASES, FAST_PATH_TOLERANCE, PROMPT, REFERENCE_CASES, STACK, api_training_request,
                               assert_startup_is_clean, fill_training, open_page, open_webui_tab, render,
                               train_in_the_webuis_own_tab, train_through_api, training_images, wait_for_console,
                               write_training_network)
from training_helpers import largest_difference as tensor_difference
from training_helpers import same_tensors, weights_of

@pytest.fixture(scope="module")
def figures():
    collected = real_webui.Figures()
    yield collected
    path = real_webui.REPO / "tests" / "artifacts" / "real-a1111-figures.txt"
    path.write_text("\n".join(collected.rows) + "\n")


@pytest.fixture(scope="module")
def built(a1111_build):
    return a1111_build


@pytest.fixture(scope="module")
def plain(a1111_plain):
    return a1111_plain


@pytest.fixture(scope="module")
def webui(built, plain):
    (built.hypernetwork_dir / "hn_broken.pt").write_bytes(b"PK\x03\x04 this is not a hypernetwork")
    running = real_webui.start(built, log_name="a1111")
    yield running
    running.stop()


def test_the_plain_webui_loads_our_files_and_they_change_its_image(plain):
    assert "Error loading script" not in plain["log"]
    images = plain["images"]
    for case in ("relu", "linear_0.8", "stack_of_3", "settings_dropdown"):
        assert real_webui.largest_difference(images[case], images["none"]) > 10, case  # the network reached attention
    assert real_webui.largest_difference(images["settings_dropdown"], images["relu"]) == 0


def test_startup_is_clean(webui):
    assert_startup_is_clean(webui.log())
    state = webui.probe()
    assert state["originals_are_webui"] and state["replacements_are_ours"], state
    assert "hypernetwork.apply_hypernetworks" in " ".join(state["patched"]), state


def test_listing_has_networks_safetensors_and_sets(webui):
    names = {entry["name"] for entry in webui.get("/sdapi/v1/hypernetworks")}
    assert {"hn_relu", "hn_linear", "hn_swish", "hn_relu_st", "hn_sequence"} <= names, names


@pytest.mark.parametrize("fast", [False, True], ids=["plain_formula", "fast_path"])
def test_images_equal_the_plain_webui(webui, plain, figures, fast):
    lora_effect = real_webui.largest_difference(plain["images"]["lora_and_linear"], plain["images"]["linear_0.8"])
    assert lora_effect > 10, lora_effect  # the Lora loaded and changes the plain WebUI's image
    webui.set_options(hypernetwork_ext_fast_apply=fast)
    try:
        for case, (prompt, settings) in {**REFERENCE_CASES, **A1111_CASES}.items():
            ours = render(webui, prompt, settings)
            difference = real_webui.largest_difference(ours, plain["images"][case])
            figures.add(f"{'fast path' if fast else 'plain formula'}: {case}: largest pixel difference {difference}")
            assert difference <= (FAST_PATH_TOLERANCE if fast else 0), case
    finally:
        webui.set_options(hypernetwork_ext_fast_apply=True)


def test_sets_and_safetensors_give_the_plain_webuis_image(webui, plain, figures):
    for case, prompt, reference in (("sequence set", f"{PROMPT} <hypernet:hn_sequence:1>", "stack_of_3"),
                                    (".safetensors", f"{PROMPT} <hypernet:hn_relu_st:1>", "relu")):
        ours = webui.txt2img(prompt)[0]
        difference = real_webui.largest_difference(ours, plain["images"][reference])
        figures.add(f"fast path: {case} vs plain {reference}: largest pixel difference {difference}")
        assert difference <= FAST_PATH_TOLERANCE, case


def test_strength_zero_equals_no_hypernetwork(webui, plain):
    for tag in ("<hypernet:hn_relu:0>", "<hypernet:hn_sequence:0>"):
        ours = webui.txt2img(f"{PROMPT} {tag}")[0]
        assert real_webui.largest_difference(ours, plain["images"]["none"]) == 0, tag


def test_generation_info_and_png_info_restore_the_hypernetworks(webui):
    prompt = f"{PROMPT} <hypernet:hn_relu:0.7> <hypernet:hn_swish:0.4>"
    image, info, png = webui.txt2img(prompt)
    text = info["infotexts"][0]
    assert "<hypernet:hn_relu:0.7>" in text and "Hypernet hashes: " in text, text
    restored = webui.post("/sdapi/v1/png-info", {"image": "data:image/png;base64," + png})
    parameters = restored["parameters"]
    assert parameters["Prompt"] == prompt, parameters
    hashes = parameters["Hypernet hashes"]
    for name in ("hn_relu", "hn_swish"):
        assert f"{name}: " in hashes, hashes
    again = webui.txt2img(parameters["Prompt"], seed=int(parameters["Seed"]), steps=int(parameters["Steps"]))[0]
    assert real_webui.largest_difference(again, image) == 0


def test_a_broken_file_is_reported_and_generation_goes_on(webui, plain):
    before = len(webui.log())
    image = webui.txt2img(f"{PROMPT} <hypernet:hn_broken:1>")[0]
    console = webui.log()[before:]
    lines = [line for line in console.splitlines() if "[hypernetwork-ext]" in line]
    assert len(lines) == 1 and "hn_broken" in lines[0], console
    assert "Traceback" not in console, console
    assert real_webui.largest_difference(image, plain["images"]["none"]) == 0
    assert real_webui.largest_difference(webui.txt2img(f"{PROMPT} <hypernet:hn_relu:1>")[0],
                                         plain["images"]["relu"]) <= FAST_PATH_TOLERANCE


# -- training through the WebUI's own route, on the extension's engine ---------------------------------

def test_api_training_with_both_intervals_0_runs_on_our_engine(webui, tmp_path):
    # the plain WebUI fails here (No such file or directory: .../settings-....json)
    path = webui.build.hypernetwork_dir / "hn_train_intervals0.pt"
    before = weights_of(path)
    before_log = len(webui.log())
    data = training_images(tmp_path)
    info = train_through_api(webui, api_training_request("hn_train_intervals0", data, tmp_path / "logs", steps=2))
    assert info.endswith("error: None"), info
    console = webui.log()[before_log:]
    assert "[hypernetwork-ext]" in console and "Traceback" not in console, console  # our engine's status lines
    after = weights_of(path)
    assert not same_tensors(before, after)  # trained, written back in place
    assert list((tmp_path / "logs").rglob("hn_train_intervals0-0-start.pt"))  # the starting point is kept


def test_previews_through_txt2img_do_not_change_training(webui, tmp_path, figures):
    """Bit for bit where this machine's torch is deterministic. On 2 CPU threads some of torch's kernels here
    sum in an order that varies between runs (measured on the SD 1.5 UNet alone: its gradient differs by ~5e-9
    in some runs, never with one thread), so the same training without previews runs twice first: when those
    two differ, the run with previews may differ from them as much as they differ from each other, no more."""
    data = training_images(tmp_path)
    runs = {}
    for key, name, preview_every in (("without", "hn_train_no_previews", 0), ("again", "hn_train_no_previews", 0),
                                     ("with", "hn_train_previews", 1)):
        start = write_training_network(webui.build.hypernetwork_dir, name)  # the same start each time
        os.utime(start, (time.time() + len(runs), time.time() + len(runs)))  # a new file version to load
        info = train_through_api(webui, api_training_request(name, data, tmp_path / key, steps=2,
                                                             preview_every=preview_every))
        assert info.endswith("error: None"), info
        runs[key] = weights_of(webui.build.hypernetwork_dir / f"{name}.pt")
    previews = [path for path in (tmp_path / "with").rglob("*.png") if path.parent.name == "images"]
    assert len(previews) == 2, previews  # rendered by the WebUI's txt2img at steps 1 and 2
    noise = tensor_difference(runs["without"], runs["again"])
    with_previews = tensor_difference(runs["with"], runs["without"])
    figures.add(f"training: two runs without previews differ by {noise:.3g}; with previews vs without {with_previews:.3g}")
    if noise == 0:
        assert same_tensors(runs["with"], runs["without"])
    else:
        assert with_previews <= 4 * noise, (with_previews, noise)


def test_one_training_at_a_time_and_generation_waits_its_turn(webui, tmp_path):
    data = training_images(tmp_path)
    finished = {}

    def in_background(key, call):
        def run():
            finished[key] = (call(), time.monotonic())
        thread = threading.Thread(target=run)
        thread.start()
        return thread

    offset = len(webui.log())
    training = in_background("training", lambda: train_through_api(
        webui, api_training_request("hn_train_long", data, tmp_path / "long", steps=6)))
    wait_for_console(webui, "Training hn_train_long from step 0", offset)
    second = train_through_api(webui, api_training_request("hn_train_queue", data, tmp_path / "queue", steps=1))
    assert "A hypernetwork is training already" in second, second
    generation = in_background("generation", lambda: webui.txt2img(PROMPT)[0])
    training.join(600)
    generation.join(600)
    assert finished["training"][0].endswith("error: None"), finished["training"]
    assert finished["generation"][1] > finished["training"][1]  # the generation waited for the training


# -- the real page in Chromium -----------------------------------------------------------------------

def test_create_beta_hypernetwork_in_the_page(webui):
    with chromium_page() as page:
        open_page(webui, page)
        open_webui_tab(page, "Train", "Create Beta hypernetwork")
        fill(page, {"hnext_create_name": "hn_browser_created", "hnext_create_layers": "1, 2"})
        page.click("#hnext_create_button")
        wait_for_text(page, "hnext_create_layers_message", "must start and end with 1")  # beside the input
        assert not (webui.build.hypernetwork_dir / "hn_browser_created.pt").exists()
        fill(page, {"hnext_create_layers": "1, 2, 1"})
        page.click("#hnext_create_button")
        wait_for_text(page, "hnext_create_output", "Created:")
        assert (webui.build.hypernetwork_dir / "hn_browser_created.pt").exists()
        screenshot(page, "real_a1111_create_tab")
        open_webui_tab(page, "Train", "Train_Gamma")
        choose(page, "hnext_train_hypernetwork", "hn_browser_created", refresh_id="hnext_train_refresh")
    assert "hn_browser_created" in {entry["name"] for entry in webui.get("/sdapi/v1/hypernetworks")}


def sample_progress(page):
    page.evaluate("""() => {  // what the WebUI's progress bar and live preview showed, sampled while they exist
        window.__hnext_bar = [];
        window.__hnext_previews = 0;
        setInterval(() => {
            const bar = document.querySelector('.progressDiv .progress');
            if (bar) window.__hnext_bar.push(bar.textContent);
            const previews = document.querySelectorAll('.livePreview img').length;
            window.__hnext_previews = Math.max(window.__hnext_previews, previews);
        }, 50);
    }""")


def test_train_gamma_in_the_page(webui, tmp_path):
    data = training_images(tmp_path)
    write_training_network(webui.build.hypernetwork_dir, "hn_train_browser")  # copied in while the WebUI runs
    with chromium_page() as page:
        open_page(webui, page)
        open_webui_tab(page, "Train", "Train_Gamma")
        choose(page, "hnext_train_hypernetwork", "hn_train_browser", refresh_id="hnext_train_refresh")
        fill_training(page, data, tmp_path / "logs", steps=4, preview_every=2)
        record_html(page, "hnext_train_progress")
        sample_progress(page)
        page.click("#hnext_train_train")
        page.locator("#hnext_train_progress img.hnext-chart").wait_for()
        page.locator(".livePreview img").first.wait_for()
        screenshot(page, "real_a1111_train_tab_running")
        wait_for_text(page, "hnext_train_output", "Training finished at step 4")
        statuses = recorded_html(page, "hnext_train_progress")
        steps = {m for html in statuses for m in re.findall(r"Step: (\d+)", html)}
        assert len(steps) >= 2, statuses  # the status text followed the run
        assert any("Loss" in html or "loss" in html for html in statuses), statuses
        bar_texts = page.evaluate("() => window.__hnext_bar")
        assert any("%" in text for text in bar_texts), bar_texts  # the WebUI's own progress bar
        assert page.evaluate("() => window.__hnext_previews") >= 1  # the WebUI's live preview
        assert not [text for text in bar_texts if "<" in text], bar_texts  # no raw status HTML inside the bar
    previews = [path for path in (tmp_path / "logs").rglob("*.png") if path.parent.name == "images"]
    assert len(previews) == 2, previews  # steps 2 and 4, through the WebUI's txt2img


def test_interrupt_in_the_page_keeps_the_last_good_weights(webui, tmp_path):
    path = webui.build.hypernetwork_dir / "hn_train_interrupt.pt"
    start, start_step = weights_of(path), load(path).step
    with chromium_page() as page:
        open_page(webui, page)
        open_webui_tab(page, "Train", "Train_Gamma")
        choose(page, "hnext_train_hypernetwork", "hn_train_interrupt", refresh_id="hnext_train_refresh")
        data = training_images(tmp_path)
        fill_training(page, data, tmp_path / "logs", steps=500, preview_every=0)
        page.click("#hnext_train_train")
        page.locator("#hnext_train_progress", has_text=re.compile(r"Step: [1-9]")).wait_for()
        page.click("#hnext_train_interrupt")
        wait_for_text(page, "hnext_train_output", "Training interrupted at step")
        message = page.locator("#hnext_train_output", has_text="interrupted").first.inner_text()
    step = int(re.search(r"interrupted at step (\d+)", message).group(1))
    assert start_step < step < 500, message
    saved = load(path)
    assert saved.step == step
    assert not same_tensors(start, weights_of(path))


def test_the_hypernetworks_card_page_lists_networks_safetensors_and_sets(webui):
    with chromium_page() as page:
        open_page(webui, page)
        page.locator("#txt2img_extra_tabs .tab-nav button", has_text="Hypernetworks").first.click()
        cards = page.locator("#txt2img_hypernetworks_cards .card")
        cards.first.wait_for()
        names = set(page.locator("#txt2img_hypernetworks_cards .card .name").all_inner_texts())
        assert {"hn_relu", "hn_relu_st", "hn_sequence", "hn_linear"} <= names, names
        screenshot(page, "real_a1111_card_page")



def test_a_set_composed_in_the_page_gives_the_image_of_the_same_stack_by_tags(webui, plain, figures):
    with chromium_page() as page:
        open_page(webui, page)
        open_webui_tab(page, "Train", "Sets and merges")
        for row, (name, strength) in enumerate((("hn_relu", 0.6), ("hn_linear", 0.5), ("hn_swish", 1)), start=1):
            choose(page, f"hnext_sets_network_{row}", name, refresh_id="hnext_sets_refresh")
            fill(page, {f"hnext_sets_number_{row}": strength})
        page.locator("#hnext_sets_mode label", has_text="Sequence").click()
        fill(page, {"hnext_sets_name": "hn_ui_sequence"})
        page.click("#hnext_sets_save")
        wait_for_text(page, "hnext_sets_output", "Saved the sequence")
        screenshot(page, "real_a1111_sets_tab")
    assert (webui.build.hypernetwork_dir / "hn_ui_sequence.hnset.json").exists()
    # listed at once: the tab reloads the WebUI's list after saving
    assert "hn_ui_sequence" in {entry["name"] for entry in webui.get("/sdapi/v1/hypernetworks")}
    by_set = webui.txt2img(f"{PROMPT} <hypernet:hn_ui_sequence:1>")[0]
    by_tags = webui.txt2img(f"{PROMPT} {STACK}")[0]
    same_stack = real_webui.largest_difference(by_set, by_tags)
    figures.add(f"fast path: set composed in the page vs the same stack by tags: largest pixel difference {same_stack}")
    assert same_stack <= FAST_PATH_TOLERANCE
    plain_stack = real_webui.largest_difference(by_set, plain["images"]["stack_of_3"])
    figures.add(f"fast path: set composed in the page vs plain stack_of_3: largest pixel difference {plain_stack}")
    assert plain_stack <= FAST_PATH_TOLERANCE


def test_the_webuis_own_train_tab_runs_on_our_engine_with_both_intervals_0(webui, tmp_path):
    train_in_the_webuis_own_tab(webui, tmp_path, "hn_train_own_tab")


def test_the_sweep_tab_in_the_page(webui, tmp_path):
    """The Sweep tab after Train_Gamma: one starting network × two learning rates, two steps each through the
    WebUI's training path (previews through its txt2img); the table's two rows, a preview of each, the chart."""
    from hypernetwork_ext.training import TrainingSettings
    folder = webui.build.hypernetwork_dir
    write_training_network(folder, "hn_sweep_start")  # copied in while the WebUI runs
    start = weights_of(folder / "hn_sweep_start.pt")
    TrainingSettings(data_dir=str(training_images(tmp_path)), width=64, height=64, max_steps=2, save_every=0,
                     preview_every=2, preview={"prompt": PROMPT, "steps": 2, "width": 64, "height": 64, "seed": 5,
                                               "sampler": "Euler"}).save(tmp_path / "sweep.json")
    out = tmp_path / "sweep"
    with chromium_page() as page:
        open_page(webui, page)
        open_webui_tab(page, "Train", "Sweep")
        choose(page, "hnext_sweep_hypernetworks", "hn_sweep_start", refresh_id="hnext_sweep_refresh")
        fill(page, {"hnext_sweep_settings_files": tmp_path / "sweep.json", "hnext_sweep_out_dir": out,
                    "hnext_sweep_overrides": "learn_rate=1e-3,5e-4"})
        page.click("#hnext_sweep_run")
        page.locator("#hnext_sweep_status", has_text="Sweep finished: 2 of 2 combinations trained").first.wait_for(
            timeout=600_000)  # .first: Gradio 3.41 gives an HTML block's wrapper and its content the same id
        rows = page.locator("#hnext_sweep_table tbody tr")
        assert rows.count() == 2, page.inner_html("#hnext_sweep_table")
        assert [rows.nth(index).inner_text().split("\t")[2] for index in (0, 1)] == ["finished", "finished"]
        page.locator("#hnext_sweep_chart img").first.wait_for()
        page.locator("#hnext_sweep_gallery img").nth(1).wait_for()  # a preview of each combination
        screenshot(page, "real_a1111_sweep_tab")
    trained = [weights_of(out / f"{name}.pt") for name in ("1_hn_sweep_start__learn_rate-1e-3",
                                                           "2_hn_sweep_start__learn_rate-5e-4")]
    assert not same_tensors(start, trained[0]) and not same_tensors(trained[0], trained[1])
    assert same_tensors(start, weights_of(folder / "hn_sweep_start.pt"))  # the start was only read


# -- Train_Gamma's layout and the new controls in the real page --------------------------------------

# Train_Gamma's height in this page at 1280 px, every setting in one column (before issue 12's layout)
TRAIN_TAB_HEIGHT_BEFORE = 4300


def test_train_gamma_is_laid_out_in_rows_and_closed_accordions(webui):
    with chromium_page() as page:
        open_page(webui, page)
        open_webui_tab(page, "Train", "Train_Gamma")
        page.locator("#hnext_train_learn_rate").wait_for()
        height = page.evaluate("() => document.querySelector('#hnext_train_tab').scrollHeight")
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "real-a1111-train-tab-height.txt").write_text(
            f"Train_Gamma in A1111 1.8 at 1280 px: about {TRAIN_TAB_HEIGHT_BEFORE} px before, {height} px now\n")
        assert height < TRAIN_TAB_HEIGHT_BEFORE * 0.6, height
        for elem_id in ("hnext_train_data_dir", "hnext_train_learn_rate", "hnext_train_batch_size",
                        "hnext_train_width", "hnext_train_max_steps", "hnext_train_train"):
            assert page.locator(f"#{elem_id}").first.is_visible(), elem_id
        assert page.locator("#hnext_train_preview_prompt textarea").is_hidden()  # in the closed Previews
        assert page.locator("#hnext_train_preview_from_txt2img").count() == 1  # the WebUI hands over txt2img
        screenshot(page, "real_a1111_train_tab_layout")


def test_the_template_list_is_the_webuis_templates(webui):
    templates = {path.name for path in (webui.build.webui / "textual_inversion_templates").iterdir()}
    assert {"hypernetwork.txt", "style_filewords.txt"} <= templates
    with chromium_page() as page:
        open_page(webui, page)
        open_webui_tab(page, "Train", "Train_Gamma")
        page.click("#hnext_train_template_refresh")
        page.locator("#hnext_train_template input").click()
        page.locator("#hnext_train_template li").first.wait_for()
        offered = {text.strip() for text in page.locator("#hnext_train_template li").all_inner_texts()}
    assert offered == templates, offered


def test_previews_read_the_txt2img_tab_a_template_by_its_name_and_the_noise_curriculum(webui, tmp_path):
    data = training_images(tmp_path)
    write_training_network(webui.build.hypernetwork_dir, "hn_train_txt2img")  # copied in while the WebUI runs
    txt2img_prompt = "a lighthouse, typed into txt2img"
    with chromium_page() as page:
        open_page(webui, page)
        fill(page, {"txt2img_prompt": txt2img_prompt, "txt2img_steps": 2, "txt2img_width": 64,
                    "txt2img_height": 64, "txt2img_seed": 77})
        open_webui_tab(page, "Train", "Train_Gamma")
        choose(page, "hnext_train_hypernetwork", "hn_train_txt2img", refresh_id="hnext_train_refresh")
        fill_training(page, data, tmp_path / "logs", steps=1, preview_every=1)  # its own preview prompt: PROMPT
        choose(page, "hnext_train_template", "hypernetwork.txt", refresh_id="hnext_train_template_refresh")
        reveal(page, "hnext_train_preview_from_txt2img")
        page.check("#hnext_train_preview_from_txt2img input")
        reveal(page, "hnext_train_timesteps_curriculum")  # the noise curriculum, in Advanced options
        page.locator("#hnext_train_timesteps_curriculum label", has_text="linear").click()
        fill(page, {"hnext_train_timesteps_ramp_steps": 10})
        offset = len(webui.log())
        page.click("#hnext_train_train")
        wait_for_text(page, "hnext_train_output", "Training finished at step 1")
    assert "Noise curriculum (linear): timesteps 0-0 at the ramp's start, 0-999 after 10 steps" in webui.log()[offset:]
    used = json.loads(next((tmp_path / "logs").rglob("settings.json")).read_text())
    assert (used["timesteps"]["curriculum"], used["timesteps"]["ramp_steps"]) == ("linear", 10)
    assert (used["preview"]["prompt"], used["preview"]["seed"], used["preview"]["steps"]) == (txt2img_prompt, 77, 2)
    assert (used["preview"]["width"], used["preview"]["height"]) == (64, 64)
    template = webui.build.webui / "textual_inversion_templates" / "hypernetwork.txt"
    assert Path(used["template"]).resolve() == template.resolve()  # chosen by name, trained with its file
    previews = [path for path in (tmp_path / "logs").rglob("*.png") if path.parent.name == "images"]
    assert len(previews) == 1, previews  # rendered by the WebUI's txt2img with its tab's parameters


def test_create_offers_the_models_widths_and_activate_output(webui):
    sd15 = "768,320,640,1280"  # the loaded SD 1.5 model's attention widths (no 1024: that is SD 2's)
    with chromium_page() as page:
        open_page(webui, page)
        open_webui_tab(page, "Train", "Create Beta hypernetwork")
        page.click("#hnext_create_sizes_refresh")  # the model may have loaded after the page was built
        page.wait_for_function("""widths => [...document.querySelectorAll('#hnext_create_sizes label')]
            .map(label => label.innerText.trim()).join(',') === widths""", arg=sd15)
        assert page.locator("#hnext_create_dropout").first.is_visible()  # beside Use dropout, not folded away
        fill(page, {"hnext_create_name": "hn_browser_activated", "hnext_create_layers": "1, 2, 1"})
        page.check("#hnext_create_activate_output input")
        page.check("#hnext_create_use_dropout input")
        fill(page, {"hnext_create_dropout": "0, 0.1, 0"})
        page.click("#hnext_create_button")
        wait_for_text(page, "hnext_create_output", "Created:")
    created = load(webui.build.hypernetwork_dir / "hn_browser_activated.pt")
    assert created.config.sizes == (768, 320, 640, 1280)
    assert created.config.activate_output and created.config.dropout_structure == (0, 0.1, 0)
    assert "hn_browser_activated" in {entry["name"] for entry in webui.get("/sdapi/v1/hypernetworks")}


def test_hypernetwork_strength_applies_to_the_network_the_settings_dropdown_adds(webui, plain, figures):
    webui.set_options(hypernetwork_ext_fast_apply=False)  # the plain formula: equal to the plain WebUI's images
    try:
        at_default = render(webui, PROMPT, {"sd_hypernetwork": "hn_relu", "hypernetwork_ext_dropdown_strength": 1.0})
        at_08 = render(webui, PROMPT, {"sd_hypernetwork": "hn_linear", "hypernetwork_ext_dropdown_strength": 0.8})
    finally:
        webui.set_options(hypernetwork_ext_fast_apply=True)
    for case, ours, reference in (("strength 1", at_default, "settings_dropdown"), ("strength 0.8", at_08, "linear_0.8")):
        difference = real_webui.largest_difference(ours, plain["images"][reference])
        figures.add(f"plain formula: Settings dropdown at {case} vs plain {reference}: largest pixel difference {difference}")
        assert difference == 0, case
    webui.set_options(sd_hypernetwork="hn_linear", hypernetwork_ext_dropdown_strength=0.8)
    try:
        info = webui.txt2img(PROMPT)[1]
    finally:
        webui.set_options(sd_hypernetwork="None", hypernetwork_ext_dropdown_strength=1.0)
    assert "<hypernet:hn_linear:0.8>" in info["infotexts"][0], info["infotexts"][0]  # PNG info gives it back


def test_hypernetwork_strength_sits_under_add_hypernetwork_to_prompt(webui):
    with chromium_page() as page:
        open_page(webui, page)
        open_webui_tab(page, "Settings")
        page.locator("#settings > .tab-nav button").filter(has_text=re.compile(r"^\s*Extra Networks\s*$")).first.click()
        page.locator("#setting_hypernetwork_ext_dropdown_strength").wait_for()
        order = page.evaluate("""() => [...new Set([...document.querySelectorAll('#settings_extra_networks [id^="setting_"]')]
            .map(element => element.id))]""")
        assert order[order.index("setting_sd_hypernetwork") + 1] == "setting_hypernetwork_ext_dropdown_strength", order
        slider = page.locator("#setting_hypernetwork_ext_dropdown_strength input[type=range]")
        assert (slider.get_attribute("min"), slider.get_attribute("max")) == ("0", "2")
        screenshot(page, "real_a1111_settings_strength")


# -- last: Settings -> Reload UI (every script is unloaded and loaded again) ---------------------------

def count_tabs(page, label: str) -> int:
    return page.locator("#tabs .tab-nav button").filter(has_text=re.compile(f"^\\s*{re.escape(label)}\\s*$")).count()


def test_reload_ui_applies_every_patch_once_and_unloading_restores_every_original(webui, plain):
    before = webui.probe()
    offset = len(webui.log())
    with chromium_page() as page:
        open_page(webui, page)
        open_webui_tab(page, "Settings")
        page.click("#settings_restart_gradio")
        webui.wait_for_startup(after=offset)
        # The old page reloads itself once the server answers again (the WebUI's restart_reload); a
        # navigation of our own on it races that reload, so the reloaded UI is read in a new page.
        reloaded = page.context.new_page()
        open_page(webui, reloaded)
        open_webui_tab(reloaded, "Train")
        assert count_tabs(reloaded, "Create Beta hypernetwork") == 1 and count_tabs(reloaded, "Train_Gamma") == 1
        assert count_tabs(reloaded, "Sweep") == 1
    reports = webui.unload_reports()
    assert len(reports) == 1, reports  # one unload, by the reload
    assert reports[0]["restored"] and reports[0]["checked"] == len(before["patched"]), reports
    assert reports[0]["left_in_registry"] == 0, reports
    after = webui.probe()
    assert after["patched"] == before["patched"], (before, after)  # each patch once, none missing
    assert after["originals_are_webui"] and after["replacements_are_ours"], after
    ours = [script for script in after["train_tab_callbacks"] if real_webui.EXTENSION_NAME in script]
    assert len(ours) == 1, after["train_tab_callbacks"]
    assert after["api_trains_with_current_function"], after  # the HTTP route trains with the reloaded engine
    image = webui.txt2img(f"{PROMPT} <hypernet:hn_relu:1>")[0]
    assert real_webui.largest_difference(image, plain["images"]["relu"]) <= FAST_PATH_TOLERANCE
