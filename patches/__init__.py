"""Everything that touches the WebUI's internals lives here, one patch per file, each registered with
an undo (through ``modules.patches`` where the WebUI has it, else ``registry.py``'s own record).
The library in ``hypernetwork_ext`` never imports the WebUI; these files adapt it.

The WebUI entry (``scripts/hypernetwork_ext_webui.py``) imports this folder under the unique name
``hypernetwork_ext_patches``, never as a bare ``patches``, so it cannot collide with another
extension's folder of that name.
"""
