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


# test module -> the WebUIs it builds and starts (the forks' images are compared with A1111's)
REAL_WEBUI_MODULES = {"test_real_a1111.py": ("a1111",), "test_real_forks.py": ("a1111", "reforge", "forge")}


def pytest_collection_modifyitems(config, items):
    """The real-WebUI tests run last, and their WebUI builds meanwhile (minutes on a fresh checkout)."""
    real = [item for item in items if item.path.name in REAL_WEBUI_MODULES]
    items[:] = [item for item in items if item not in real] + real
    import real_webui
    kinds = {kind for item in real for kind in REAL_WEBUI_MODULES[item.path.name]}
    config.webui_builds, previous = {}, None
    for kind in real_webui.BUILD_SCRIPTS:  # in the order they are needed, one after the other
        if kind in kinds:
            config.webui_builds[kind] = previous = real_webui.Build(kind, after=previous)


def pytest_terminal_summary(terminalreporter, config):
    """The figures the real-WebUI tests measured in this run (pixel differences), printed after it."""
    for path in sorted((Path(__file__).parent / "artifacts").glob("real-*-figures.txt")):
        if path.stat().st_mtime >= config.started_at:
            terminalreporter.write_sep("-", path.stem)
            terminalreporter.write_line(path.read_text().rstrip())


@pytest.fixture(scope="session")
def a1111_build(request):
    """The A1111 build with this checkout installed, default settings and the test networks written."""
    import real_webui
    from real_webui_checks import write_lora, write_networks

    webui = request.config.webui_builds["a1111"].result()
    real_webui.install_extension(webui)
    write_networks(real_webui.fresh_state(webui))
    write_lora(webui.webui / "models" / "Lora")
    return webui


@pytest.fixture(scope="session")
def a1111_plain(a1111_build):
    """The plain A1111's reference images (rendered once per run, for A1111's tests and the forks')."""
    from real_webui_checks import plain_a1111_images
    return plain_a1111_images(a1111_build)


def pytest_unconfigure(config):
    for build in getattr(config, "webui_builds", {}).values():
        build.stop()
