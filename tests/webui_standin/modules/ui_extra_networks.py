"""STAND-IN of modules/ui_extra_networks.py (§1.2, §2.9): the card-page registry, cleared at startup."""
import os

extra_pages = []
HYPERNETWORKS_PAGE_BY_DEFAULT = True  # A1111 and reForge; Forge ships the page but does not register it


def quote_js(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def register_page(page):
    extra_pages.append(page)


def initialize():
    extra_pages.clear()


def register_default_pages():
    if HYPERNETWORKS_PAGE_BY_DEFAULT:
        from modules.ui_extra_networks_hypernets import ExtraNetworksPageHypernetworks
        register_page(ExtraNetworksPageHypernetworks())


class ExtraNetworksPage:
    def __init__(self, title):
        self.title = title
        self.name = title.lower()

    def refresh(self):
        pass

    def search_terms_from_path(self, filename):
        return os.path.basename(filename)

    def find_preview(self, path):
        return None

    def find_description(self, path):
        return None

    def get_sort_keys(self, path):
        return {"name": os.path.basename(path).lower(), "path": path.lower()}
