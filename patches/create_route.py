"""The WebUI's ``/sdapi/v1/create/hypernetwork`` on Create Beta hypernetwork's validation and defaults.

Forge's route calls a ``create_hypernetwork`` that its API module no longer imports (HTTP 500 on every
request); A1111's and reForge's fail on a request without an activation or weight initialisation. The
route's function (taking A1111's ``create_hypernetwork`` arguments) creates the file as the Create tab
does, and a bad entry is answered with its message.
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
    """Called once the API module exists (``on_app_started``). Where the WebUI has the function (A1111,
    reForge) it is replaced too: theirs fails on a request that leaves out the activation or the weight
    initialisation (``KeyError: 'Key None is not defined as initialization!'``) and checks nothing else."""
    api = sys.modules.get("modules.api.api")
    if api is None:
        return
    create = make_create_hypernetwork(folder, on_created)
    if hasattr(api, "create_hypernetwork"):
        registry.replace(api, "create_hypernetwork", create,
                         "the HTTP create route checks its input as Create Beta hypernetwork does, with its defaults")
    else:
        registry.add(api, "create_hypernetwork", create,
                     "create_hypernetwork for the HTTP create route (this fork no longer imports it)")
