"""``python -m hypernetwork_ext``: create, inspect, convert, merge, set; train and demo (see ``train_cli.py``);
sweep (``sweep_cli.py``).

Every user error ends the program with exit status 2 and one line on stderr starting with ``error:``.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from . import files
from .config import DEFAULT_SIZES, HypernetworkConfig, activation_names, INIT_MODES, parse_name
from .errors import HypernetworkError
from .network import Hypernetwork
from .stack import (SET_SUFFIX, compose_set, is_set_file, locate_members, member_names, merge, merge_weights_note,
                    read_set_file, save_set)


class UserError(Exception):
    pass


class _Help(argparse.HelpFormatter):
    """Each option's default after its help (unless the help says it already); lines never broken inside a flag."""

    def _get_help_string(self, action):
        text = action.help or ""
        if not action.option_strings or "default" in text or action.default in (None, False, "", argparse.SUPPRESS):
            return text
        return f"{text} (default: {action.default})"

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

    def error(self, message):  # argparse prints usage plus a line; we promise exactly one line
        raise UserError(message)


def _create(args) -> None:
    name = parse_name(args.name)
    if args.model is not None and args.sizes is not None:
        raise UserError("give --sizes or --model, not both: --model takes the sizes from the model")
    if args.model is not None:
        from .train_cli import model_attention_widths
        sizes = ",".join(map(str, model_attention_widths(args.model)))
    else:
        sizes = args.sizes if args.sizes is not None else ",".join(map(str, DEFAULT_SIZES))
    config = HypernetworkConfig.from_text(
        sizes=sizes, layers=args.layers, activation=args.activation, weight_init=args.init,
        init_std=args.std, layer_norm=args.layer_norm, activate_output=args.activate_output,
        dropout=args.dropout, residual=args.residual, residual_shortcut=args.residual_shortcut)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} already exists; pass --overwrite to replace it")
    network = Hypernetwork.create(config, name, seed=args.seed, optional_info=args.info)
    files.save(network, out)
    print(f"Created {out} ({network.describe()}; modules {', '.join(map(str, config.sizes))}; "
          f"{config.parameter_count():,} parameters)")
    for problem in config.plain_webui_problems():
        print(f"note: {problem}")


def _inspect(args) -> None:
    if is_set_file(args.path):
        return _inspect_set(args)
    network = files.load(args.path)
    path = Path(args.path)
    problems = network.config.plain_webui_problems()
    if path.suffix.lower() == files.SAFETENSORS_SUFFIX:
        problems.append("the plain WebUI reads only .pt files (convert it with `convert`)")
    c = network.config
    report = {
        "path": str(path), "name": network.name, "sizes": list(c.sizes),
        "layer_structure": list(c.layer_structure), "activation": c.activation,
        "weight_init": c.weight_init, "layer_norm": c.layer_norm, "activate_output": c.activate_output,
        "dropout_structure": list(c.dropout_structure), "residual": c.residual,
        "parameters": c.parameter_count(), "step": network.step,
        "sd_checkpoint": network.sd_checkpoint, "sd_checkpoint_name": network.sd_checkpoint_name,
        "optional_info": network.optional_info, "hash": files.shorthash(path),
        "plain_webui_loadable": not problems, "plain_webui_problems": problems,
        "optimizer_state": files.load_optimizer_state(path) is not None,
    }
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return
    print(f"{report['name']}  ({path})")
    print(f"  structure      {network.describe()}")
    print(f"  modules        {', '.join(map(str, c.sizes))}")
    print(f"  parameters     {report['parameters']:,}")
    print(f"  step           {network.step}")
    trained_on = network.sd_checkpoint_name or "-"
    if network.sd_checkpoint:
        trained_on += f" [{network.sd_checkpoint}]"
    print(f"  trained on     {trained_on}")
    print(f"  hash           {report['hash']}")
    print(f"  optimizer      {'saved state matches this file' if report['optimizer_state'] else 'none'}")
    print(f"  plain WebUI    {'can load it' if not problems else 'cannot load it: ' + '; '.join(problems)}")
    if network.optional_info:
        print(f"  info           {network.optional_info}")


