"""The standalone app: the same tabs as inside the WebUI, served by Gradio on 127.0.0.1."""

from __future__ import annotations

import os
from pathlib import Path

from . import create_tab


def build_app(folder: str | Path):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local tool
    import gradio as gr

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with gr.Blocks(title="Hypernetworks", analytics_enabled=False) as app:
        gr.Markdown(f"Hypernetworks are read from and written to `{folder.resolve()}`.")
        with gr.Tab("Create Beta hypernetwork"):
            create_tab.build(gr, lambda: str(folder))
    return app


def launch(folder: str | Path, port: int, block: bool = True):
    app = build_app(folder)
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=not block,
                       show_error=True, inbrowser=False)
    return app
