"""Training inside A1111, reForge and Forge on our engine.

* ``model_adapter``: the engine's model is ``shared.sd_model``; in A1111 the network under training
  sits in ``shared.loaded_hypernetworks`` so the WebUI's own attention (whichever optimisation is
  active; they stay on) applies it, in the forks it enters through their UNet patcher; previews
  render through the WebUI's txt2img processing with extra networks disabled, after which the
  WebUI's settings and progress state are put back.
* ``WebUIProgress``: the engine's callbacks drive ``shared.state`` (job count, step, status text with
  the loss chart, live preview image) and its Interrupt flag.
* ``train_hypernetwork``: the WebUI's function, same signature and reply, running on the engine, so
  the fixes reach the Train tab and ``/sdapi/v1/train/hypernetwork`` alike.
* ``TrainingGate``: one training at a time, taking its turn with generation in the WebUI's queue.
"""

from __future__ import annotations

import contextlib
import html
import re
import sys
import threading
from pathlib import Path

from hypernetwork_ext.adapters.base import PreviewRequest
from hypernetwork_ext.adapters.ldm import LdmAdapter
from hypernetwork_ext.errors import ConfigError
from hypernetwork_ext.stack import is_set_file
from hypernetwork_ext.training import Callbacks, ModelInfo, TrainingSettings, train
from hypernetwork_ext.training.sweep import combined
from hypernetwork_ext.ui.train_tab import TrainingStatus

from .forge import ForgeTrainingModel, is_forge_model, load_pending_model
from .hypernetworks_a1111 import LoadedHypernetwork

STATE_FIELDS = ("job", "job_no", "job_count", "sampling_step", "sampling_steps", "textinfo")


class TrainingGate:
    """One training at a time, in turn with generation.

    The WebUI runs generation (and its own Train tab) under ``call_queue.queue_lock``, but its HTTP route
    ``/sdapi/v1/train/hypernetwork`` takes no lock, so training could run beside a generation or another
    training. Here every training holds the queue lock (unless its caller holds it already, as the Train
    tab's wrapper does): generation requests wait their turn; a second training is refused at once.
    """

    def __init__(self, queue_lock):
        self.queue_lock = queue_lock
        self._training = threading.Lock()
        self._caller = threading.local()

    @contextlib.contextmanager
    def caller_holds_queue_lock(self):
        self._caller.holds = True
        try:
            yield
        finally:
            self._caller.holds = False

    @contextlib.contextmanager
    def turn(self):
        if not self._training.acquire(blocking=False):
            raise ConfigError("hypernetwork", "A hypernetwork is training already; wait for it to finish or press "
                                              "Interrupt, then start again")
        take_lock = self.queue_lock is not None and not getattr(self._caller, "holds", False)
        try:
            if take_lock:
                self.queue_lock.acquire()  # waits for a generation in progress
            try:
                yield
            finally:
                if take_lock:
                    self.queue_lock.release()
        finally:
            self._training.release()


def webui_sampler_names() -> tuple[str, ...] | None:
    """The WebUI's sampler names: previews render through its txt2img, so any of them is valid (None: this
    WebUI has no sampler list to check against, and its txt2img judges the name)."""
    try:
        from modules import sd_samplers
    except ImportError:
        return None
    names = tuple(sampler.name for sampler in getattr(sd_samplers, "all_samplers", ()))
    return names or None


class WebUIPreviews:
    """Previews through the WebUI's txt2img processing, its settings and progress state put back after."""

    def __init__(self, shared, processing):
        self.shared, self.processing = shared, processing
        self.preview_samplers = webui_sampler_names()

    def render_preview(self, request: PreviewRequest):
        state = self.shared.state
        saved_state = {name: getattr(state, name, None) for name in STATE_FIELDS}
        saved_opts = dict(self.shared.opts.data)
        p = self.processing.StableDiffusionProcessingTxt2Img(
            sd_model=self.shared.sd_model, prompt=request.prompt, negative_prompt=request.negative_prompt,
            steps=request.steps, sampler_name=request.sampler or None, cfg_scale=request.cfg_scale,
            seed=request.seed, width=request.width, height=request.height, do_not_save_grid=True,
            do_not_save_samples=True)
        p.disable_extra_networks = True  # <hypernet:...> tags must not replace the network under training
        p.scripts, p.script_args = self._no_scripts(), []  # no script of the page runs in a preview
        try:
            processed = self.processing.process_images(p)
        finally:
            if hasattr(p, "close"):
                p.close()
            self.shared.opts.data.clear()
            self.shared.opts.data.update(saved_opts)
            for name, value in saved_state.items():
                setattr(state, name, value)
        return processed.images[0]


    @staticmethod
    def _no_scripts():
        """A script runner without scripts: reForge's txt2img reads ``p.scripts`` unchecked (A1111's takes None)."""
        try:
            from modules import scripts
        except ImportError:
            return None
        runner = getattr(scripts, "ScriptRunner", None)
        return runner() if runner is not None else None


