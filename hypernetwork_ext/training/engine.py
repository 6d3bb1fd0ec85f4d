"""The training loop. One function, ``train``, readable top to bottom.

Guarantees, and how:
* **Determinism.** Data order, captions and latent samples are functions of (dataset seed, step);
  timesteps, noise and dropout come from torch's generator seeded per micro-batch inside
  ``fork_rng``. So a run with previews equals one without, and a resumed run equals an
  uninterrupted one, bit for bit on the CPU.
* **Strength 1.** The network is in train mode while training, so its modules ignore any strength.
* **Correct gradients.** Clipping runs on unscaled gradients; a NaN or infinite loss or gradient
  never reaches the weights.
* **Files.** Every write is atomic; saved copies carry their own optimizer state with their own
  hash; the starting file is copied to the log folder before the result replaces it.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import io
import math
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from .. import files
from ..applier import FastApplier
from ..errors import ConfigError, HypernetworkError, HypernetworkFileError
from ..network import Hypernetwork
from ..adapters.sampling import SAMPLERS
from ..stack import Applied, is_set_file, member_names, read_set_file
from .dataset import (TrainingDataset, counted, encode_latents, fit_batching, open_latent_cache, read_template,
                      scan_folder)
from .distributed import SingleProcess
from .optimizers import build_optimizer
from .settings import TrainingSettings


class TrainingError(HypernetworkError):
    """Training stopped because of a problem; the message says what, and where the last good weights are."""


@dataclass
class LossPoint:
    step: int
    epoch: int
    epoch_step: int
    loss: float
    learn_rate: float


@dataclass
class Callbacks:
    """How the engine reports. Every hook is optional."""

    status: Callable[[str], None] | None = None
    progress: Callable[[int, int], None] | None = None  # (completed steps, max steps)
    loss: Callable[[LossPoint], None] | None = None
    preview: Callable[[int, Image.Image, Path], None] | None = None
    saved: Callable[[Path], None] | None = None
    should_stop: Callable[[], bool] | None = None  # polled once per step: Interrupt
    # the dataset's report (files skipped or converted, settings it did not allow), once, before training;
    # without this hook its lines go to ``status``
    dataset_notes: Callable[[list[str]], None] | None = None

    def say(self, text: str) -> None:
        if self.status:
            self.status(text)

    def tell_dataset(self, lines: list[str]) -> None:
        if self.dataset_notes:
            self.dataset_notes(lines)
        else:
            for line in lines:
                self.say(line)


@dataclass
class TrainingResult:
    network: Hypernetwork
    output_path: Path
    log_dir: Path
    steps_done: int
    interrupted: bool
    losses: list[LossPoint] = field(default_factory=list)
    saved: list[Path] = field(default_factory=list)
    previews: list[Path] = field(default_factory=list)
    dataset_report: object = None
    seconds: float = 0.0


@dataclass(frozen=True)
class ModelInfo:
    """What the saved files record about the model trained on."""

    shorthash: str | None = None
    name: str | None = None


@dataclass
class Prepared:
    """What a run reads and checks before any model loads, so that a wrong input is reported in
    seconds rather than after the model has loaded and the images were encoded."""

    network: Hypernetwork
    optimizer_state: tuple | None
    learn_rate: object
    clip: object
    templates: list
    examples: list
    report: object


def prepare(hypernetwork_path: str | Path, settings: TrainingSettings, *, resume_from: str | Path | None = None,
            preview_samplers: tuple[str, ...] | None = tuple(SAMPLERS)) -> Prepared:
    """Everything ``train`` checks that needs no model: the file, the settings, the template and the
    dataset folder. ``preview_samplers``: the names the model's preview takes (None: any); the default is
    the standalone adapters' list. A host calls this before loading its model and hands the result to ``train``."""
    refuse_sets(hypernetwork_path, resume_from)
    source = Path(resume_from or hypernetwork_path)
    network = files.load(source)
    if network.step >= settings.max_steps:
        raise ConfigError("max_steps", f"{network.name} has already been trained for {network.step} steps, which is "
                                       f"not below max steps ({settings.max_steps}); raise max steps to continue")
    preview_sampler(settings.preview.sampler, preview_samplers)
    templates = read_template(settings.template)
    examples, report = scan_folder(settings.data_dir, width=settings.width, height=settings.height,
                                   no_crop=settings.no_crop, use_alpha=settings.use_alpha_weight)
    return Prepared(network, files.load_optimizer_state(source), settings.learn_rate_schedule(),
                    settings.clip_schedule() if settings.clip_mode != "none" else None, templates, examples, report)


