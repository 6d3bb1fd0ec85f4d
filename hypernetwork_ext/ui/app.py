"""The standalone app: the same tabs as inside the WebUI, served by Gradio on 127.0.0.1."""

from __future__ import annotations

import html
import os
from pathlib import Path

from . import create_tab, generate_tab, train_tab


def _start_training(folder: Path, model: str):
    """Standalone: train on the built-in model (or --model) and answer with the result and its chart."""
    def start(name, settings, task_id=None):
        import base64
        import io

        from ..train_cli import load_adapter
        from ..training import train
        from ..training.chart import render_chart
        path = next((p for p in sorted(folder.glob(f"{name}.*")) if p.suffix in (".pt", ".safetensors")), None)
        if path is None:
            return f"{html.escape(name)} was not found in {html.escape(str(folder))}"
        adapter, demonstration = load_adapter(model, "auto")
        result = train(adapter, path, settings)
        buffer = io.BytesIO()
        render_chart(result.losses).save(buffer, format="PNG")
        chart = base64.b64encode(buffer.getvalue()).decode("ascii")
        note = " (demonstration model)" if demonstration else ""
        return (f"Training finished at step {result.steps_done}{note}. Hypernetwork saved to "
                f"{html.escape(str(result.output_path))}<br><img src='data:image/png;base64,{chart}' style='max-width:100%'>")
    return start


def build_app(folder: str | Path, model: str = "tiny"):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local tool
    import gradio as gr

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with gr.Blocks(title="Hypernetworks", analytics_enabled=False) as app:
        gr.Markdown(f"Hypernetworks are read from and written to `{folder.resolve()}`.")
        with gr.Tab("Create Beta hypernetwork"):
            create_tab.build(gr, lambda: str(folder))
        def names():
            return sorted({p.name.split(".")[0] for p in folder.iterdir() if p.suffix in (".pt", ".safetensors")})

        with gr.Tab("Train_Gamma"):
            train_tab.build(gr, names, _start_training(folder, model))
        with gr.Tab("Generate"):
            generate_tab.build(gr, names, generate_tab.make_generate(folder, _cached_adapter(model)))
    return app


def _cached_adapter(model: str):
    """The model for the Generate tab, loaded on first use."""
    cache = {}

    def get():
        if "adapter" not in cache:
            from ..train_cli import load_adapter
            cache["adapter"] = load_adapter(model, "auto")[0]
        return cache["adapter"]
    return get


def launch(folder: str | Path, port: int, block: bool = True, model: str = "tiny"):
    app = build_app(folder, model)
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=not block,
                       show_error=True, inbrowser=False)
    return app
