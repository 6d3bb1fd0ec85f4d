"""Using several hypernetworks at once: stacks, named sets (weighted parallel mixes) and merges.

A *transform* maps the key and value inputs of attention, ``(k, v) -> (k', v')``, for one width.
Three kinds compose into any arrangement:

* ``Applied(network, strength)``: one network at a strength (``<hypernet:name:0.8>``);
* ``Sequence([...])``: each in order, as the WebUI applies a prompt's stack;
* ``Mix([(transform, weight), ...])``: a weighted parallel mix, weights normalised by their sum.

``Sequence`` and ``Mix`` are the runtime form of a named set (``*.hnset.json``, see README); the
fast applier (``applier.py``) folds any of them whose parts are affine into one matrix.
"""

from __future__ import annotations

import ast
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

import torch

from .errors import ConfigError, HypernetworkFileError
from .network import Hypernetwork

SET_SUFFIX = ".hnset.json"
SET_SUFFIXES = (SET_SUFFIX, ".hns")  # ours, and the old extension's
SET_FORMAT = "hypernetwork-set"
SET_FORMAT_VERSION = 1
MAX_SET_DEPTH = 16
SET_MODES = ("mix", "sequence")  # what a composed set is: a weighted parallel mix, or networks one after another


@dataclass(frozen=True, eq=False)
class Applied:
    network: Hypernetwork
    strength: float = 1.0

    def __call__(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pair = self.network.pair_for(k.shape[-1])
        if pair is None:
            return k, v
        return pair.k(k, self.strength), pair.v(v, self.strength)

    def networks(self):
        yield self.network


@dataclass(frozen=True, eq=False)
class Sequence:
    items: tuple["Transform", ...]
    strength: float = 1.0  # a set used as <hypernet:set:m> blends its whole effect: x + m * (set(x) - x)

    def __call__(self, k, v):
        k0, v0 = k, v
        for item in self.items:
            k, v = item(k, v)
        return _blend(k0, v0, k, v, self.strength)

    def networks(self):
        for item in self.items:
            yield from item.networks()


@dataclass(frozen=True, eq=False)
class Mix:
    items: tuple[tuple["Transform", float], ...]
    strength: float = 1.0

    def __call__(self, k, v):
        total = sum(weight for _, weight in self.items)
        out_k = out_v = None
        for item, weight in self.items:
            item_k, item_v = item(k, v)
            share = weight / total
            out_k = item_k * share if out_k is None else out_k + item_k * share
            out_v = item_v * share if out_v is None else out_v + item_v * share
        return _blend(k, v, out_k, out_v, self.strength)

    def networks(self):
        for item, _ in self.items:
            yield from item.networks()


Transform = Union[Applied, Sequence, Mix]


def _blend(k0, v0, k, v, strength):
    if strength == 1.0:
        return k, v
    return k0 + strength * (k - k0), v0 + strength * (v - v0)


def stack(entries) -> Sequence:
    """A prompt's stack ``[(network, strength), ...]``, applied in order as the WebUI does."""
    return Sequence(tuple(Applied(network, float(strength)) for network, strength in entries))


def apply_plain(transform: Transform | None, context_k: torch.Tensor, context_v: torch.Tensor | None = None):
    """The plain definition: key and value inputs after the transform. The fast applier must match it."""
    context_v = context_k if context_v is None else context_v
    if transform is None:
        return context_k, context_v
    return transform(context_k, context_v)


# --------------------------------------------------------------------------------------------
# Named sets: parsing (JSON, and the old extension's .hns literals) in one place
# --------------------------------------------------------------------------------------------

def parse_set(spec, field: str = "set", depth: int = 0) -> dict:
    """Validate a set node and return it normalised. Grammar (JSON):

    ``{"network": NAME, "strength": s}`` | ``{"sequence": [node, ...]}`` |
    ``{"mix": [{...node..., "weight": w}, ...]}``; ``sequence`` and ``mix`` nodes may carry a
    ``strength`` too. A bare string is ``{"network": string}``.
    """
    if depth > MAX_SET_DEPTH:
        raise ConfigError(field, f"the set is nested more than {MAX_SET_DEPTH} levels deep")
    if isinstance(spec, str):
        spec = {"network": spec}
    if not isinstance(spec, dict):
        raise ConfigError(field, f"{field}: expected an object or a name, got {type(spec).__name__}")
    kinds = [key for key in ("network", "sequence", "mix") if key in spec]
    if len(kinds) != 1:
        raise ConfigError(field, f"{field}: each entry needs exactly one of 'network', 'sequence' or 'mix'")
    strength = _number(spec.get("strength", 1.0), f"{field}.strength")
    kind = kinds[0]
    if kind == "network":
        name = spec["network"]
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(field, f"{field}: 'network' must be a hypernetwork name")
        return {"network": name, "strength": strength}
    items = spec[kind]
    if not isinstance(items, list) or not items:
        raise ConfigError(field, f"{field}: '{kind}' must be a non-empty list")
    if kind == "sequence":
        return {"sequence": [parse_set(item, f"{field}.sequence[{i}]", depth + 1) for i, item in enumerate(items)],
                "strength": strength}
    parsed = []
    for i, item in enumerate(items):
        label = f"{field}.mix[{i}]"
        weight = _number(item.get("weight", 1.0) if isinstance(item, dict) else 1.0, f"{label}.weight")
        if weight < 0:
            raise ConfigError(field, f"{label}: weight {weight:g} must not be negative")
        node = parse_set({k: v for k, v in item.items() if k != "weight"} if isinstance(item, dict) else item,
                         label, depth + 1)
        parsed.append({**node, "weight": weight})
    if sum(node["weight"] for node in parsed) <= 0:
        raise ConfigError(field, f"{field}: the mix weights add up to 0")
    return {"mix": parsed, "strength": strength}


def _number(value, label: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError("set", f"{label} must be a finite number, got {value!r}")
    return float(value)


def parse_hns(text: str) -> dict:
    """The old extension's ``.hns`` Python-literal grammar, read with ``ast.literal_eval`` (no code runs)."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError) as error:
        raise ConfigError("set", f"not a valid .hns structure ({error.__class__.__name__})") from None
    return parse_set(_hns_node(value, 0))


def _hns_node(value, depth: int):
    if depth > MAX_SET_DEPTH:
        raise ConfigError("set", f"the .hns structure is nested more than {MAX_SET_DEPTH} levels deep")
    if isinstance(value, str):
        if value[:1] in "[({":  # a quoted sub-structure (used as a dict key)
            try:
                return _hns_node(ast.literal_eval(value), depth + 1)
            except (ValueError, SyntaxError):
                raise ConfigError("set", f"not a valid .hns sub-structure: {value!r:.60}") from None
        return {"network": value}
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], (int, float)):
        return {**_hns_node(value[0], depth + 1), "strength": float(value[1])}
    if isinstance(value, (list, tuple)):
        items = [_hns_node(item, depth + 1) for item in value]
        return items[0] if len(items) == 1 else {"sequence": items}
    if isinstance(value, (set, frozenset)):
        items = [_hns_node(item, depth + 1) for item in sorted(value, key=repr)]
        return items[0] if len(items) == 1 else {"mix": [{**item, "weight": 1.0} for item in items]}
    if isinstance(value, dict):
        if len(value) == 1:
            (key, strength), = value.items()
            return {**_hns_node(key, depth + 1), "strength": float(strength)}
        return {"mix": [{**_hns_node(key, depth + 1), "weight": float(weight)} for key, weight in value.items()]}
    raise ConfigError("set", f"unexpected value in .hns structure: {value!r:.60}")


def is_set_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(SET_SUFFIXES)


def read_set_file(path: str | os.PathLike) -> dict:
    """Read a named set (``.hnset.json``, or an old ``.hns``) into its validated spec."""
    path = Path(path)
    if not path.is_file():
        raise HypernetworkFileError(path, "no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise HypernetworkFileError(path, f"cannot be read as UTF-8 text ({error})") from error
    try:
        if path.name.lower().endswith(".hns"):
            return parse_hns(text)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError("set", f"not valid JSON (line {error.lineno}: {error.msg})") from None
        if not isinstance(data, dict) or data.get("format") != SET_FORMAT:
            raise ConfigError("set", f"not a hypernetwork set (expected \"format\": \"{SET_FORMAT}\")")
        version = data.get("version", 1)
        if not isinstance(version, int) or version > SET_FORMAT_VERSION:
            raise ConfigError("set", f"written by a newer version of this extension (set version {version!r})")
        return parse_set({k: v for k, v in data.items() if k not in ("format", "version", "name", "description")})
    except ConfigError as error:
        raise HypernetworkFileError(path, error.message) from error


def write_set_file(path: str | os.PathLike, spec: dict, description: str = "") -> Path:
    from .files import atomic_write_bytes

    document = {"format": SET_FORMAT, "version": SET_FORMAT_VERSION, **parse_set(spec)}
    if description:
        document["description"] = description
    atomic_write_bytes(path, json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8"))
    return Path(path)


def compose_set(mode: str, entries: list[tuple[str, float]]) -> dict:
    """A set of networks by name, validated: a ``mix`` (each number the network's weight) or a ``sequence``
    (each number its strength)."""
    if mode not in SET_MODES:
        raise ConfigError("mode", f"A set is a {' or a '.join(SET_MODES)}, not {mode!r}")
    if not entries:
        raise ConfigError("members", "Choose at least one hypernetwork for the set")
    number = "weight" if mode == "mix" else "strength"
    return parse_set({mode: [{"network": name, number: value} for name, value in entries]})


def locate_members(spec: dict, folder: str | os.PathLike) -> dict[str, Path | None]:
    """Where each network a set names is, as the WebUI finds it: by name in the set's folder and below (of two
    files with one name, the later, as the WebUI's listing keeps); None for a name that is not there."""
    from .files import network_files

    available = network_files(folder, recursive=True)
    return {name: available[name][-1] if name in available else None for name in member_names(spec)}


def require_members(spec: dict, folder: str | os.PathLike) -> dict[str, Path]:
    """``locate_members``, when every member is there; else the message that names the missing ones."""
    found = locate_members(spec, folder)
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise ConfigError("members", f"no hypernetwork named {', '.join(map(repr, missing))} in {folder} or "
                                     f"below; a set finds its networks by name in its own folder")
    return found


def save_set(path: str | os.PathLike, spec: dict, description: str = "") -> Path:
    """Write the set ``spec`` as ``path`` (``<folder>/<name>.hnset.json``) once it is sure to be usable there: a
    valid name that no other file in the folder is listed by, and every member present in the folder. Whether an
    existing ``path`` may be replaced is the caller's question."""
    from .config import parse_name
    from .files import check_free_name, listed_name

    path = Path(path)
    if not path.name.lower().endswith(SET_SUFFIX):
        raise ConfigError("out", f"{path.name}: a set's file name ends in {SET_SUFFIX} (e.g. mystyle{SET_SUFFIX})")
    parse_name(listed_name(path))
    check_free_name(path)
    require_members(spec, path.parent)
    return write_set_file(path, spec, description)


def member_names(spec: dict) -> list[str]:
    """The networks a validated set spec names, each once, in the order they first appear."""
    names = [spec["network"]] if "network" in spec else []
    for item in spec.get("sequence", []) + spec.get("mix", []):
        names += [name for name in member_names(item) if name not in names]
    return names


def build_set(spec: dict, resolve: Callable[[str], Hypernetwork], strength: float = 1.0) -> Transform:
    """Turn a validated spec into a transform; ``resolve`` loads a network by name (and may cache)."""
    node_strength = spec.get("strength", 1.0) * strength
    if "network" in spec:
        return Applied(resolve(spec["network"]), node_strength)
    if "sequence" in spec:
        return Sequence(tuple(build_set(item, resolve) for item in spec["sequence"]), node_strength)
    return Mix(tuple((build_set(item, resolve), item["weight"]) for item in spec["mix"]), node_strength)


# --------------------------------------------------------------------------------------------
# Weight-space merge
# --------------------------------------------------------------------------------------------

def merge_weights_note(weights: list[float]) -> str:
    """What to tell the user about merge weights that are not an average (empty when they add up to 1)."""
    total = sum(weights)
    return "" if abs(total - 1) <= 1e-6 else f"the weights add up to {total:g}, not 1, so the result is not an average"


def merge(weighted: list[tuple[Hypernetwork, float]], name: str = "merged") -> Hypernetwork:
    """A new network whose every weight is ``sum(w_i * weight_i)``; the networks must share a structure."""
    if len(weighted) < 2:
        raise ConfigError("merge", "give at least two hypernetworks to merge")
    first = weighted[0][0]
    for network, weight in weighted:
        if not math.isfinite(weight):
            raise ConfigError("merge", f"weight for {network.name!r} must be a finite number")
        if network.config.__dict__ | {"init_std": 0, "weight_init": ""} != first.config.__dict__ | {"init_std": 0, "weight_init": ""}:
            raise ConfigError("merge", f"{network.name!r} ({network.describe()}, modules "
                                       f"{', '.join(map(str, network.sizes))}) does not have the structure of "
                                       f"{first.name!r} ({first.describe()}, modules {', '.join(map(str, first.sizes))})")
    merged = Hypernetwork(first.config, name)
    merged.pairs.to_empty(device="cpu")
    states = [network.state_dict() for network, _ in weighted]
    with torch.no_grad():
        result = {key: sum(state[key].double() * weight for state, (_, weight) in zip(states, weighted)).float()
                  for key in states[0]}
    merged.load_state_dict(result, assign=True)
    merged.optional_info = "merged from " + ", ".join(f"{n.name}:{w:g}" for n, w in weighted)
    return merged.requires_grad_(False).eval()
