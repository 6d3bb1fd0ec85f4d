"""Run by the WebUI when it starts (the ``launch`` module is the WebUI's). Installs only what is missing;
the WebUI already ships torch, numpy, Pillow, safetensors and tqdm, so normally this installs nothing."""

import launch

REQUIRED = {"safetensors": "safetensors", "tqdm": "tqdm"}

for module, package in REQUIRED.items():
    if not launch.is_installed(module):
        launch.run_pip(f"install {package}", f"{package}, needed by the hypernetwork extension")
