"""Killing the process while it saves leaves every file either old or new, never broken."""

import random
import subprocess
import sys
import textwrap
import time

import torch

from hypernetwork_ext import Hypernetwork, HypernetworkConfig, files

WRITER = textwrap.dedent("""
    import sys, torch
    from hypernetwork_ext import Hypernetwork, HypernetworkConfig, files
    path = sys.argv[1]
    versions = [Hypernetwork.create(HypernetworkConfig(sizes=(256, 128), layer_structure=(1, 4, 1)), "v", seed=s)
                for s in (1, 2)]
    state = {"state": {}, "param_groups": [{"lr": 0.1, "params": []}]}
    print("ready", flush=True)
    i = 0
    while True:
        files.save(versions[i % 2], path)
        files.save_optimizer_state(path, "AdamW", state)
        i += 1
""")


def test_sigkill_during_saves_never_breaks_a_file(tmp_path):
    path = tmp_path / "n.pt"
    expected = [Hypernetwork.create(HypernetworkConfig(sizes=(256, 128), layer_structure=(1, 4, 1)), "v", seed=s)
                for s in (1, 2)]
    expected = [{k: v.clone() for k, v in n.state_dict().items()} for n in expected]
    rng = random.Random(0)
    kills = checked = 0
    for _ in range(6):
        process = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE)
        assert process.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.05, 0.6))
        process.kill()
        process.wait()
        kills += 1
        if not path.exists():
            continue
        loaded = files.load(path).state_dict()
        assert any(all(torch.equal(loaded[k], version[k]) for k in version) for version in expected)
        sidecar = files.optimizer_sidecar_path(path)
        if sidecar.exists():
            files.read_torch_pickle(sidecar)  # loads: old or new, never torn
        checked += 1
    print(f"kills: {kills}, files checked: {checked}, broken: 0")
    assert checked >= 4
