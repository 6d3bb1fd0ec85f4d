"""What the real-WebUI test modules share: the networks they write, the prompts and reference cases
they render, and the requests and page steps they drive the WebUI with (see tests/real_webui.py).
Generations are 64x64, 2 Euler steps, seed 1234, on the random-weight SD 1.5 checkpoint each build writes.
"""

from __future__ import annotations

import re
import time

import real_webui
from browser import chromium_page, choose, fill
from hypernetwork_ext import Hypernetwork, HypernetworkConfig, convert, save
from hypernetwork_ext.stack import write_set_file
from training_helpers import make_images, same_tensors, weights_of

SD15_SIZES = (768, 320, 640, 1024, 1280)
PROMPT = "a watercolor painting of a lighthouse"
# name -> (activation, seed); init std 0.05 so that each network visibly changes a 2-step image
NETWORKS = {"hn_relu": ("relu", 1), "hn_linear": ("linear", 2), "hn_swish": ("swish", 3)}
STACK = "<hypernet:hn_relu:0.6> <hypernet:hn_linear:0.5> <hypernet:hn_swish:1>"
SEQUENCE_SET = {"sequence": [{"network": "hn_relu", "strength": 0.6}, {"network": "hn_linear", "strength": 0.5},
                             {"network": "hn_swish", "strength": 1}]}
TRAINING_NETWORKS = ("hn_train_intervals0", "hn_train_previews", "hn_train_no_previews", "hn_train_long",
                     "hn_train_queue", "hn_train_interrupt", "hn_train_own_tab")
# what the plain WebUI renders, and our WebUI is compared with: case -> (prompt, settings for that image)
REFERENCE_CASES = {
    "none": (PROMPT, {}),
    "relu": (f"{PROMPT} <hypernet:hn_relu:1>", {}),
    "linear_0.8": (f"{PROMPT} <hypernet:hn_linear:0.8>", {}),
    "stack_of_3": (f"{PROMPT} {STACK}", {}),
    "settings_dropdown": (PROMPT, {"sd_hypernetwork": "hn_relu"}),
}
# A1111 only: a Lora (the WebUI's built-in extension merges it into the same key/value projection weights
# that a linear hypernetwork is folded into) with a linear network, and with a stack that ends with one
LORA_NAME = "hn_test_lora"
A1111_CASES = {
    "lora_and_linear": (f"{PROMPT} <lora:{LORA_NAME}:1> <hypernet:hn_linear:0.8>", {}),
    "lora_and_relu_then_linear": (f"{PROMPT} <lora:{LORA_NAME}:0.7> <hypernet:hn_relu:1> <hypernet:hn_linear:1>", {}),
}
# the fold and the text-context cache change the order of float operations: a stated tolerance
FAST_PATH_TOLERANCE = 2  # of 255, largest pixel difference


def assert_startup_is_clean(log: str) -> None:
    """No script failed to load, no traceback, and nothing from us: nothing is wrong, so we say nothing."""
    for text in ("Error loading script", "Traceback"):
        assert text not in log, log
    ours = [line for line in log.splitlines() if "[hypernetwork-ext]" in line]
    assert ours == [], ours


def write_networks(folder):
    for name, (activation, seed) in NETWORKS.items():
        config = HypernetworkConfig(sizes=SD15_SIZES, layer_structure=(1, 2, 1), activation=activation, init_std=0.05)
        save(Hypernetwork.create(config, name, seed=seed), folder / f"{name}.pt")
    convert(folder / "hn_relu.pt", folder / "hn_relu_st.safetensors")
    write_set_file(folder / "hn_sequence.hnset.json", SEQUENCE_SET)
    for name in TRAINING_NETWORKS:
        write_training_network(folder, name)


def write_lora(folder):
    """A random rank-4 Lora on the key and value projections of two cross-attention layers and one
    self-attention layer of SD 1.5, in the kohya names the WebUI's Lora extension reads."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(11)
    layers = {"input_blocks_1_1_transformer_blocks_0_attn2": (768, 320),
              "output_blocks_11_1_transformer_blocks_0_attn2": (768, 320),
              "input_blocks_1_1_transformer_blocks_0_attn1": (320, 320)}
    tensors = {}
    for layer, (width_in, width_out) in layers.items():
        for projection in ("to_k", "to_v"):
            key = f"lora_unet_{layer}_{projection}"
            tensors[f"{key}.lora_down.weight"] = 0.3 * torch.randn(4, width_in, generator=generator)
            tensors[f"{key}.lora_up.weight"] = 0.3 * torch.randn(width_out, 4, generator=generator)
            tensors[f"{key}.alpha"] = torch.tensor(4.0)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / f"{LORA_NAME}.safetensors"))


def write_training_network(folder, name):
    """The same starting weights under each name."""
    config = HypernetworkConfig(sizes=SD15_SIZES, layer_structure=(1, 2, 1), activation="linear")
    return save(Hypernetwork.create(config, name, seed=7), folder / f"{name}.pt")


def render(running, prompt: str, settings: dict):
    """Settings go through the options API and are put back after the image: the WebUI's per-request
    override_settings never restores an option that its config file does not hold yet."""
    defaults = {"sd_hypernetwork": "None", "hypernetwork_ext_dropdown_strength": 1.0}
    if settings:
        running.set_options(**settings)
    try:
        return running.txt2img(prompt)[0]
    finally:
        if settings:
            running.set_options(**{key: defaults[key] for key in settings})



def training_images(tmp_path):
    """Four captioned 64x64 images: the WebUI's SD 1.5 trains a step on them in seconds on this CPU."""
    return make_images(tmp_path / "data", 4, sizes=((64, 64),))


