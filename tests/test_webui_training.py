"""Training through the WebUI's own train_hypernetwork (replaced), on the stand-in with a real tiny ldm model.

STAND-IN, kept for what the real WebUI (tests/test_real_a1111.py) cannot show here in seconds or at all:
bit-for-bit properties that need many runs of a model that trains in milliseconds (strength forced to 1,
a generation waiting in the queue changes nothing, the API route waiting for a generation that holds the
lock), and messages of paths no page reaches. The same flows run end to end in the real WebUI."""

import pytest
import torch

from hypernetwork_ext import files

import webui
from training_helpers import make_images, make_network, tiny_model, weights_of


@pytest.fixture
def webui_training(tmp_path):
    folder = tmp_path / "hypernetworks"
    folder.mkdir()
    modules = webui.reset(folder)
    shared = modules["shared"]
    model = tiny_model()
    shared.sd_model = model
    # the WebUI's attention optimisation, as sd_hijack installs it: every CrossAttention calls apply_hypernetworks
    import types
    swapped = []
    for module in model.model.diffusion_model.modules():
        if type(module).__name__ == "CrossAttention":
            module.forward = types.MethodType(modules["attention"].scaled_dot_product_attention_forward, module)
            swapped.append(module)
    from modules.shared_state import State
    shared.state = State()
    shared.opts.data["sd_hypernetwork"] = "None"
    make_images(tmp_path / "data", 4, sizes=((64, 64),))
    make_network(folder / "style.pt", activation="relu")
    yield modules, folder, tmp_path
    for module in swapped:
        del module.forward
    webui.unload_extension()
    shared.sd_model = None


def _arguments(tmp_path, steps=4, preview_every=2, name="style"):
    return dict(id_task="task(test)", hypernetwork_name=name, learn_rate="1e-3", batch_size=2, gradient_step=1,
                data_root=str(tmp_path / "data"), log_directory=str(tmp_path / "logs"), training_width=64,
                training_height=64, varsize=True, steps=steps, clip_grad_mode="disabled", clip_grad_value="0.1",
                shuffle_tags=False, tag_drop_out=0, latent_sampling_method="once", use_weight=False,
                create_image_every=preview_every, save_hypernetwork_every=2, template_filename="none.txt",
                preview_from_txt2img=True, preview_prompt="a cat", preview_negative_prompt="", preview_steps=3,
                preview_sampler_name="Euler", preview_cfg_scale=5.0, preview_seed=1, preview_width=64,
                preview_height=64)


def test_train_hypernetwork_runs_on_the_engine_and_updates_progress(webui_training):
    modules, folder, tmp_path = webui_training
    webui.load_extension()
    shared = modules["shared"]
    shared.loaded_hypernetworks.append("something the user had selected")
    opts_before = dict(shared.opts.data)
    states = []
    shared.state.assign_current_image = lambda image, original=shared.state.assign_current_image: (
        states.append((shared.state.job, shared.state.job_count, shared.state.job_no)), original(image))
    network, filename = modules["hypernetwork"].train_hypernetwork(**_arguments(tmp_path))
    assert network.step == 4 and filename == str(folder / "style.pt") and files.load(filename).step == 4
    assert states == [("train-hypernetwork", 4, 2), ("train-hypernetwork", 4, 4)]  # progress seen at each preview
    assert shared.state.job_no == 4 and shared.state.current_image is not None and shared.state.id_live_preview == 2
    assert "Loss:" in shared.state.textinfo and "data:image/png;base64," in shared.state.textinfo
    assert shared.loaded_hypernetworks == ["something the user had selected"]  # put back
    assert shared.opts.data == opts_before
    assert all("forward" in m.__dict__ for m in shared.sd_model.model.diffusion_model.modules()
               if type(m).__name__ == "CrossAttention")  # the attention optimisation stayed in place


def test_interrupt_is_honoured(webui_training):
    modules, folder, tmp_path = webui_training
    webui.load_extension()
    shared = modules["shared"]
    original = shared.state.assign_current_image
    shared.state.assign_current_image = lambda image: (original(image), shared.state.interrupt())
    network, _ = modules["hypernetwork"].train_hypernetwork(**_arguments(tmp_path, steps=8, preview_every=2))
    assert network.step == 2


