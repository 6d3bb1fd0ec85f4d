"""STAND-IN of modules/devices.py: the CPU, and the cast helpers attention code uses."""
import torch

device = torch.device("cpu")
dtype = torch.float32
unet_needs_upcast = False


def cond_cast_unet(tensor):
    return tensor


def cond_cast_float(tensor):
    return tensor.float() if unet_needs_upcast else tensor
