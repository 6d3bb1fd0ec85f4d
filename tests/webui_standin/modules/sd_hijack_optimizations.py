"""STAND-IN of the WebUI's optimized attention forward (sdp), as §2.7 describes: hypernetworks are
applied to the context through `hypernetwork.apply_hypernetworks`, looked up at call time."""
import torch

from modules import shared
from modules.hypernetworks import hypernetwork


def scaled_dot_product_attention_forward(self, x, context=None, mask=None, **kwargs):
    batch = x.shape[0]
    heads = self.heads
    q_in = self.to_q(x)
    context = x if context is None else context
    context_k, context_v = hypernetwork.apply_hypernetworks(shared.loaded_hypernetworks, context)
    k_in, v_in = self.to_k(context_k), self.to_v(context_v)
    q, k, v = (t.view(batch, -1, heads, t.shape[-1] // heads).transpose(1, 2) for t in (q_in, k_in, v_in))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    out = out.transpose(1, 2).reshape(batch, -1, heads * out.shape[-1])
    return self.to_out(out)
