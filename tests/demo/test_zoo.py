"""The demo zoo: contents, meta index, formats, cache."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

import filterdb
from filterdb.demo import make_zoo, zoo_specs
from filterdb.demo.zoo import SUFFIXES, pick
from filterdb.index import index_rows

INDEX_COLUMNS = ("Task", "Visual Category", "Training-Dataset", "Pretraining-Dataset",
                 "Optimizer", "Conv Weight Initializer", "Framework", "Precision")


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_zoo_contents(demo, models):
    columns, rows = index_rows(demo.zoo.index)
    index = pd.DataFrame(rows, columns=columns)
    assert len(index) == len(zoo_specs()) == 41
    for column in INDEX_COLUMNS:
        assert column in index.columns, column
    assert set(index["Framework"]) == {"PyTorch"}
    assert set(index["Task"]) == {"Classification", "Denoising", "Auto-Encoder",
                                  "GAN-Generator", "GAN-Discriminator"}
    assert set(index["Visual Category"]) == {"handwriting", "natural"}
    assert set(index["Optimizer"]) == {"SGD", "Adam", ""}
    assert set(index["Precision"]) == {"float32", "float16"}
    assert index["Conv Weight Initializer"].nunique() == 4
    roles = index["role"].value_counts()
    assert roles["untrained control"] == 5
    assert roles["over-parameterised"] == 2
    assert roles["pretrained"] == 1 and roles["fine-tuned"] == 1
    finetuned = index[index["role"] == "fine-tuned"].iloc[0]
    assert finetuned["Pretraining-Dataset"].startswith("sklearn sample images")
    assert finetuned["Training-Dataset"].startswith("sklearn digits")
    classifiers = index[(index["Task"] == "Classification") & (index["role"] == "trained")
                        & (index["Visual Category"] == "handwriting")]
    assert set(classifiers["family"]) == {"vgg", "resnet", "separable"}
    assert set(classifiers["width"]) == {"8", "16"}
    assert set(classifiers["seed"]) == {"0", "1"}
    # every model file in the zoo, several formats, each read by its reader
    files = sorted(p.name for p in demo.zoo.zoo.iterdir() if p.suffix in SUFFIXES.values())
    assert len(files) == 41
    assert set(models["format"]) == {"onnx", "pytorch", "torchscript", "safetensors"}
    assert (models["format"] == "onnx").sum() >= 20
    assert (models["Precision"] == "float16").sum() == 1
    # trained models learned their task
    accuracy = classifiers["score"].str.extract(r"test accuracy ([0-9.]+)")[0].astype(float)
    assert accuracy.min() > 0.95, classifiers[["model", "score"]]


def test_second_run_uses_the_cache(demo):
    before = {p.name: _digest(p) for p in demo.zoo.zoo.iterdir() if p.is_file()}
    log: list[str] = []
    again = make_zoo(demo.out, zoo_specs(), workers=2, log=log.append)
    assert again.trained == 0 and again.cached == 41 and again.exported == 0
    assert again.seconds < 10
    after = {p.name: _digest(p) for p in demo.zoo.zoo.iterdir() if p.is_file()}
    assert after == before
    assert any("0 to train, 41 cached" in line for line in log)


def test_stale_and_missing_files(demo, tmp_path):
    """A model file the zoo does not have is removed; a deleted one is written again
    from the cache with the same filters (byte for byte, except TorchScript archives,
    which carry a random serialization id)."""
    out = tmp_path / "copy"
    specs = [s for s in zoo_specs() if s.name in ("vgg-w8-sgd-s0", "resnet-w8-sgd-s1",
                                                   "untrained-vgg-w16-default")]
    (out / "cache").mkdir(parents=True)
    for file in (demo.out / "cache").glob("*.pt"):
        (out / "cache" / file.name).symlink_to(file)
    first = make_zoo(out, specs, workers=1, log=lambda line: None)
    assert first.trained == 0 and first.exported == 3
    for spec in specs:
        mine, theirs = out / "zoo" / spec.file_name, demo.zoo.zoo / spec.file_name
        if spec.fmt != "torchscript":
            assert _digest(mine) == _digest(theirs), spec.name
        a, b = filterdb.extract(mine), filterdb.extract(theirs)
        assert list(a["name"]) == list(b["name"])
        np.testing.assert_array_equal(a.attrs["filters"][(3, 3)], b.attrs["filters"][(3, 3)])
    stale = out / "zoo" / "old-model.onnx"
    stale.write_bytes(b"not a model")
    (out / "zoo" / specs[0].file_name).unlink()
    second = make_zoo(out, specs, workers=1, log=lambda line: None)
    assert not stale.exists()
    assert second.exported == 1
    assert (out / "zoo" / specs[0].file_name).exists()
    assert len(pd.read_csv(second.index)) == 3


def test_pick_needs_no_other_model():
    specs = zoo_specs()
    chosen = pick(specs, 6)
    assert len(chosen) == 6
    assert all(s.kind in ("classify", "denoise", "autoencode", "untrained") for s in chosen)
    assert len({(s.task, s.family) for s in chosen}) >= 4


def test_data_sets():
    from filterdb.demo import data

    digits = data.digits()
    assert digits.x_train.shape[1:] == (1, 16, 16) and digits.classes == 10
    assert len(digits.x_train) + len(digits.x_test) == 1797
    assert abs(float(np.concatenate([digits.x_train, digits.x_test]).mean())) < 1e-4
    name, patches, labels = data.photo_patches(64, seed=3)
    assert name == data.PHOTOS
    assert patches.shape == (64, 3, 16, 16) and set(labels) <= set(range(8))
    generated = data._generated_photos()
    assert len(generated) == 2 and generated[0].shape == (427, 640, 3)
    assert generated[0].min() >= 0 and generated[0].max() <= 1