def _inspect_set(args) -> None:
    """A set names other networks; they are looked up as the WebUI would, by name, in the set's folder and below."""
    path = Path(args.path)
    spec = read_set_file(path)
    members = [{"name": name, "present": found is not None, "path": str(found) if found else None}
               for name, found in locate_members(spec, path.parent).items()]
    mode = next(kind for kind in ("network", "sequence", "mix") if kind in spec)
    report = {"path": str(path), "name": files.listed_name(path), "kind": "set", "mode": mode,
              "strength": spec["strength"], "set": spec, "members": members,
              "all_members_present": all(member["present"] for member in members)}
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return
    print(f"{report['name']}  ({path})")
    print("  set of hypernetworks (it applies them; it cannot be trained)")
    for line in _set_lines(spec, "    "):
        print(line)
    missing = [member["name"] for member in members if not member["present"]]
    if missing:
        listed = ", ".join(name + (f" (missing from {path.parent})" if name in missing else "")
                           for name in member_names(spec))
    else:
        listed = f"{', '.join(member_names(spec))}: all present in {path.parent}"
    print(f"  members        {listed}")


def _set_lines(node: dict, indent: str) -> list[str]:
    """One line per node of a set, children indented under their sequence or mix."""
    numbers = [f"weight {node['weight']:g}"] if "weight" in node else []
    numbers += [f"strength {node['strength']:g}"] if node["strength"] != 1 or "network" in node else []
    if "network" in node:
        return [f"{indent}{node['network']}  {', '.join(numbers)}"]
    kind = "sequence" if "sequence" in node else "mix"
    children = node[kind]
    head = f"{indent}{kind} of {len(children)}"
    head += f" at strength {node['strength']:g}" if node["strength"] != 1 else ""
    head += f", weight {node['weight']:g}" if "weight" in node else ""
    return [head] + [line for child in children for line in _set_lines(child, indent + "  ")]


def _convert(args) -> None:
    destination = Path(args.destination)
    if destination.exists() and not args.overwrite:
        raise UserError(f"{destination} already exists; pass --overwrite to replace it")
    files.convert(args.source, destination)
    print(f"Wrote {destination}")


def _parse_weighted(item: str, default: float, number: str = "WEIGHT") -> tuple[str, float]:
    """``PATH:NUMBER`` (``a.pt:0.5``); without a number, ``default``."""
    path, sep, weight = item.rpartition(":")
    if not sep or not path or "/" in weight or "\\" in weight:
        return item, default
    try:
        return path, float(weight)
    except ValueError:
        raise UserError(f"{number.lower()} {weight!r} in {item!r} is not a number; write PATH:{number}, "
                        f"e.g. a.pt:0.5") from None


def _merge(args) -> None:
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} already exists; pass --overwrite to replace it")
    weighted = [_parse_weighted(item, 1.0 / len(args.inputs)) for item in args.inputs]
    networks = [(files.load_by_file_name(path), weight) for path, weight in weighted]
    name = parse_name(args.name or out.name.split(".")[0])
    merged = merge(networks, name)
    files.save(merged, out)
    weights = [weight for _, weight in weighted]
    print(f"Merged {len(networks)} hypernetworks into {out} (weights add up to {sum(weights):g})")
    if merge_weights_note(weights):
        print(f"note: {merge_weights_note(weights)}")


def _set(args) -> None:
    """A set names its networks; a member given as a file (``a.pt``, ``sub/a.safetensors``) is named by its file name."""
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} already exists; pass --overwrite to replace it")
    mode, items = ("mix", args.mix) if args.mix else ("sequence", args.sequence)
    number = "WEIGHT" if mode == "mix" else "STRENGTH"
    entries = [_parse_weighted(item, 1.0, number) for item in items]
    spec = compose_set(mode, [(_member_name(member), value) for member, value in entries])
    save_set(out, spec, args.description or "")
    print(f"Wrote {out}: use it as <hypernet:{files.listed_name(out)}:1>")
    for line in _set_lines(spec, "  "):
        print(line)


