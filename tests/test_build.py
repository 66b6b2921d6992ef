"""Building from zoos with bad, odd and duplicate model files; the build report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import TensorProto, helper, numpy_helper

import filterdb
from filterdb.build import BuildOptions, build
from filterdb.synthetic import make_cnn

from .reference import reference_model

BAD_NAMES = ("external", "noconv", "truncated", "x")


def _bad_zoo(folder: Path) -> Path:
    """good.onnx plus four files that cannot be built, each for another reason."""
    folder.mkdir(parents=True)
    make_cnn(folder / "good.onnx", [4, 8], seed=1)

    whole = make_cnn(folder.parent / "whole.onnx", [16, 32], seed=2).read_bytes()
    (folder / "truncated.onnx").write_bytes(whole[:len(whole) // 2])

    (folder / "x.onnx").write_text("this is a text file, not a model\n")

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")], "noconv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save_model(model, folder / "noconv.onnx")

    external = onnx.load(make_cnn(folder.parent / "ext-src.onnx", [4, 8], seed=3))
    onnx.save_model(external, folder / "external.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=True, location="external.bin", size_threshold=0)
    (folder / "external.bin").unlink()
    return folder


@pytest.fixture(scope="module")
def bad_zoo(tmp_path_factory) -> Path:
    return _bad_zoo(tmp_path_factory.mktemp("bad") / "zoo")


def test_bad_files_fail_with_reasons_and_leave_nothing(bad_zoo, tmp_path):
    db = tmp_path / "db.h5"
    report = build(bad_zoo, db)
    outcomes = {o.model: o for o in report.outcomes}
    assert report.planned == 5
    assert {name: o.status for name, o in outcomes.items()} == {
        "good": "added", **{name: "failed" for name in BAD_NAMES}}
    assert (report.count("added"), report.count("failed"), report.count("present"),
            report.count("skipped")) == (1, 4, 0, 0)
    assert outcomes["truncated"].reason.startswith("not a valid ONNX model")
    assert outcomes["x"].reason.startswith("not a valid ONNX model")
    assert outcomes["noconv"].reason == "no convolution layers with 2-D kernels"
    assert "external data 'external.bin'" in outcomes["external"].reason
    assert "No such file or directory" in outcomes["external"].reason
    assert outcomes["external"].path == str(bad_zoo / "external.onnx")

    ref = reference_model(bad_zoo / "good.onnx")
    assert outcomes["good"].filters == {"3x3": ref.count()} == {"3x3": 4 * 3 + 8 * 4}
    opened = filterdb.open(db)
    assert list(opened.models["model"]) == ["good"]
    assert set(opened.layers["model_id"]) == {0}
    assert set(opened.meta["model"]) == {"good"}
    with h5py.File(db, "r") as handle:
        np.testing.assert_array_equal(handle["filters"][...], ref.filters())
    shards = list(db.with_name(db.name + ".shards").iterdir())
    assert [p.name for p in shards] == list(opened.models["shard"])


def test_build_report_json_beside_the_database(bad_zoo, tmp_path):
    db = tmp_path / "db.h5"
    build(bad_zoo, db)
    report = json.loads((tmp_path / "db.h5.build.json").read_text())
    assert report["summary"] == {"added": 1, "present": 0, "skipped": 0, "failed": 4}
    assert report["filters_added"] == {"3x3": 44}
    assert report["planned"] == 5
    assert report["database"] == str(db)
    assert report["zoo"] == str(bad_zoo)
    assert report["interrupted"] is False
    statuses = sorted((o["model"], o["status"]) for o in report["outcomes"])
    assert statuses == sorted([("good", "added")] + [(n, "failed") for n in BAD_NAMES])
    assert all(o["reason"] for o in report["outcomes"] if o["status"] == "failed")


@pytest.mark.parametrize(("strict", "status"), [(False, 0), (True, 1)])
def test_cli_exit_status_with_bad_files(bad_zoo, tmp_path, cli, strict, status):
    db = tmp_path / "db.h5"
    result = cli("build", bad_zoo, "-o", db, *(["--strict"] if strict else []))
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    assert "1 added, 0 already present, 0 skipped, 4 failed" in result.stdout
    # the summary names each failed file with its reason (progress lines name the model)
    failed = sorted(line for line in result.stderr.splitlines()
                    if line.startswith(f"failed: {bad_zoo}/"))
    assert len(failed) == 4
    assert failed[0].startswith(f"failed: {bad_zoo / 'external.onnx'}: external data")
    assert failed[1] == (f"failed: {bad_zoo / 'noconv.onnx'}: "
                         "no convolution layers with 2-D kernels")
    assert list(filterdb.open(db).models["model"]) == ["good"]


def test_files_no_reader_recognises_are_reported_not_built(tmp_path, cli):
    """A torch.save archive named like PyTorch's ImageNet example (model_best.pth.tar)
    is built by its content; a real tar archive, a plain pickle and notes are listed."""
    import pickle
    import tarfile

    torch = pytest.importorskip("torch")
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    weight = torch.randn(4, 3, 3, 3)
    torch.save({"epoch": 90, "state_dict": {"module.conv.weight": weight}},
               zoo / "model_best.pth.tar")
    (zoo / "README.md").write_text("trained for 90 epochs\n")
    (zoo / "labels.pkl").write_bytes(pickle.dumps(["cat", "dog"]))
    with tarfile.open(zoo / "logs.tar", "w") as archive:
        archive.add(zoo / "README.md", arcname="README.md")
    (zoo / ".cache").mkdir()
    (zoo / ".cache" / "hidden.txt").write_text("not listed\n")
    db = tmp_path / "db.h5"
    result = cli("build", zoo, "-o", db, "--no-quality")
    assert result.returncode == 0, result.stderr
    assert "1 added, 0 already present, 0 skipped, 0 failed" in result.stdout
    assert ("zoo: 3 file(s) that no reader recognises, not built: README.md, labels.pkl, "
            "logs.tar") in result.stderr.splitlines()
    report = json.loads((tmp_path / "db.h5.build.json").read_text())
    assert report["ignored"] == [str(zoo / name) for name in ("README.md", "labels.pkl",
                                                              "logs.tar")]
    opened = filterdb.open(db)
    assert list(opened.models["model"]) == ["model_best"]  # named without the type suffixes
    np.testing.assert_array_equal(opened.select().read(), weight.numpy().reshape(-1, 3, 3))


def test_damaged_files_with_shared_suffixes_fail_instead_of_being_ignored(tmp_path, cli):
    """A truncated Keras .h5 or torch .pth.tar: their suffixes are shared by other files,
    so only recognised content makes them models; a damaged container of the format
    still counts as a model that failed (and fails --strict), not as a file to ignore.
    An HDF5 file that opens but holds no Keras model stays ignored."""
    torch = pytest.importorskip("torch")
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    torch.save({"conv.weight": torch.randn(4, 3, 3, 3)}, zoo / "good.pth.tar")
    torch.save({"conv.weight": torch.randn(4, 3, 3, 3)}, zoo / "cut.pth.tar")
    with h5py.File(zoo / "cut.h5", "w") as handle:
        handle.create_dataset("model_weights/conv/kernel", data=np.ones((3, 3, 3, 4)))
    with h5py.File(zoo / "data.h5", "w") as handle:
        handle.create_dataset("x", data=np.arange(10))
    for name in ("cut.pth.tar", "cut.h5"):
        data = (zoo / name).read_bytes()
        (zoo / name).write_bytes(data[:len(data) // 2])
    db = tmp_path / "db.h5"
    result = cli("build", zoo, "-o", db, "--no-quality", "--strict")
    assert result.returncode == 1, result.stderr
    assert "1 added, 0 already present, 0 skipped, 2 failed" in result.stdout
    lines = result.stderr.splitlines()
    assert f"failed: {zoo / 'cut.pth.tar'}: damaged or truncated zip archive (File is not a " \
           "zip file)" in lines
    assert any(line.startswith(f"failed: {zoo / 'cut.h5'}: not a readable HDF5 file")
               for line in lines), lines
    assert "zoo: 1 file(s) that no reader recognises, not built: data.h5" in lines


def _zoo_with_a_pickle(tmp_path: Path, models: int, name: str, payload) -> Path:
    """``models`` generated ONNX models m0, m1, ... and a torch.save file ``name`` whose
    pickle holds a conv weight and ``payload``."""
    torch = pytest.importorskip("torch")
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    for number in range(models):
        make_cnn(zoo / f"m{number}.onnx", [4, 8], seed=10 + number)
    torch.save({"conv.weight": torch.ones(2, 1, 3, 3), "payload": payload}, zoo / name)
    return zoo


class _Aborts:
    """Unpickling this object aborts the process, as a crash in a native library would."""

    def __reduce__(self):
        import os

        return os.abort, ()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_model_that_kills_its_worker_fails_alone(tmp_path, cli, workers):
    """A crash while reading one model (SIGABRT here) fails that model with one line;
    the models in flight with it and after it are built; the default one worker too."""
    zoo = _zoo_with_a_pickle(tmp_path, 5, "m1_crash.pt", _Aborts())
    db = tmp_path / "db.h5"
    result = cli("build", zoo, "-o", db, "--workers", workers, "--no-quality",
                 "--allow-unsafe-pickle")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "5 added, 0 already present, 0 skipped, 1 failed" in result.stdout
    assert (f"failed: {zoo / 'm1_crash.pt'}: reading it killed the worker process (a crash "
            "in a native library, e.g. on a damaged file)") in result.stderr.splitlines()
    opened = filterdb.open(db)
    assert list(opened.models["model"]) == [f"m{number}" for number in range(5)]
    assert len(h5py.File(db)["filters"]) == 5 * (4 * 3 + 8 * 4)


class _Sleeps:
    """Unpickling this object blocks for ten minutes, as a hang in a native library would."""

    def __reduce__(self):
        import time

        return time.sleep, (600,)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_model_past_the_timeout_fails_alone(tmp_path, cli, workers):
    zoo = _zoo_with_a_pickle(tmp_path, 3, "m0_stuck.pt", _Sleeps())
    db = tmp_path / "db.h5"
    result = cli("build", zoo, "-o", db, "--workers", workers, "--no-quality",
                 "--allow-unsafe-pickle", "--model-timeout", "3")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Thread" not in result.stderr
    assert "3 added, 0 already present, 0 skipped, 1 failed" in result.stdout
    assert (f"failed: {zoo / 'm0_stuck.pt'}: still being read after 3 s (stopped)"
            in result.stderr.splitlines())
    assert list(filterdb.open(db).models["model"]) == ["m0", "m1", "m2"]


def test_workers_zero_reads_in_this_process_and_negative_is_refused(tmp_path):
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    for number in range(2):
        make_cnn(zoo / f"m{number}.onnx", [4, 8], seed=number)
    in_process = build(zoo, tmp_path / "a.h5", options=BuildOptions(workers=0,
                                                                     quality=False))
    pooled = build(zoo, tmp_path / "b.h5", options=BuildOptions(workers=1, quality=False))
    assert in_process.count("added") == pooled.count("added") == 2
    np.testing.assert_array_equal(h5py.File(tmp_path / "a.h5")["filters"][...],
                                  h5py.File(tmp_path / "b.h5")["filters"][...])
    with pytest.raises(ValueError, match="workers must be a whole number, at least 0"):
        build(zoo, tmp_path / "c.h5", options=BuildOptions(workers=-1))
    assert not (tmp_path / "c.h5").exists()


SCRIPT_WITHOUT_MAIN_GUARD = """
import sys, threading, time
from filterdb.build import BuildOptions, build
from filterdb.errors import WorkerStartError
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()  # workers spawn
try:
    build(sys.argv[1], sys.argv[2], options=BuildOptions(workers=2, quality=False))
