"""The tabs, written once and hosted twice: inside the WebUI's Train tab and in the standalone app.

Handlers (plain functions from form values to results and per-field messages) are separate from the
Gradio layout, so they can be tested without a browser and reused by any host. Gradio is imported
only when a layout is built; nothing here imports the WebUI.
"""
