"""Reading and writing hypernetwork files: the WebUI's ``.pt``, its ``.optim`` sidecar, and ``.safetensors``.

Safety rules, kept in this one file:
* nothing is ever unpickled with a plain ``torch.load``: pickles go through torch's ``weights_only``
  unpickler, which builds tensors and plain containers and refuses everything else;
* every problem with a file surfaces as ``HypernetworkFileError`` with a readable reason;
* every write is atomic (temporary file in the same folder, fsync, rename), so a crash leaves the
  old file or the new one, never a broken one; the file gets the mode a plain write would give it
  (the umask's, or the mode of the file it replaces);
* ``.pt`` archives hold only the records the WebUI's own pickle check (``modules/safe.py``) accepts,
  whatever torch version wrote them.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import io
import json
import math
import os
import pickle
import re
import secrets
import stat
import time
import zipfile
from pathlib import Path
from typing import Any

import torch

from .config import DEFAULT_LAYER_STRUCTURE, HypernetworkConfig
from .errors import ConfigError, HypernetworkFileError
from .network import Hypernetwork
from .stack import SET_SUFFIXES, is_set_file

PT_SUFFIXES = (".pt", ".ckpt", ".pth")
SAFETENSORS_SUFFIX = ".safetensors"
NETWORK_SUFFIXES = (".pt", SAFETENSORS_SUFFIX)  # what the WebUI and the app list as hypernetworks
SAFETENSORS_FORMAT = "sd-hypernetwork"
SAFETENSORS_FORMAT_VERSION = 1
OPTIM_SUFFIX = ".optim"

# Records inside a torch zip archive that A1111 1.6-1.10.1's pickle check accepts (the oldest of
# those versions knows only data.pkl, data/N and version; torch reads an archive without the rest).
_WEBUI_RECORD = re.compile(r"^[^/]+/(data\.pkl|version|data/\d+)$")
_LEGACY_MARKERS = {"linear1.weight": "linear.0.weight", "linear1.bias": "linear.0.bias",
                   "linear2.weight": "linear.1.weight", "linear2.bias": "linear.1.bias"}


# --------------------------------------------------------------------------------------------
# Bytes on disk
# --------------------------------------------------------------------------------------------

def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that the file is always either the old or the new content."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(path)
        fd, tmp = _create_temporary(path)
    except OSError as error:
        raise HypernetworkFileError(path, f"cannot write here ({error.strerror or error}); nothing was changed") from error
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise HypernetworkFileError(path, f"writing failed ({error.strerror or error}); the previous file is unchanged") from error
    try:  # make the rename itself durable where the platform allows it
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _create_temporary(path: Path) -> tuple[int, str]:
    """A new temporary file beside ``path`` with the mode the finished file should have.

    ``tempfile.mkstemp`` makes files 0600, which after the rename would hide the file from other users, a
    container or a web server; a file created with 0666 gets what the umask allows, as any normal write. A
    file we replace keeps its own mode, which its owner may have chosen.
    """
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mode = None
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        if mode is not None:
            try:
                os.chmod(tmp, mode)
            except OSError:  # not ours to change (e.g. a file of another user in a shared folder)
                pass
        return fd, str(tmp)
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path.parent))


STALE_TEMPORARY_SECONDS = 3600


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary files of this target left by a process that was killed mid-write (an hour old or more)."""
    limit = time.time() - STALE_TEMPORARY_SECONDS
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            if leftover.stat().st_mtime < limit:
                leftover.unlink()
        except OSError:
            pass


