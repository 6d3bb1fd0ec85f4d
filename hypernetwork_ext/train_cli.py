"""``python -m hypernetwork_ext train`` and ``demo``: the training engine on the command line.

Every training option is a flag, generated from ``TrainingSettings`` itself so the two never drift;
``--settings`` reads the same JSON file Train_Gamma saves, and flags given on the command line win.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from . import files
from .config import HypernetworkConfig
from .errors import ConfigError
from .training import Callbacks, ModelInfo, TrainingSettings, prepare, train
from .training.engine import check_widths
from .training.settings import GROUPS, SETTINGS_INFO, CosineSettings, PreviewSettings, SettingInfo, coerce_to_kind

# the interface's short names for some settings; every other setting is --its-name-with-dashes
ALIASES = {"data_dir": "data", "max_steps": "steps", "learn_rate": "lr"}
NESTED = {"preview": PreviewSettings, "cosine": CosineSettings}
METAVARS = {"data_dir": "DIR", "log_dir": "DIR", "latent_cache_dir": "DIR", "template": "TEXT_OR_FILE",
            "learn_rate": "SCHEDULE", "clip_value": "SCHEDULE", "optimizer": "NAME"}
DEMO_NOTICE = ("This is a DEMONSTRATION model: a tiny Stable-Diffusion-shaped network with random weights, built "
               "in code. Its previews are abstract; train on your own checkpoint (--model) for real images.")


def flag_for(dest: str) -> str:
    """The command-line flag of a setting: ``max_steps`` -> ``--steps``, ``preview.seed`` -> ``--preview-seed``."""
    if dest == "cosine.enabled":
        return "--cosine"
    return "--" + ALIASES.get(dest, dest).replace("_", "-").replace(".", "-")


def off_flag_for(dest: str) -> str:
    """The flag that switches an on/off setting off: ``--no-flip``; for ``no_crop``, ``--crop``."""
    flag = flag_for(dest)
    return "--" + flag[len("--no-"):] if flag.startswith("--no-") else "--no-" + flag[2:]


class _Switch(argparse.Action):
    """Two flags for one on/off setting, e.g. ``--flip`` and ``--no-flip``."""

    def __init__(self, option_strings, dest, off_flag, **kwargs):
        super().__init__(option_strings, dest, nargs=0, **kwargs)
        self.off_flag = off_flag

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, option_string != self.off_flag)

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


def setting_help(spec: SettingInfo) -> str:
    """The tab's label and note, the values it takes, and its default (as the flag in effect, for a switch)."""
    text = f"{spec.label}. {spec.info}" if spec.info else spec.label
    if spec.options():
        text += f" One of: {', '.join(spec.options())}."
    default = spec.default()
    if isinstance(default, bool):
        shown = flag_for(spec.key) if default else off_flag_for(spec.key)
    else:
        shown = default if default != "" else "empty"
    return f"{text} (default: {shown})".replace("%", "%%")  # argparse formats help with %


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    groups[GROUPS[0]].description = ("Every training setting, grouped as in Train_Gamma. A flag given here wins "
                                     "over --settings, which wins over the defaults shown.")
    for spec in SETTINGS_INFO:
        group, default = groups[spec.group], spec.default()
        if isinstance(default, bool):
            off = off_flag_for(spec.key)
            group.add_argument(flag_for(spec.key), off, dest=spec.key, action=_Switch, off_flag=off, default=None,
                               help=setting_help(spec))
            continue
        if spec.choices:
            metavar = "{" + ",".join(spec.choices) + "}"
        else:
            metavar = METAVARS.get(spec.key, "N" if isinstance(default, int) else
                                   "NUMBER" if isinstance(default, float) else "TEXT")
        group.add_argument(flag_for(spec.key), dest=spec.key, default=None, metavar=metavar, help=setting_help(spec))