except WorkerStartError as error:
    print(error)
"""


def test_workers_that_cannot_start_fail_the_build_not_the_models(tmp_path):
    """A script without the main guard: spawned workers re-run it and die as they start.
    The build says so in one line; no model is blamed for it."""
    import subprocess
    import sys

    zoo = tmp_path / "zoo"
    zoo.mkdir()
    for number in range(3):
        make_cnn(zoo / f"m{number}.onnx", [4, 8], seed=number)
    script = tmp_path / "build_zoo.py"
    script.write_text(SCRIPT_WITHOUT_MAIN_GUARD)
    db = tmp_path / "db.h5"
    result = subprocess.run([sys.executable, script, zoo, db], capture_output=True,
                            text=True, cwd=tmp_path)
    assert result.stdout.splitlines() == [
        "worker processes exit as they start, before reading any model; from a Python "
        'script, call build() under `if __name__ == "__main__":` (or use workers=0: '
        "models read in this process, without isolation)"]
    report = json.loads((tmp_path / "db.h5.build.json").read_text())
    assert [o for o in report["outcomes"] if o["status"] == "failed"] == []
    assert not db.exists()


@pytest.mark.parametrize("quality", [True, False])
def test_workers_of_a_quality_build_load_the_metrics_kernel_as_they_start(quality):
    """In a fresh interpreter: a quality build's worker has compiled the metrics kernel
    before its first model; any other has not even imported numba."""
    import subprocess
    import sys

    code = ("import sys; from filterdb import layer_quality, worker; "
            f"worker.init_worker({quality}); "
            "print('numba' in sys.modules, layer_quality._stats_kernel.cache_info().currsize, "
            "len(layer_quality._stats_kernel().overloads) if 'numba' in sys.modules else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split() == (["True", "1", "1"] if quality else ["False", "0", "0"])


def test_model_timeout_must_not_be_negative(tmp_path, cli):
    result = cli("build", tmp_path, "-o", tmp_path / "db.h5", "--model-timeout", "-1")
    assert result.returncode == 2
    assert result.stderr == ("filterdb: error: --model-timeout must be 0 (no limit) or "
                             "more\n")


def _nan_model(path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    make_cnn(path, [4, 8], seed=4)
    model = onnx.load(path)
    weights = {}
    for tensor in model.graph.initializer:
        array = numpy_helper.to_array(tensor).copy()
        if tensor.name == "stem.weight":
            array[0, 0, 0, 0] = np.nan
            array[1, 2, 1, 1] = np.nan
            array[3, 1, 2, 2] = np.inf
        elif tensor.name == "conv1.weight":
            array[7, 3, 0, 1] = -np.inf
        tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
        weights[tensor.name] = array
    onnx.save_model(model, path)
    return path, weights


def test_nan_and_inf_weights_are_kept_and_counted(tmp_path, cli):
    zoo = tmp_path / "zoo"
    path, weights = _nan_model(zoo / "nanny.onnx")
    db = tmp_path / "db.h5"
    report = build(zoo, db)
    (outcome,) = report.outcomes
    assert (outcome.status, outcome.nan_count, outcome.inf_count) == ("added", 2, 2)
    opened = filterdb.open(db)
    layers = opened.layers.set_index("name")
    assert layers.loc["stem", "nan_count"] == 2 and layers.loc["stem", "inf_count"] == 1
    assert layers.loc["conv1", "nan_count"] == 0 and layers.loc["conv1", "inf_count"] == 1
    model = opened.models.iloc[0]
    assert (model["nan_count"], model["inf_count"]) == (2, 2)
    expected = np.concatenate([weights["stem.weight"].reshape(-1, 3, 3),
                               weights["conv1.weight"].reshape(-1, 3, 3)])
    with h5py.File(db, "r") as handle:
        stored = handle["filters"][...]
    np.testing.assert_array_equal(stored, expected)  # NaN equal NaN for this check
    assert np.isnan(stored).sum() == 2 and np.isposinf(stored).sum() == 1
    assert np.isneginf(stored).sum() == 1

    result = cli("build", zoo, "-o", tmp_path / "cli.h5")
    assert result.returncode == 0, result.stderr
    assert f"warning: {path}: 2 NaN and 2 Inf weights (kept)" in result.stderr.splitlines()


@pytest.mark.parametrize("workers", [1, 2])
def test_identical_file_under_second_name_is_present(tmp_path, workers):
    zoo = tmp_path / "zoo"
    make_cnn(zoo / "net.onnx", [4, 8], seed=1)
    shutil.copy(zoo / "net.onnx", zoo / "net-copy.onnx")
    make_cnn(zoo / "other.onnx", [3, 6], seed=2)
    db = tmp_path / "db.h5"
    report = build(zoo, db, options=BuildOptions(workers=workers))
    outcomes = {o.model: o for o in report.outcomes}
    assert {n: o.status for n, o in outcomes.items()} == {
        "net": "added", "net-copy": "present", "other": "added"}
    assert outcomes["net-copy"].reason == "same content as net"
    opened = filterdb.open(db)
    assert list(opened.models["model"]) == ["net", "other"]
    assert opened.filter_count() == reference_model(zoo / "net.onnx").count() + \
        reference_model(zoo / "other.onnx").count()
    data = json.loads(db.with_name("db.h5.build.json").read_text())
    assert data["summary"] == {"added": 2, "present": 1, "skipped": 0, "failed": 0}


def test_same_network_listing_its_layers_in_another_order_is_a_duplicate(tmp_path):
    """One network in two files that list its layers in different orders (a graph's
    depth order and a state dict's parameter order differ for parallel branches): the
    second is skipped as a duplicate, a third with one other weight is not."""
    from tests.readers.writers_safetensors import write_raw

    rng = np.random.default_rng(2)
    stem, branch, skip = (rng.standard_normal(shape).astype(np.float32) for shape in
                          [(8, 3, 3, 3), (8, 8, 3, 3), (8, 8, 1, 1)])
    zoo = tmp_path / "zoo"
    write_raw(zoo / "a-sorted.safetensors",
              [("branch.weight", branch), ("skip.weight", skip), ("stem.weight", stem)])
    write_raw(zoo / "b-graph-order.safetensors",  # not sorted: the header order is kept
              [("stem.weight", stem), ("skip.weight", skip), ("branch.weight", branch)])
    write_raw(zoo / "c-other.safetensors",
              [("stem.weight", stem), ("skip.weight", skip), ("branch.weight", branch + 1)])
    report = build(zoo, tmp_path / "db.h5")
    assert {o.model: (o.status, o.reason) for o in report.outcomes} == {
        "a-sorted": ("added", ""), "c-other": ("added", ""),
        "b-graph-order": ("skipped", "duplicate: b-graph-order has the same conv weights as "
                                     "a-sorted")}


def test_same_name_new_content_is_skipped(tmp_path):
    zoo = tmp_path / "zoo"
    make_cnn(zoo / "net.onnx", [4, 8], seed=1)
    db = tmp_path / "db.h5"
    build(zoo, db)
    before = filterdb.open(db).models
    make_cnn(zoo / "net.onnx", [4, 8], seed=99)  # same name, other weights
    report = build(zoo, db)
    (outcome,) = report.outcomes
    assert outcome.status == "skipped"
    assert "already in the database" in outcome.reason
    pd.testing.assert_frame_equal(filterdb.open(db).models, before)


@pytest.mark.parametrize("durable", [False, True])
def test_durable_build_fsyncs_every_shard_and_the_master(tmp_path, monkeypatch, durable):
    """--durable: every committed shard, the shards folder, the new master and its
    folder are fsynced, and each shard's write-back starts when it is written; the
    default build syncs nothing (its renames alone keep a killed build consistent)."""
    import filterdb.store.shard as shard
    import filterdb.store.writer as writer

    synced, written_back = [], []
    monkeypatch.setattr(writer, "_fsync", lambda path: synced.append(Path(path)))
    monkeypatch.setattr(writer, "_fsync_dir", lambda path: synced.append(Path(path)))
    monkeypatch.setattr(shard, "_start_writeback", lambda path: written_back.append(path))
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    for seed in range(3):
        make_cnn(zoo / f"m{seed}.onnx", [4, 8], seed=seed)
    db = tmp_path / "db.h5"
    # workers=0: the models are read in this process, where the patches apply
    build(zoo, db, options=BuildOptions(durable=durable, quality=False, workers=0))
    shards = sorted(p for p in (tmp_path / "db.h5.shards").iterdir())
    assert len(shards) == 3
    if not durable:
        assert synced == [] and written_back == []
        return
    assert len(written_back) == 3
    assert sorted(p for p in synced if p.parent == db.parent / "db.h5.shards") == shards
    assert db.parent / "db.h5.shards" in synced and db.parent in synced
    masters = [p for p in synced if p.name.startswith(".db.h5.") and p.suffix == ".tmp"]
    assert len(masters) >= 1   # the temporary master, before its rename over db.h5
    assert filterdb.open(db).models["model"].tolist() == ["m0", "m1", "m2"]


@pytest.mark.parametrize("workers", [1, 2])
def test_sha256_column_is_the_hash_of_each_file(tmp_path, workers):
    """The sha256 the build records (computed from the bytes the reader parsed) is the
    file's, for ONNX and for a format the reader reads in parts (safetensors)."""
    import hashlib

    from .readers.network import equivalence_network
    from .readers.writers_safetensors import write_safetensors

    zoo = tmp_path / "zoo"
    zoo.mkdir()
    files = [make_cnn(zoo / f"m{seed}.onnx", [4, 8], seed=seed) for seed in range(3)]
    files.append(write_safetensors(zoo / "s.safetensors", equivalence_network()))
    db = tmp_path / "db.h5"
    build(zoo, db, options=BuildOptions(workers=workers, quality=False))
    models = filterdb.open(db).models.set_index("model")
    assert {name: models.loc[name, "sha256"] for name in models.index} == {
        path.stem: hashlib.sha256(path.read_bytes()).hexdigest() for path in files}


def test_a_pool_started_before_the_build_is_used_and_shut_down(tmp_path):
    """The CLI starts the workers before its own imports and hands them to build();
    the build uses them and shuts them down, also when it fails before any model."""
    from filterdb.errors import DatabaseError
    from filterdb.worker import start_workers

    zoo = tmp_path / "zoo"
    zoo.mkdir()
    for seed in range(3):
        make_cnn(zoo / f"m{seed}.onnx", [4, 8], seed=seed)
    pool = start_workers(2)
    report = build(zoo, tmp_path / "db.h5", options=BuildOptions(workers=2, quality=False),
                   pool=pool)
    assert report.count("added") == 3
    with pytest.raises(RuntimeError):
        pool.submit(int)   # shut down
    (tmp_path / "not-a-db.h5").write_text("no")
    pool = start_workers(2)
    with pytest.raises(DatabaseError):
        build(zoo, tmp_path / "not-a-db.h5", options=BuildOptions(workers=2), pool=pool)
    with pytest.raises(RuntimeError):
        pool.submit(int)


@pytest.mark.parametrize("size", [0, 1, (8 << 20) - 1, (8 << 20) + 1, 3 * (8 << 20)])
def test_model_sha256_equals_hashlib_at_window_edges(tmp_path, size):
    import hashlib

    from filterdb.worker import model_sha256

    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert model_sha256(path) == hashlib.sha256(data).hexdigest()


def test_fields_left_empty_in_the_index_are_no_change_on_a_rebuild(small_zoo, tmp_path):
    """Framework and Precision left empty are filled in from the files; building again
    with the same index names no change (every model was flagged)."""
    zoo = tmp_path / "zoo"
    shutil.copytree(small_zoo.parent, zoo)
    rows = (zoo / "index.csv").read_text().replace(",onnx,float32,", ",,,")
    (zoo / "index.csv").write_text(rows)
    db = tmp_path / "db.h5"
    build(zoo, db, index=zoo / "index.csv", options=BuildOptions(workers=0))
    models = filterdb.open(db).models
    assert set(models["Framework"]) == {"ONNX"}  # no exporter the files name
    assert set(models["Precision"]) == {"float32"}
    again = build(zoo, db, index=zoo / "index.csv", options=BuildOptions(workers=0))
    assert {o.reason for o in again.outcomes} == {f"same content as {m}"
                                                 for m in models["model"]}


def test_a_changed_index_row_of_a_present_model_is_named_not_applied(small_zoo, tmp_path):
    """Building again after editing the index: the models are present (same files); the
    outcome names each field that differs from the stored row, which stays as it was."""
    zoo = tmp_path / "zoo"
    shutil.copytree(small_zoo.parent, zoo)
    db = tmp_path / "db.h5"
    build(zoo, db, index=zoo / "index.csv", options=BuildOptions(workers=0))
    rows = (zoo / "index.csv").read_text().replace(
        "plain-000,plain CNN,Classification,natural", "plain-000,plain CNN,Detection,natural")
    (zoo / "index.csv").write_text(rows)
    again = build(zoo, db, index=zoo / "index.csv", options=BuildOptions(workers=0))
    reasons = {o.model: o.reason for o in again.outcomes}
    assert reasons["plain-000"] == ("same content as plain-000; its index row differs from "
                                    "the stored one (Task: 'Classification' -> 'Detection'), "
                                    "not updated")
    assert all(r == f"same content as {m}" for m, r in reasons.items() if m != "plain-000")
    models = filterdb.open(db).models.set_index("model")
    assert models.loc["plain-000", "Task"] == "Classification"
