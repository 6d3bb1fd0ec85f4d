"""Everything that touches the WebUI's internals lives here, one patch per file, each registered with
an undo (through ``modules.patches`` where the WebUI has it). The library in ``hypernetwork_ext``
never imports the WebUI; these files adapt it. (The patches themselves arrive with the WebUI
integration; see the README's status section.)"""
