"""The hypernetwork itself: per attention width, one small MLP for the key input and one for the value.

Module layouts are exactly the WebUI's (``linear.<index>.weight`` inside a ``Sequential``), so the
state dicts we write load in the plain WebUI and the files it wrote load here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import HypernetworkConfig, build_activation


class ResidualBlock(nn.Module):
    """One block of the old extension's "skip-connection" hypernetworks.

    main path: Linear -> [LayerNorm] -> [Dropout] -> activation; output = shortcut(x) + main(x).
    The shortcut is nearest-exact interpolation to the output width, or a bias-free Linear that
    starts as exactly that interpolation (and, unlike in the old extension, is trained).
    """

    def __init__(self, n_in: int, n_out: int, config: HypernetworkConfig, dropout: float):
        super().__init__()
        self.n_out = n_out
        self.upsample_layer = nn.Linear(n_in, n_out, bias=False) if config.residual_shortcut == "linear" else None
        layers: list[nn.Module] = [nn.Linear(n_in, n_out)]
        if config.layer_norm:
            layers.append(nn.LayerNorm(n_out))
        if dropout > 0:
            layers.append(nn.Dropout(p=dropout))
        if config.activation != "linear":
            layers.append(build_activation(config.activation))
        self.linear = nn.Sequential(*layers)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample_layer is not None:
            return self.upsample_layer(x)
        flat = x.reshape(-1, 1, x.shape[-1])
        return F.interpolate(flat, size=self.n_out, mode="nearest-exact").reshape(*x.shape[:-1], self.n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.linear(x)


class HypernetworkModule(nn.Module):
    """``x + strength * mlp(x)`` for one attention width; residual modules interpolate instead.

    Strength is an argument, not state: it belongs to how a network is applied (a stack entry),
    never to the network. In training mode strength is always 1, whatever the caller passes.
    """

    def __init__(self, dim: int, config: HypernetworkConfig):
        super().__init__()
        self.dim = dim
        self.residual = config.residual
        widths = config.widths(dim)
        dropout = config.dropout_structure
        layers: list[nn.Module] = []
        last = len(widths) - 2
        for i, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
            if config.residual:
                layers.append(ResidualBlock(n_in, n_out, config, dropout[i + 1]))
                continue
            layers.append(nn.Linear(n_in, n_out))
            if config.activation != "linear" and (i < last or config.activate_output):
                layers.append(build_activation(config.activation))
            if config.layer_norm:
                layers.append(nn.LayerNorm(n_out))
            if dropout[i + 1] > 0:
                layers.append(nn.Dropout(p=dropout[i + 1]))
        self.linear = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        if self.training:
            strength = 1.0  # A7: training at a user strength below 1 damaged results
        out = self.linear(x)
        if self.residual:
            return out if strength == 1.0 else x + strength * (out - x)
        return x + out * strength


class KeyValuePair(nn.Module):
    """The two modules of one width: ``k`` transforms the key input, ``v`` the value input."""

    def __init__(self, dim: int, config: HypernetworkConfig):
        super().__init__()
        self.k = HypernetworkModule(dim, config)
        self.v = HypernetworkModule(dim, config)


class Hypernetwork(nn.Module):
    """A named set of key/value module pairs, one per attention width, plus the file metadata."""

    def __init__(self, config: HypernetworkConfig, name: str = "hypernetwork"):
        super().__init__()
        self.config = config
        self.name = name
        self.step = 0
        self.sd_checkpoint: str | None = None
        self.sd_checkpoint_name: str | None = None
        self.optional_info: str | None = None
        with torch.device("meta"):  # no wasted init, and the global RNG is never touched
            self.pairs = nn.ModuleDict({str(size): KeyValuePair(size, config) for size in config.sizes})

    @classmethod
    def create(cls, config: HypernetworkConfig, name: str = "hypernetwork", seed: int | None = None,
               optional_info: str | None = None) -> "Hypernetwork":
        """A new network. With a seed it is the same bit for bit every time; the process-wide RNG
        is neither reseeded nor advanced. Key and value modules draw different values."""
        network = cls(config, name)
        network.optional_info = optional_info or None
        network.pairs.to_empty(device="cpu")
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        for size in config.sizes:  # one stream for everything: k and v, and every width, differ
            pair = network.pairs[str(size)]
            _initialise(pair.k, config, generator)
            _initialise(pair.v, config, generator)
        return network.requires_grad_(False).eval()

    @property
    def sizes(self) -> tuple[int, ...]:
        return self.config.sizes

    def pair_for(self, width: int) -> KeyValuePair | None:
        return self.pairs[str(width)] if str(width) in self.pairs else None

    def module_state_dicts(self) -> dict[int, tuple[dict, dict]]:
        """``{width: (k_state_dict, v_state_dict)}`` as the WebUI stores them."""
        return {size: (self.pairs[str(size)].k.state_dict(), self.pairs[str(size)].v.state_dict())
                for size in self.config.sizes}

    def load_module_state_dicts(self, states: dict[int, tuple[dict, dict]]) -> None:
        """Fill every module from ``{width: (k_state, v_state)}``; tensors become float32 like the WebUI's."""
        for size in self.config.sizes:
            pair = self.pairs[str(size)]
            for module, state in zip((pair.k, pair.v), states[size]):
                state = {key: (t.detach().to(torch.float32) if t.is_floating_point() else t.detach()).clone()
                         for key, t in state.items()}
                module.load_state_dict(state, strict=True, assign=True)
        self.requires_grad_(False)

    def describe(self) -> str:
        c = self.config
        parts = [f"layers {', '.join(f'{x:g}' for x in c.layer_structure)}", f"activation {c.activation}"]
        if c.layer_norm:
            parts.append("layer norm")
        if c.activate_output:
            parts.append("activate output")
        if any(c.dropout_structure):
            parts.append(f"dropout {', '.join(f'{x:g}' for x in c.dropout_structure)}")
        if c.residual:
            parts.append(f"residual ({c.residual_shortcut} shortcut)")
        return "; ".join(parts)


