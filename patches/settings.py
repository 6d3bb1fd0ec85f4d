"""The extension's entries in the WebUI's Settings: the section "Hypernetwork extension", and "Hypernetwork
strength" beside the WebUI's own "Add hypernetwork to prompt"."""

from __future__ import annotations

SECTION = ("hypernetwork_ext", "Hypernetwork extension")
# the strength of the network that "Add hypernetwork to prompt" (option sd_hypernetwork) adds to every prompt
DROPDOWN_STRENGTH = "hypernetwork_ext_dropdown_strength"


def register(shared, served) -> None:
    """Called from ``on_ui_settings``: adds the options and applies their current values."""
    info = shared.OptionInfo
    shared.opts.add_option("hypernetwork_ext_fast_apply", info(
        True, "Fast hypernetwork application (fold linear networks, cache the text context)", section=SECTION))
    shared.opts.add_option("hypernetwork_ext_text_cache_size", info(
        8, "Conditioning tensors kept in the hypernetwork text-context cache", section=SECTION))
    _add_dropdown_strength(shared)

    def apply():
        served.applier.fast = bool(shared.opts.hypernetwork_ext_fast_apply)
        served.applier.cache_size = max(1, int(shared.opts.hypernetwork_ext_text_cache_size))
        served.applier.clear()

    for key in ("hypernetwork_ext_fast_apply", "hypernetwork_ext_text_cache_size"):
        if hasattr(shared.opts, "onchange"):
            shared.opts.onchange(key, apply, call=False)
    apply()


def _add_dropdown_strength(shared) -> None:
    """A slider from 0 to 2 (default: the WebUI's default multiplier of extra networks, which the dropdown
    uses without the extension), placed right after "Add hypernetwork to prompt", in its section."""
    import gradio as gr
    labels = shared.opts.data_labels
    beside = labels.get("sd_hypernetwork")
    default = float(getattr(shared.opts, "extra_networks_default_multiplier", 1.0))
    option = shared.OptionInfo(default, 'Hypernetwork strength (of the one "Add hypernetwork to prompt" adds)',
                               gr.Slider, {"minimum": 0.0, "maximum": 2.0, "step": 0.01},
                               section=beside.section if beside is not None else SECTION)
    shared.opts.add_option(DROPDOWN_STRENGTH, option)
    if beside is None:
        return
    ordered = {}
    for key, label in labels.items():  # the Settings page shows a section's options in this order
        if key != DROPDOWN_STRENGTH:
            ordered[key] = label
        if key == "sd_hypernetwork":
            ordered[DROPDOWN_STRENGTH] = option
    shared.opts.data_labels = ordered  # a new dict, as the WebUI's own reorder() makes one
