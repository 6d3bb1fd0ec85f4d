"""The extension inside the WebUI stand-in: applying and caching at the tensor level.

STAND-IN, kept for what the real WebUI (tests/test_real_a1111.py, which checks patches, listing, broken
files, images and generation info) cannot show: attention outputs against the formula at strength 0.5
and for a weighted mix (an image only shows that something changed), the cache reloading a changed file,
the fast-path switch reaching the applier object, same-named files, the Forge UNet patcher (Forge is
not in the real-WebUI test layer yet), and the "Hypernetwork strength" setting's place beside the Settings
dropdown and its multiplier in attention (the real-WebUI test compares images)."""

import pytest
import torch

from hypernetwork_ext import Hypernetwork, HypernetworkConfig, files
from hypernetwork_ext.stack import write_set_file

import webui


@pytest.fixture
def webui_env(tmp_path):
    folder = tmp_path / "hypernetworks"
    folder.mkdir()
    with webui.standin_session(folder) as (modules, originals):
        yield modules, folder, originals


def _network(folder, name, seed=1, **config):
    config.setdefault("init_std", 0.1)
    network = Hypernetwork.create(HypernetworkConfig(sizes=(32, 48), **config), name, seed=seed)
    return files.save(network, folder / f"{name}.pt")


def test_flag_disables_all_patching(webui_env, capsys):
    modules, folder, originals = webui_env
    modules["shared"].cmd_opts.hypernetwork_ext_no_patches = True
    webui.load_extension()
    assert all(getattr(modules["hypernetwork"], name) is function for name, function in originals.items())
    assert "left unchanged" in capsys.readouterr().out


def test_strength_half_changes_attention_exactly_as_the_formula_predicts(webui_env):
    from ldm.modules.attention import CrossAttention
    modules, folder, originals = webui_env
    _network(folder, "style", activation="relu")
    torch.manual_seed(0)
    attn = CrossAttention(query_dim=32, context_dim=48, heads=2, dim_head=16).eval()
    x, context = torch.randn(2, 10, 32), torch.randn(2, 7, 48)
    forward = modules["attention"].scaled_dot_product_attention_forward

    # the plain WebUI: its own loading and formula (the stand-in's originals)
    modules["shared"].hypernetworks.update(originals["list_hypernetworks"](str(folder)))
    originals["load_hypernetworks"](["style"], [0.5])
    with torch.no_grad():
        plain_webui = forward(attn, x, context)
        network = files.load(folder / "style.pt")
        pair = network.pair_for(48)
        k_in = context + 0.5 * pair.k.linear(context)
        v_in = context + 0.5 * pair.v.linear(context)

    webui.load_extension()
    modules["hypernetwork"].load_hypernetworks(["style"], [0.5])
    with torch.no_grad():
        ours = forward(attn, x, context)
        k_ours, v_ours = modules["hypernetwork"].apply_hypernetworks(modules["shared"].loaded_hypernetworks, context)
    assert torch.allclose(k_ours, k_in, atol=1e-6) and torch.allclose(v_ours, v_in, atol=1e-6)
    assert torch.allclose(ours, plain_webui, atol=1e-6)
    modules["hypernetwork"].load_hypernetworks(["style"], [1.0])
    with torch.no_grad():
        assert not torch.allclose(forward(attn, x, context), ours, atol=1e-5)


def test_sets_apply_as_a_weighted_mix(webui_env):
    modules, folder, _ = webui_env
    _network(folder, "a", seed=1, activation="tanh")
    _network(folder, "b", seed=2)
    write_set_file(folder / "mix.hnset.json", {"mix": [{"network": "a", "weight": 3}, {"network": "b", "weight": 1}]})
    webui.load_extension()
    hypernetwork = modules["hypernetwork"]
    context = torch.randn(1, 5, 32)
    with torch.no_grad():
        hypernetwork.load_hypernetworks(["a"])
        ka, _ = hypernetwork.apply_hypernetworks(modules["shared"].loaded_hypernetworks, context)
        hypernetwork.load_hypernetworks(["b"])
        kb, _ = hypernetwork.apply_hypernetworks(modules["shared"].loaded_hypernetworks, context)
        hypernetwork.load_hypernetworks(["mix"], [0.5])
        k, _ = hypernetwork.apply_hypernetworks(modules["shared"].loaded_hypernetworks, context)
    assert torch.allclose(k, context + 0.5 * ((0.75 * ka + 0.25 * kb) - context), atol=1e-6)