def torch_pickle_bytes(obj: Any) -> bytes:
    """``torch.save`` output rewritten to hold only the records the WebUI's pickle check accepts.

    Current torch adds ``.format_version``, ``.storage_alignment``, ``byteorder`` and
    ``.data/serialization_id``; A1111 refuses archives with unknown records, and torch loads fine
    without them (little-endian data, which is what torch writes on every platform we support).
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for info in source.infolist():
            name = "archive/" + info.filename.split("/", 1)[1]
            if _WEBUI_RECORD.match(name):
                archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), source.read(info))
    return out.getvalue()


def read_torch_pickle(path: str | os.PathLike) -> Any:
    """Load a torch-pickled file without running any code from it."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as error:
        raise HypernetworkFileError(path, f"cannot be read ({error.strerror or error})") from error
    if size == 0:
        raise HypernetworkFileError(path, "the file is empty")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    # torch stores records uncompressed; a compressed one cannot be a torch file and
                    # refusing it also rules out decompression bombs.
                    if info.compress_type != zipfile.ZIP_STORED:
                        raise HypernetworkFileError(path, "not a torch file (it holds compressed records)")
        except HypernetworkFileError:
            raise
        except Exception as error:  # noqa: BLE001 - whatever a broken archive raises, the answer is the same
            raise HypernetworkFileError(path, "the file is truncated or damaged (broken zip archive)") from error
    try:
        # torch.serialization.load, not torch.load: the WebUI replaces torch.load with its own pickle
        # check, which prints a traceback for every file it refuses and then returns None
        return torch.serialization.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if found is None:
            raise HypernetworkFileError(path, "the file is truncated, damaged or not a torch file") from error
        raise HypernetworkFileError(
            path, f"refused: it contains objects that are not plain weights ({found.group(1)}); it may be "
                  f"malicious, so it was not loaded") from error
    except Exception as error:  # noqa: BLE001 - the loader's promise: one clear error type, never a crash
        raise HypernetworkFileError(path, "the file is truncated, damaged or not a torch file") from error


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shorthash(path: str | os.PathLike) -> str:
    """The WebUI's short hash of a hypernetwork file: the first 10 hex digits of its SHA-256."""
    return file_sha256(path)[:10]


def legacy_model_hash(path: str | os.PathLike) -> str:
    """The WebUI's old 8-hex ``model_hash``: SHA-256 of 64 KiB read at offset 1 MiB."""
    with open(path, "rb") as handle:
        handle.seek(0x100000)
        return hashlib.sha256(handle.read(0x10000)).hexdigest()[:8]


def listed_name(path: str | os.PathLike) -> str:
    """The name a hypernetwork or set file is listed and called by (``<hypernet:NAME>``): the file name
    without its type suffix. Dots and brackets belong to the name: ``v1.5-style.pt`` is ``v1.5-style``."""
    name = os.path.basename(path)
    for suffix in SET_SUFFIXES + NETWORK_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return os.path.splitext(name)[0]


def network_files(folder: str | os.PathLike, recursive: bool = False) -> dict[str, list[Path]]:
    """The ``.pt`` / ``.safetensors`` files in ``folder`` (and below, with ``recursive``) by listed name,
    in the WebUI's order (lower-cased path); one name can have several files (``x.pt`` and ``x.safetensors``)."""
    folder = Path(folder)
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    found: dict[str, list[Path]] = {}
    for path in sorted(candidates, key=lambda candidate: str(candidate).lower()):
        if path.name.lower().endswith(NETWORK_SUFFIXES) and path.is_file():
            found.setdefault(listed_name(path), []).append(path)
    return found


def check_free_name(path: str | os.PathLike) -> None:
    """A new file for the hypernetworks folder must not share its listed name with another network or set there
    or below: the WebUI lists one file per name, so one of the two would be hidden. (Replacing ``path`` itself is
    the caller's question: overwrite or not.)"""
    path = Path(path)
    name = listed_name(path)
    if not path.parent.is_dir():
        return
    for other in sorted(path.parent.rglob("*"), key=lambda candidate: str(candidate).lower()):
        if other.name.lower().endswith(NETWORK_SUFFIXES + SET_SUFFIXES) and listed_name(other) == name \
                and other != path and other.is_file():
            raise ConfigError("name", f"{name!r} is already the name of {other}; the WebUI lists one file per name, "
                                      f"so one would hide the other: choose another name")


# --------------------------------------------------------------------------------------------
# The WebUI's dict layout
# --------------------------------------------------------------------------------------------

def to_webui_dict(network: Hypernetwork) -> dict:
    """The dict ``Hypernetwork.save`` of the WebUI writes, with identical keys and module layouts."""
    c = network.config
    data: dict[Any, Any] = {}
    for size, (k_state, v_state) in network.module_state_dicts().items():
        data[size] = (_cpu_state(k_state), _cpu_state(v_state))
    data.update({
        "step": int(network.step),
        "name": network.name,
        "layer_structure": [float(x) for x in c.layer_structure],
        "activation_func": c.activation,
        "is_layer_norm": c.layer_norm,
        "weight_initialization": c.weight_init,
        "sd_checkpoint": network.sd_checkpoint,
        "sd_checkpoint_name": network.sd_checkpoint_name,
        "activate_output": c.activate_output,
        "use_dropout": any(x > 0 for x in c.dropout_structure),
        "dropout_structure": [float(x) for x in c.dropout_structure],
        "last_layer_dropout": c.dropout_structure[-2] != 0,
        "optional_info": network.optional_info or None,
        "weight_init_std": c.init_std,  # ours; the WebUI ignores keys it does not know
    })
    if c.residual:  # the old extension's keys; the plain WebUI cannot load these files anyway
        data["skip_connection"] = True
        data["upsample_linear"] = "Linear" if c.residual_shortcut == "linear" else None
    return data