def settings_from_args(args: argparse.Namespace, base: TrainingSettings) -> TrainingSettings:
    """``base`` with every flag the user gave applied; validated like any settings."""
    data = dataclasses.asdict(base)
    for key, value in vars(args).items():
        if value is None:
            continue
        outer, _, inner = key.partition(".")
        if inner and outer in NESTED:
            data[outer][inner] = coerce_to_kind(value, getattr(NESTED[outer](), inner), key, flag_for(key))
        elif outer in data and not inner:
            data[outer] = coerce_to_kind(value, getattr(TrainingSettings(), outer), outer, flag_for(outer))
    return TrainingSettings.from_dict(data)


def load_adapter(model: str, device: str, model_config: str | None = None):
    """``tiny`` (the built-in demonstration model), a diffusers folder, or a checkpoint file (with
    ``model_config``, a local diffusers folder holding its configs and tokenizer)."""
    device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                          ("cpu" if device == "auto" else device))
    check_model_config(model, model_config)
    if model == "tiny":
        from .adapters.ldm import LdmAdapter
        from .models.tiny import tiny_latent_diffusion
        return LdmAdapter(tiny_latent_diffusion().to(device)), True
    path = Path(model)
    if path.is_dir():
        from .adapters.diffusers import DiffusersAdapter
        return DiffusersAdapter(**_diffusers_components(path, device)), False
    if path.is_file() and path.suffix.lower() in CHECKPOINT_SUFFIXES:
        from .adapters.diffusers import DiffusersAdapter
        return DiffusersAdapter(**_single_file_components(path, device, model_config)), False
    raise _not_a_model(model)


def _not_a_model(model: str) -> ConfigError:
    return ConfigError("model", f"--model {model!r}: give 'tiny', a diffusers model folder, or a .safetensors/.ckpt "
                                f"checkpoint that exists")


DEMO_MODEL_NAME = "tiny (built-in demonstration model)"
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")


def model_info_of(model: str) -> ModelInfo:
    """What a trained file records as "trained on", as the WebUI records it: a checkpoint's name and short
    hash (the first 10 hex digits of its SHA-256), a diffusers folder's name, or the demonstration model."""
    if model == "tiny":
        return ModelInfo(None, DEMO_MODEL_NAME)
    path = Path(model)
    if path.is_file():
        return ModelInfo(files.shorthash(path), path.stem)
    return ModelInfo(None, path.resolve().name)


def model_attention_widths(model: str) -> tuple[int, ...]:
    """The attention widths of ``--model`` without loading its weights: the built-in model's, a diffusers
    folder's (its UNet built from unet/config.json on the meta device), or a checkpoint's (from the shapes of
    its attention weights)."""
    if model == "tiny":
        from .models.tiny import TINY_ATTENTION_WIDTHS
        return TINY_ATTENTION_WIDTHS
    path = Path(model)
    if path.is_dir():
        return _diffusers_folder_widths(path)
    if path.is_file() and path.suffix.lower() in CHECKPOINT_SUFFIXES:
        return _checkpoint_widths(path)
    raise _not_a_model(model)


def _diffusers_folder_widths(folder: Path) -> tuple[int, ...]:
    from diffusers import UNet2DConditionModel
    from .attention import attention_widths
    try:
        config = UNet2DConditionModel.load_config(folder / "unet")
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(config)
    except (OSError, ValueError, TypeError) as error:
        raise ConfigError("model", f"{folder} is not a diffusers model folder with a UNet config ({error})") from None
    return attention_widths(unet)


