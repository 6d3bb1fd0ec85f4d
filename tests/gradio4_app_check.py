"""Run with the Gradio 4 environment's Python. Without arguments: builds and serves the app's tabs and prints
what /config holds. With `--serve PORT FOLDER`: serves the app there until killed (a browser test drives it)."""
import json
import socket
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gradio  # noqa: E402

from hypernetwork_ext.ui.app import launch  # noqa: E402

if sys.argv[1:2] == ["--serve"]:
    launch(sys.argv[3], int(sys.argv[2]), block=True)
    sys.exit(0)

with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
app = launch(tempfile.mkdtemp(), port, block=False)
try:
    config = urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=60).read().decode()
finally:
    app.close()
print(json.dumps({"gradio": gradio.__version__, "create": "Create Beta hypernetwork" in config,
                  "train": "Train_Gamma" in config, "generate": "hnext_generate_strength" in config,
                  "sweep": "hnext_sweep_run" in config,
                  "sets": "Sets and merges" in config and "hnext_sets_network_1" in config}))
