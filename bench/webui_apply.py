"""What does applying hypernetworks cost through the WebUI's own attention code?

The WebUI's attention functions (here its `sdp` optimisation, from ``modules/sd_hijack_optimizations.py``
of the real A1111 1.8 in ``../shared/webui``) call ``apply_hypernetworks`` and then the layer's own
``to_k`` / ``to_v``. One evaluation of an SD 1.5-sized ldm UNet (random weights, 64x64 latent, batch 2) is
measured with no hypernetwork and with stacks of `1, 2, 1` networks in three ways, side by side in the same
rounds: the plain WebUI (its own loading and formula), ours with the linear stack folded on the inputs only
(``inputs``), and ours with the fold in the projection weights (``fold``, patches/attention_fold.py).
Ratios are to the plain UNet; FLOPs are counted. Last line: one JSON object.

Runs in the WebUI's environment (it imports the WebUI), from the project folder:

    cache/webui-a1111/venv/bin/python bench/webui_apply.py --webui cache/webui-a1111/webui [--rounds 5]

(``cache/webui-a1111`` is what the real-WebUI tests build; ``bash ../shared/webui/build.sh DEST`` makes one.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def webui_modules(webui: Path, device: str):
    """The real WebUI's modules, initialised as its launch does, without a model or a UI."""
    os.chdir(webui)
    sys.argv = [sys.argv[0], "--skip-torch-cuda-test", "--no-half", "--precision", "full"] + (
        ["--use-cpu", "all"] if device == "cpu" else [])
    for path in (webui / "repositories/stable-diffusion-stability-ai", webui / "repositories/generative-models",
                 webui, PROJECT, PROJECT / "bench"):
        sys.path.insert(0, str(path))
    from modules import initialize
    initialize.imports()
    from modules import shared_init
    shared_init.initialize()
    from modules import devices, sd_hijack_optimizations, shared
    from modules.hypernetworks import hypernetwork
    return shared, devices, hypernetwork, sd_hijack_optimizations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--webui", type=Path, required=True, help="the WebUI folder (DEST/webui of a build)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is one)")
    args = parser.parse_args()
    import torch
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    shared, devices, hypernetwork_module, optimizations = webui_modules(args.webui.resolve(), device.type)
    optimizations.SdOptimizationSdp().apply()  # the WebUI's default choice on torch 2: its sdp attention forward

    import importlib.util

    from side_by_side import measure, report
    from unet import sd15_unet

    from hypernetwork_ext import Hypernetwork, HypernetworkConfig, files
    spec = importlib.util.spec_from_file_location("hypernetwork_ext_patches", PROJECT / "patches/__init__.py",
                                                  submodule_search_locations=[str(PROJECT / "patches")])
    package = importlib.util.module_from_spec(spec)
    sys.modules["hypernetwork_ext_patches"] = package
    spec.loader.exec_module(package)
    from hypernetwork_ext_patches.attention_fold import AttentionFold
    from hypernetwork_ext_patches.hypernetworks_a1111 import WebUIHypernetworks

    unet = sd15_unet(device, torch.float32)
    latent = torch.randn(2, 4, 64, 64, generator=torch.Generator().manual_seed(1)).to(device)
    timesteps = torch.tensor([500, 500], device=device)
    cond = torch.randn(2, 77, 768, generator=torch.Generator().manual_seed(2)).to(device)

    temporary = tempfile.TemporaryDirectory(prefix="hn-bench-")  # removed when the run ends
    folder = Path(temporary.name)
    for activation in ("linear", "swish"):
        for seed in range(3):
            network = Hypernetwork.create(HypernetworkConfig(layer_structure=(1, 2, 1), activation=activation),
                                          f"{activation}{seed}", seed=seed)
            files.save(network, folder / f"{activation}{seed}.pt")
    shared.hypernetworks.clear()
    shared.hypernetworks.update({path.stem: str(path) for path in folder.glob("*.pt")})

    webui_apply = hypernetwork_module.apply_hypernetworks
    webui_load = hypernetwork_module.load_hypernetworks
    served = WebUIHypernetworks(shared, devices, log=print)
    fold = AttentionFold(served)
    fold.attach(unet)

    def webui_stack(names):
        shared.loaded_hypernetworks.clear()  # the WebUI would reuse loaded entries of the same name (ours)
        webui_load(names, [1.0] * len(names))
        return list(shared.loaded_hypernetworks)

    def our_stack(names):
        served.load_hypernetworks(names, [1.0] * len(names))
        return list(shared.loaded_hypernetworks)

    stacks = {"linear_1": ["linear0"], "linear_3": ["linear0", "linear1", "linear2"],
              "swish_1": ["swish0"], "swish_3": ["swish0", "swish1", "swish2"]}
    configs = {"plain": (webui_apply, [], True), "plain_control": (webui_apply, [], True)}
    for name, names in stacks.items():
        configs[f"{name}_webui"] = (webui_apply, webui_stack(names), True)
        configs[f"{name}_inputs"] = (served.apply_hypernetworks, our_stack(names), False)
        if name.startswith("linear"):
            configs[f"{name}_fold"] = (served.apply_hypernetworks, our_stack(names), True)

    def prepare(name):
        """Once per generation, not per step: the configuration's networks, and the fold brought in line."""
        apply, loaded, may_fold = configs[name]
        hypernetwork_module.apply_hypernetworks = apply  # what the WebUI's attention looks up at each call
        shared.loaded_hypernetworks[:] = loaded
        fold.other_weight_patchers = lambda: (may_fold, None)
        fold.sync()

    def evaluate(name):
        prepare(name)  # (a no-op when prepared: the fold is in line)
        unet(latent, timesteps, context=cond.clone())  # a new conditioning tensor each step, as a sampler makes
        if device.type == "cuda":
            torch.cuda.synchronize()

    flops, times = measure(list(configs), evaluate, args.rounds, prepare)
    hypernetwork_module.apply_hypernetworks = webui_apply
    fold.detach()
    ratios = report(f"WebUI path (A1111 1.8 sdp attention), device {device}, float32, {args.rounds} rounds, "
                    f"{torch.get_num_threads()} threads", flops, times)
    result = {name: round(ratio, 4) for name, ratio in ratios.items() if name != "plain"}
    result.update({f"flops_{name}": round(flops[name] / flops["plain"], 4) for name in configs if name != "plain"})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