def _checkpoint_widths(path: Path) -> tuple[int, ...]:
    """From the key projections of a checkpoint in the original (ldm) layout: attn2 reads the text, attn1 the image."""
    shapes = {}
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open
            with safe_open(str(path), framework="pt") as handle:
                shapes = {key: handle.get_slice(key).get_shape() for key in handle.keys() if key.endswith("to_k.weight")}
        else:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            state = state.get("state_dict", state)
            shapes = {key: list(value.shape) for key, value in state.items() if key.endswith("to_k.weight")}
    except Exception as error:  # noqa: BLE001 - safetensors and torch raise many kinds for a bad file
        raise ConfigError("model", f"{path} cannot be read as a checkpoint ({type(error).__name__}: "
                                   f"{str(error).splitlines()[0][:200] if str(error) else ''})") from None
    cross = sorted({shape[1] for key, shape in shapes.items() if ".attn2." in key})
    self_ = sorted({shape[1] for key, shape in shapes.items() if ".attn1." in key} - set(cross))
    if not cross and not self_:
        raise ConfigError("model", f"{path} has no attention weights in the Stable Diffusion layout "
                                   f"(model.diffusion_model...attn1/attn2.to_k)")
    return tuple(cross) + tuple(self_)


def prepare_for_model(model: str, hypernetwork, settings: TrainingSettings, resume_from=None):
    """Every input checked before ``model`` loads: the engine's checks, then the network's widths against the
    model's (read without its weights)."""
    prepared = prepare(hypernetwork, settings, resume_from=resume_from)
    check_widths(prepared.network, model_attention_widths(model), model)
    return prepared


def check_model_config(model: str, model_config: str | None) -> None:
    if model_config is None:
        return
    if Path(model).suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise ConfigError("model_config", "--model-config goes with a .safetensors/.ckpt checkpoint --model; a "
                                          "diffusers folder holds its own configs and 'tiny' needs none")
    # diffusers takes a config that is not a folder for a hub repository name and goes looking for it there
    if not (Path(model_config) / "model_index.json").is_file():
        raise ConfigError("model_config", f"--model-config {model_config!r}: give a local diffusers model folder "
                                          f"(model_index.json, the component configs and the tokenizer files)")


def _tokenizer(tokenizer):
    def tokenize(captions):
        return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids
    return tokenize


def _diffusers_components(folder: Path, device) -> dict:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    try:
        parts = {
            "unet": UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True),
            "vae": AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True),
            "text_encoder": CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", local_files_only=True),
            "tokenize": _tokenizer(CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)),
            "noise_scheduler": DDPMScheduler.from_pretrained(folder, subfolder="scheduler", local_files_only=True),
        }
    except (OSError, ValueError, EnvironmentError) as error:
        raise ConfigError("model", f"{folder} is not a complete diffusers model folder ({error})") from None
    return _prepared(parts, device)


def _single_file_components(path: Path, device, model_config: str | None = None) -> dict:
    from diffusers import DDPMScheduler, StableDiffusionPipeline
    from huggingface_hub.utils import LocalEntryNotFoundError

    try:
        pipe = StableDiffusionPipeline.from_single_file(str(path), config=model_config, local_files_only=True)
    except LocalEntryNotFoundError:
        raise ConfigError("model_config", f"{path}: its model configs and tokenizer are not in the local Hugging "
                                          f"Face cache; pass --model-config with a local diffusers model folder "
                                          f"(e.g. stable-diffusion-v1-5's config and tokenizer files, no weights "
                                          f"needed)") from None
    except Exception as error:  # noqa: BLE001 - diffusers raises many kinds here; the user needs one sentence
        raise ConfigError("model", f"{path} could not be loaded as a Stable Diffusion 1.x/2.x checkpoint "
                                   f"({type(error).__name__}: {str(error).splitlines()[0][:200]})") from None
    parts = {"unet": pipe.unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder,
             "tokenize": _tokenizer(pipe.tokenizer),
             "noise_scheduler": DDPMScheduler.from_config(pipe.scheduler.config)}
    return _prepared(parts, device)


def _prepared(parts: dict, device) -> dict:
    for name in ("unet", "vae", "text_encoder"):
        parts[name] = parts[name].to(device).eval().requires_grad_(False)
    return parts