def _initialise(module: nn.Module, config: HypernetworkConfig, generator: torch.Generator | None) -> None:
    """WebUI init rules, with two fixes: LayerNorm starts as identity, and a linear residual
    shortcut starts as the interpolation it replaces."""
    gain_for = "leaky_relu" if config.activation == "leakyrelu" else "relu"
    shortcuts = {id(block.upsample_layer) for block in module.modules()
                 if isinstance(block, ResidualBlock) and block.upsample_layer is not None}
    with torch.no_grad():
        for layer in module.modules():
            if id(layer) in shortcuts:
                n_out, n_in = layer.weight.shape
                eye = torch.eye(n_in).reshape(n_in, 1, n_in)
                layer.weight.copy_(F.interpolate(eye, size=n_out, mode="nearest-exact").reshape(n_in, n_out).T)
            elif isinstance(layer, nn.Linear):
                w = layer.weight
                if config.weight_init == "Normal":
                    nn.init.normal_(w, 0.0, config.init_std, generator=generator)
                elif config.weight_init == "XavierUniform":
                    nn.init.xavier_uniform_(w, generator=generator)
                elif config.weight_init == "XavierNormal":
                    nn.init.xavier_normal_(w, generator=generator)
                elif config.weight_init == "KaimingUniform":
                    nn.init.kaiming_uniform_(w, nonlinearity=gain_for, generator=generator)
                else:  # KaimingNormal; the config admits nothing else
                    nn.init.kaiming_normal_(w, nonlinearity=gain_for, generator=generator)
                nn.init.zeros_(layer.bias)
            elif isinstance(layer, nn.LayerNorm):
                nn.init.ones_(layer.weight)
                nn.init.zeros_(layer.bias)
            elif hasattr(layer, "reset_parameters") and any(True for _ in layer.parameters(recurse=False)):
                layer.reset_parameters()  # e.g. PReLU: deterministic constants