def api_training_request(name, data, logs, steps, preview_every=0, save_every=0):
    return {"id_task": "", "hypernetwork_name": name, "learn_rate": "1e-3", "batch_size": 1, "gradient_step": 1,
            "data_root": str(data), "log_directory": str(logs), "training_width": 64, "training_height": 64,
            "varsize": False, "steps": steps, "clip_grad_mode": "disabled", "clip_grad_value": "0.1",
            "shuffle_tags": False, "tag_drop_out": 0, "latent_sampling_method": "once", "use_weight": False,
            "create_image_every": preview_every, "save_hypernetwork_every": save_every,
            "template_filename": "hypernetwork.txt", "preview_from_txt2img": True, "preview_prompt": PROMPT,
            "preview_negative_prompt": "", "preview_steps": 2, "preview_sampler_name": "Euler",
            "preview_cfg_scale": 7, "preview_seed": 5, "preview_width": 64, "preview_height": 64}


def train_through_api(webui, request) -> str:
    """The route's reply text; it reports errors inside a 200 reply, as the WebUI's route does."""
    return webui.post("/sdapi/v1/train/hypernetwork", request)["info"]



def wait_for_console(webui, text: str, after: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while text not in webui.log()[after:]:
        assert time.monotonic() < deadline, f"{text!r} never appeared:\n{webui.log()[after:][-3000:]}"
        time.sleep(0.2)



def open_page(webui, page):
    page.goto(webui.url)
    page.locator("#tab_txt2img").wait_for()


def open_webui_tab(page, top: str, sub: str | None = None):
    """A top-level tab, then one of its own tabs, by exact label (the Train tab has a "Train" tab too)."""
    exact = lambda label: re.compile(f"^\\s*{re.escape(label)}\\s*$")  # noqa: E731
    page.locator("#tabs > .tab-nav button").filter(has_text=exact(top)).first.click()
    if sub:
        page.locator("#tabs > .tabitem:visible .tab-nav button").filter(has_text=exact(sub)).first.click()



def fill_training(page, data, logs, steps: int, preview_every: int):
    fill(page, {"hnext_train_data_dir": data, "hnext_train_log_dir": logs, "hnext_train_learn_rate": "1e-3",
                "hnext_train_width": 64, "hnext_train_height": 64, "hnext_train_max_steps": steps,
                "hnext_train_save_every": 0, "hnext_train_preview_every": preview_every,
                "hnext_train_preview_steps": 2, "hnext_train_preview_width": 64, "hnext_train_preview_height": 64,
                "hnext_train_preview_prompt": PROMPT})


def plain_a1111_images(build) -> dict:
    """The plain A1111's images for REFERENCE_CASES (``--hypernetwork-ext-no-patches``: its own code applies
    the networks); the WebUI is stopped again before this returns."""
    running = real_webui.start(build, "--hypernetwork-ext-no-patches", log_name="a1111-plain")
    try:
        cases = {**REFERENCE_CASES, **A1111_CASES}
        images = {case: render(running, prompt, settings) for case, (prompt, settings) in cases.items()}
        return {"images": images, "log": running.log()}
    finally:
        running.stop()


def train_in_the_webuis_own_tab(webui, tmp_path, name: str) -> None:
    """The WebUI's own Train tab (A1111's and reForge's), both intervals 0, in Chromium: it trains on our
    engine and writes the trained weights back (the plain A1111 fails with both intervals 0)."""
    path = webui.build.hypernetwork_dir / f"{name}.pt"
    before = weights_of(path)
    with chromium_page() as page:
        open_page(webui, page)
        open_webui_tab(page, "Train", "Train")
        choose(page, "train_hypernetwork", name, refresh_id="refresh_train_hypernetwork_name")
        fill(page, {"train_hypernetwork_learn_rate": "1e-3", "train_dataset_directory": training_images(tmp_path),
                    "train_log_directory": tmp_path / "logs", "train_training_width": 64, "train_training_height": 64,
                    "train_steps": 2, "train_create_image_every": 0, "train_save_embedding_every": 0})
        page.locator("#train_training_height input").first.press("Tab")  # a slider takes its number on change
        page.click("#train_train_hypernetwork")
        page.wait_for_function("() => (document.querySelector('#ti_output textarea') || {}).value"
                               "?.includes('Training finished at 2 steps')", timeout=300_000)
    assert not same_tensors(before, weights_of(path))