class WebUIModelAdapter(WebUIPreviews, LdmAdapter):
    """A1111: ``shared.sd_model`` is an ``ldm``/``sgm`` model whose attention calls the WebUI's
    ``apply_hypernetworks``; the network under training goes into ``shared.loaded_hypernetworks``, so the
    WebUI's own attention (whichever optimisation is active; they stay on) applies it."""

    def __init__(self, shared, processing, devices):
        LdmAdapter.__init__(self, shared.sd_model, devices.device)
        WebUIPreviews.__init__(self, shared, processing)

    def attach(self, applier):
        network = applier.transform.network
        loaded = self.shared.loaded_hypernetworks
        previous = list(loaded)
        loaded[:] = [LoadedHypernetwork(network.name, "", network=network).set_multiplier(1.0)]

        def undo():
            loaded[:] = previous
        return undo


class ForgeModelAdapter(WebUIPreviews, ForgeTrainingModel):
    """reForge and Forge: their UNet never reads ``shared.loaded_hypernetworks``; the network under
    training enters through the UNet patcher's attention patches (see ``forge.py``)."""

    def __init__(self, shared, processing, devices):
        ForgeTrainingModel.__init__(self, shared.sd_model)
        WebUIPreviews.__init__(self, shared, processing)

    def attach(self, applier):
        return self.attach_to_unet(applier)


def model_adapter(shared, processing, devices):
    """The engine's view of the loaded model, for the WebUI that loaded it."""
    try:
        from modules import sd_models
    except ImportError:
        sd_models = None
    load_pending_model(sd_models)
    kind = ForgeModelAdapter if is_forge_model(shared.sd_model) else WebUIModelAdapter
    return kind(shared, processing, devices)


class WebUIProgress:
    """Engine callbacks that drive what the WebUI polls: the bar (``job_no`` of ``job_count``), the status
    text with the loss chart (Train_Gamma's own status, so both hosts show the same), the live preview."""

    def __init__(self, state, max_steps: int):
        self.state = state
        self.status = TrainingStatus(max_steps, "Initializing hypernetwork training...")
        self._preview_shown = None
        state.job, state.job_count = "train-hypernetwork", max_steps
        state.textinfo = self.status.html(with_preview=False)

    def callbacks(self) -> Callbacks:
        callbacks = self.status.callbacks(self._show, should_stop=lambda: bool(self.state.interrupted))
        record = callbacks.status
        callbacks.status = lambda text: (print(f"[hypernetwork-ext] {text}"), record(text))
        return callbacks

    def _show(self):
        self.state.job_no = self.status.step
        if self.status.preview is not None and self.status.preview is not self._preview_shown:
            self._preview_shown = self.status.preview
            self.state.assign_current_image(self.status.preview)
        self.state.textinfo = self.status.html(with_preview=False)  # the preview has its own place on the page