def _member_name(text: str) -> str:
    """The name a set uses for a member: a file's listed name, or the text itself when it is a bare name (which
    may hold dots: ``v1.5-style``)."""
    base = Path(text).name
    return files.listed_name(base) if base.lower().endswith(files.NETWORK_SUFFIXES) else base


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m hypernetwork_ext", description="Create, inspect, convert, merge and combine "
                     "Stable Diffusion hypernetworks (A1111-compatible .pt and .safetensors, named sets).")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    create = commands.add_parser("create", help="create a new hypernetwork file")
    create.add_argument("name", help="hypernetwork name (any language; no path separators)")
    create.add_argument("--out", required=True, metavar="PATH", help="file to write: .pt (WebUI) or .safetensors")
    create.add_argument("--sizes", default=None, metavar="WIDTHS",
                        help="comma-separated attention widths that get modules (default: "
                             f"{','.join(map(str, DEFAULT_SIZES))}, every width of SD 1.x and 2.x)")
    create.add_argument("--model", default=None, metavar="MODEL",
                        help="take the sizes from this model: tiny (the built-in demonstration model), a diffusers "
                             "folder or a .safetensors/.ckpt checkpoint (its weights are not loaded)")
    create.add_argument("--layers", default="1, 2, 1", metavar="LIST",
                        help='layer structure: width multipliers, first and last 1, e.g. "1, 2, 1"')
    create.add_argument("--activation", default="linear", metavar="NAME",
                        help="activation between layers, one of: " + ", ".join(activation_names()))
    create.add_argument("--init", default="Normal", metavar="NAME", help="weight initialisation, one of: " + ", ".join(INIT_MODES))
    create.add_argument("--std", default="0.01", metavar="X", help="standard deviation of the Normal initialisation")
    create.add_argument("--layer-norm", action="store_true", help="add layer normalisation after each layer")
    create.add_argument("--activate-output", action="store_true", help="apply the activation after the last layer too")
    create.add_argument("--dropout", default="", metavar="LIST",
                        help='dropout rate per layer-structure entry, e.g. "0, 0.3, 0" (default: no dropout)')
    create.add_argument("--residual", action="store_true", help="residual (skip-connection) blocks; the plain WebUI cannot load these")
    create.add_argument("--residual-shortcut", default="interpolate", choices=["interpolate", "linear"],
                        help="residual only: how a block changes width on its shortcut")
    create.add_argument("--seed", type=int, default=None, metavar="N",
                        help="seed for a reproducible initialisation (default: a different one each time)")
    create.add_argument("--info", default=None, metavar="TEXT", help="free text stored in the file (default: none)")
    create.add_argument("--overwrite", action="store_true", help="replace an existing file")
    create.set_defaults(run=_create)

    inspect_ = commands.add_parser("inspect", help="show what a hypernetwork or set file holds")
    inspect_.add_argument("path", help="a .pt or .safetensors hypernetwork file, or a .hnset.json / .hns set")
    inspect_.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    inspect_.set_defaults(run=_inspect)

    convert = commands.add_parser("convert", help="convert between .pt and .safetensors")
    convert.add_argument("source", help="the hypernetwork file to read (.pt or .safetensors)")
    convert.add_argument("destination", help="the file to write; its suffix (.pt or .safetensors) picks the format")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    convert.set_defaults(run=_convert)

    merge_ = commands.add_parser("merge", help="weight-space merge of hypernetworks with the same structure")
    merge_.add_argument("--out", required=True, metavar="PATH", help="file to write (.pt or .safetensors)")
    merge_.add_argument("--name", default=None, help="name stored in the merged file (default: the name of --out)")
    merge_.add_argument("--overwrite", action="store_true", help="replace an existing file")
    merge_.add_argument("inputs", nargs="+", metavar="PATH:WEIGHT",
                        help="the files to merge with their weights, e.g. a.pt:0.5 b.pt:0.5 (no weight: equal shares)")
    merge_.set_defaults(run=_merge)

    set_ = commands.add_parser("set", help="write a named set: a weighted mix or a sequence of hypernetworks")
    set_.add_argument("--out", required=True, metavar=f"NAME{SET_SUFFIX}",
                      help="the set file to write, in the folder of its networks; NAME is how prompts call it "
                           "(<hypernet:NAME:1>)")
    members = set_.add_mutually_exclusive_group(required=True)
    members.add_argument("--mix", nargs="+", metavar="NETWORK:WEIGHT",
                         help="a weighted parallel mix: each network by file or name with its weight, e.g. "
                              "a.pt:0.5 b.pt:0.5 (weights are shares of their sum; no weight: 1)")
    members.add_argument("--sequence", nargs="+", metavar="NETWORK:STRENGTH",
                         help="networks applied one after another, each at its strength, as a prompt's stack of "
                              "tags does, e.g. a:0.6 b:1 (no strength: 1)")
    set_.add_argument("--description", default=None, metavar="TEXT",
                      help="free text stored in the set (default: none)")
    set_.add_argument("--overwrite", action="store_true", help="replace an existing set file")
    set_.set_defaults(run=_set)

    from .train_cli import add_commands
    add_commands(commands)
    from .sweep_cli import add_sweep_command
    add_sweep_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.run(args) or 0  # a command may return its own exit status (train: 130 when interrupted)
    except (UserError, HypernetworkError) as error:
        print(f"error: {error}".replace("\n", " "), file=sys.stderr)
        return 130 if isinstance(error.__cause__, KeyboardInterrupt) else 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