INTERRUPTED = 130  # the exit status of a run stopped by Ctrl+C (128 + SIGINT), as shells report it


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true",
                        help="also show what other libraries print and warn (ldm's model summary, deprecation "
                             "warnings); without it only this program's own lines appear")


@contextlib.contextmanager
def library_warnings(verbose: bool):
    """Unless ``verbose``, other libraries' warnings (setuptools' and lightning's deprecations, torch's notes)
    are not shown while the command runs; this program reports its own problems as messages, not warnings."""
    with warnings.catch_warnings():
        if not verbose:
            warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def library_output(verbose: bool):
    """Unless ``verbose``, whatever the code inside writes to stdout and stderr goes nowhere, down to the file
    descriptors: for loading a model, where ldm prints its model summary and libraries print from C code.
    Errors still come out as exceptions."""
    if verbose:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    kept = {fd: os.dup(fd) for fd in (1, 2)}
    try:
        with open(os.devnull, "w") as nowhere:
            for fd in kept:
                os.dup2(nowhere.fileno(), fd)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
    finally:
        for fd, copy in kept.items():
            os.dup2(copy, fd)
            os.close(copy)


@contextlib.contextmanager
def ctrl_c_stops_training():
    """Yields ``should_stop`` for the engine: the first Ctrl+C stops training after the current step and saves
    the result, as the tabs' Interrupt does; a second one stops at once (the engine then keeps the last good
    weights in the log folder and writes no result)."""
    pressed = []

    def on_ctrl_c(signum, frame):
        if pressed:
            raise KeyboardInterrupt
        pressed.append(True)
        # straight to the file descriptor: the handler may run while print() is inside the same buffer
        os.write(1, b"\nCtrl+C: stopping after this step and saving the result (Ctrl+C again stops at once)\n")

    if threading.current_thread() is not threading.main_thread():  # only the main thread receives signals
        yield lambda: False
        return
    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield lambda: bool(pressed)
    finally:
        signal.signal(signal.SIGINT, previous)


def run_training(args) -> int:
    with library_warnings(args.verbose):
        base = TrainingSettings.load(args.settings) if args.settings else TrainingSettings()
        settings = settings_from_args(args.settings_flags, base)
        if not Path(args.hypernetwork).is_file():
            raise ConfigError("hypernetwork", f"--hypernetwork {args.hypernetwork!r} does not exist; create one with "
                                              f"`python -m hypernetwork_ext create NAME --out PATH --model {args.model}`")
        check_model_config(args.model, args.model_config)
        prepared = prepare_for_model(args.model, args.hypernetwork, settings, resume_from=args.resume)
        model_info = model_info_of(args.model)
        from .training.distributed import from_environment
        distributed, device = from_environment(args.device)  # several processes under accelerate launch / torchrun
        with library_output(args.verbose):
            adapter, demonstration = load_adapter(args.model, str(device) if device is not None else args.device,
                                                  args.model_config)
        if demonstration and distributed.is_main:
            print(DEMO_NOTICE)
        result, chart = _train_with_progress(adapter, args.hypernetwork, settings, resume=args.resume, out=args.out,
                                             distributed=distributed, prepared=prepared, model_info=model_info)
    if distributed.is_main:
        _print_result(result, chart)
    return INTERRUPTED if result.interrupted else 0


