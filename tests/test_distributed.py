"""Two CPU processes under `accelerate launch` train exactly like one process with the same global batch.

SGD is used so that the comparison shows the data split itself: the gradients then differ only by
float rounding (the averaging order), and SGD passes them on unchanged. AdamW divides by the square
root of tiny second moments, which turns rounding-level differences into ~1e-5 weight differences."""

import shutil
import subprocess
import sys

import pytest
import torch

from training_helpers import make_images, make_network, weights_of


def test_two_processes_equal_one_with_the_same_global_batch(tmp_path):
    pytest.importorskip("accelerate")
    accelerate = shutil.which("accelerate", path=str(__import__("pathlib").Path(sys.executable).parent))
    make_images(tmp_path / "data", 4, sizes=((64, 64),))
    make_network(tmp_path / "start.pt", activation="relu")  # no dropout: its masks depend on the batch shape
    common = ["--data", str(tmp_path / "data"), "--width", "64", "--height", "64", "--lr", "0.05", "--steps", "3", "--optimizer", "SGD",
              "--save-every", "0", "--preview-every", "0", "--device", "cpu"]
    one = subprocess.run([sys.executable, "-m", "hypernetwork_ext", "train", "--hypernetwork", str(tmp_path / "start.pt"),
                          "--batch-size", "2", "--out", str(tmp_path / "one.pt"), "--log-dir", str(tmp_path / "l1"),
                          *common], capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "hypernetwork_ext", "train",
                          "--hypernetwork", str(tmp_path / "start.pt"), "--batch-size", "1",
                          "--out", str(tmp_path / "two.pt"), "--log-dir", str(tmp_path / "l2"), *common],
                         capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = weights_of(tmp_path / "one.pt"), weights_of(tmp_path / "two.pt")
    start = weights_of(tmp_path / "start.pt")
    difference = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"max weight difference, 1 process (batch 2) vs 2 processes (batch 1 each): {difference:.3g}")
    assert difference < 1e-6
    assert any(not torch.equal(a[k], start[k]) for k in a)
    assert two.stdout.count("hypernetwork:") == 1  # only the main process reports and writes
