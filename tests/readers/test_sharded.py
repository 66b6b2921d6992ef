"""Sharded checkpoints (transformers' and diffusers' index file and shards): one model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import filterdb
from filterdb.errors import ModelReadError
from filterdb.readers import open_model

from .refusals import one_line


def _state() -> dict:
    """A small network's state dict: MobileNet-like block, a ResNet-like stage, a head."""
    generator = torch.Generator().manual_seed(3)
    shapes = {"stem.conv.weight": (16, 3, 3, 3), "block.expand.weight": (32, 16, 1, 1),
              "block.conv_dw.weight": (32, 1, 3, 3), "block.project.weight": (16, 32, 1, 1),
              "stage.0.conv1.weight": (16, 16, 3, 3), "stage.0.conv2.weight": (16, 16, 3, 3),
              "head.weight": (10, 16)}
    state = {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}
    state["head.bias"] = torch.zeros(10)
    return state


def _write_sharded(folder, state: dict, suffix: str, per_shard: int = 2,
                   stem: str = "model") -> object:
    """``state`` in shards of ``per_shard`` tensors and an index, as transformers writes
    them (``model-00001-of-00004.safetensors``, ``model.safetensors.index.json``)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(state)
    parts = [names[i:i + per_shard] for i in range(0, len(names), per_shard)]
    weight_map = {}
    for number, part in enumerate(parts, start=1):
        shard = f"{stem}-{number:05d}-of-{len(parts):05d}{suffix}"
        tensors = {name: state[name].contiguous() for name in part}
        if suffix == ".safetensors":
            save_file(tensors, folder / shard, metadata={"format": "pt"})
        else:
            torch.save(tensors, folder / shard)
        weight_map.update(dict.fromkeys(part, shard))
    index = folder / f"{stem}{suffix}.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return index


def _single(folder, state: dict, suffix: str):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"whole{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, path,
                  metadata={"format": "pt"})
    else:
        torch.save(state, path)
    return path


def _records(record) -> list:
    return [(layer.name, layer.op_type, layer.groups, layer.c_out, layer.c_in_per_group,
             layer.depth, layer.weight.tobytes()) for layer in record.layers]


@pytest.mark.parametrize("suffix", [".safetensors", ".bin"])
def test_a_sharded_checkpoint_reads_as_the_whole_state_dict(tmp_path, suffix):
    state = _state()
    index = _write_sharded(tmp_path / "sharded", state, suffix)
    record = open_model(index)
    whole = open_model(_single(tmp_path / "whole", state, suffix))
    assert record.name == "model"
    assert _records(record) == _records(whole)
    assert len(record.layers) == 6
    assert {layer.name: layer.groups for layer in record.layers}["block.conv_dw"] == 32
    for layer in record.layers:
        np.testing.assert_array_equal(layer.weight, state[layer.name + ".weight"].numpy())


def test_a_zoo_builds_a_sharded_checkpoint_as_one_model(tmp_path, cli):
    zoo = tmp_path / "zoo"
    state = _state()
    index = _write_sharded(zoo / "unet", state, ".safetensors",
                           stem="diffusion_pytorch_model")
    (zoo / "unet" / "config.json").write_text(json.dumps({"in_channels": 3}))
    other = {k: v + 1 for k, v in state.items()}
    _single(zoo / "other", other, ".bin")
    db = tmp_path / "db.h5"
    built = cli("build", zoo, "-o", db, "--no-quality")
    assert built.returncode == 0, built.stderr
    models = filterdb.open(db).models.set_index("model")
    assert sorted(models.index) == ["diffusion_pytorch_model", "whole"]
    sharded = models.loc["diffusion_pytorch_model"]
    assert sharded["n_layers"] == 6
    assert sharded["format"] == "safetensors"
    files = [index, *sorted((zoo / "unet").glob("*-of-*.safetensors"))]
    assert sharded["sha256"] == hashlib.sha256(b"".join(f.read_bytes() for f in files)
                                               ).hexdigest()
    assert sharded["(3, 3) filters"] == 16 * 3 + 32 + 2 * 16 * 16
    again = cli("build", zoo, "-o", db, "--no-quality")
    assert again.returncode == 0, again.stderr
    assert len(filterdb.open(db).models) == 2


def test_shard_problems_are_one_line_naming_the_file(tmp_path):
    state = _state()
    index = _write_sharded(tmp_path / "missing", state, ".safetensors")
    (tmp_path / "missing" / "model-00002-of-00004.safetensors").unlink()
    with pytest.raises(ModelReadError) as caught:
        open_model(index)
    assert one_line(caught.value).endswith("shard model-00002-of-00004.safetensors is missing")

    index = _write_sharded(tmp_path / "outside", state, ".safetensors")
    content = json.loads(index.read_text())
    content["weight_map"]["head.bias"] = "../elsewhere.safetensors"
    index.write_text(json.dumps(content))
    with pytest.raises(ModelReadError) as caught:
        open_model(index)
    assert ("names a shard '../elsewhere.safetensors', not a file name in the index's folder"
            in one_line(caught.value))

    index = _write_sharded(tmp_path / "twice", state, ".bin")
    first = tmp_path / "twice" / "model-00001-of-00004.bin"
    torch.save({**torch.load(first), "head.bias": torch.zeros(10)}, first)
    with pytest.raises(ModelReadError) as caught:
        open_model(index)
    assert "'head.bias' is in another shard too" in one_line(caught.value)
    assert str(tmp_path / "twice" / "model-00004-of-00004.bin") in str(caught.value)

    broken = tmp_path / "broken.safetensors.index.json"
    broken.write_text('{"metadata": {}}')
    with pytest.raises(ModelReadError) as caught:
        open_model(broken)
    assert one_line(caught.value).endswith("index file without a weight_map of tensor -> shard")


def test_a_zoo_with_broken_indexes_builds_the_rest(tmp_path, cli):
    """An index that is not transformers' (a list where a file name belongs), one that
    names itself, and one whose shard is missing each fail on their own; the shards of
    the last are no models of their own; the other model is built."""
    zoo = tmp_path / "zoo"
    state = _state()
    _write_sharded(zoo / "missing", state, ".safetensors")
    (zoo / "missing" / "model-00002-of-00004.safetensors").unlink()
    (zoo / "listed").mkdir()
    (zoo / "listed" / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a.weight": ["model-1.safetensors"]}}))
    (zoo / "self").mkdir()
    (zoo / "self" / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a.weight": "model.safetensors.index.json"}}))
    _single(zoo / "other", state, ".safetensors")
    db = tmp_path / "db.h5"
    built = cli("build", zoo, "-o", db, "--no-quality")
    assert built.returncode == 0, built.stderr
    assert "Traceback" not in built.stderr
    report = json.loads((tmp_path / "db.h5.build.json").read_text())
    outcomes = {Path(m["path"]).relative_to(zoo).as_posix(): (m["status"], m["reason"])
                for m in report["outcomes"]}
    assert outcomes == {
        "missing/model.safetensors.index.json": (
            "failed", "shard model-00002-of-00004.safetensors is missing"),
        "listed/model.safetensors.index.json": (
            "failed", "weight_map names a shard ['model-1.safetensors'], not a file name in "
                      "the index's folder"),
        "self/model.safetensors.index.json": ("failed", "the index names itself as a shard"),
        "other/whole.safetensors": ("added", ""),
    }