def _cpu_state(state: dict) -> dict:
    from collections import OrderedDict
    return OrderedDict((key, t.detach().to("cpu").contiguous().clone()) for key, t in state.items())


def _legacy_dropout_structure(layer_structure, use_dropout: bool, last_layer_dropout: bool) -> list[float]:
    """How the WebUI rebuilds a dropout structure for files written before it stored one."""
    if not use_dropout:
        return [0.0] * len(layer_structure)
    return [0.0] + [0.3] * (len(layer_structure) - 3) + [0.3 if last_layer_dropout else 0.0] + [0.0]


def from_webui_dict(data: Any, path: str | os.PathLike, default_name: str | None = None) -> Hypernetwork:
    """Build a network from a loaded ``.pt`` dict (WebUI, old extension, or NovelAI layout)."""
    if not isinstance(data, dict):
        raise HypernetworkFileError(path, f"not a hypernetwork (the file holds a {type(data).__name__}, not a dict)")
    sizes = [key for key in data if isinstance(key, int) and not isinstance(key, bool)]
    if not sizes:
        if "state_dict" in data or any(isinstance(k, str) and k.startswith(("model.", "first_stage_model.", "cond_stage_model."))
                                       for k in data):
            raise HypernetworkFileError(path, "this is a Stable Diffusion checkpoint, not a hypernetwork")
        if "string_to_param" in data:
            raise HypernetworkFileError(path, "this is a textual-inversion embedding, not a hypernetwork")
        raise HypernetworkFileError(path, "not a hypernetwork: it has no module weights (integer width keys)")

    layer_structure = data.get("layer_structure") or list(DEFAULT_LAYER_STRUCTURE)
    use_dropout = bool(data.get("use_dropout", False))
    last_layer_dropout = bool(data.get("last_layer_dropout", False))
    dropout_structure = data.get("dropout_structure")
    try:
        if dropout_structure is None:
            dropout_structure = _legacy_dropout_structure(layer_structure, use_dropout, last_layer_dropout)
        config = HypernetworkConfig(
            sizes=tuple(sizes),
            layer_structure=tuple(_number_list(layer_structure, "layer_structure")),
            activation=data.get("activation_func"),
            weight_init=data.get("weight_initialization") or "Normal",
            init_std=_positive_or(data.get("weight_init_std"), 0.01),
            layer_norm=bool(data.get("is_layer_norm", False)),
            activate_output=bool(data.get("activate_output", True)),  # the WebUI's default for old files
            dropout_structure=tuple(_number_list(dropout_structure, "dropout_structure")),
            residual=bool(data.get("skip_connection", False)),
            residual_shortcut="linear" if data.get("upsample_linear") == "Linear" else "interpolate",
        )
    except ConfigError as error:
        raise HypernetworkFileError(path, f"unusable settings in the file: {error.message}") from error

    states = {}
    for size in sizes:
        pair = data[size]
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(isinstance(s, dict) for s in pair):
            raise HypernetworkFileError(path, f"module {size} is not a (key, value) pair of weight dicts")
        states[size] = tuple(_rename_legacy_keys(dict(state)) for state in pair)

    network = Hypernetwork(config, name=str(data.get("name") or default_name or Path(path).stem))
    _check_layout(network, states, path)
    network.pairs.to_empty(device="cpu")
    network.load_module_state_dicts(states)
    network.step = _int_or_zero(data.get("step"))
    network.sd_checkpoint = _str_or_none(data.get("sd_checkpoint"))
    network.sd_checkpoint_name = _str_or_none(data.get("sd_checkpoint_name"))
    network.optional_info = _str_or_none(data.get("optional_info"))
    return network.eval()


def _number_list(values, field: str) -> list[float]:
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ConfigError(field, f"{field} should be a list of numbers, got {values!r:.80}")
    return [float(v) for v in values]


