"""Run with the Gradio 4 environment's Python: builds and serves the app's tabs, prints what /config holds."""
import json
import socket
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gradio  # noqa: E402

from hypernetwork_ext.ui.app import launch  # noqa: E402

with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
app = launch(tempfile.mkdtemp(), port, block=False)
try:
    config = urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=60).read().decode()
finally:
    app.close()
print(json.dumps({"gradio": gradio.__version__, "create": "Create Beta hypernetwork" in config,
                  "train": "Train_Gamma" in config, "generate": "hnext_generate_strength" in config}))
