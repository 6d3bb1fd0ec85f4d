"""The WebUI's ``/sdapi/v1/create/hypernetwork`` where a fork broke it: Forge's route calls a
``create_hypernetwork`` that its API module no longer imports (HTTP 500 on every request). There the
name is provided, taking the route's arguments (A1111's ``create_hypernetwork``) and creating the file
through Create Beta hypernetwork's validation; where the name exists (A1111, reForge) nothing changes.
"""

from __future__ import annotations

import sys

from hypernetwork_ext.ui.create_tab import CreateForm, create_from_form


def _text(value, default: str) -> str:
    """The route takes lists or comma-separated text for structures."""
    if value is None or value == "":
        return default
    return ", ".join(str(item) for item in value) if isinstance(value, (list, tuple)) else str(value)


def make_create_hypernetwork(folder, on_created):
    def create_hypernetwork(name, enable_sizes, overwrite_old=False, layer_structure=None, activation_func=None,
                            weight_init=None, add_layer_norm=False, use_dropout=False, dropout_structure=None):
        form = CreateForm(name=str(name or ""), sizes=[str(size) for size in enable_sizes or []],
                          layers=_text(layer_structure, "1, 2, 1"), activation=activation_func or "linear",
                          weight_init=weight_init or "Normal", layer_norm=bool(add_layer_norm),
                          use_dropout=bool(use_dropout), dropout=_text(dropout_structure, ""),
                          overwrite=bool(overwrite_old))
        outcome = create_from_form(form, folder())
        if outcome.path is None:  # the route answers an AssertionError with its text
            raise AssertionError("; ".join(outcome.errors.values()) or outcome.message)
        on_created()
        return str(outcome.path)
    return create_hypernetwork


def bind_create_route(registry, folder, on_created) -> None:
    """Called once the API module exists (``on_app_started``)."""
    api = sys.modules.get("modules.api.api")
    if api is None or hasattr(api, "create_hypernetwork"):
        return
    registry.add(api, "create_hypernetwork", make_create_hypernetwork(folder, on_created),
                 "create_hypernetwork for the HTTP create route (this fork no longer imports it)")
