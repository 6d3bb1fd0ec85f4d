"""End to end in the real reForge and Forge (built from ../shared/webui; see tests/real_webui.py).

Neither fork applies hypernetworks by itself (their UNet never reads the loaded list), so there is no
plain fork to compare with: each fork's images are compared with the plain A1111 1.8's for the same
networks, prompt and seed (the checkpoints hold the same weights), and with the fork's own image
without a network. One start of each fork serves its tests.
"""

from __future__ import annotations

import re

import pytest

import real_webui
from browser import chromium_page, choose, fill, screenshot, wait_for_text
from real_webui_checks import (FAST_PATH_TOLERANCE, PROMPT, REFERENCE_CASES, api_training_request,
                               assert_startup_is_clean, fill_training, open_page, open_webui_tab, render,
                               train_in_the_webuis_own_tab, train_through_api, training_images, write_networks,
                               write_training_network)
from training_helpers import same_tensors, weights_of

FORKS = ("reforge", "forge")
# The forks sample with their own k-diffusion copies and attention (ldm_patched / backend), so the same
# seed gives an image close to A1111's, not equal: the largest pixel difference, of 255, allowed.
FORK_TOLERANCE = 2
# the tab that holds Create Beta hypernetwork and Train_Gamma: Forge has no Train tab
TABS_HOME = {"reforge": "Train", "forge": "Hypernetworks"}


@pytest.fixture(scope="module", params=FORKS)
def fork(request, a1111_plain):
    build = request.config.webui_builds[request.param].result()
    real_webui.install_extension(build)
    write_networks(real_webui.fresh_state(build))
    running = real_webui.start(build, log_name=request.param)
    running.figures = real_webui.Figures()
    yield running
    running.stop()
    path = real_webui.REPO / "tests" / "artifacts" / f"real-{request.param}-figures.txt"
    path.write_text("\n".join(running.figures.rows) + "\n")


def kind(fork) -> str:
    return fork.build.kind


def test_startup_is_clean(fork):
    assert_startup_is_clean(fork.log())


def test_listing_has_networks_safetensors_and_sets(fork):
    names = {entry["name"] for entry in fork.get("/sdapi/v1/hypernetworks")}
    assert {"hn_relu", "hn_linear", "hn_swish", "hn_relu_st", "hn_sequence"} <= names, names


def test_images_change_as_in_a1111(fork, a1111_plain):
    ours = {case: render(fork, prompt, settings) for case, (prompt, settings) in REFERENCE_CASES.items()}
    fork.set_options(hypernetwork_ext_fast_apply=False)
    try:  # the plain formula, for the stack (the path every network takes with the fast path off)
        plain_formula = render(fork, *REFERENCE_CASES["stack_of_3"])
    finally:
        fork.set_options(hypernetwork_ext_fast_apply=True)
    compared = [(case, "fast path", image) for case, image in ours.items()] + \
        [("stack_of_3", "plain formula", plain_formula)]
    for case, path, image in compared:
        difference = real_webui.largest_difference(image, a1111_plain["images"][case])
        change = real_webui.largest_difference(image, ours["none"])
        fork.figures.add(f"{kind(fork)} {path}: {case}: vs A1111 {difference}, vs no network {change}")
        assert difference <= FORK_TOLERANCE, (case, path)
        if case != "none":
            assert change > 10, case  # the network reached the fork's attention
    assert real_webui.largest_difference(ours["settings_dropdown"], ours["relu"]) == 0


def test_sets_safetensors_and_strength_zero(fork):
    none, relu, stack = (render(fork, *REFERENCE_CASES[case]) for case in ("none", "relu", "stack_of_3"))
    for prompt, expected, tolerance in ((f"{PROMPT} <hypernet:hn_sequence:1>", stack, FAST_PATH_TOLERANCE),
                                        (f"{PROMPT} <hypernet:hn_relu_st:1>", relu, 0),
                                        (f"{PROMPT} <hypernet:hn_relu:0>", none, 0),
                                        (f"{PROMPT} <hypernet:hn_sequence:0>", none, 0)):
        difference = real_webui.largest_difference(fork.txt2img(prompt)[0], expected)
        fork.figures.add(f"{kind(fork)}: {prompt.removeprefix(PROMPT).strip()}: largest pixel difference {difference}")
        assert difference <= tolerance, prompt


def test_generation_info_and_png_info_restore_the_hypernetworks(fork):
    prompt = f"{PROMPT} <hypernet:hn_relu:0.7> <hypernet:hn_swish:0.4>"
    image, info, png = fork.txt2img(prompt)
    text = info["infotexts"][0]
    assert "<hypernet:hn_relu:0.7>" in text and "Hypernet hashes: " in text, text
    parameters = fork.post("/sdapi/v1/png-info", {"image": "data:image/png;base64," + png})["parameters"]
    assert parameters["Prompt"] == prompt, parameters
    assert "hn_relu: " in parameters["Hypernet hashes"] and "hn_swish: " in parameters["Hypernet hashes"], parameters
    again = fork.txt2img(parameters["Prompt"], seed=int(parameters["Seed"]), steps=int(parameters["Steps"]))[0]
    assert real_webui.largest_difference(again, image) == 0


