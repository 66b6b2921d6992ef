"""Shared fixtures: a small generated zoo, its database, and real trained models that PyPI
packages ship (rapidocr ONNX, MTCNN state dicts, MediaPipe and wake word TFLite)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from filterdb.build import BuildOptions, build
from filterdb.synthetic import generate_zoo

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def small_zoo(tmp_path_factory) -> Path:
    """Index path of a generated 6-model zoo; the zoo folder is ``index.parent``."""
    folder = tmp_path_factory.mktemp("small_zoo")
    return generate_zoo(folder, n_models=6, widths=(4, 8, 8), depth=3, seed=1)


@pytest.fixture(scope="session")
def small_db(small_zoo, tmp_path_factory) -> Path:
    """The small zoo built once with its index (3x3 only, one worker). Do not modify."""
    db = tmp_path_factory.mktemp("small_db") / "filters.h5"
    report = build(small_zoo.parent, db, index=small_zoo, options=BuildOptions(workers=1))
    assert report.count("added") == 6
    return db


def _fetch_module():
    spec = importlib.util.spec_from_file_location(
        "fetch_test_models", REPO / "scripts" / "fetch_test_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def rapidocr_models() -> Path:
    """Folder holding the three rapidocr-onnxruntime 1.4.4 ONNX models (downloaded once)."""
    return _fetch_module().fetch("rapidocr")


@pytest.fixture(scope="session")
def facenet_models() -> Path:
    """Folder holding the facenet-pytorch 2.6.0 MTCNN state dicts pnet.pt, rnet.pt and
    onet.pt (downloaded once)."""
    return _fetch_module().fetch("facenet")


@pytest.fixture(scope="session")
def mediapipe_models() -> Path:
    """Folder holding five of mediapipe 0.10.21's TFLite models (downloaded once)."""
    return _fetch_module().fetch("mediapipe")


@pytest.fixture(scope="session")
def microwakeword_models() -> Path:
    """Folder holding pymicro-wakeword 2.5.0's four int8 microWakeWord TFLite models
    (downloaded once)."""
    return _fetch_module().fetch("microwakeword")


@pytest.fixture(scope="session")
def openwakeword_models() -> Path:
    """Folder holding pyopen-wakeword 1.1.0's embedding_model.tflite and hey_jarvis.tflite
    (downloaded once)."""
    return _fetch_module().fetch("openwakeword")


@pytest.fixture(scope="session")
def cli():
    """``cli(*args)`` runs ``python -m filterdb ARGS`` in a subprocess, output captured."""

    def run(*args, cwd=None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "filterdb", *map(str, args)],
                              capture_output=True, text=True, cwd=cwd)

    return run
