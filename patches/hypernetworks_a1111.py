"""A1111 (1.6-1.10) and reForge's hypernetwork listing, loading and application, served by our library.

Replaces, in ``modules.hypernetworks.hypernetwork``: ``list_hypernetworks`` (also ``.safetensors`` and
set files), ``load_hypernetwork`` / ``load_hypernetworks`` (safe loading, beta and residual files,
sets, a cache by path and modification time, a clear console message and no half-loaded network
on a bad file), ``apply_single_hypernetwork`` and ``apply_hypernetworks`` (the fast applier).
Every attention optimisation of the WebUI calls ``apply_hypernetworks`` through the module, so
one replacement reaches all of them. And ``ExtraNetworkHypernet.activate`` in
``modules.extra_networks_hypernet``, so that the network the Settings dropdown "Add hypernetwork to
prompt" adds comes at the strength of our "Hypernetwork strength" setting.
"""

from __future__ import annotations

import glob
import os
import sys

import torch

from hypernetwork_ext import FastApplier, HypernetworkError, files
from hypernetwork_ext.stack import SET_SUFFIXES, Applied, Sequence, build_set, is_set_file, member_names, read_set_file

from .settings import DROPDOWN_STRENGTH


class LoadedHypernetwork:
    """What the WebUI keeps in ``shared.loaded_hypernetworks``: a network or a set, with a multiplier."""

    def __init__(self, name: str, filename: str, network=None, set_spec=None, resolve=None, hasher=None):
        self.name, self.filename = name, filename
        self.network, self.set_spec, self._resolve = network, set_spec, resolve
        self._hasher = hasher or files.shorthash
        self.multiplier = 1.0

    def set_multiplier(self, multiplier):
        self.multiplier = float(multiplier)
        return self

    def shorthash(self):
        return self._hasher(self.filename)

    def transform(self):
        if self.network is not None:
            return Applied(self.network, self.multiplier)
        return build_set(self.set_spec, self._resolve, strength=self.multiplier)


class WebUIHypernetworks:
    """The replacement functions, sharing one cache and one fast applier."""

    def __init__(self, shared, devices, log=None):
        self.shared, self.devices = shared, devices
        self.log = log or (lambda text: print(text, file=sys.stderr))
        self._cache: dict[str, tuple[float, object]] = {}  # path -> (mtime, network or set spec)
        self._hashes: dict[tuple[str, float], str] = {}  # (path, mtime) -> short hash
        self.applier = FastApplier()
        self._stack_key = None
        # width -> what still runs on the key/value inputs where the rest is folded into the attention's
        # projections (None: nothing); kept by attention_fold.AttentionFold, empty when nothing is folded
        self.unfolded_parts: dict[int, FastApplier | None] = {}

    # -- listing and loading ------------------------------------------------------------------

    def list_hypernetworks(self, path):
        """``{name: path}`` keyed by file stem, as the WebUI's listing and its prompt tags are; of two files
        with one stem the later path wins, as in the WebUI, and the console says which one is used."""
        found, shadowed = {}, {}
        patterns = [os.path.join(glob.escape(path), f"**/*{suffix}") for suffix in files.NETWORK_SUFFIXES + SET_SUFFIXES]
        paths = sorted({p for pattern in patterns for p in glob.glob(pattern, recursive=True)}, key=str.lower)
        for filename in paths:
            if filename.endswith(files.OPTIM_SUFFIX):
                continue
            name = files.listed_name(filename)
            if name == "None":
                continue
            if name in found:
                shadowed.setdefault(name, []).append(found[name])
            found[name] = filename
        for name, hidden in shadowed.items():
            self.log(f"[hypernetwork-ext] {name!r} names {' and '.join(hidden + [found[name]])}; "
                     f"<hypernet:{name}> uses {found[name]} (rename a file to use the other)")
        return found

    def _load_path(self, path: str):
        mtime = os.path.getmtime(path)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        if is_set_file(path):
            loaded = read_set_file(path)
        else:
            loaded = files.load(path).to(self.devices.device)
        self._cache[path] = (mtime, loaded)
        return loaded

    def _resolve(self, name: str):
        path = self.shared.hypernetworks.get(name)
        if path is None:
            raise HypernetworkError(f"the set names {name!r}, which is not in the hypernetworks folder")
        loaded = self._load_path(path)
        if isinstance(loaded, dict):
            raise HypernetworkError(f"{name!r} is a set; sets cannot contain sets by name")
        return loaded

    def load_hypernetwork(self, name):
        path = self.shared.hypernetworks.get(name)
        if path is None:
            return None
        try:
            loaded = self._load_path(path)
            if isinstance(loaded, dict):
                for member in member_names(loaded):
                    self._resolve(member)  # fail now, with the name, rather than during sampling
                return LoadedHypernetwork(name, path, set_spec=loaded, resolve=self._resolve, hasher=self.shorthash)
            return LoadedHypernetwork(name, path, network=loaded, hasher=self.shorthash)
        except (HypernetworkError, OSError) as error:
            self.log(f"[hypernetwork-ext] cannot load hypernetwork {name!r}: {error}")
            return None

    def load_hypernetworks(self, names, multipliers=None):
        loaded = []
        for index, name in enumerate(names):
            hypernetwork = self.load_hypernetwork(name)
            if hypernetwork is None:
                continue
            hypernetwork.set_multiplier(multipliers[index] if multipliers else 1.0)
            loaded.append(hypernetwork)
        self.shared.loaded_hypernetworks.clear()
        self.shared.loaded_hypernetworks.extend(loaded)

    def shorthash(self, path: str) -> str:
        """The WebUI's 10-hex hash of a file, computed once per file version (hashing reads it all)."""
        key = (path, os.path.getmtime(path))
        if key not in self._hashes:
            self._hashes[key] = files.shorthash(path)
        return self._hashes[key]

    # -- application ----------------------------------------------------------------------------

    def ours(self, hypernetworks, quietly: bool = False) -> list:
        """The entries of ``loaded_hypernetworks`` this extension loaded (others are named on the console,
        unless ``quietly``)."""
        return [h for h in hypernetworks if _is_ours(h, None if quietly else self.log)]

    def applier_for(self, hypernetworks):
        # keyed by the cached network objects, so folding happens once per network and strength,
        # not once per generation (the WebUI makes new list entries for every generation)
        key = tuple((id(h.network if h.network is not None else h.set_spec), h.multiplier) for h in hypernetworks)
        if key != self._stack_key:
            transform = Sequence(tuple(h.transform() for h in hypernetworks)) if hypernetworks else None
            self.applier.set_transform(transform)
            self._stack_key = key
        return self.applier

    def apply_hypernetworks(self, hypernetworks, context, layer=None):
        return apply_pair(self, hypernetworks, context, context)

    def apply_single_hypernetwork(self, hypernetwork, context_k, context_v, layer=None):
        if not _is_ours(hypernetwork, self.log):
            return context_k, context_v
        return _in_float32(FastApplier(hypernetwork.transform()), context_k, context_v)


