"""A Stable Diffusion 1.5-sized UNet with random weights, built in code from the `ldm` package."""

import torch


def sd15_unet(device="cpu", dtype=torch.float32, seed=0):
    """SD 1.5's UNet configuration (860M parameters). ldm zero-initialises some output layers; they
    get small random values here too, so every block contributes to the output."""
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    from hypernetwork_ext.models.tiny import SD15_UNET

    generator = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        unet = UNetModel(image_size=32, in_channels=4, out_channels=4, use_spatial_transformer=True,
                         transformer_depth=1, context_dim=768, use_checkpoint=False, legacy=False, **SD15_UNET)
    unet.to_empty(device="cpu")
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if name.endswith("bias"):
                parameter.zero_()
            elif parameter.ndim == 1:  # norm scales
                parameter.fill_(1.0)
            else:
                fan_in = parameter[0].numel()
                parameter.normal_(0.0, fan_in ** -0.5, generator=generator)
    return unet.to(device=device, dtype=dtype).eval().requires_grad_(False)
