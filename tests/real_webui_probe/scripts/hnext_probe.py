"""TEST PROBE, installed only by the real-WebUI tests (tests/real_webui.py), never by users: reports what
the hypernetwork extension replaced in the WebUI, so a test can see that a UI reload applies every patch
once and that unloading the scripts puts every original back. It changes nothing in the WebUI."""

import json
import os

from modules import patches, script_callbacks

KEY = "hypernetwork_ext"  # the extension's key in modules.patches
# This probe's folder name sorts before the extension's, so its unload callback is registered first and,
# the WebUI running those callbacks in reverse order, runs after the extension's own undo.
_patched = []  # (owner, attribute, the WebUI's original), taken once startup is complete


def _describe(owner, name):
    return f"{getattr(owner, '__name__', type(owner).__name__)}.{name}"


def _remember_patches():
    _patched[:] = [(owner, name, original) for (owner, name), original in patches.originals.get(KEY, {}).items()]


def _state():
    import sys
    from modules import shared
    _remember_patches()
    from modules.hypernetworks import hypernetwork
    api = sys.modules.get("modules.api.api")
    current = patches.originals.get(KEY, {})
    train_tab_callbacks = [c.script for c in script_callbacks.callback_map["callbacks_ui_train_tabs"]]
    return {
        "patched": sorted(_describe(owner, name) for (owner, name) in current),
        "originals_are_webui": all(getattr(original, "__module__", "").startswith("modules")
                                   for original in current.values()),
        "replacements_are_ours": all(getattr(getattr(owner, name), "__module__", "").startswith("hypernetwork_ext")
                                     for (owner, name) in current),
        "train_tab_callbacks": train_tab_callbacks,
        "hypernetworks": sorted(shared.hypernetworks),
        # the API module holds its own copy of train_hypernetwork (bound when it was imported)
        "api_trains_with_current_function": api is None or api.train_hypernetwork is hypernetwork.train_hypernetwork,
    }


def _on_unloaded():
    report = {
        "restored": all(getattr(owner, name) is original for owner, name, original in _patched),
        "not_restored": [_describe(owner, name) for owner, name, original in _patched
                         if getattr(owner, name) is not original],
        "checked": len(_patched),
        "left_in_registry": len(patches.originals.get(KEY, {})),
    }
    path = os.environ.get("HNEXT_PROBE_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps(report) + "\n")


def _on_app_started(_demo, app):
    _remember_patches()  # again at every state request: later app_started callbacks may patch more
    app.add_api_route("/hnext-probe/state", _state, methods=["GET"])


script_callbacks.on_script_unloaded(_on_unloaded)
script_callbacks.on_app_started(_on_app_started)
