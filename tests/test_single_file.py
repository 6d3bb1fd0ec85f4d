"""Issue 5: a checkpoint in the original SD 1.x key layout (random weights, built in code) loads through
the single-file path (diffusers' key conversion, configs from a local folder, nothing from the hub) and trains."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hypernetwork_ext import files
from hypernetwork_ext.cli import main
from hypernetwork_ext.models.tiny import TOKENS, tiny_latent_diffusion
from hypernetwork_ext.train_cli import _single_file_components

from training_helpers import make_images, make_network, same_tensors, weights_of

CONTEXT_WIDTH = 48  # the tiny model's text width, the first of TINY_ATTENTION_WIDTHS
SAMPLED_KEYS = {  # original key -> (component, diffusers key)
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight":
        ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"),
    "model.diffusion_model.middle_block.0.in_layers.2.weight": ("unet", "mid_block.resnets.0.conv1.weight"),
    "model.diffusion_model.out.2.weight": ("unet", "conv_out.weight"),
    "first_stage_model.encoder.down.1.block.0.conv1.weight": ("vae", "encoder.down_blocks.1.resnets.0.conv1.weight"),
    "first_stage_model.post_quant_conv.weight": ("vae", "post_quant_conv.weight"),
    "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.k_proj.weight":
        ("text_encoder", "text_model.encoder.layers.0.self_attn.k_proj.weight"),
}


def clip_vocab() -> dict:
    """The smallest CLIP BPE vocabulary: every byte alone and word-final, and the two special tokens."""
    from transformers.models.clip.tokenization_clip import bytes_to_unicode
    symbols = list(bytes_to_unicode().values())
    return {token: index for index, token in
            enumerate(symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"])}


def write_model_config(folder: Path, text_config) -> Path:
    """What --model-config expects: a diffusers model folder without weights, matching the tiny checkpoint."""
    def write(name, data):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(data))

    write("model_index.json", {
        "_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "PNDMScheduler"],
        "safety_checker": [None, None], "feature_extractor": [None, None], "requires_safety_checker": False})
    # ldm's num_heads is diffusers' (misnamed) attention_head_dim
    write("unet/config.json", {
        "_class_name": "UNet2DConditionModel", "sample_size": 8, "layers_per_block": 1, "block_out_channels": [32, 64],
        "down_block_types": ["CrossAttnDownBlock2D"] * 2, "up_block_types": ["CrossAttnUpBlock2D"] * 2,
        "cross_attention_dim": CONTEXT_WIDTH, "attention_head_dim": 2})
    write("vae/config.json", {
        "_class_name": "AutoencoderKL", "latent_channels": 4, "block_out_channels": [32] * 4, "layers_per_block": 1,
        "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
        "sample_size": 64, "scaling_factor": 0.18215})
    write("scheduler/scheduler_config.json", {
        "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000, "skip_prk_steps": True, "steps_offset": 1})
    text_config.save_pretrained(folder / "text_encoder")
    write("tokenizer/vocab.json", clip_vocab())
    (folder / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    write("tokenizer/tokenizer_config.json", {"model_max_length": TOKENS})
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The tiny ldm model's UNet and autoencoder with a tiny CLIP text model as ``cond_stage_model.transformer``
    (FrozenCLIPEmbedder's layout), written as one .safetensors and one .ckpt, plus the matching config folder."""
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = tmp_path_factory.mktemp("checkpoint")
    text_config = CLIPTextConfig(vocab_size=len(clip_vocab()), hidden_size=CONTEXT_WIDTH, intermediate_size=96,
                                 num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=TOKENS)
    ldm = tiny_latent_diffusion(context_width=CONTEXT_WIDTH)
    torch.manual_seed(5)
    text_encoder = CLIPTextModel(text_config)
    state = {key: value for key, value in ldm.state_dict().items() if not key.startswith("cond_stage_model.")}
    state.update({f"cond_stage_model.transformer.{key}": value for key, value in text_encoder.state_dict().items()})
    save_file({key: value.contiguous() for key, value in state.items()}, folder / "tiny.safetensors")
    torch.save({"state_dict": state, "global_step": 0}, folder / "tiny.ckpt")
    return {"folder": folder, "state": state, "ldm": ldm,
            "config": write_model_config(folder / "config", text_config)}


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the single-file path tried to reach the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_checkpoint_tensors_reach_the_loaded_components(checkpoint, no_network, suffix):
    parts = _single_file_components(checkpoint["folder"] / f"tiny{suffix}", "cpu", str(checkpoint["config"]))
    for original, (component, key) in SAMPLED_KEYS.items():
        assert torch.equal(parts[component].state_dict()[key], checkpoint["state"][original]), key
    # the whole UNet converted, not only the sampled keys: it computes what ldm's computes
    x, t, context = torch.randn(2, 4, 8, 8), torch.tensor([10, 700]), torch.randn(2, TOKENS, CONTEXT_WIDTH)
    with torch.no_grad():
        expected = checkpoint["ldm"].model.diffusion_model(x, timesteps=t, context=context)
        got = parts["unet"](x, t, encoder_hidden_states=context).sample
    assert torch.allclose(got, expected, atol=1e-5)
    assert parts["tokenize"](["a red circle"]).shape == (1, TOKENS)