def _train_with_progress(adapter, hypernetwork, settings, resume=None, out=None, log_dir=None, distributed=None,
                         prepared=None, model_info=ModelInfo()):
    from tqdm import tqdm

    main = distributed is None or distributed.is_main
    bar = None  # drawn from the first step on, so an error before training has no empty bar above it
    last_loss = []

    def say(text):
        if bar is not None:
            bar.write(text)
        elif main:
            print(text, flush=True)

    def progress(step, total):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="step", dynamic_ncols=True, file=sys.stdout, disable=not main)
        bar.n = step
        bar.set_postfix(loss=f"{last_loss[-1]:.4f}" if last_loss else "-")
        bar.refresh()

    with ctrl_c_stops_training() as should_stop:
        callbacks = Callbacks(status=say, progress=progress, loss=lambda point: last_loss.append(point.loss),
                              should_stop=should_stop)
        try:
            result = train(adapter, hypernetwork, settings, output_path=out, resume_from=resume, callbacks=callbacks,
                           log_dir=log_dir, distributed=distributed, prepared=prepared, model_info=model_info)
        except BaseException:
            if bar is not None:
                bar.leave = False  # the error line then stands alone, not under a half-finished bar
            raise
        finally:
            if bar is not None:
                bar.close()
    if not main:
        return result, None
    from .training.chart import save_chart
    chart = save_chart(result.losses, result.log_dir / "loss_chart.png",
                       f"{Path(result.output_path).stem}: loss and learning rate")
    return result, chart


def _print_result(result, chart: Path) -> None:
    print(f"hypernetwork:  {result.output_path} (step {result.steps_done})")
    print(f"log folder:    {result.log_dir}")
    print(f"loss CSV:      {result.log_dir / 'hypernetwork_loss.csv'}")
    print(f"chart:         {chart}")
    if result.previews:
        print(f"previews:      {', '.join(str(p) for p in result.previews)}")
    if result.saved:
        print(f"saved copies:  {', '.join(str(p) for p in result.saved)}")


# --------------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------------

def make_sample_dataset(folder: Path, count: int = 12) -> Path:
    """Small captioned pictures of coloured shapes in three aspect ratios, drawn in code."""
    folder.mkdir(parents=True, exist_ok=True)
    colours = {"red": (220, 50, 50), "blue": (40, 80, 220), "green": (40, 170, 70), "yellow": (235, 200, 40)}
    backgrounds = {"white": (245, 245, 240), "black": (20, 20, 25), "grey": (128, 128, 128)}
    sizes = [(96, 96), (128, 96), (96, 128)]
    rng = np.random.default_rng(0)
    for index in range(count):
        width, height = sizes[index % 3]
        colour = list(colours)[index % 4]
        background = list(backgrounds)[(index // 4) % 3]
        shape = ("circle", "square", "triangle")[index % 3]
        image = Image.new("RGB", (width, height), backgrounds[background])
        draw = ImageDraw.Draw(image)
        cx, cy, r = width // 2 + int(rng.integers(-10, 10)), height // 2 + int(rng.integers(-10, 10)), min(width, height) // 3
        if shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colours[colour])
        elif shape == "square":
            draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colours[colour])
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colours[colour])
        image.save(folder / f"{index:02d}-{colour}-{shape}.png")
        (folder / f"{index:02d}-{colour}-{shape}.txt").write_text(
            f"{colour} {shape}, {background} background, flat colours", encoding="utf-8")
    return folder