def _rename_legacy_keys(state: dict) -> dict:
    """NovelAI's original files name the two layers ``linear1``/``linear2``."""
    return {_LEGACY_MARKERS.get(key, key): value for key, value in state.items()}


def _check_layout(network: Hypernetwork, states: dict, path) -> None:
    """Compare every key and shape before loading, so a mismatch is a sentence, not a traceback."""
    for size, pair_states in states.items():
        pair = network.pair_for(size)
        for which, module, state in (("key", pair.k, pair_states[0]), ("value", pair.v, pair_states[1])):
            expected = {key: tuple(t.shape) for key, t in module.state_dict().items()}
            for key, tensor in state.items():
                if not isinstance(tensor, torch.Tensor):
                    raise HypernetworkFileError(path, f"module {size} ({which}): {key} is not a tensor")
            missing = sorted(set(expected) - set(state))
            extra = sorted(set(state) - set(expected))
            if missing or extra:
                raise HypernetworkFileError(
                    path, f"module {size} ({which}) does not match its settings ({network.describe()}): "
                          + (f"missing {', '.join(missing)}" if missing else "")
                          + ("; " if missing and extra else "")
                          + (f"unexpected {', '.join(extra)}" if extra else ""))
            for key, shape in expected.items():
                if tuple(state[key].shape) != shape:
                    raise HypernetworkFileError(
                        path, f"module {size} ({which}): {key} has shape {list(state[key].shape)} but "
                              f"the settings ({network.describe()}) need {list(shape)}")
                if state[key].is_floating_point() and not torch.isfinite(state[key]).all():
                    raise HypernetworkFileError(path, f"module {size} ({which}): {key} contains NaN or infinite values")


def _int_or_zero(value) -> int:
    try:
        return int(value) if value is not None and math.isfinite(float(value)) else 0
    except (TypeError, ValueError):
        return 0