def preview_sampler(name: str, offered: tuple[str, ...] | None) -> str:
    """``name`` as the preview takes it (any case: ``euler`` is ``Euler``); empty means the default."""
    name = str(name or "").strip()
    if not name or offered is None:
        return name
    canonical = {option.lower(): option for option in offered}.get(name.lower())
    if canonical is None:
        raise ConfigError("preview.sampler", f"Preview sampler {name!r} is not offered here; choose one of: "
                                             f"{', '.join(offered)} (empty: {offered[0]})")
    return canonical


def check_widths(network: Hypernetwork, model_widths: tuple[int, ...], model: str | None = None) -> None:
    """A network with no module for any of the model's attention widths would train nothing. ``model``: the
    command line's name for the model (``tiny``, a path), for the command that fixes it."""
    if not set(network.sizes) & set(model_widths):
        fit = f"--model {shlex.quote(model)}" if model else f"--sizes {','.join(map(str, model_widths))}"
        raise ConfigError("hypernetwork", f"{network.name} has no module for any attention width of this model "
                                          f"(its modules: {', '.join(map(str, network.sizes))}; the model's widths: "
                                          f"{', '.join(map(str, model_widths))}); create one that fits with "
                                          f"`python -m hypernetwork_ext create {network.name} --out "
                                          f"{network.name}-fit.pt {fit}`")


def refuse_sets(*paths: str | Path | None) -> None:
    """A set file (``.hnset.json``, or the old ``.hns``) only says how to apply other networks: there is
    nothing in it to train, and writing the result over it would lose the set. Checked before anything loads."""
    for path in filter(None, paths):
        if not is_set_file(path):
            continue
        try:
            members = f" ({', '.join(member_names(read_set_file(path)))})"
        except HypernetworkFileError:  # a broken set is refused all the same
            members = ""
        raise ConfigError("hypernetwork", f"{path} is a set of hypernetworks; sets apply, they do not train: "
                                          f"train one of its members{members} instead")


