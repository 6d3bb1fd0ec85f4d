"""The standalone app: the same tabs as inside the WebUI, served by Gradio on 127.0.0.1."""

from __future__ import annotations

import html
import os
import queue
import threading
from pathlib import Path

from ..errors import ConfigError
from . import create_tab, generate_tab, sets_tab, sweep_tab, train_tab


class StandaloneTraining:
    """Train_Gamma's ``start`` in the app: one run at a time, in a worker thread, on the built-in model (or
    --model), streaming its status to the page while it runs; Interrupt stops it at the next step."""

    def __init__(self, folder: Path, model: str, model_config: str | None = None):
        self.folder, self.model, self.model_config = folder, model, model_config
        self.stop_requested = threading.Event()
        self.running = threading.Lock()  # held by the worker, so a page that went away cannot start a second run

    def interrupt(self):
        self.stop_requested.set()

    def start(self, name, settings, task_id=None):
        path = generate_tab.find_network(self.folder, name)
        if path is None:
            raise ConfigError("hypernetwork", f"{name} was not found in {self.folder}; press refresh")
        from ..train_cli import prepare_for_model
        prepared = prepare_for_model(self.model, path, settings)  # every input checked before the model loads
        if not self.running.acquire(blocking=False):
            raise ConfigError("hypernetwork", "Another training run is going; wait for it or press Interrupt")
        self.stop_requested.clear()
        status = train_tab.TrainingStatus(settings.max_steps, "Loading the model...")
        changes: queue.Queue = queue.Queue()
        outcome = {}
        threading.Thread(target=self._work, args=(path, settings, prepared, status, changes, outcome), daemon=True,
                         name="hypernetwork-training").start()
        yield status.html()
        while _next_change(changes):
            yield status.html()
        if "error" in outcome:
            raise outcome["error"]
        result, demonstration = outcome["result"], outcome["demonstration"]
        verb = "interrupted" if result.interrupted else "finished"
        note = " (demonstration model)" if demonstration else ""
        yield (f"Training {verb} at step {result.steps_done}{note}. Hypernetwork saved to "
               f"{html.escape(str(result.output_path))}" + status.html())

    def _work(self, path, settings, prepared, status, changes, outcome):
        from ..train_cli import load_adapter, model_info_of
        from ..training import train
        try:
            model_info = model_info_of(self.model)
            adapter, outcome["demonstration"] = load_adapter(self.model, "auto", self.model_config)
            outcome["result"] = train(adapter, path, settings, prepared=prepared, model_info=model_info,
                                      callbacks=status.callbacks(lambda: changes.put(True), self.stop_requested.is_set))
        except BaseException as error:  # handed to the page's thread, which reports it
            outcome["error"] = error
        finally:
            self.running.release()
            changes.put(None)


class StandaloneSweep:
    """The Sweep tab's ``run`` in the app: every combination checked, then the model (--model) loaded once and the
    combinations trained one after another; ``running`` is Train_Gamma's lock, so one training runs at a time.
    Interrupt stops the current combination at its next step and skips the rest."""

    def __init__(self, model: str, model_config: str | None, running: threading.Lock):
        self.model, self.model_config, self.running = model, model_config, running
        self.stop_requested = threading.Event()

    def interrupt(self):
        self.stop_requested.set()

    def run(self, plan, out_dir, overwrite, report):
        from ..train_cli import load_adapter, model_info_of, prepare_for_model
        from ..training import train
        from ..training.sweep import prepare_sweep, run_sweep
        prepared = prepare_sweep(plan, out_dir, lambda start, settings: prepare_for_model(self.model, start, settings),
                                 overwrite)
        if not self.running.acquire(blocking=False):
            raise ConfigError("sweep", "Another training run is going; wait for it or press Interrupt")
        try:
            self.stop_requested.clear()
            adapter, _ = load_adapter(self.model, "auto", self.model_config)
            model_info = model_info_of(self.model)

            def train_one(start, settings, output, log_dir, callbacks):
                return train(adapter, start, settings, output_path=output, log_dir=log_dir, callbacks=callbacks,
                             model_info=model_info)
            return run_sweep(prepared, train_one, should_stop=self.stop_requested.is_set, on_change=report)
        finally:
            self.running.release()


def _next_change(changes: queue.Queue) -> bool:
    """Waits for a change; False once the run has ended. Changes that queued up meanwhile become one update."""
    change = changes.get()
    while change is not None and not changes.empty():
        change = changes.get_nowait()
    return change is not None


def build_app(folder: str | Path, model: str = "tiny", model_config: str | None = None):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local tool
    import gradio as gr

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with gr.Blocks(title="Hypernetworks", analytics_enabled=False) as app:
        gr.Markdown(f"Hypernetworks are read from and written to `{folder.resolve()}`.")
        with gr.Tab("Create Beta hypernetwork", elem_id="hnext_create_tab"):
            create_tab.build(gr, lambda: str(folder), model_widths=lambda: _attention_widths(model))

        def names():
            return sorted(generate_tab.list_networks(folder))

        with gr.Tab("Train_Gamma", elem_id="hnext_train_tab"):
            training = StandaloneTraining(folder, model, model_config)
            tab = train_tab.build(gr, names, training.start)
            tab["interrupt"].click(fn=training.interrupt, inputs=[], outputs=[], queue=False)  # not behind the run
        with gr.Tab("Sweep", elem_id="hnext_sweep_tab"):
            sweeps = StandaloneSweep(model, model_config, training.running)
            tab = sweep_tab.build(gr, names, lambda name: generate_tab.find_network(folder, name), sweeps.run,
                                  model_widths=lambda: _attention_widths(model))
            tab["interrupt"].click(fn=sweeps.interrupt, inputs=[], outputs=[], queue=False)
        with gr.Tab("Sets and merges", elem_id="hnext_sets_tab"):
            sets_tab.build(gr, lambda: str(folder))
        with gr.Tab("Generate", elem_id="hnext_generate_tab"):
            generate_tab.build(gr, lambda: sorted(generate_tab.list_networks_and_sets(folder)),
                               generate_tab.make_generate(folder, _cached_adapter(model, model_config)))
    return app


def _attention_widths(model: str) -> tuple[int, ...] | None:
    """The attention widths of the app's model; None for a model that cannot be read (the Create tab then offers
    the default list, and training on it says what is wrong)."""
    from ..train_cli import model_attention_widths
    try:
        return model_attention_widths(model)
    except ConfigError:
        return None


def _cached_adapter(model: str, model_config: str | None = None):
    """The model for the Generate tab, loaded on first use."""
    cache = {}

    def get():
        if "adapter" not in cache:
            from ..train_cli import load_adapter
            cache["adapter"] = load_adapter(model, "auto", model_config)[0]
        return cache["adapter"]
    return get


def launch(folder: str | Path, port: int, block: bool = True, model: str = "tiny", model_config: str | None = None):
    app = build_app(folder, model, model_config)
    app.queue(**_queue_options()).launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=not block,
                       show_error=True, inbrowser=False)
    return app


def _queue_options() -> dict:
    """Gradio 3 has one queue worker for all events, so Create and Generate would wait for a whole training run;
    Gradio 4 already runs different events side by side."""
    import gradio as gr
    return {"concurrency_count": 4} if gr.__version__.startswith("3.") else {}
