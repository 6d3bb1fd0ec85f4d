"""STAND-IN of modules/patches.py (A1111 1.8+): named replacements of attributes with an undo."""

from collections import defaultdict

originals = defaultdict(dict)


def patch(key, obj, field, replacement):
    patch_key = (obj, field)
    if patch_key in originals[key]:
        raise RuntimeError(f"patch for {field} is already applied")
    original = getattr(obj, field)
    originals[key][patch_key] = original
    setattr(obj, field, replacement)
    return original


def original(key, obj, field):
    return originals[key].get((obj, field), None)


def undo(key, obj, field):
    patch_key = (obj, field)
    if patch_key not in originals[key]:
        raise RuntimeError(f"there is no patch for {field} to undo")
    setattr(obj, field, originals[key].pop(patch_key))