def train(adapter, hypernetwork_path: str | Path, settings: TrainingSettings, *, output_path: str | Path | None = None,
          resume_from: str | Path | None = None, callbacks: Callbacks | None = None,
          model_info: ModelInfo = ModelInfo(), log_dir: str | Path | None = None,
          distributed=None, prepared: Prepared | None = None) -> TrainingResult:
    """Train the hypernetwork at ``hypernetwork_path`` (or continue ``resume_from``, a saved copy).
    With ``distributed`` (see distributed.py) this process trains its share of every global batch.
    ``prepared``: what ``prepare`` returned for the same arguments (read here when not given)."""
    distributed = distributed or SingleProcess()
    main = distributed.is_main
    callbacks = (callbacks or Callbacks()) if main else Callbacks()
    started = time.monotonic()
    output_path = Path(output_path or hypernetwork_path)
    prepared = prepared or prepare(hypernetwork_path, settings, resume_from=resume_from,
                                   preview_samplers=adapter.preview_samplers)
    sampler = preview_sampler(settings.preview.sampler, adapter.preview_samplers)
    network, optimizer_state = prepared.network, prepared.optimizer_state
    learn_rate, clip, examples, report = prepared.learn_rate, prepared.clip, prepared.examples, prepared.report
    name = network.name
    check_widths(network, adapter.attention_widths())  # before the images are encoded
    timesteps = settings.timestep_range(adapter.num_timesteps)  # the range checked against the model's, too
    log_dir = Path(log_dir) if log_dir else Path(settings.log_dir) / datetime.date.today().isoformat() / name

    # ---- data -----------------------------------------------------------------------------
    callbacks.say(f"Preparing dataset from {settings.data_dir}...")
    batching = fit_batching(len(examples) * settings.repeats, settings.batch_size, settings.grad_accum,
                            distributed.world_size)
    report.changes += batching.changes
    share = batching.batch_size  # images per micro-batch in this process; the global batch is share * world size
    latent_cache = open_latent_cache(settings.latent_cache, examples, flip=settings.flip,
                                     latent_sampling=settings.latent_sampling,
                                     folder=settings.latent_cache_dir or log_dir / "latent_cache")
    dataset = TrainingDataset(examples, report, batch_size=share * distributed.world_size, grad_accum=batching.grad_accum,
                              templates=prepared.templates, name=name, seed=settings.dataset_seed,
                              shuffle_tags=settings.shuffle_tags, tag_dropout=settings.tag_dropout,
                              flip=settings.flip, latent_sampling=settings.latent_sampling, repeats=settings.repeats,
                              latent_cache=latent_cache)
    callbacks.tell_dataset(report.summary().splitlines())  # after bucketing, which notes its crops
    callbacks.say(f"Encoding {len(examples)} images; the latents are kept {latent_cache.where}")
    encode_latents(examples, adapter.encode_images, flip=settings.flip, latent_sampling=settings.latent_sampling,
                   seed=settings.dataset_seed, cache=latent_cache)
    text = TextCache(adapter.encode_text, enabled=not dataset.captions_vary)
    if settings.unload_models_when_training:
        adapter.set_encoders_device("cpu")

    # ---- files (the main process alone writes) -------------------------------------------
    csv_path = log_dir / "hypernetwork_loss.csv"
    if main:
        (log_dir / "hypernetworks").mkdir(parents=True, exist_ok=True)
        settings.save(log_dir / "settings.json")
        _truncate_csv(csv_path, network.step)  # a resumed run continues the log; a new run starts it afresh
    result = TrainingResult(network, output_path, log_dir, network.step, False, dataset_report=report)
    if main and resume_from is None and output_path.resolve() == Path(hypernetwork_path).resolve() \
            and output_path.exists():
        keep = log_dir / "hypernetworks" / f"{name}-{network.step}-start{output_path.suffix}"
        files.atomic_write_bytes(keep, output_path.read_bytes())  # the starting point survives the final overwrite
        sidecar = files.optimizer_sidecar_path(output_path)
        if sidecar.exists():
            files.atomic_write_bytes(files.optimizer_sidecar_path(keep), sidecar.read_bytes())

    # ---- model and optimizer --------------------------------------------------------------
    device = adapter.device
    network.to(device).train().requires_grad_(True)
    parameters = [p for p in network.parameters()]
    optimizer, optimizer_name = build_optimizer(settings, parameters, learn_rate.rate_at(network.step))
    if optimizer_state is not None:
        saved_name, state = optimizer_state
        if saved_name == optimizer_name:
            try:
                optimizer.load_state_dict(state)
                callbacks.say(f"Continuing with the saved {optimizer_name} state")
            except (ValueError, RuntimeError, KeyError) as error:
                callbacks.say(f"The saved optimizer state does not fit ({error}); starting a fresh optimizer")
        else:
            callbacks.say(f"The saved optimizer state is for {saved_name}, not {optimizer_name}; starting fresh")
    autocast, scaler = _precision(settings.mixed_precision, device)
    if settings.mixed_precision in ("fp16", "bf16") and device.type != "cuda":
        callbacks.say(f"Mixed precision ({settings.mixed_precision}) needs a CUDA GPU; training in float32")
    undo_attach = adapter.attach(FastApplier(Applied(network, 1.0)))
    undo_checkpointing = adapter.checkpointing(settings.gradient_checkpointing)
    board = _tensorboard(log_dir, callbacks) if settings.tensorboard and main else None
    cuda_devices = [device.index or 0] if device.type == "cuda" else []

    def save_copy(step: int) -> Path | None:
        if not main:
            return None
        network.sd_checkpoint, network.sd_checkpoint_name = model_info.shorthash, model_info.name
        path = files.save(network, log_dir / "hypernetworks" / f"{name}-{step}{output_path.suffix}")
        files.save_optimizer_state(path, optimizer_name, optimizer.state_dict())
        result.saved.append(path)
        if callbacks.saved:
            callbacks.saved(path)
        return path

    def preview(step: int, caption: str) -> None:
        if not main:
            return
        p = settings.preview
        seed = p.seed if p.seed >= 0 else int.from_bytes(os.urandom(4), "little")
        request = _preview_request(settings, caption, seed, sampler)
        callbacks.say(f"Rendering a preview at step {step}...")
        with _isolated_preview(network, optimizer, settings, adapter, cuda_devices):
            try:
                image = adapter.render_preview(request)
            except Exception as error:  # the steps up to here are done: say it was the preview that failed
                raise TrainingError(f"the preview at step {step} failed: {type(error).__name__}: {error}") from error
        images = log_dir / "images"
        images.mkdir(exist_ok=True)
        path = images / f"{name}-{step}.png"
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        files.atomic_write_bytes(path, buffer.getvalue())
        result.previews.append(path)
        if board:
            board.add_image("Preview", torch.from_numpy(np.asarray(image)).permute(2, 0, 1), step)
        if callbacks.preview:
            callbacks.preview(step, image, path)

    # ---- the loop -------------------------------------------------------------------------
    step = network.step
    consecutive_skips = 0
    per_step = dataset.batch_size * dataset.grad_accum
    callbacks.say(f"Training {name} from step {step} to {settings.max_steps}: {counted(len(examples), 'image')}, "
                  f"{counted(per_step, 'image')} a step (batch size {dataset.batch_size} × gradient accumulation {dataset.grad_accum}), "
                  f"{counted(dataset.steps_per_epoch, 'step')} per epoch")
    curriculum = settings.timesteps
    if curriculum.curriculum != "off":
        callbacks.say(f"Noise curriculum ({curriculum.curriculum}): timesteps {curriculum.start_min}-"
                      f"{curriculum.start_max} at the ramp's start, {curriculum.min}-{curriculum.max} after "
                      f"{counted(curriculum.ramp_steps, 'step')}"
                      + (", then from the start again" if curriculum.curriculum == "restart" else ""))
    try:
        while step < settings.max_steps:
            if _agreed(distributed, bool(callbacks.should_stop and callbacks.should_stop())):
                result.interrupted = True
                callbacks.say(f"Interrupted at step {step}")
                break
            rate = learn_rate.rate_at(step)
            for group in optimizer.param_groups:
                group["lr"] = rate
            step_loss = 0.0
            micro_batches = dataset.micro_batches(step)
            caption = ""
            for micro, indices in enumerate(micro_batches):
                batch = dataset.materialize(indices, step, micro)  # the global batch; this process takes its share
                caption = caption or batch.captions[0]
                first = distributed.rank * share
                cond = text(batch.captions[first:first + share])
                with torch.random.fork_rng(devices=cuda_devices):
                    torch.manual_seed(_seed(settings.seed, step, micro))
                    lowest, highest = timesteps.range_at(step)  # by default 0-999: every timestep, as always
                    t = torch.randint(lowest, highest + 1, (len(indices),))
                    for group in batch.groups:  # one latent size each; the batch's loss is the mean over its images
                        noise = torch.randn(group.latents.shape)  # drawn for every group, so every process draws alike
                        rows = [row for row, at in enumerate(group.positions) if first <= at < first + share]
                        if not rows:
                            continue
                        at = [group.positions[row] for row in rows]
                        weights = group.weights[rows] if group.weights is not None else None
                        with autocast():
                            loss = adapter.loss(group.latents[rows], cond[[p - first for p in at]], weights,
                                                settings.loss, t=t[at], noise=noise[rows])
                        scaled = loss * (len(rows) / share) / len(micro_batches)
                        # only the hypernetwork's gradients: no weight gradient of the model is computed or
                        # kept, whatever its parameters' requires_grad (the WebUI loads them requiring grad)
                        (scaler.scale(scaled) if scaler else scaled).backward(inputs=parameters)
                        step_loss += loss.item() * (len(rows) / share) / len(micro_batches)
            if distributed.world_size > 1:
                shared = [p.grad for p in parameters if p.grad is not None] + [torch.tensor([step_loss], device=device)]
                distributed.average(shared)
                step_loss = shared[-1].item()
            if scaler:
                scaler.unscale_(optimizer)
            grads_ok = math.isfinite(step_loss) and _finite_gradients(parameters)
            if not grads_ok:
                optimizer.zero_grad(set_to_none=True)
                if scaler and math.isfinite(step_loss):
                    scaler.update()  # fp16 overflow: the scaler lowers its scale and the step is retried
                    continue
                if settings.nan_policy == "stop":
                    raise TrainingError(f"the loss became {step_loss} at step {step + 1}; training stopped. The "
                                        f"weights were not changed by that step (last good step: {step})")
                consecutive_skips += 1
                callbacks.say(f"Step {step + 1} skipped: loss {step_loss}")
                if consecutive_skips >= 10:
                    raise TrainingError(f"10 steps in a row had a NaN or infinite loss (last at step {step + 1}); "
                                        f"training stopped. Try a lower learning rate")
                step += 1
                network.step = step
                continue
            consecutive_skips = 0
            if clip is not None:
                limit = clip.rate_at(step)
                if settings.clip_mode == "value":
                    torch.nn.utils.clip_grad_value_(parameters, limit)
                else:
                    torch.nn.utils.clip_grad_norm_(parameters, limit, norm_type=float(settings.clip_norm_type))
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            network.step = step

            epoch, epoch_step = divmod(step - 1, dataset.steps_per_epoch)
            point = LossPoint(step, epoch + 1, epoch_step + 1, step_loss, rate)
            result.losses.append(point)
            if main and settings.csv_every and step % settings.csv_every == 0:
                _append_csv(csv_path, point)
            if callbacks.loss:
                callbacks.loss(point)
            if board:
                board.add_scalar("Loss/train", step_loss, step)
                board.add_scalar("Learn rate/train", rate, step)
            if callbacks.progress:
                callbacks.progress(step, settings.max_steps)
            cycle_end = settings.cosine.enabled and learn_rate.cycle_ends_at(step)
            if (settings.save_every and step % settings.save_every == 0) or \
                    (cycle_end and settings.cosine.save_at_cycle_end):
                save_copy(step)
            if (settings.preview_every and step % settings.preview_every == 0) or \
                    (cycle_end and settings.cosine.preview_at_cycle_end):
                preview(step, caption)
    except BaseException as error:
        last = save_copy(step) if step > 0 and main else None
        where = f"; the last good weights are saved as {last}" if last else ""
        undo_checkpointing()
        undo_attach()
        network.eval().requires_grad_(False)
        if isinstance(error, ConfigError):
            raise
        if isinstance(error, KeyboardInterrupt):  # stopped at once, not at a step's end as Interrupt does
            raise TrainingError(f"Interrupted at step {step}; the result was not written{where}") from error
        if isinstance(error, TrainingError):
            raise TrainingError(f"{error}{where}") from error
        raise TrainingError(f"training failed at step {step + 1}: {type(error).__name__}: {error}{where}") from error
    finally:
        latent_cache.close()
        if settings.unload_models_when_training:
            adapter.set_encoders_device(device)
        if board:
            board.close()

    undo_checkpointing()
    undo_attach()
    network.eval().requires_grad_(False)
    network.sd_checkpoint, network.sd_checkpoint_name = model_info.shorthash, model_info.name
    if main:
        files.save(network, output_path)
        files.save_optimizer_state(output_path, optimizer_name, optimizer.state_dict())
    distributed.barrier()  # every process returns only once the result is on disk
    result.steps_done = step
    result.seconds = time.monotonic() - started
    callbacks.say(f"Training {'interrupted' if result.interrupted else 'finished'} at step {step}; "
                  f"saved {output_path}")
    if callbacks.saved:
        callbacks.saved(output_path)
    return result


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def _tensorboard(log_dir: Path, callbacks: Callbacks):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        callbacks.say("TensorBoard logging is on but the tensorboard package is not installed; "
                      "training continues without it (pip install tensorboard)")
        return None
    return SummaryWriter(str(log_dir / "tensorboard"))