def apply_pair(served: WebUIHypernetworks, hypernetworks, context_k, context_v):
    """Key and value inputs after the loaded stack (the WebUI's ``apply_hypernetworks``, with separate inputs);
    at a width folded into the projections, only the part that is not."""
    hypernetworks = served.ours(hypernetworks)
    if not hypernetworks:
        return context_k, context_v
    applier = served.applier_for(hypernetworks)
    width = context_k.shape[-1]
    if width in served.unfolded_parts:
        applier = served.unfolded_parts[width]
        if applier is None:
            return context_k, context_v
    return _in_float32(applier, context_k, context_v)


def _is_ours(hypernetwork, log) -> bool:
    if isinstance(hypernetwork, LoadedHypernetwork):
        return True
    if log is not None:
        log(f"[hypernetwork-ext] ignoring {type(hypernetwork).__name__} in loaded_hypernetworks: it was not loaded "
            f"through this extension")
    return False


def _in_float32(applier, context_k, context_v):
    """Hypernetwork weights are float32 (as in the WebUI); half-precision contexts go through in float32."""
    dtype = context_k.dtype
    if dtype == torch.float32:
        return applier(context_k, context_v)
    k, v = applier(context_k.float(), context_v.float() if context_v is not context_k else None)
    return k.to(dtype), v.to(dtype)


def generation_info(hypernetworks) -> str:
    """``name: hash`` for each applied hypernetwork, for the image's generation parameters."""
    return ", ".join(f"{h.name}: {h.shorthash()}" for h in hypernetworks if isinstance(h, LoadedHypernetwork))


def with_dropdown_strength(webui_activate, shared, extra_networks):
    """``ExtraNetworkHypernet.activate`` with the network of "Add hypernetwork to prompt" (``sd_hypernetwork``)
    added at the "Hypernetwork strength" setting. The WebUI adds it as ``<hypernet:name:default multiplier>`` to
    each prompt (the infotext keeps it) unless the prompt names it already; here it is added the same way at
    our strength first, so the WebUI's own code finds it named and goes on unchanged. At the default multiplier
    nothing differs from the WebUI. ``webui_activate()`` gives the WebUI's function (looked up at each call, so
    that it is the WebUI's own even after a UI reload)."""
    def activate_at_strength(self, p, params_list):
        opts = shared.opts
        chosen = getattr(opts, "sd_hypernetwork", "None")
        strength = getattr(opts, DROPDOWN_STRENGTH, None)
        default = getattr(opts, "extra_networks_default_multiplier", 1.0)
        if (strength is not None and float(strength) != float(default) and chosen != "None"
                and chosen in shared.hypernetworks and not any(params.items[0] == chosen for params in params_list)):
            p.all_prompts = [f"{prompt}<hypernet:{chosen}:{strength}>" for prompt in p.all_prompts]
            params_list.append(extra_networks.ExtraNetworkParams(items=[chosen, strength]))
        return webui_activate()(self, p, params_list)
    return activate_at_strength


def install(registry, hypernetwork_module, shared, devices) -> WebUIHypernetworks:
    """Put the replacements in place through ``registry``; returns the object that serves them."""
    served = WebUIHypernetworks(shared, devices, log=registry.log)
    for attribute in ("list_hypernetworks", "load_hypernetwork", "load_hypernetworks",
                      "apply_single_hypernetwork", "apply_hypernetworks"):
        registry.replace(hypernetwork_module, attribute, getattr(served, attribute),
                         "hypernetworks are listed, loaded and applied by the extension")
    try:
        from modules import extra_networks, extra_networks_hypernet
    except ImportError:
        extra_networks_hypernet = None
    if extra_networks_hypernet is not None:
        tag = extra_networks_hypernet.ExtraNetworkHypernet
        webui_activate = lambda: registry.original(tag, "activate")  # noqa: E731
        registry.replace(tag, "activate", with_dropdown_strength(webui_activate, shared, extra_networks),
                         'the network of "Add hypernetwork to prompt" comes at the "Hypernetwork strength" setting')
    if hasattr(shared, "reload_hypernetworks"):
        shared.reload_hypernetworks()
    return served
