"""STAND-IN of modules/sd_hijack.py: counts how often attention optimisations are undone/applied."""
calls = {"undo": 0, "apply": 0}


def undo_optimizations():
    calls["undo"] += 1


def apply_optimizations(option=None):
    calls["apply"] += 1
