"""The Hypernetworks card page (the extra-networks pages beside txt2img and img2img) where the WebUI
leaves it out.

A1111 and reForge register their own page, which lists ``shared.hypernetworks``; our listing fills that
with ``.pt``, ``.safetensors`` and set files, so nothing changes there. Forge ships the same page but
does not register it; there it is registered from ``on_before_ui`` (startup clears registrations made
earlier) and taken out again when scripts unload.
"""

from __future__ import annotations

import sys

PAGE_NAME = "hypernetworks"


def ensure_page(registry, log=None) -> bool:
    """Register the WebUI's Hypernetworks page unless it is there already; True when this added it."""
    log = log or (lambda text: print(text, file=sys.stderr))
    try:
        from modules import ui_extra_networks
    except ImportError:
        log("[hypernetwork-ext] this WebUI has no extra-networks pages; no Hypernetworks cards")
        return False
    pages = ui_extra_networks.extra_pages
    if any(getattr(page, "name", None) == PAGE_NAME for page in pages):
        return False
    try:
        from modules.ui_extra_networks_hypernets import ExtraNetworksPageHypernetworks
    except ImportError as error:
        log(f"[hypernetwork-ext] this WebUI has no Hypernetworks card page ({error}); no Hypernetworks cards")
        return False
    page = ExtraNetworksPageHypernetworks()
    ui_extra_networks.register_page(page)
    registry.record(lambda: page in pages and pages.remove(page), "the Hypernetworks card page")
    return True