def _agreed(distributed, flag: bool) -> bool:
    """True when any process says so (an Interrupt on the main process stops them all)."""
    if distributed.world_size == 1:
        return flag
    vote = torch.tensor([1.0 if flag else 0.0])
    distributed.average([vote])
    return vote.item() > 0


def _finite_gradients(parameters) -> bool:
    """One device sync for all gradients, not one per tensor."""
    grads = [p.grad for p in parameters if p.grad is not None]
    return not grads or bool(torch.isfinite(torch.stack(torch._foreach_norm(grads)).sum()))


def _seed(seed: int, step: int, micro: int) -> int:
    return (seed * 1_000_003 + step * 1_009 + micro) % (2 ** 63)


class TextCache:
    """Conditioning per caption, computed once when captions never change."""

    def __init__(self, encode, enabled: bool, limit: int = 8192):
        self.encode, self.enabled, self.limit = encode, enabled, limit
        self.cache: dict[str, torch.Tensor] = {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        if not self.enabled:
            return self.encode(captions)
        missing = [c for c in dict.fromkeys(captions) if c not in self.cache]
        if missing:
            for caption, cond in zip(missing, self.encode(missing)):
                if len(self.cache) < self.limit:
                    self.cache[caption] = cond
        if all(c in self.cache for c in captions):
            return torch.stack([self.cache[c] for c in captions])
        return self.encode(captions)


def _precision(mode: str, device: torch.device):
    """(autocast context factory, GradScaler or None). CPU trains in float32."""
    if device.type != "cuda" or mode == "no":
        return contextlib.nullcontext, None
    if mode == "bf16" or (mode == "auto" and torch.cuda.is_bf16_supported()):
        return (lambda: torch.autocast("cuda", dtype=torch.bfloat16)), None
    return (lambda: torch.autocast("cuda", dtype=torch.float16)), torch.amp.GradScaler("cuda")


def _preview_request(settings: TrainingSettings, caption: str, seed: int, sampler: str):
    from ..adapters.base import PreviewRequest

    p = settings.preview
    return PreviewRequest(prompt=p.prompt or caption, negative_prompt=p.negative_prompt, steps=p.steps,
                          cfg_scale=p.cfg_scale, seed=seed, width=p.width, height=p.height, sampler=sampler)


@contextlib.contextmanager
def _isolated_preview(network, optimizer, settings, adapter, cuda_devices):
    """Everything a preview could disturb comes back as it was (B5), and the optimizer state waits
    in CPU memory while the preview renders (B6)."""
    moved = _move_optimizer_state(optimizer, "cpu") if settings.unload_optimizer_for_preview else []
    if settings.unload_models_when_training:
        adapter.set_encoders_device(adapter.device)
    with torch.random.fork_rng(devices=cuda_devices):
        network.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            network.train()
            if settings.unload_models_when_training:
                adapter.set_encoders_device("cpu")
            for state, key, device in moved:
                state[key] = state[key].to(device)


def _move_optimizer_state(optimizer, device) -> list:
    moved = []
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.device != torch.device(device):
                moved.append((state, key, value.device))
                state[key] = value.to(device)
    if moved and torch.cuda.is_available():
        torch.cuda.empty_cache()
    return moved


def _truncate_csv(path: Path, last_step: int) -> None:
    if not path.exists():
        return
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    kept = [rows[0]] + [row for row in rows[1:] if row and row[0].isdigit() and int(row[0]) <= last_step]
    buffer = io.StringIO()
    csv.writer(buffer).writerows(kept if len(kept) > 1 else [])
    files.atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))
    if len(kept) <= 1:
        path.unlink()


def _append_csv(path: Path, point: LossPoint) -> None:
    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["step", "epoch", "epoch_step", "loss", "learn_rate"])
        writer.writerow([point.step, point.epoch, point.epoch_step, f"{point.loss:.7f}", f"{point.learn_rate:.10g}"])
