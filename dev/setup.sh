#!/usr/bin/env bash
# Creates .venv with the project (editable), its test extras and the `ldm` package, on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]"
# stable-diffusion-sdkit pins its own torch; install it alone, without dependencies.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -c constraints.txt stable-diffusion-sdkit==2.1.5
# A second environment with Gradio 4 (Forge's version), where a test builds and serves the same tabs.
[ -x .venv-gradio4/bin/python ] || "$PYTHON" -m venv .venv-gradio4
.venv-gradio4/bin/python -m pip install -q --disable-pip-version-check -c constraints-gradio4.txt \
    torch gradio fastapi httpx huggingface_hub pydantic "numpy<2" safetensors tqdm Pillow
