import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # for the WebUI stand-in modules kept in tests/

from hypernetwork_ext import Hypernetwork, HypernetworkConfig  # noqa: E402

SMALL_SIZES = (48, 32)  # small widths keep tests fast; the code paths do not depend on the width


@pytest.fixture
def make_network():
    def make(seed=0, sizes=SMALL_SIZES, name="test", **config):
        config.setdefault("init_std", 0.05)  # larger than the default so outputs differ visibly from x
        return Hypernetwork.create(HypernetworkConfig(sizes=sizes, **config), name, seed=seed)
    return make


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(1234)



def pytest_sessionstart(session):
    session.config.started_at = time.time()


REAL_WEBUI_MODULES = {"test_real_a1111.py": "a1111"}  # test module -> the WebUI it builds and starts


def pytest_collection_modifyitems(config, items):
    """The real-WebUI tests run last, and their WebUI builds meanwhile (minutes on a fresh checkout)."""
    real = [item for item in items if item.path.name in REAL_WEBUI_MODULES]
    items[:] = [item for item in items if item not in real] + real
    import real_webui
    config.webui_builds = {kind: real_webui.Build(kind)
                           for kind in sorted({REAL_WEBUI_MODULES[item.path.name] for item in real})}


def pytest_terminal_summary(terminalreporter, config):
    """The figures the real-WebUI tests measured in this run (pixel differences), printed after it."""
    for path in sorted((Path(__file__).parent / "artifacts").glob("real-*-figures.txt")):
        if path.stat().st_mtime >= config.started_at:
            terminalreporter.write_sep("-", path.stem)
            terminalreporter.write_line(path.read_text().rstrip())


def pytest_unconfigure(config):
    for build in getattr(config, "webui_builds", {}).values():
        build.stop()
