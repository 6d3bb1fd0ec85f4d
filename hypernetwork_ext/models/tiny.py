"""Stable-Diffusion-shaped models built in code from the ``ldm`` classes the WebUI uses (and from
diffusers components), with random weights and no download.

The tiny one is the test and demonstration model: same architecture family (UNet with spatial
transformers, KL autoencoder with factor-8 latents, a text encoder giving (batch, 77, width)
conditioning), about 1.5 million parameters. ``SD15_UNET`` gives benchmarks the real SD 1.5 UNet shape.
"""

from __future__ import annotations

import torch
from torch import nn

TOKENS = 77


class TinyTextEncoder(nn.Module):
    """UTF-8 bytes as tokens (no vocabulary file), an embedding and one transformer layer."""

    def __init__(self, width: int = 48, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.width = width
        self.embedding = nn.Embedding(258, width)  # 256 bytes, start, pad
        self.position = nn.Parameter(torch.zeros(TOKENS, width))
        self.layer = nn.TransformerEncoderLayer(width, nhead=2, dim_feedforward=2 * width, dropout=0.0,
                                                batch_first=True)
        self.norm = nn.LayerNorm(width)
        with torch.no_grad():
            for parameter in self.parameters():
                if parameter.ndim > 1:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * parameter.shape[-1] ** -0.5)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        ids = torch.full((len(texts), TOKENS), 257, dtype=torch.long)
        for row, text in enumerate(texts):
            data = [256] + list(text.encode("utf-8"))[: TOKENS - 1]
            ids[row, : len(data)] = torch.tensor(data)
        return ids

    def forward(self, texts: list[str]) -> torch.Tensor:
        ids = self.tokenize(list(texts)).to(self.position.device)
        hidden = self.embedding(ids) + self.position
        return self.norm(self.layer(hidden))

    def encode(self, texts):
        return self(texts)


TINY_UNET = {"model_channels": 32, "attention_resolutions": [1, 2], "num_res_blocks": 1, "channel_mult": [1, 2],
             "num_heads": 2}
SD15_UNET = {"model_channels": 320, "attention_resolutions": [4, 2, 1], "num_res_blocks": 2,
             "channel_mult": [1, 2, 4, 4], "num_heads": 8}  # Stable Diffusion 1.5's UNet (860M parameters)


def build_latent_diffusion(unet: dict, context_width: int, latent_size: int, seed: int = 0):
    """A LatentDiffusion with the given UNet shape, a small KL autoencoder (factor 8) and the byte-level
    text encoder; SD 1.x's noise schedule and latent scale."""
    from ldm.models.diffusion.ddpm import LatentDiffusion

    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # ldm's constructors draw from the global generator; put it back after
    try:
        return LatentDiffusion(
            first_stage_config={"target": "ldm.models.autoencoder.AutoencoderKL", "params": {
                "embed_dim": 4, "lossconfig": {"target": "torch.nn.Identity"},
                "ddconfig": {"double_z": True, "z_channels": 4, "resolution": latent_size * 8, "in_channels": 3,
                             "out_ch": 3, "ch": 32, "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1,
                             "attn_resolutions": [], "dropout": 0.0}}},
            cond_stage_config={"target": "hypernetwork_ext.models.tiny.TinyTextEncoder",
                               "params": {"width": context_width, "seed": seed}},
            unet_config={"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel", "params": {
                "image_size": latent_size, "in_channels": 4, "out_channels": 4, "use_spatial_transformer": True,
                "transformer_depth": 1, "context_dim": context_width, "use_checkpoint": False, "legacy": False,
                **unet}},
            linear_start=0.00085, linear_end=0.012, timesteps=1000, first_stage_key="jpg", cond_stage_key="txt",
            image_size=latent_size, channels=4, conditioning_key="crossattn", scale_factor=0.18215, use_ema=False,
            monitor=None,
        ).eval().requires_grad_(False)
    finally:
        torch.random.set_rng_state(torch_state)


def tiny_latent_diffusion(context_width: int = 48, seed: int = 0):
    """A LatentDiffusion with attention widths 32 and 64 and text width ``context_width``."""
    model = build_latent_diffusion(TINY_UNET, context_width, latent_size=8, seed=seed)
    # ldm zero-initialises output layers; small random values make every block matter
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in model.model.parameters():
            if parameter.ndim > 1 and not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    return model


TINY_ATTENTION_WIDTHS = (48, 32, 64)  # text width first, as in the WebUI's default list


def tiny_diffusers_components(context_width: int = 48, seed: int = 0) -> dict:
    """The same shape of model as diffusers components: UNet, VAE, CLIP text model, tokenizer, scheduler.
    The tokenizer is byte-level (no vocabulary file to download)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # the constructors draw from the global generator; put it back after
    try:
        unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                    block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                                    cross_attention_dim=context_width, attention_head_dim=8, norm_num_groups=32)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32, 32, 32),
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            layers_per_block=1, norm_num_groups=32, sample_size=64)
        text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=258, hidden_size=context_width, intermediate_size=96,
                                                    num_hidden_layers=1, num_attention_heads=2,
                                                    max_position_embeddings=TOKENS))
    finally:
        torch.random.set_rng_state(state)
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000)
    tokenizer = TinyTextEncoder(width=8)  # only its byte tokenizer is used
    for module in (unet, vae, text_encoder):
        module.eval().requires_grad_(False)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenize": tokenizer.tokenize,
            "noise_scheduler": scheduler}