def settings_from_webui_arguments(*, learn_rate, batch_size, gradient_step, data_root, log_directory, training_width,
                                  training_height, varsize, steps, clip_grad_mode, clip_grad_value, shuffle_tags,
                                  tag_drop_out, latent_sampling_method, use_weight, create_image_every,
                                  save_hypernetwork_every, template, preview_from_txt2img, preview_prompt,
                                  preview_negative_prompt, preview_steps, preview_sampler_name, preview_cfg_scale,
                                  preview_seed, preview_width, preview_height, opts) -> TrainingSettings:
    """The WebUI's train_hypernetwork arguments (UI strings and numbers) as our settings."""
    preview = {"steps": 20, "width": int(training_width), "height": int(training_height), "seed": -1}
    if preview_from_txt2img:
        preview = {"prompt": preview_prompt or "", "negative_prompt": preview_negative_prompt or "",
                   "steps": int(preview_steps), "sampler": preview_sampler_name or "", "cfg_scale": float(preview_cfg_scale),
                   "seed": int(preview_seed), "width": int(preview_width), "height": int(preview_height)}
    return TrainingSettings(
        data_dir=str(data_root or ""), log_dir=str(log_directory or "textual_inversion"), template=template,
        learn_rate=str(learn_rate), max_steps=steps, batch_size=batch_size, grad_accum=gradient_step,
        width=training_width, height=training_height, no_crop=bool(varsize), shuffle_tags=bool(shuffle_tags),
        tag_dropout=float(tag_drop_out or 0), latent_sampling=latent_sampling_method or "once",
        use_alpha_weight=bool(use_weight), save_every=save_hypernetwork_every or 0,
        preview_every=create_image_every or 0, preview=preview,
        clip_mode=clip_grad_mode if clip_grad_mode in ("value", "norm") else "none",
        clip_value=str(clip_grad_value or "0.1"),
        unload_models_when_training=bool(getattr(opts, "unload_models_when_training", False)),
        csv_every=int(getattr(opts, "training_write_csv_every", 1) or 0))


def make_train_hypernetwork(shared, processing, devices, gate: TrainingGate, templates=lambda name: None,
                            model_info=lambda: ModelInfo()):
    """The replacement for ``modules.hypernetworks.hypernetwork.train_hypernetwork``."""

    def train_hypernetwork(id_task, hypernetwork_name, learn_rate, batch_size, gradient_step, data_root,
                           log_directory, training_width, training_height, varsize, steps, clip_grad_mode,
                           clip_grad_value, shuffle_tags, tag_drop_out, latent_sampling_method, use_weight,
                           create_image_every, save_hypernetwork_every, template_filename, preview_from_txt2img,
                           preview_prompt, preview_negative_prompt, preview_steps, preview_sampler_name,
                           preview_cfg_scale, preview_seed, preview_width, preview_height):
        name = re.sub(r"\(.*\)$", "", str(hypernetwork_name or "")).strip()
        path = shared.hypernetworks.get(name)
        if not path:
            raise ConfigError("hypernetwork", f"Choose a hypernetwork to train ({hypernetwork_name!r} is not in the list; "
                                              f"press refresh if you just created it)")
        template = templates(template_filename) or "[filewords]"
        settings = settings_from_webui_arguments(
            learn_rate=learn_rate, batch_size=batch_size, gradient_step=gradient_step, data_root=data_root,
            log_directory=log_directory, training_width=training_width, training_height=training_height,
            varsize=varsize, steps=steps, clip_grad_mode=clip_grad_mode, clip_grad_value=clip_grad_value,
            shuffle_tags=shuffle_tags, tag_drop_out=tag_drop_out, latent_sampling_method=latent_sampling_method,
            use_weight=use_weight, create_image_every=create_image_every,
            save_hypernetwork_every=save_hypernetwork_every, template=template,
            preview_from_txt2img=preview_from_txt2img, preview_prompt=preview_prompt,
            preview_negative_prompt=preview_negative_prompt, preview_steps=preview_steps,
            preview_sampler_name=preview_sampler_name, preview_cfg_scale=preview_cfg_scale, preview_seed=preview_seed,
            preview_width=preview_width, preview_height=preview_height, opts=shared.opts)
        with gate.turn():
            result = train_in_webui(shared, processing, devices, Path(path), settings, model_info())
        return result.network, str(result.output_path)

    return train_hypernetwork


def train_in_webui(shared, processing, devices, path: Path, settings: TrainingSettings, model_info: ModelInfo,
                   also: Callbacks | None = None, **train_options):
    """One training run inside the WebUI: its model, its attention, its progress and Interrupt. ``also``: callbacks
    that hear the run too (the Sweep tab's); ``train_options``: more of ``train``'s (``output_path``, ``log_dir``)."""
    progress = WebUIProgress(shared.state, settings.max_steps)
    callbacks = progress.callbacks() if also is None else combined(progress.callbacks(), also)
    adapter = model_adapter(shared, processing, devices)
    result = train(adapter, path, settings, callbacks=callbacks, model_info=model_info, **train_options)
    shared.reload_hypernetworks()
    return result