def run_demo(args) -> int:
    from .models.tiny import TINY_ATTENTION_WIDTHS
    from .network import Hypernetwork

    out = Path(args.out)
    print(DEMO_NOTICE)
    data = make_sample_dataset(out / "dataset")
    network_path = out / "demo.pt"
    config = HypernetworkConfig(sizes=TINY_ATTENTION_WIDTHS, layer_structure=(1, 2, 1), activation="swish",
                                dropout_structure=(0, 0.1, 0))
    files.save(Hypernetwork.create(config, "demo", seed=1, optional_info="demonstration"), network_path)
    print(f"created {network_path} ({config.parameter_count():,} parameters) and a sample dataset in {data}")
    settings = TrainingSettings(data_dir=str(data), log_dir=str(out / "logs"), width=64, height=64,
                                learn_rate="2e-3:100, 5e-4", max_steps=args.steps, batch_size=2, grad_accum=1,
                                save_every=max(1, args.steps // 3), preview_every=max(1, args.steps // 3),
                                shuffle_tags=True, preview=PreviewSettings(prompt="red circle, white background",
                                                                          steps=20, seed=7, width=64, height=64))
    with library_warnings(args.verbose):
        with library_output(args.verbose):
            adapter, _ = load_adapter("tiny", args.device)
        result, chart = _train_with_progress(adapter, network_path, settings, log_dir=out / "logs" / "demo",
                                             model_info=model_info_of("tiny"))
    _print_result(result, chart)
    print("Next: inspect it with `python -m hypernetwork_ext inspect " + str(network_path) + "`")
    return INTERRUPTED if result.interrupted else 0


def add_commands(commands) -> None:
    train_parser = commands.add_parser("train", help="train a hypernetwork (the same engine as Train_Gamma)")
    train_parser.add_argument("--hypernetwork", required=True, metavar="PATH", help="the .pt or .safetensors file to train")
    train_parser.add_argument("--model", default="tiny",
                              help="tiny (built-in demonstration model), a diffusers folder, or a .safetensors/.ckpt checkpoint")
    train_parser.add_argument("--model-config", default=None, metavar="DIR",
                              help="for a checkpoint --model: a local diffusers model folder with its configs and "
                                   "tokenizer (no weights needed), so it loads offline")
    train_parser.add_argument("--resume", default=None, metavar="SAVED_COPY", help="continue from a saved copy in the log folder")
    train_parser.add_argument("--settings", default=None, metavar="JSON", help="training settings saved by Train_Gamma or a previous run")
    train_parser.add_argument("--out", default=None, metavar="PATH",
                              help="where to write the result (default: back to --hypernetwork)")
    train_parser.add_argument("--device", default="auto", help="auto (a CUDA GPU when there is one), cpu, cuda, cuda:1, ...")
    add_verbose_flag(train_parser)
    add_settings_flags(train_parser)
    train_parser.set_defaults(run=_split_and_run)

    demo = commands.add_parser("demo", help="create, train and preview on the built-in demonstration model")
    demo.add_argument("--out", default="hypernetwork_demo", metavar="DIR", help="folder for everything the demo writes")
    demo.add_argument("--steps", type=int, default=150, metavar="N", help="how many steps to train")
    demo.add_argument("--device", default="auto", help="auto (a CUDA GPU when there is one), cpu, cuda, cuda:1, ...")
    add_verbose_flag(demo)
    demo.set_defaults(run=run_demo)

    app = commands.add_parser("app", help="a local web app (127.0.0.1) with the Create Beta hypernetwork and Train_Gamma tabs")
    app.add_argument("--port", type=int, default=7870, metavar="N", help="the port on 127.0.0.1 to serve on")
    app.add_argument("--folder", default="hypernetworks", metavar="DIR", help="where hypernetworks are read and written")
    app.add_argument("--model", default="tiny", help="model to train on: tiny, a diffusers folder or a checkpoint")
    app.add_argument("--model-config", default=None, metavar="DIR",
                     help="for a checkpoint --model: a local diffusers model folder with its configs and tokenizer")
    app.set_defaults(run=run_app)


def run_app(args) -> None:
    import importlib.util
    if importlib.util.find_spec("gradio") is None:
        raise ConfigError("app", "the app needs Gradio: pip install 'hypernetwork-ext[app]'")
    check_model_config(args.model, args.model_config)
    from .ui.app import launch
    print(f"Serving on http://127.0.0.1:{args.port} (Ctrl+C to stop)")
    launch(args.folder, args.port, model=args.model, model_config=args.model_config)


def _split_and_run(args) -> int:
    setting_keys = {spec.key for spec in SETTINGS_INFO}
    own = {key: value for key, value in vars(args).items() if key not in setting_keys}
    args = argparse.Namespace(**own, settings_flags=argparse.Namespace(
        **{key: value for key, value in vars(args).items() if key in setting_keys}))
    return run_training(args)
