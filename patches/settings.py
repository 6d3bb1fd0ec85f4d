"""The extension's entries in the WebUI's Settings (section "Hypernetwork extension")."""

from __future__ import annotations

SECTION = ("hypernetwork_ext", "Hypernetwork extension")


def register(shared, served) -> None:
    """Called from ``on_ui_settings``: adds the options and applies their current values."""
    info = shared.OptionInfo
    shared.opts.add_option("hypernetwork_ext_fast_apply", info(
        True, "Fast hypernetwork application (fold linear networks, cache the text context)", section=SECTION))
    shared.opts.add_option("hypernetwork_ext_text_cache_size", info(
        8, "Conditioning tensors kept in the hypernetwork text-context cache", section=SECTION))

    def apply():
        served.applier.fast = bool(shared.opts.hypernetwork_ext_fast_apply)
        served.applier.cache_size = max(1, int(shared.opts.hypernetwork_ext_text_cache_size))
        served.applier.clear()

    for key in ("hypernetwork_ext_fast_apply", "hypernetwork_ext_text_cache_size"):
        if hasattr(shared.opts, "onchange"):
            shared.opts.onchange(key, apply, call=False)
    apply()