def trainable_names(listing: dict) -> list[str]:
    """Train_Gamma's choices: the WebUI lists sets beside networks for prompts, but sets do not train."""
    return sorted(name for name, path in listing.items() if not is_set_file(path))


def start_from_tab(shared, processing, devices, model_info, gate: TrainingGate, progress=None):
    """Train_Gamma's Train button: one run at a time, in turn with generation (``gate``), reporting under
    the page's task id so the WebUI's progress polling shows it (queued first while a generation runs)."""
    def start(name: str, settings: TrainingSettings, task_id: str | None = None) -> str:
        path = shared.hypernetworks.get(name)
        if not path:
            raise ConfigError("hypernetwork", f"{name!r} is not in the list; press refresh")
        if progress and task_id:
            progress.add_task_to_queue(task_id)
        try:
            with gate.turn():
                if progress and task_id:
                    progress.start_task(task_id)
                shared.state.begin(job="train-hypernetwork")
                try:
                    result = train_in_webui(shared, processing, devices, Path(path), settings, model_info())
                finally:
                    shared.state.end()
        finally:
            if progress and task_id:
                progress.finish_task(task_id)
        verb = "interrupted" if result.interrupted else "finished"
        return f"Training {verb} at step {result.steps_done}. Hypernetwork saved to {html.escape(str(result.output_path))}"
    return start


def make_ui_train_hypernetwork(shared, hypernetwork_module, gate: TrainingGate):
    """The Train tab's wrapper (``modules.hypernetworks.ui.train_hypernetwork``) without its defects:
    attention optimisations stay on (the plain one turns them off), and the hypernetworks the user
    had selected come back afterwards. Same reply: (message, error html). The WebUI calls it holding
    the queue lock."""

    def train_hypernetwork(*args):
        if getattr(shared.cmd_opts, "lowvram", False):
            raise ConfigError("hypernetwork", "Training is not possible with --lowvram; restart without it "
                                              "(--medvram works)")
        previous = list(shared.loaded_hypernetworks)
        try:
            with gate.caller_holds_queue_lock():
                trained, filename = hypernetwork_module.train_hypernetwork(*args)
        finally:
            shared.loaded_hypernetworks[:] = previous
        verb = "interrupted" if shared.state.interrupted else "finished"
        return f"Training {verb} at {trained.step} steps.\nHypernetwork saved to {html.escape(filename)}", ""

    return train_hypernetwork


def install(registry, hypernetwork_module, shared, processing, devices, templates, model_info, queue_lock) -> TrainingGate:
    """Replace the WebUI's training functions; returns the gate that Train_Gamma's button shares with them."""
    gate = TrainingGate(queue_lock)
    if not hasattr(hypernetwork_module, "train_hypernetwork"):
        return gate  # Forge: no training of its own to replace; Train_Gamma trains through the gate alone
    registry.replace(hypernetwork_module, "train_hypernetwork",
                     make_train_hypernetwork(shared, processing, devices, gate, templates, model_info),
                     "hypernetwork training runs on the extension's engine")
    try:
        from modules.hypernetworks import ui as hypernetworks_ui
    except ImportError:
        hypernetworks_ui = None
    registry.replace(hypernetworks_ui, "train_hypernetwork",
                     make_ui_train_hypernetwork(shared, hypernetwork_module, gate),
                     "training keeps attention optimisations on and restores the selected hypernetworks")
    bind_api_route(registry, hypernetwork_module)
    return gate


def bind_api_route(registry, hypernetwork_module) -> None:
    """The WebUI's HTTP API module imports ``train_hypernetwork`` by name once, when the first startup
    creates the API (after this extension's patches): after a UI reload it would still call the first
    load's replacement, with its own training gate. Its copy is replaced here too, with an undo that puts
    the WebUI's function back. Called at install (the API module exists on a reload) and from
    ``on_app_started`` (it exists by then on the first startup)."""
    api = sys.modules.get("modules.api.api")
    original = registry.original(hypernetwork_module, "train_hypernetwork")
    if api is None or original is None or not hasattr(api, "train_hypernetwork"):
        return
    if registry.original(api, "train_hypernetwork") is None:
        api.train_hypernetwork = original  # the copy it took of an earlier replacement, if any
    registry.replace(api, "train_hypernetwork", hypernetwork_module.train_hypernetwork,
                     "the HTTP training route calls the current training function")