def test_changed_files_are_reloaded_unchanged_ones_are_cached(webui_env):
    modules, folder, _ = webui_env
    path = _network(folder, "n", seed=1)
    webui.load_extension()
    hypernetwork = modules["hypernetwork"]
    first = hypernetwork.load_hypernetwork("n").network
    assert hypernetwork.load_hypernetwork("n").network is first
    import os
    _network(folder, "n", seed=2)
    os.utime(path, (os.path.getatime(path), os.path.getmtime(path) + 5))
    assert hypernetwork.load_hypernetwork("n").network is not first


def test_forge_applies_through_the_unet_patcher(webui_env):
    """Forge loads hypernetworks but never applies them; our script puts them into its attention patches."""
    import types
    from ldm.modules.attention import CrossAttention
    from forge_unet import UnetPatcher, forge_attention
    modules, folder, _ = webui_env
    _network(folder, "style", activation="relu")
    entry = webui.load_extension()
    modules["hypernetwork"].load_hypernetworks(["style"], [0.5])
    torch.manual_seed(0)
    attn = CrossAttention(query_dim=32, context_dim=48, heads=2, dim_head=16).eval()
    x, context = torch.randn(2, 10, 32), torch.randn(2, 7, 48)
    base = UnetPatcher()
    p = types.SimpleNamespace(sd_model=types.SimpleNamespace(forge_objects=types.SimpleNamespace(unet=base)))
    with torch.no_grad():
        before = forge_attention(attn, x, context, p.sd_model.forge_objects.unet, "attn2_patch")
        entry.HypernetworkExtension().process_before_every_sampling(p)
        patched = p.sd_model.forge_objects.unet
        after = forge_attention(attn, x, context, patched, "attn2_patch")
        expected = modules["attention"].scaled_dot_product_attention_forward(attn, x, context)  # A1111's result
    assert patched is not base and not base.model_options["transformer_options"]["patches"]  # a clone was patched
    assert not torch.allclose(before, after, atol=1e-5)
    assert torch.allclose(after, expected, atol=1e-6)


def test_forge_script_does_nothing_on_a1111(webui_env):
    import types
    modules, folder, _ = webui_env
    _network(folder, "style")
    entry = webui.load_extension()
    modules["hypernetwork"].load_hypernetworks(["style"])
    p = types.SimpleNamespace(sd_model=types.SimpleNamespace())  # no forge_objects: A1111 applies them itself
    entry.HypernetworkExtension().process_before_every_sampling(p)
    assert not hasattr(p.sd_model, "forge_objects")


def test_settings_switch_the_fast_path(webui_env):
    modules, folder, _ = webui_env
    _network(folder, "lin")
    entry = webui.load_extension()
    modules["callbacks"].ui_settings_callback()
    opts = modules["shared"].opts
    assert opts.hypernetwork_ext_fast_apply is True and entry.served.applier.fast is True
    opts.set("hypernetwork_ext_fast_apply", False)  # Settings -> Apply
    assert entry.served.applier.fast is False
    modules["hypernetwork"].load_hypernetworks(["lin"], [0.5])
    context = torch.randn(1, 4, 32)
    with torch.no_grad():
        slow, _ = modules["hypernetwork"].apply_hypernetworks(modules["shared"].loaded_hypernetworks, context)
        opts.set("hypernetwork_ext_fast_apply", True)
        fast, _ = modules["hypernetwork"].apply_hypernetworks(modules["shared"].loaded_hypernetworks, context)
    assert torch.allclose(slow, fast, atol=1e-6)


def test_two_files_with_one_name_are_reported_with_the_one_that_is_used(webui_env, capsys):
    modules, folder, _ = webui_env
    _network(folder, "x")
    files.convert(folder / "x.pt", folder / "x.safetensors")
    write_set_file(folder / "y.hnset.json", {"sequence": ["x"]})
    _network(folder, "y")
    _network(folder, "v1.5-style[v2]")
    webui.load_extension()
    listing = modules["shared"].hypernetworks
    assert sorted(listing) == ["v1.5-style[v2]", "x", "y"]  # keyed by file stem, as prompt tags name them
    assert listing["x"] == str(folder / "x.safetensors") and listing["y"] == str(folder / "y.pt")
    err = capsys.readouterr().err
    assert f"'x' names {folder / 'x.pt'} and {folder / 'x.safetensors'}; <hypernet:x> uses {folder / 'x.safetensors'}" in err
    assert f"<hypernet:y> uses {folder / 'y.pt'}" in err


