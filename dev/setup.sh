#!/usr/bin/env bash
# Creates .venv with the project (editable), its test extras and the `ldm` package, on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]"
# stable-diffusion-sdkit pins its own torch; install it alone, without dependencies.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -c constraints.txt stable-diffusion-sdkit==2.1.5
# Debian's Chromium for the browser tests: Playwright drives it through executable_path (no browser download).
if [ ! -x /usr/bin/chromium ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
# A second environment with Gradio 4 (Forge's version), where a test builds and serves the same tabs.
[ -x .venv-gradio4/bin/python ] || "$PYTHON" -m venv .venv-gradio4
.venv-gradio4/bin/python -m pip install -q --disable-pip-version-check -c constraints-gradio4.txt \
    torch gradio fastapi httpx huggingface_hub pydantic "numpy<2" safetensors tqdm Pillow
