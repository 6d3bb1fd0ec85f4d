"""The record of every replacement this extension makes in the WebUI, with its undo.

Each replacement goes through the WebUI's ``modules.patches`` when it exists (A1111 1.8+), else
through an equivalent record kept here. Applying twice (a UI reload) replaces nothing twice, a
missing target is reported on the console instead of breaking startup, and ``undo_all`` puts every
original back.
"""

from __future__ import annotations

import sys
from typing import Callable

KEY = "hypernetwork_ext"


def _webui_patches():
    try:
        from modules import patches
        return patches
    except ImportError:
        return None


class PatchRegistry:
    def __init__(self, log=None):
        self.log = log or (lambda text: print(text, file=sys.stderr))
        self.applied: list[tuple[object, str, object]] = []  # (owner, attribute, original)
        self.other_undos: list[tuple[Callable[[], object], str]] = []  # (undo, what it undoes)

    def replace(self, owner, attribute: str, replacement, reason: str):
        """Replace ``owner.attribute``; returns the original, or None when the target is missing."""
        if owner is None or not hasattr(owner, attribute):
            self.log(f"[hypernetwork-ext] {getattr(owner, '__name__', owner)}.{attribute} not found in this "
                     f"WebUI; skipped: {reason}")
            return None
        already = self.original(owner, attribute)
        if already is not None:
            return already  # already in place (UI reload)
        webui = _webui_patches()
        if webui is not None:
            if webui.original(KEY, owner, attribute) is not None:
                webui.undo(KEY, owner, attribute)  # left over from an earlier load of this extension
            original = webui.patch(KEY, owner, attribute, replacement)
        else:
            original = getattr(owner, attribute)
            setattr(owner, attribute, replacement)
        self.applied.append((owner, attribute, original))
        return original

    def original(self, owner, attribute: str):
        """What ``owner.attribute`` was before this registry replaced it (None when it did not)."""
        for applied_owner, applied_attribute, original in self.applied:
            if applied_owner is owner and applied_attribute == attribute:
                return original
        return None

    def add(self, owner, attribute: str, value, reason: str) -> bool:
        """Provide an attribute the WebUI lacks (a fork removed a function that its own code still calls);
        the undo deletes it again. False when it exists (nothing is replaced here)."""
        if hasattr(owner, attribute):
            return False
        setattr(owner, attribute, value)
        self.record(lambda: vars(owner).get(attribute) is value and delattr(owner, attribute), reason)
        return True

    def record(self, undo: Callable[[], object], what: str) -> None:
        """A change that is not an attribute replacement (a registered page), with its undo."""
        self.other_undos.append((undo, what))

    def undo_all(self) -> None:
        for undo, _what in reversed(self.other_undos):
            undo()
        self.other_undos.clear()
        webui = _webui_patches()
        for owner, attribute, original in reversed(self.applied):
            if webui is not None and webui.original(KEY, owner, attribute) is not None:
                webui.undo(KEY, owner, attribute)
            else:
                setattr(owner, attribute, original)
        self.applied.clear()
