"""STAND-IN of modules/script_callbacks.py: registration (both signatures) and dispatch."""
from collections import defaultdict

callbacks = defaultdict(list)


def _register(category, callback, name=None):
    callbacks[category].append(callback)


def on_script_unloaded(callback, *, name=None):
    _register("script_unloaded", callback, name)


def on_before_ui(callback, *, name=None):
    _register("before_ui", callback, name)


def on_ui_settings(callback, *, name=None):
    _register("ui_settings", callback, name)


def on_ui_train_tabs(callback, *, name=None):
    _register("ui_train_tabs", callback, name)


def on_ui_tabs(callback, *, name=None):
    _register("ui_tabs", callback, name)


def on_app_started(callback, *, name=None):
    _register("app_started", callback, name)


def on_model_loaded(callback, *, name=None):
    _register("model_loaded", callback, name)


def model_loaded_callback(sd_model):
    for callback in callbacks["model_loaded"]:
        callback(sd_model)


def app_started_callback(demo, app):
    for callback in callbacks["app_started"]:
        callback(demo, app)


def ui_settings_callback():
    for callback in callbacks["ui_settings"]:
        callback()


def script_unloaded_callback():
    for callback in reversed(callbacks["script_unloaded"]):
        callback()


def before_ui_callback():
    for callback in reversed(callbacks["before_ui"]):
        callback()


class UiTrainTabParams:
    def __init__(self, txt2img_preview_params):
        self.txt2img_preview_params = txt2img_preview_params


def ui_train_tabs_callback(params):
    for callback in callbacks["ui_train_tabs"]:
        callback(params)


def ui_tabs_callback():
    return [tab for callback in callbacks["ui_tabs"] for tab in (callback() or [])]


def clear_callbacks():
    callbacks.clear()
