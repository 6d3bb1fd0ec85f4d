"""``python -m hypernetwork_ext sweep``: every combination of starting points and training settings, trained
one after another (``training/sweep.py``), with the flags, checks and model loading of ``train``."""

from __future__ import annotations

from .errors import ConfigError
from .training import TrainingSettings
from .training.dataset import counted
from .training.sweep import (DEFAULT_LOSS_WINDOW, SweepPlan, creation_start, file_start, format_table,
                             load_settings_file, override_line, prepare_sweep, run_sweep, settings_variants)
from .train_cli import (DEMO_NOTICE, INTERRUPTED, _train_with_progress, add_settings_flags, add_verbose_flag,
                        check_model_config, library_output, library_warnings, load_adapter, model_attention_widths,
                        model_info_of, prepare_for_model, settings_from_args, split_settings_flags)


def add_sweep_command(commands) -> None:
    sweep = commands.add_parser(
        "sweep", help="train every combination of starting points and training settings, and compare their losses",
        description="Trains every starting point (--hypernetwork, --create) with every training settings (--settings "
                    "and --set, on top of the training flags below), one after another, each from the same starting "
                    "weights; prints a table of the results and writes it, with a chart of all loss curves, into --out.")
    starts = sweep.add_argument_group("Starting points (give --hypernetwork, --create, or both)")
    starts.add_argument("--hypernetwork", nargs="+", default=[], metavar="PATH",
                        help="hypernetwork files that each start their combinations as they are, weights and saved "
                             "optimizer state (default: none)")
    starts.add_argument("--create", action="append", default=[], metavar="SPEC",
                        help="a network to create and start from, as key=value pairs separated by ';' with the flags "
                             "of the create command as keys, e.g. \"layers=1,2,1; activation=relu; layer-norm\"; its "
                             "modules are the model's attention widths unless it says sizes=...; repeat the flag for "
                             "each variant (default: none)")
    starts.add_argument("--create-seed", type=int, default=0, metavar="N",
                        help="the seed every --create network is made with, so they all start alike and the same "
                             "sweep gives the same files (default: 0)")
    variants = sweep.add_argument_group("Training settings to sweep")
    variants.add_argument("--settings", nargs="+", default=[], metavar="JSON",
                          help="training settings files (saved by Train_Gamma or a previous run), each one a variant, "
                               "with the training flags given here applied on top (default: one variant, the "
                               "training flags alone)")
    variants.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=V1,V2",
                          help="a setting to sweep and its values, e.g. learn_rate=1e-3,5e-4 (the setting's name as "
                               "in the settings JSON: max_steps, preview.seed); values that hold commas themselves "
                               "(schedules) are separated by '|'; every combination of the values of every --set "
                               "is a variant of each --settings file, and wins over it and over the flags (default: "
                               "none)")
    output = sweep.add_argument_group("Output and model")
    output.add_argument("--out", required=True, metavar="DIR",
                        help="folder for the results: one trained file per combination (named after it), its log "
                             "folder under logs/, the created starting networks under starts/, sweep_results.json "
                             "and .csv, sweep_chart.png (the log_dir setting does not apply to a sweep)")
    output.add_argument("--overwrite", action="store_true",
                        help="replace the results of an earlier sweep in --out (without it such a folder is refused)")
    output.add_argument("--loss-window", type=int, default=DEFAULT_LOSS_WINDOW, metavar="N",
                        help="steps in the moving average of the loss that the table and the chart show")
    output.add_argument("--model", default="tiny",
                        help="tiny (built-in demonstration model), a diffusers folder, or a .safetensors/.ckpt "
                             "checkpoint; loaded once, after every combination has been checked")
    output.add_argument("--model-config", default=None, metavar="DIR",
                        help="for a checkpoint --model: a local diffusers model folder with its configs and "
                             "tokenizer (no weights needed), so it loads offline (default: none)")
    output.add_argument("--device", default="auto", help="auto (a CUDA GPU when there is one), cpu, cuda, cuda:1, ...")
    add_verbose_flag(sweep)
    add_settings_flags(sweep)
    sweep.set_defaults(run=lambda args: run_sweep_command(split_settings_flags(args)))


def run_sweep_command(args) -> int:
    with library_warnings(args.verbose):
        plan = _plan(args)
        prepared = prepare_sweep(plan, args.out, lambda start, settings: prepare_for_model(args.model, start, settings),
                                 overwrite=args.overwrite)
        print(f"Sweep of {counted(len(prepared.combinations), 'combination')} "
              f"({counted(len(plan.starts), 'starting point')} × {len(plan.variants)} training settings) into {args.out}")
        with library_output(args.verbose):
            adapter, demonstration = load_adapter(args.model, args.device, args.model_config)
        if demonstration:
            print(DEMO_NOTICE)
        model_info = model_info_of(args.model)

        def train_one(start, settings, output, log_dir, callbacks):
            return _train_with_progress(adapter, start, settings, out=output, log_dir=log_dir, model_info=model_info,
                                        also=callbacks)[0]
        result = run_sweep(prepared, train_one, status=print)
    print(format_table(result))
    failed = sum(row.outcome == "failed" for row in result.rows)
    if failed:
        print(f"note: {failed} combination{'s' if failed > 1 else ''} failed; why is in {result.results_json}")
    print(f"results:  {result.results_json}, {result.results_csv}")
    print(f"chart:    {result.chart}")
    return INTERRUPTED if result.interrupted else 0


def _plan(args) -> SweepPlan:
    """Every input read and checked; nothing is written and no model loads."""
    if not args.hypernetwork and not args.create:
        raise ConfigError("starts", "Nothing to sweep: give --hypernetwork PATH and/or --create SPEC")
    check_model_config(args.model, args.model_config)
    bases = [(label, settings_from_args(args.settings_flags, settings))
             for label, settings in map(load_settings_file, args.settings)]
    variants = settings_variants(bases or [("", settings_from_args(args.settings_flags, TrainingSettings()))],
                                 [override_line(text, f"--set {text!r}") for text in args.overrides])
    starts = [file_start(path) for path in args.hypernetwork]
    if args.create:
        sizes = model_attention_widths(args.model)
        starts += [creation_start(text, sizes, f"--create {text!r}") for text in args.create]
    return SweepPlan(tuple(starts), variants, create_seed=args.create_seed, loss_window=args.loss_window)