def test_card_page_and_create_beta_hypernetwork_in_the_page(fork):
    name = f"hn_{kind(fork)}_created"
    with chromium_page() as page:
        open_page(fork, page)
        page.locator("#txt2img_extra_tabs .tab-nav button", has_text="Hypernetworks").first.click()
        page.locator("#txt2img_hypernetworks_cards .card").first.wait_for()
        names = set(page.locator("#txt2img_hypernetworks_cards .card .name").all_inner_texts())
        assert {"hn_relu", "hn_relu_st", "hn_sequence", "hn_linear"} <= names, names
        screenshot(page, f"real_{kind(fork)}_card_page")
        open_webui_tab(page, TABS_HOME[kind(fork)], "Create Beta hypernetwork")
        fill(page, {"hnext_create_name": name, "hnext_create_layers": "1, 2"})
        page.click("#hnext_create_button")
        wait_for_text(page, "hnext_create_layers_message", "must start and end with 1")
        fill(page, {"hnext_create_layers": "1, 2, 1"})
        page.click("#hnext_create_button")
        wait_for_text(page, "hnext_create_output", "Created:")
        screenshot(page, f"real_{kind(fork)}_create_tab")
        open_webui_tab(page, TABS_HOME[kind(fork)], "Train_Gamma")
        choose(page, "hnext_train_hypernetwork", name, refresh_id="hnext_train_refresh")
    assert (fork.build.hypernetwork_dir / f"{name}.pt").exists()
    assert name in {entry["name"] for entry in fork.get("/sdapi/v1/hypernetworks")}


def test_train_gamma_trains_through_the_forks_unet_with_previews(fork, a1111_plain, tmp_path):
    path = write_training_network(fork.build.hypernetwork_dir, "hn_train_fork_tab")
    before = weights_of(path)
    data = training_images(tmp_path)
    with chromium_page() as page:
        open_page(fork, page)
        open_webui_tab(page, TABS_HOME[kind(fork)], "Train_Gamma")
        choose(page, "hnext_train_hypernetwork", "hn_train_fork_tab", refresh_id="hnext_train_refresh")
        fill_training(page, data, tmp_path / "logs", steps=2, preview_every=2)
        page.click("#hnext_train_train")
        page.locator("#hnext_train_progress img.hnext-chart").wait_for()
        wait_for_text(page, "hnext_train_output", "Training finished at step 2")
        screenshot(page, f"real_{kind(fork)}_train_tab")
    assert not same_tensors(before, weights_of(path))  # the hypernetwork was in the fork's UNet graph
    previews = [p for p in (tmp_path / "logs").rglob("*.png") if p.parent.name == "images"]
    assert len(previews) == 1, previews  # step 2, through the fork's txt2img
    after = real_webui.largest_difference(render(fork, *REFERENCE_CASES["relu"]), a1111_plain["images"]["relu"])
    assert after <= FORK_TOLERANCE  # generation after training is as before (nothing of the training left behind)


def test_reforges_own_train_tab_runs_on_our_engine(fork, tmp_path):
    if kind(fork) == "reforge":
        train_in_the_webuis_own_tab(fork, tmp_path, "hn_train_own_tab")
        return
    with chromium_page() as page:  # Forge has no Train tab: ours are the only training tabs, in their own tab
        open_page(fork, page)
        top_level = [text.strip() for text in page.locator("#tabs > .tab-nav button").all_inner_texts()]
        assert "Train" not in top_level and top_level.count("Hypernetworks") == 1, top_level


def test_reforges_own_training_route_runs_on_our_engine(fork, tmp_path):
    if kind(fork) != "reforge":
        status, body = fork.request("POST", "/sdapi/v1/train/hypernetwork", {})
        assert status in (404, 405), (status, body)  # Forge has no training route of its own
        return
    path = fork.build.hypernetwork_dir / "hn_train_intervals0.pt"
    before = weights_of(path)
    info = train_through_api(fork, api_training_request("hn_train_intervals0", training_images(tmp_path),
                                                        tmp_path / "logs", steps=2))
    assert info.endswith("error: None"), info
    assert not same_tensors(before, weights_of(path))
    assert re.search(r"\[hypernetwork-ext\] .*step", fork.log()), fork.log()[-3000:]


def test_the_http_create_route_creates_a_hypernetwork(fork):
    """Forge's own route fails with HTTP 500 (a name its API module no longer imports), reForge's on a request
    without activation or weight initialisation (KeyError); ours answers in both, bad input with its message."""
    sizes = [768, 320, 640, 1024, 1280]
    status, body = fork.request("POST", "/sdapi/v1/create/hypernetwork",
                                {"name": "hn_api_bad", "enable_sizes": sizes, "overwrite_old": False,
                                 "layer_structure": [1, 2]})
    assert status == 200 and "must start and end with 1" in body["info"], (status, body)
    assert not (fork.build.hypernetwork_dir / "hn_api_bad.pt").exists()
    body = fork.post("/sdapi/v1/create/hypernetwork",
                     {"name": "hn_api_created", "enable_sizes": sizes, "overwrite_old": False, "layer_structure": [1, 2, 1]})
    assert "hn_api_created.pt" in body["info"], body
    assert (fork.build.hypernetwork_dir / "hn_api_created.pt").exists()
    assert "hn_api_created" in {entry["name"] for entry in fork.get("/sdapi/v1/hypernetworks")}
