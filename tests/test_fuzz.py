"""A fuzz run of the loaders: mutated real files give our one clear error, never anything else."""

import random

from hypernetwork_ext import Hypernetwork, HypernetworkConfig, HypernetworkFileError, files
from hypernetwork_ext.stack import read_set_file, write_set_file
from hypernetwork_ext.training import TrainingSettings


def _mutations(raw: bytes, count: int, seed: int):
    rng = random.Random(seed)
    for _ in range(count):
        data = bytearray(raw)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        if rng.random() < 0.1:
            data = data + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        yield bytes(data)


def test_fuzz_loaders(tmp_path):
    network = Hypernetwork.create(HypernetworkConfig(sizes=(16, 8), activation="relu", layer_norm=True), "f", seed=1)
    sources = {".pt": files.save(network, tmp_path / "base.pt").read_bytes(),
               ".safetensors": files.save(network, tmp_path / "base.safetensors").read_bytes(),
               ".hnset.json": write_set_file(tmp_path / "base.hnset.json",
                                             {"mix": [{"network": "a", "weight": 1}, {"network": "b"}]}).read_bytes(),
               ".json": TrainingSettings().to_json().encode()}
    loaders = {".pt": files.load, ".safetensors": files.load, ".hnset.json": read_set_file,
               ".json": TrainingSettings.load}
    tried = crashes = 0
    for suffix, raw in sources.items():
        for index, data in enumerate(_mutations(raw, 150, seed=len(suffix))):
            path = tmp_path / f"m{index}{suffix}"
            path.write_bytes(data)
            tried += 1
            try:
                loaders[suffix](path)
            except HypernetworkFileError:
                pass
            except Exception as error:  # noqa: BLE001 - that is what this test looks for
                crashes += 1
                print(f"{suffix} mutation {index}: {type(error).__name__}: {error}")
            path.unlink()
    print(f"inputs tried: {tried}, crashes: {crashes}")
    assert crashes == 0
