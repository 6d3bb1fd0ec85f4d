"""STAND-IN of Forge's UNet patcher and its attention, per webui-interfaces.md §5 (the attention-patch
contract): patches are kept in model_options["transformer_options"]["patches"] and called as
fn(n, context, value, extra_options) -> (n, context, value) before the key/value projections."""
import copy

import torch


class UnetPatcher:
    def __init__(self):
        self.model_options = {"transformer_options": {"patches": {}}}

    def clone(self):
        twin = UnetPatcher()
        twin.model_options = copy.deepcopy(self.model_options)
        return twin

    def _add(self, kind, fn):
        self.model_options["transformer_options"]["patches"].setdefault(kind, []).append(fn)

    def set_model_attn1_patch(self, fn):
        self._add("attn1_patch", fn)

    def set_model_attn2_patch(self, fn):
        self._add("attn2_patch", fn)


def forge_attention(attn, x, context, unet: UnetPatcher, kind: str):
    """Attention as Forge runs it: patches first, then projections and SDPA."""
    n = x
    context = x if context is None else context
    value = context
    for fn in unet.model_options["transformer_options"]["patches"].get(kind, []):
        n, context, value = fn(n, context, value, {"n_heads": attn.heads})
    q, k, v = attn.to_q(n), attn.to_k(context), attn.to_v(value)
    b, h = x.shape[0], attn.heads
    q, k, v = (t.view(b, -1, h, t.shape[-1] // h).transpose(1, 2) for t in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, q.shape[-1] * h)
    return attn.to_out(out)