def test_checkpoint_in_the_original_layout_trains_offline(checkpoint, no_network, tmp_path, capsys):
    data = make_images(tmp_path / "data", 2, sizes=((64, 64),))
    network = make_network(tmp_path / "n.pt")
    before = weights_of(network)
    assert main(["train", "--model", str(checkpoint["folder"] / "tiny.safetensors"),
                 "--model-config", str(checkpoint["config"]), "--hypernetwork", str(network), "--data", str(data),
                 "--steps", "3", "--width", "64", "--height", "64", "--lr", "1e-3", "--save-every", "0",
                 "--preview-every", "0", "--log-dir", str(tmp_path / "logs"), "--out", str(tmp_path / "out.pt")]) == 0
    assert "DEMONSTRATION" not in capsys.readouterr().out
    trained = files.load(tmp_path / "out.pt")
    assert trained.step == 3
    # trained on: recorded as the WebUI records it, the checkpoint's name and the short hash of its file
    assert (trained.sd_checkpoint_name, trained.sd_checkpoint) == (
        "tiny", files.file_sha256(checkpoint["folder"] / "tiny.safetensors")[:10])
    assert not same_tensors(weights_of(tmp_path / "out.pt"), before)


def test_without_model_config_offline_the_error_names_the_flag(checkpoint, tmp_path):
    data = make_images(tmp_path / "data", 1, sizes=((64, 64),))
    network = make_network(tmp_path / "n.pt")
    # an empty Hugging Face cache, and the hub refused: what a user without the configs cached sees
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    run = subprocess.run([sys.executable, "-m", "hypernetwork_ext", "train", "--model",
                          str(checkpoint["folder"] / "tiny.safetensors"), "--hypernetwork", str(network),
                          "--data", str(data)], env=env, capture_output=True, text=True,
                         cwd=Path(__file__).parent.parent, timeout=120)
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert run.returncode == 2 and len(errors) == 1 and "--model-config" in errors[0], run.stderr
    assert run.stderr.strip().splitlines()[-1] == errors[0]


def test_model_config_that_is_not_a_model_folder_is_refused(checkpoint, tmp_path, capsys):
    # a bad path must not reach diffusers, which would take it for a hub repository name
    assert main(["train", "--model", str(checkpoint["folder"] / "tiny.safetensors"), "--model-config",
                 str(tmp_path / "missing"), "--hypernetwork", str(make_network(tmp_path / "n.pt")),
                 "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--model-config" in err[0], err


def test_model_config_without_a_checkpoint_is_refused(tmp_path, capsys):
    assert main(["train", "--model", "tiny", "--model-config", str(tmp_path), "--hypernetwork",
                 str(make_network(tmp_path / "n.pt")), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--model-config goes with" in err[0], err


def test_the_app_refuses_model_config_without_a_checkpoint(tmp_path, capsys):
    assert main(["app", "--model", "tiny", "--model-config", str(tmp_path), "--folder", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "--model-config goes with" in err[0], err


@pytest.mark.parametrize("model", ["tiny.safetensors", "tiny.ckpt", "config"])
def test_create_takes_the_sizes_of_a_checkpoint_or_diffusers_folder(checkpoint, tmp_path, capsys, model):
    assert main(["create", "fit", "--out", str(tmp_path / "fit.pt"), "--model", str(checkpoint["folder"] / model)]) == 0
    assert files.load(tmp_path / "fit.pt").sizes == (CONTEXT_WIDTH, 32, 64)  # the text width, then the UNet's
