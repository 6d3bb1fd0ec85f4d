"""STAND-IN of the WebUI parts that serve the Train tab to a browser, written from webui-interfaces.md
§1.8, §3.8 and §4.1; not the WebUI's code. What it keeps, because the extension relies on it:

* the page: a Train tab with ``gr.Tabs(elem_id="train_tabs")`` filled by the ``on_ui_train_tabs``
  callbacks, served with Gradio's queue on (A1111's ``demo.queue(64)``);
* ``POST /internal/progress`` (modules/progress.py): active/queued/completed from the task bookkeeping,
  progress = job_no / job_count (+ the sampling fraction), eta, textinfo, and the live preview when
  ``shared.state.id_live_preview`` differs from the request's;
* script injection (modules/ui_gradio_extensions.py): the page scripts, then every extension's
  ``javascript/*.js``, added to the ``<head>`` of Gradio's index page by wrapping its TemplateResponse.
"""

from __future__ import annotations

import base64
import contextlib
import io
import time
from pathlib import Path

from fastapi import Request

STANDIN_SCRIPTS = [Path(__file__).parent / "javascript" / "progressbar.js"]
STYLE = ("<style>.progressDiv{background:#eee;height:22px;overflow:hidden;white-space:nowrap}"
         ".progressDiv .progress{background:#f97316;color:#fff;height:22px;padding-left:4px}"
         ".livePreview img{max-width:128px}</style>")


def progress_response(id_task: str, id_live_preview: int = -1, live_preview: bool = True) -> dict:
    from modules import progress, shared
    active = id_task == progress.current_task
    queued = id_task in progress.pending_tasks
    completed = id_task in progress.finished_tasks
    if not active:
        return {"active": False, "queued": queued, "completed": completed, "progress": None, "eta": None,
                "live_preview": None, "id_live_preview": -1, "textinfo": "In queue..." if queued else "Waiting..."}
    state = shared.state
    fraction = 0.0
    if state.job_count > 0:
        fraction = state.job_no / state.job_count
        if state.sampling_steps > 0:
            fraction += state.sampling_step / state.sampling_steps / state.job_count
    fraction = min(fraction, 1.0)
    elapsed = time.time() - state.time_start
    eta = elapsed / fraction - elapsed if fraction > 0 else None
    preview = None
    if getattr(shared.opts, "live_previews_enable", True) and live_preview and state.current_image is not None \
            and state.id_live_preview != id_live_preview:
        preview, id_live_preview = _data_uri(state.current_image), state.id_live_preview
    return {"active": True, "queued": queued, "completed": completed, "progress": fraction, "eta": eta,
            "live_preview": preview, "id_live_preview": id_live_preview, "textinfo": state.textinfo}


def _data_uri(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def add_progress_api(app):
    async def internal_progress(request: Request):
        body = await request.json()
        return progress_response(body["id_task"], int(body.get("id_live_preview", -1)),
                                 bool(body.get("live_preview", True)))
    app.add_api_route("/internal/progress", internal_progress, methods=["POST"])


@contextlib.contextmanager
def injected_scripts(scripts: list[Path]):
    import gradio.routes
    templates = gradio.routes.templates
    original = templates.TemplateResponse
    head = STYLE + "".join(f"<script type='text/javascript'>{path.read_text()}</script>" for path in scripts)

    def template_response(*args, **kwargs):
        response = original(*args, **kwargs)
        response.body = response.body.replace(b"</head>", f"{head}</head>".encode("utf8"))
        response.init_headers()
        return response

    templates.TemplateResponse = template_response
    try:
        yield
    finally:
        templates.TemplateResponse = original


def train_page():
    import gradio as gr
    from modules import script_callbacks
    with gr.Blocks(analytics_enabled=False, title="Stable Diffusion (stand-in)") as page:
        with gr.Tab("Train", id="train"):
            with gr.Tabs(elem_id="train_tabs"):
                script_callbacks.ui_train_tabs_callback(script_callbacks.UiTrainTabParams([]))
    return page


@contextlib.contextmanager
def serve(port: int, extension_roots: list[Path]):
    """The Train tab on 127.0.0.1:port with the page scripts and the extensions' scripts; yields the URL."""
    scripts = STANDIN_SCRIPTS + [p for root in extension_roots for p in sorted((root / "javascript").glob("*.js"))]
    page = train_page()
    with injected_scripts(scripts):
        app, _, _ = page.queue(64).launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True)
        add_progress_api(app)
        try:
            yield f"http://127.0.0.1:{port}/"
        finally:
            page.close()