def test_training_uses_strength_one_whatever_the_selected_strength(webui_training):
    modules, folder, tmp_path = webui_training
    webui.load_extension()
    hypernetwork = modules["hypernetwork"]
    start = weights_of(folder / "style.pt")
    for strength, target in ((0.5, "half.pt"), (1.0, "full.pt")):
        files.save(files.load(folder / "style.pt"), folder / target)
        modules["shared"].reload_hypernetworks()
        hypernetwork.load_hypernetworks([target[:-3]], [strength])  # Settings: Hypernetwork strength
        hypernetwork.train_hypernetwork(**_arguments(tmp_path, steps=2, preview_every=0, name=target[:-3]))
    half, full = weights_of(folder / "half.pt"), weights_of(folder / "full.pt")
    assert all(torch.equal(half[k], full[k]) for k in half)
    assert any(not torch.equal(half[k], start[k]) for k in half)  # it did train, through the WebUI's attention


def test_an_unknown_hypernetwork_is_a_clear_message(webui_training):
    from hypernetwork_ext import ConfigError
    modules, folder, tmp_path = webui_training
    webui.load_extension()
    with pytest.raises(ConfigError, match="'nothing' is not in the list"):
        modules["hypernetwork"].train_hypernetwork(**_arguments(tmp_path, name="nothing"))


def test_tabs_are_registered_in_the_train_tab_and_train_from_the_tab(webui_training):
    gr = pytest.importorskip("gradio")
    from hypernetwork_ext.training import TrainingSettings
    modules, folder, tmp_path = webui_training
    webui.load_extension()
    callbacks = modules["callbacks"]
    with gr.Blocks() as blocks:
        with gr.Tabs(elem_id="train_tabs"):
            callbacks.ui_train_tabs_callback(callbacks.UiTrainTabParams([]))
    config = blocks.get_config_file()
    text = str(config)
    assert "Create Beta hypernetwork" in text and "Train_Gamma" in text
    assert "hnext_create_layers" in text and "hnext_train_learn_rate" in text and "hnext_train_gallery" in text
    assert any(d.get("js") == "hnext_start_training" for d in config["dependencies"])  # the WebUI's progress polling
    import pathlib
    script = (pathlib.Path(webui.EXTENSION_ROOT) / "javascript" / "hypernetwork_ext.js").read_text()
    assert "function hnext_start_training" in script and "hnext_train_gallery" in script

    import importlib
    from hypernetwork_ext.training import ModelInfo
    from modules import call_queue, devices, processing, progress
    training = importlib.import_module("hypernetwork_ext_patches.webui_training")
    start = training.start_from_tab(modules["shared"], processing, devices, ModelInfo,
                                    training.TrainingGate(call_queue.queue_lock), progress)
    settings = TrainingSettings(data_dir=str(tmp_path / "data"), log_dir=str(tmp_path / "logs"), width=64, height=64,
                                max_steps=2, batch_size=2, save_every=0, preview_every=0, learn_rate="1e-3")
    reply = start("style", settings, "task(abc)")
    assert "Training finished at step 2" in reply and files.load(folder / "style.pt").step == 2
    assert progress.finished_tasks[-1] == "task(abc)" and progress.current_task is None


def test_the_train_tab_wrapper_keeps_attention_optimisations_on(webui_training):
    modules, folder, tmp_path = webui_training
    from modules import sd_hijack
    from modules.hypernetworks import ui as hypernetworks_ui
    original = hypernetworks_ui.train_hypernetwork
    webui.load_extension()
    before = dict(sd_hijack.calls)
    message, error = hypernetworks_ui.train_hypernetwork(*_arguments(tmp_path, steps=2, preview_every=0).values())
    assert message.startswith("Training finished at 2 steps.") and error == ""
    assert sd_hijack.calls == before  # neither undone nor re-applied
    webui.unload_extension()
    assert hypernetworks_ui.train_hypernetwork is original


# -- one training at a time, in turn with generation (issue 6: concurrency) -------------------------------

def _pause_at_first_preview(shared):
    """Make the training in progress wait at its first preview until the test lets it go on."""
    import threading
    reached, go_on = threading.Event(), threading.Event()
    original = shared.state.assign_current_image

    def assign(image):
        original(image)
        if not reached.is_set():
            reached.set()
            assert go_on.wait(120), "the test never let training go on"
    shared.state.assign_current_image = assign
    return reached, go_on


