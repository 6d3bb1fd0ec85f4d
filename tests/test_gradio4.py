"""The same tabs build and serve under Gradio 4 (Forge), in the second environment dev/setup.sh makes."""

import json
import subprocess
from pathlib import Path

import pytest

PYTHON = Path(__file__).resolve().parent.parent / ".venv-gradio4" / "bin" / "python"


@pytest.mark.skipif(not PYTHON.exists(), reason="no Gradio 4 environment (dev/setup.sh makes it)")
def test_tabs_serve_under_gradio_4():
    done = subprocess.run([str(PYTHON), str(Path(__file__).parent / "gradio4_app_check.py")], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["gradio"].startswith("4.") and result["create"] and result["train"] and result["generate"]
