"""The Sweep tab inside the WebUI: every combination through the WebUI's training path (``train_in_webui``: its
model, attention, previews through txt2img, progress in ``shared.state``), the whole sweep as one turn of the
training gate, so one training runs at a time and generation waits until the sweep ends."""

from __future__ import annotations

from hypernetwork_ext.training.engine import prepare
from hypernetwork_ext.training.sweep import prepare_sweep, run_sweep

from .webui_training import TrainingGate, train_in_webui, webui_sampler_names


def run_from_tab(shared, processing, devices, model_info, gate: TrainingGate):
    """The Sweep tab's ``run``: every combination is checked before the gate is asked (a wrong input is reported
    at once, even while something else trains); Interrupt (``shared.state.interrupt()``) stops the current
    combination at its next step and skips the rest."""
    def run(plan, out_dir, overwrite, report):
        samplers = webui_sampler_names()
        prepared = prepare_sweep(plan, out_dir, lambda start, settings: prepare(start, settings,
                                                                                 preview_samplers=samplers), overwrite)
        with gate.turn():
            shared.state.begin(job="train-hypernetwork")
            try:
                def train_one(start, settings, output, log_dir, callbacks):
                    return train_in_webui(shared, processing, devices, start, settings, model_info(), also=callbacks,
                                          output_path=output, log_dir=log_dir)
                return run_sweep(prepared, train_one, should_stop=lambda: bool(shared.state.interrupted),
                                 on_change=report)
            finally:
                shared.state.end()
    return run
