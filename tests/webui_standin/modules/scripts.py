"""STAND-IN of modules/scripts.py: basedir() is the extension folder while one of its scripts imports."""
import importlib.util
from pathlib import Path

_current_basedir = None
WEBUI_ROOT = str(Path(__file__).resolve().parent.parent)


def basedir():
    return _current_basedir or WEBUI_ROOT


def load_extension_script(extension_root, relative="scripts/hypernetwork_ext_webui.py"):
    """Import one script file of an extension the way the WebUI does (by path, file name as module name)."""
    global _current_basedir
    path = Path(extension_root) / relative
    _current_basedir = str(extension_root)
    try:
        spec = importlib.util.spec_from_file_location(path.name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        _current_basedir = None


AlwaysVisible = object()


class Script:
    """STAND-IN of modules.scripts.Script: the hooks the extension uses."""

    def title(self):
        raise NotImplementedError

    def show(self, is_img2img):
        return True

    def after_extra_networks_activate(self, p, *args, **kwargs):
        pass

    def process_before_every_sampling(self, p, *args, **kwargs):
        pass
