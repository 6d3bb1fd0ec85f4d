"""STAND-IN of modules/hypernetworks/ui.py §4.2: the Train tab's wrapper, which (in the plain WebUI)
turns attention optimisations off around training."""
from modules import sd_hijack, shared
from modules.hypernetworks import hypernetwork


def train_hypernetwork(*args):
    shared.loaded_hypernetworks = []
    assert not shared.cmd_opts.lowvram, "Training models with lowvram is not possible"
    try:
        sd_hijack.undo_optimizations()
        trained, filename = hypernetwork.train_hypernetwork(*args)
        return f"Training finished at {trained.step} steps.\nHypernetwork saved to {filename}", ""
    finally:
        sd_hijack.apply_optimizations()
