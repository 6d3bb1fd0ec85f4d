"""STAND-IN of modules/extra_networks.py (webui-interfaces.md §2.8): the base class and the parameters of a
`<name:arg:...>` tag, as ExtraNetworkHypernet uses them."""


class ExtraNetworkParams:
    def __init__(self, items=None):
        self.items = items or []


class ExtraNetwork:
    def __init__(self, name):
        self.name = name
