"""Helpers for tests that load the extension into the WebUI stand-in (tests/webui_standin)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

STANDIN = Path(__file__).parent / "webui_standin"
EXTENSION_ROOT = Path(__file__).parent.parent


def standin_modules():
    if str(STANDIN) not in sys.path:
        sys.path.insert(0, str(STANDIN))
    from modules import devices, patches, script_callbacks, scripts, sd_hijack_optimizations, shared
    from modules.hypernetworks import hypernetwork
    return {"shared": shared, "patches": patches, "callbacks": script_callbacks, "scripts": scripts,
            "hypernetwork": hypernetwork, "devices": devices, "attention": sd_hijack_optimizations}


def reset(hypernetwork_dir: Path):
    m = standin_modules()
    m["callbacks"].clear_callbacks()
    m["patches"].originals.clear()
    m["shared"].hypernetworks.clear()
    m["shared"].loaded_hypernetworks.clear()
    for key in [k for k in m["shared"].opts.data if k.startswith("hypernetwork_ext_")]:
        m["shared"].opts.data.pop(key)
        m["shared"].opts.data_labels.pop(key, None)
    m["shared"].opts.data["sd_hypernetwork"] = "None"
    m["shared"].cmd_opts.hypernetwork_dir = str(hypernetwork_dir)
    m["shared"].cmd_opts.hypernetwork_ext_no_patches = False
    m["shared"].cmd_opts.textual_inversion_templates_dir = ""
    sys.modules.pop("hypernetwork_ext_patches", None)
    for name in [n for n in sys.modules if n.startswith("hypernetwork_ext_patches.")]:
        sys.modules.pop(name)
    return m


HYPERNETWORK_FUNCTIONS = ("list_hypernetworks", "load_hypernetwork", "load_hypernetworks", "apply_hypernetworks",
                          "apply_single_hypernetwork", "train_hypernetwork")


@contextlib.contextmanager
def standin_session(hypernetwork_dir: Path):
    """The stand-in reset for ``hypernetwork_dir``: ``(modules, the WebUI's own hypernetwork functions)``.
    Afterwards the extension is unloaded and each of those functions is back (a failed test must not leave
    patches behind)."""
    modules = reset(hypernetwork_dir)
    originals = {name: getattr(modules["hypernetwork"], name) for name in HYPERNETWORK_FUNCTIONS}
    try:
        yield modules, originals
    finally:
        unload_extension()
        for name, function in originals.items():
            setattr(modules["hypernetwork"], name, function)


def load_extension():
    return standin_modules()["scripts"].load_extension_script(EXTENSION_ROOT)


def unload_extension():
    standin_modules()["callbacks"].script_unloaded_callback()
