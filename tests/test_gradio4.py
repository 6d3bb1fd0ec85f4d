"""The same tabs build and serve under Gradio 4 (Forge's version), in the second environment dev/setup.sh
makes; Chromium (driven from this environment) creates a hypernetwork through the page Gradio 4 serves."""

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from browser import chromium_page, fill, free_port, screenshot, wait_for_text

PYTHON = Path(__file__).resolve().parent.parent / ".venv-gradio4" / "bin" / "python"
CHECK = Path(__file__).parent / "gradio4_app_check.py"


@pytest.fixture
def gradio4_python():
    if not PYTHON.exists():
        pytest.fail("no Gradio 4 environment: run `bash dev/setup.sh`, which makes .venv-gradio4", pytrace=False)
    return str(PYTHON)


def test_tabs_serve_under_gradio_4(gradio4_python):
    done = subprocess.run([gradio4_python, str(CHECK)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["gradio"].startswith("4.") and result["create"] and result["train"] and result["generate"]
    assert result["sweep"]
    assert result["sets"]


def test_create_in_the_browser_under_gradio_4(gradio4_python, tmp_path):
    folder, port = tmp_path / "hypernetworks", free_port()
    server = subprocess.Popen([gradio4_python, str(CHECK), "--serve", str(port), str(folder)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()[-2000:]
                assert time.monotonic() < deadline, "the Gradio 4 app did not start"
                time.sleep(0.3)
        with chromium_page() as page:
            page.goto(url)
            fill(page, {"hnext_create_name": "forge_net", "hnext_create_layers": "1, 2"})
            page.click("#hnext_create_button")
            wait_for_text(page, "hnext_create_layers_message", "must start and end with 1")  # beside the input
            fill(page, {"hnext_create_layers": "1, 2, 1"})
            page.click("#hnext_create_button")
            wait_for_text(page, "hnext_create_output", "Created:")
            screenshot(page, "gradio4_app_create_tab")
        assert (folder / "forge_net.pt").exists()
    finally:
        server.kill()
        server.wait()
