"""Killing the process at any moment leaves every file either old or new, never broken.

A server process imports torch and prepares its job once, then forks a worker per round; the test kills
each worker with SIGKILL at a random moment (so kills are cheap and many). Two jobs: a writer that saves
two versions of a hypernetwork and their optimizer state in turn as fast as it can (so most kills land
inside a save), and a real training run on the tiny model saving a copy and its `.optim` every step.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

from hypernetwork_ext import Hypernetwork, HypernetworkConfig, files

from training_helpers import make_images, make_network

SERVER = textwrap.dedent("""
    import os, sys
    import torch
    torch.set_num_threads(1)  # workers are forked: no thread pool may be running in this process
    sys.path.insert(0, sys.argv[1])
    from hypernetwork_ext import Hypernetwork, HypernetworkConfig, files
    job, target = sys.argv[2], sys.argv[3]
    if job == "writer":
        versions = [Hypernetwork.create(HypernetworkConfig(sizes=(256, 128), layer_structure=(1, 4, 1)), "v", seed=s)
                    for s in (1, 2)]

        def work(round_index):
            i = 0
            while True:
                files.save(versions[i % 2], target)
                files.save_optimizer_state(target, "AdamW", {"state": {}, "param_groups": [{"lr": 0.1 * (1 + i % 2)}]})
                i += 1
    else:
        from training_helpers import tiny_adapter
        from hypernetwork_ext.training import TrainingSettings, train
        adapter = tiny_adapter()
        data, network = sys.argv[4], sys.argv[5]

        def work(round_index):
            settings = TrainingSettings(data_dir=data, width=64, height=64, max_steps=100000, batch_size=2,
                                        learn_rate="1e-3", save_every=1, preview_every=0)
            train(adapter, network, settings, output_path=os.path.join(target, f"out{round_index}.pt"),
                  log_dir=os.path.join(target, f"logs{round_index}"))
    print("@ready", flush=True)  # protocol lines start with @: ldm prints to stdout too
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            work(int(line))
            os._exit(0)
        print(f"@{pid}", flush=True)
        os.waitpid(pid, 0)
        print("@reaped", flush=True)
""")


class ForkServer:
    def __init__(self, *arguments: str):
        tests = str(Path(__file__).parent)
        self.process = subprocess.Popen([sys.executable, "-c", SERVER, tests, *arguments], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        assert self._reply() == "ready"

    def _reply(self) -> str:
        for line in self.process.stdout:
            if line.startswith("@"):
                return line[1:].strip()
        raise AssertionError("the server ended")

    def start(self, round_index: int) -> int:
        self.process.stdin.write(f"{round_index}\n")
        self.process.stdin.flush()
        return int(self._reply())

    def kill(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        assert self._reply() == "reaped"

    def close(self):
        self.process.stdin.close()
        self.process.wait(60)


def _versions():
    made = [Hypernetwork.create(HypernetworkConfig(sizes=(256, 128), layer_structure=(1, 4, 1)), "v", seed=s)
            for s in (1, 2)]
    return [{k: v.clone() for k, v in n.state_dict().items()} for n in made]


def test_sigkill_during_saves_never_breaks_a_file(tmp_path):
    path = tmp_path / "n.pt"
    expected = _versions()
    rng = random.Random(0)
    kills = checked = 0
    server = ForkServer("writer", str(path))
    try:
        for round_index in range(60):
            pid = server.start(round_index)
            time.sleep(rng.uniform(0.0, 0.15))
            server.kill(pid)
            kills += 1
            if not path.exists():
                continue
            loaded = files.load(path).state_dict()
            version = next(i for i, v in enumerate(expected) if all(torch.equal(loaded[k], v[k]) for k in v))
            checked += 1
            sidecar = files.optimizer_sidecar_path(path)
            if sidecar.exists():
                files.read_torch_pickle(sidecar)  # old or new, never torn
                checked += 1
                matched = files.load_optimizer_state(path)  # when its hash says it belongs to this file, it does
                if matched is not None:
                    assert matched[1]["param_groups"][0]["lr"] == 0.1 * (1 + version)
    finally:
        server.close()
    print(f"writer: kills: {kills}, files checked: {checked}, broken: 0")
    assert checked >= 60


def test_sigkill_during_training_never_breaks_a_file(tmp_path):
    data = make_images(tmp_path / "data", 4, sizes=((64, 64),))
    network = make_network(tmp_path / "style.pt", activation="relu")
    before = files.load(network).state_dict()
    rng = random.Random(1)
    kills = checked = 0
    server = ForkServer("training", str(tmp_path), str(data), str(network))
    try:
        for round_index in range(12):
            pid = server.start(round_index)
            log_dir = tmp_path / f"logs{round_index}"
            deadline = time.monotonic() + 120
            while len(list(log_dir.rglob("*.pt"))) < 2 and time.monotonic() < deadline:  # saving by now
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.4))
            server.kill(pid)
            kills += 1
            copies = sorted(log_dir.rglob("*.pt"))
            assert len(copies) >= 2, "training never saved"
            for copy in copies:
                files.load(copy)  # each saved copy is whole
                checked += 1
                sidecar = files.optimizer_sidecar_path(copy)
                if sidecar.exists():
                    files.read_torch_pickle(sidecar)
                    checked += 1
            starting = files.load(network).state_dict()  # the file training started from is untouched
            assert all(torch.equal(starting[k], before[k]) for k in before)
            checked += 1
    finally:
        server.close()
    print(f"training: kills: {kills}, files checked: {checked}, broken: 0")