def _in_thread(function, *args, **kwargs):
    import threading
    outcome = {}

    def run():
        try:
            outcome["result"] = function(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome["error"] = error
        outcome["finished"] = __import__("time").perf_counter()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_generation_during_training_waits_its_turn_and_changes_nothing(webui_training):
    import time
    modules, folder, tmp_path = webui_training
    webui.load_extension()
    shared, hypernetwork = modules["shared"], modules["hypernetwork"]
    files.save(files.load(folder / "style.pt"), folder / "twin.pt")
    shared.reload_hypernetworks()
    hypernetwork.train_hypernetwork(**_arguments(tmp_path, steps=4, name="style"))  # alone: the reference

    from modules import call_queue, processing
    generated = {}

    def generate(id_task):
        generated["started"] = time.perf_counter()
        shared.loaded_hypernetworks.clear()  # what a generation with no hypernetwork selected does
        p = processing.StableDiffusionProcessingTxt2Img(sd_model=shared.sd_model, prompt="a dog", steps=2, seed=3,
                                                        width=64, height=64)
        return processing.process_images(p).images[0]

    reached, go_on = _pause_at_first_preview(shared)
    training, trained = _in_thread(hypernetwork.train_hypernetwork, **_arguments(tmp_path, steps=4, name="twin"))
    assert reached.wait(120)
    generation, image = _in_thread(call_queue.wrap_gradio_gpu_call(generate), "task(generate)")
    time.sleep(0.5)
    assert "started" not in generated  # queued behind the training
    go_on.set()
    training.join(120)
    generation.join(120)
    assert "error" not in trained and "error" not in image and image["result"].size == (64, 64)
    assert generated["started"] > trained["finished"]
    reference, twin = weights_of(folder / "style.pt"), weights_of(folder / "twin.pt")
    assert all(torch.equal(reference[key], twin[key]) for key in reference)  # bit for bit


def test_training_through_the_api_waits_for_a_running_generation(webui_training, monkeypatch):
    import importlib
    import threading
    modules, folder, tmp_path = webui_training
    webui.load_extension()
    training_module = importlib.import_module("hypernetwork_ext_patches.webui_training")
    began = threading.Event()
    original = training_module.train_in_webui
    monkeypatch.setattr(training_module, "train_in_webui", lambda *a: (began.set(), original(*a))[1])
    from modules import call_queue
    call_queue.queue_lock.acquire()  # a generation is running
    try:
        training, trained = _in_thread(modules["hypernetwork"].train_hypernetwork, **_arguments(tmp_path, steps=2))
        assert not began.wait(1.0)  # waiting for the generation to end
    finally:
        call_queue.queue_lock.release()
    training.join(120)
    assert "error" not in trained and files.load(folder / "style.pt").step == 2


def test_the_preview_sampler_is_one_of_the_webuis(webui_training, monkeypatch):
    """Previews render through the WebUI's txt2img: its sampler names are the valid ones, in any case."""
    import sys
    import types
    from hypernetwork_ext import ConfigError
    modules, folder, tmp_path = webui_training
    import modules as webui_modules
    samplers = types.ModuleType("modules.sd_samplers")
    samplers.all_samplers = [types.SimpleNamespace(name=name) for name in ("DPM++ 2M", "Euler a", "Euler")]
    monkeypatch.setitem(sys.modules, "modules.sd_samplers", samplers)
    monkeypatch.setattr(webui_modules, "sd_samplers", samplers, raising=False)
    webui.load_extension()
    training = sys.modules["hypernetwork_ext_patches.webui_training"]
    assert training.webui_sampler_names() == ("DPM++ 2M", "Euler a", "Euler")
    from hypernetwork_ext.training.engine import preview_sampler
    assert preview_sampler("euler A", training.webui_sampler_names()) == "Euler a"
    arguments = {**_arguments(tmp_path, steps=2, preview_every=1), "preview_sampler_name": "totally bogus"}
    with pytest.raises(ConfigError, match="Preview sampler 'totally bogus' is not offered here; choose one of: "
                                          "DPM\\+\\+ 2M, Euler a, Euler"):
        modules["hypernetwork"].train_hypernetwork(**arguments)
    assert files.load(folder / "style.pt").step == 0


def test_train_gamma_lists_only_networks_and_the_webui_refuses_to_train_a_set(webui_training):
    gr = pytest.importorskip("gradio")
    from hypernetwork_ext import ConfigError
    from hypernetwork_ext.stack import write_set_file
    modules, folder, tmp_path = webui_training
    write_set_file(folder / "combo.hnset.json", {"sequence": ["style"]})
    webui.load_extension()
    assert "combo" in modules["shared"].hypernetworks  # sets are applied from prompts, so the WebUI lists them
    callbacks = modules["callbacks"]
    with gr.Blocks() as blocks:
        with gr.Tabs(elem_id="train_tabs"):
            callbacks.ui_train_tabs_callback(callbacks.UiTrainTabParams([]))
    dropdown = next(c for c in blocks.get_config_file()["components"]
                    if c.get("props", {}).get("elem_id") == "hnext_train_hypernetwork")
    choices = [choice[0] if isinstance(choice, (list, tuple)) else choice for choice in dropdown["props"]["choices"]]
    assert choices == ["style"]
    before = (folder / "combo.hnset.json").read_bytes()
    with pytest.raises(ConfigError, match=r"combo.hnset.json is a set of hypernetworks; sets apply, they do not train"):
        modules["hypernetwork"].train_hypernetwork(**_arguments(tmp_path, name="combo"))  # the WebUI's own Train tab
    assert (folder / "combo.hnset.json").read_bytes() == before


# -- the Sweep tab (issue 12) -------------------------------------------------------------------------------

def test_the_sweep_tab_follows_train_gamma_and_sweeps_as_one_training_that_interrupt_stops(webui_training):
    """The tab's own handler, as its Run button calls it: the WebUI's training path for each combination, under the
    gate that the WebUI's training shares (a second training is refused meanwhile), Interrupt through shared.state."""
    gr = pytest.importorskip("gradio")
    from hypernetwork_ext import ConfigError
    from hypernetwork_ext.training import TrainingSettings
    modules, folder, tmp_path = webui_training
    webui.load_extension()
    callbacks, shared = modules["callbacks"], modules["shared"]
    with gr.Blocks() as blocks:
        with gr.Tabs(elem_id="train_tabs"):
            callbacks.ui_train_tabs_callback(callbacks.UiTrainTabParams([]))
    tabs = [c["props"]["label"] for c in blocks.get_config_file()["components"] if c["type"] == "tabitem"]
    assert tabs[:3] == ["Create Beta hypernetwork", "Train_Gamma", "Sweep"]
    run_sweep = next(function.fn for function in blocks.fns if function.fn.__name__ == "replies")

    TrainingSettings(data_dir=str(tmp_path / "data"), width=64, height=64, max_steps=4, batch_size=2, learn_rate="1e-3",
                     save_every=0, preview_every=2, preview={"steps": 2, "width": 64, "height": 64, "seed": 1,
                                                             "sampler": "Euler"}).save(tmp_path / "base.json")
    reached, go_on = _pause_at_first_preview(shared)
    out = tmp_path / "sweep"
    form = (["style"], "", 0, str(tmp_path / "base.json"), "seed=1,2", str(out), False, 20)
    sweep, replies = _in_thread(lambda: list(run_sweep(*form)))
    assert reached.wait(120)
    with pytest.raises(ConfigError, match="A hypernetwork is training already"):
        modules["hypernetwork"].train_hypernetwork(**_arguments(tmp_path, steps=2, preview_every=0))
    shared.state.interrupt()  # the tab's Interrupt
    go_on.set()
    sweep.join(120)
    assert "error" not in replies, replies.get("error")
    status, table, _, _, problems = replies["result"][-1]
    assert "Sweep interrupted: 1 of 2 combinations trained, 1 skipped" in status and problems == {}
    assert "<td>interrupted</td>" in table and "<td>skipped</td>" in table
    assert files.load(out / "1_style__seed-1.pt").step == 2 and not (out / "2_style__seed-2.pt").exists()
    assert files.load(folder / "style.pt").step == 0  # the start was only read
    assert shared.state.job == ""  # the sweep's job has ended