def _positive_or(value, default: float) -> float:
    """Optional numbers that only matter for creating new weights never make a file unloadable."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) and value > 0 else default


def _str_or_none(value) -> str | None:
    return None if value is None else str(value)


# --------------------------------------------------------------------------------------------
# safetensors: our documented form (see README "File formats")
# --------------------------------------------------------------------------------------------

def to_safetensors_bytes(network: Hypernetwork) -> bytes:
    from safetensors.torch import save

    tensors = {}
    for size, (k_state, v_state) in network.module_state_dicts().items():
        for which, state in (("k", k_state), ("v", v_state)):
            for key, tensor in state.items():
                tensors[f"{size}.{which}.{key}"] = tensor.detach().to("cpu").contiguous().clone()
    settings = {key: value for key, value in to_webui_dict(network).items() if not isinstance(key, int)}
    settings["sizes"] = list(network.config.sizes)
    metadata = {"format": SAFETENSORS_FORMAT, "format_version": str(SAFETENSORS_FORMAT_VERSION),
                "hypernetwork": json.dumps(settings, ensure_ascii=False)}
    return save(tensors, metadata=metadata)


def read_safetensors(path: str | os.PathLike) -> Hypernetwork:
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise HypernetworkFileError(path, f"cannot be read ({error.strerror or error})") from error
    if not raw:
        raise HypernetworkFileError(path, "the file is empty")
    try:
        header_len = int.from_bytes(raw[:8], "little")
        if len(raw) < 8 or header_len > len(raw) - 8:
            raise HypernetworkFileError(path, "the file is truncated or not a safetensors file")
        header = json.loads(raw[8:8 + header_len])
        metadata = header.get("__metadata__") or {}
        tensors = load(raw)
    except HypernetworkFileError:
        raise
    except (SafetensorError, ValueError, UnicodeDecodeError, AttributeError, OverflowError) as error:
        raise HypernetworkFileError(path, "the file is truncated, damaged or not a safetensors file") from error
    if metadata.get("format") != SAFETENSORS_FORMAT:
        raise HypernetworkFileError(path, f"not a hypernetwork (safetensors metadata 'format' is "
                                          f"{metadata.get('format')!r}, expected {SAFETENSORS_FORMAT!r})")
    version = metadata.get("format_version", "1")
    if not version.isdigit() or int(version) > SAFETENSORS_FORMAT_VERSION:
        raise HypernetworkFileError(path, f"written by a newer version of this extension (format {version}); please update")
    try:
        settings = json.loads(metadata.get("hypernetwork", "{}"))
    except json.JSONDecodeError as error:
        raise HypernetworkFileError(path, "its 'hypernetwork' metadata is not valid JSON") from error
    if not isinstance(settings, dict):
        raise HypernetworkFileError(path, "its 'hypernetwork' metadata is not a JSON object")
    data: dict[Any, Any] = dict(settings)
    sizes = settings.get("sizes")
    if not isinstance(sizes, list) or not all(isinstance(s, int) for s in sizes):
        raise HypernetworkFileError(path, "its metadata has no list of module sizes")
    for size in sizes:
        data[size] = ({}, {})
    for name, tensor in tensors.items():
        size_text, which, key = (name.split(".", 2) + ["", ""])[:3]
        if not size_text.isdigit() or int(size_text) not in data or which not in ("k", "v"):
            raise HypernetworkFileError(path, f"unexpected tensor {name!r}")
        data[int(size_text)][0 if which == "k" else 1][key] = tensor
    return from_webui_dict(data, path)


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------

def save(network: Hypernetwork, path: str | os.PathLike) -> Path:
    """Write ``network`` as ``.pt`` (WebUI layout) or ``.safetensors``, chosen by the extension."""
    path = Path(path)
    if path.suffix.lower() == SAFETENSORS_SUFFIX:
        data = to_safetensors_bytes(network)
    elif path.suffix.lower() in PT_SUFFIXES:
        data = torch_pickle_bytes(to_webui_dict(network))
    else:
        raise HypernetworkFileError(path, "choose a file name ending in .pt or .safetensors")
    atomic_write_bytes(path, data)
    return path


def load(path: str | os.PathLike) -> Hypernetwork:
    """Load any hypernetwork file we know. Raises ``HypernetworkFileError`` for every bad file."""
    path = Path(path)
    if not path.is_file():
        raise HypernetworkFileError(path, "no such file")
    if is_set_file(path):
        raise HypernetworkFileError(path, "this is a set of hypernetworks, not a single one "
                                          "(`inspect` lists its members)")
    try:
        if path.suffix.lower() == SAFETENSORS_SUFFIX:
            return read_safetensors(path)
        return from_webui_dict(read_torch_pickle(path), path)
    except HypernetworkFileError:
        raise
    except Exception as error:  # noqa: BLE001 - odd content (e.g. complex tensors) must not crash the caller
        raise HypernetworkFileError(path, f"unexpected content ({type(error).__name__}: {error})") from error


def load_by_file_name(path: str | os.PathLike) -> Hypernetwork:
    """``load``, the network named as its file is listed (``a.pt`` is ``a``) rather than by the name stored inside:
    the name the user chose it by, for messages and records such as a merge's."""
    network = load(path)
    network.name = listed_name(path)
    return network


def convert(source: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """``.pt`` <-> ``.safetensors``: same weights bit for bit, same metadata."""
    if Path(source).resolve() == Path(destination).resolve():
        raise HypernetworkFileError(destination, "the destination is the source file; choose another name")
    return save(load(source), destination)


# --------------------------------------------------------------------------------------------
# The optimizer sidecar: <file>.optim
# --------------------------------------------------------------------------------------------

def optimizer_sidecar_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + OPTIM_SUFFIX)


def save_optimizer_state(path: str | os.PathLike, optimizer_name: str, state_dict: dict) -> Path:
    """Write ``<path>.optim`` for the hypernetwork just written at ``path``, hashed as the WebUI does."""
    sidecar = optimizer_sidecar_path(path)
    data = {"optimizer_name": optimizer_name, "hash": shorthash(path), "optimizer_state_dict": state_dict}
    atomic_write_bytes(sidecar, torch_pickle_bytes(data))
    return sidecar


def load_optimizer_state(path: str | os.PathLike) -> tuple[str, dict] | None:
    """``(optimizer_name, state_dict)`` from ``<path>.optim`` if it belongs to this exact file, else None.

    A sidecar whose hash does not match (the hypernetwork was replaced) is ignored, as in the WebUI.
    """
    sidecar = optimizer_sidecar_path(path)
    if not sidecar.is_file():
        return None
    data = read_torch_pickle(sidecar)
    if not isinstance(data, dict) or not isinstance(data.get("optimizer_state_dict"), dict):
        raise HypernetworkFileError(sidecar, "not an optimizer state file")
    if data.get("hash") not in (shorthash(path), legacy_model_hash(path)):
        return None
    return str(data.get("optimizer_name") or "AdamW"), data["optimizer_state_dict"]