def _dropdown_generation(modules, prompt="a cat", tags=()):
    """What the WebUI does with a prompt's <hypernet:...> tags and the Settings dropdown: the prompts it keeps
    (for the infotext) and the networks it loads with their multipliers."""
    import types
    from modules import extra_networks, extra_networks_hypernet
    p = types.SimpleNamespace(all_prompts=[prompt])
    params = [extra_networks.ExtraNetworkParams(items=list(tag)) for tag in tags]
    extra_networks_hypernet.ExtraNetworkHypernet().activate(p, params)
    return p.all_prompts, [(h.name, h.multiplier) for h in modules["shared"].loaded_hypernetworks]


def test_hypernetwork_strength_is_beside_the_dropdown_and_applies_to_the_network_it_adds(webui_env):
    from ldm.modules.attention import CrossAttention
    modules, folder, originals = webui_env
    _network(folder, "style", activation="relu")
    _network(folder, "other", seed=2)
    opts = modules["shared"].opts
    modules["shared"].hypernetworks.update(originals["list_hypernetworks"](str(folder)))
    opts.set("sd_hypernetwork", "style")
    plain = _dropdown_generation(modules, tags=[("other", "0.7")])  # the plain WebUI: its own loading

    webui.load_extension()
    modules["callbacks"].ui_settings_callback()
    labels = list(opts.data_labels)
    assert labels[labels.index("sd_hypernetwork") + 1] == "hypernetwork_ext_dropdown_strength"
    option = opts.data_labels["hypernetwork_ext_dropdown_strength"]
    assert option.section == opts.data_labels["sd_hypernetwork"].section
    assert option.default == 1.0 and (option.component_args["minimum"], option.component_args["maximum"]) == (0, 2)
    assert _dropdown_generation(modules, tags=[("other", "0.7")]) == plain  # at the default: the plain WebUI's
    assert plain == (["a cat<hypernet:style:1.0>"], [("other", 0.7), ("style", 1.0)])

    opts.set("hypernetwork_ext_dropdown_strength", 0.5)
    prompts, loaded = _dropdown_generation(modules, tags=[("other", "0.7")])
    assert prompts == ["a cat<hypernet:style:0.5>"] and loaded == [("other", 0.7), ("style", 0.5)]  # infotext too
    assert _dropdown_generation(modules, tags=[("style", "0.8")])[1] == [("style", 0.8)]  # named in the prompt: as named
    torch.manual_seed(0)
    attn = CrossAttention(query_dim=32, context_dim=48, heads=2, dim_head=16).eval()
    x, context = torch.randn(2, 10, 32), torch.randn(2, 7, 48)
    forward = modules["attention"].scaled_dot_product_attention_forward
    _dropdown_generation(modules)
    with torch.no_grad():
        at_half = forward(attn, x, context)
        modules["hypernetwork"].load_hypernetworks(["style"], [0.5])  # as <hypernet:style:0.5> in the prompt
        assert torch.allclose(at_half, forward(attn, x, context), atol=1e-6)
        modules["hypernetwork"].load_hypernetworks(["style"], [1.0])
        assert not torch.allclose(at_half, forward(attn, x, context), atol=1e-5)
    opts.set("sd_hypernetwork", "None")
    assert _dropdown_generation(modules) == (["a cat"], [])


def test_unloading_puts_the_webuis_dropdown_back(webui_env):
    from modules import extra_networks_hypernet
    modules, folder, _ = webui_env
    webui_activate = extra_networks_hypernet.ExtraNetworkHypernet.activate
    webui.load_extension()
    assert extra_networks_hypernet.ExtraNetworkHypernet.activate is not webui_activate
    webui.unload_extension()
    assert extra_networks_hypernet.ExtraNetworkHypernet.activate is webui_activate
