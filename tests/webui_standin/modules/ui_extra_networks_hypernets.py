"""STAND-IN of modules/ui_extra_networks_hypernets.py (§2.9): one card per entry of shared.hypernetworks."""
import os

from modules import hashes, shared, ui_extra_networks


class ExtraNetworksPageHypernetworks(ui_extra_networks.ExtraNetworksPage):
    def __init__(self):
        super().__init__("Hypernetworks")

    def refresh(self):
        shared.reload_hypernetworks()

    def create_item(self, name, index=None):
        full_path = shared.hypernetworks.get(name)
        if full_path is None:
            return None
        path, _ = os.path.splitext(full_path)
        sha256 = hashes.sha256_from_cache(full_path, f"hypernet/{name}")
        return {"name": name, "filename": full_path, "shorthash": sha256[:10] if sha256 else None,
                "preview": self.find_preview(path), "description": self.find_description(path),
                "search_terms": [self.search_terms_from_path(path)],
                "prompt": ui_extra_networks.quote_js(f"<hypernet:{name}:") + " + opts.extra_networks_default_multiplier + "
                          + ui_extra_networks.quote_js(">"),
                "local_preview": f"{path}.preview.png", "sort_keys": {"default": index, **self.get_sort_keys(full_path)}}

    def list_items(self):
        for index, name in enumerate(list(shared.hypernetworks)):
            item = self.create_item(name, index)
            if item is not None:
                yield item

    def allowed_directories_for_previews(self):
        return [shared.cmd_opts.hypernetwork_dir]
