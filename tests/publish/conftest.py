"""A zoo with a duplicated model (renamed ONNX copy; ONNX and safetensors of one
network), a model with mostly empty meta fields, and a datasheet.yaml."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from filterdb.build import build
from filterdb.synthetic import generate_zoo

from ..readers.network import equivalence_network, write_onnx
from ..readers.writers_safetensors import write_safetensors

DATASHEET_YAML = """\
dataset:
  title: Test filters
  creators: [Ada Lovelace, Alan Turing]
  contact: filters@example.org
answers:
  purpose: To test the datasheet.
"""
#: Index text that must come out inert in tables.
HOSTILE_TASK = '=HYPERLINK("x")|evil'


@pytest.fixture(scope="session")
def publish_zoo(tmp_path_factory) -> Path:
    """Index of: plain-000, residual-001, depthwise-002 (generated, full rows), renamed
    (plain-000's weights in another ONNX file), net-onnx and net-st (one network as
    ONNX and safetensors; net-onnx's row has only a Task)."""
    import onnx

    folder = tmp_path_factory.mktemp("publish_zoo")
    index = generate_zoo(folder, n_models=3, widths=(4, 8, 8), depth=3, seed=1)
    copy = onnx.load(folder / "plain-000.onnx")
    copy.doc_string = "the same weights in another file"
    onnx.save(copy, folder / "renamed.onnx")
    network = equivalence_network()
    write_onnx(folder / "net-onnx.onnx", network)
    write_safetensors(folder / "net-st.safetensors", network)
    with open(index) as handle:
        rows = list(csv.DictReader(handle))
    rows.append({key: "" for key in rows[0]} | {"model": "net-onnx", "Task": HOSTILE_TASK})
    with open(index, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (folder / "datasheet.yaml").write_text(DATASHEET_YAML)
    return index


@pytest.fixture(scope="session")
def publish_build(publish_zoo, tmp_path_factory):
    """(database path, build report), built once. Do not modify: use ``db_copy``."""
    db = tmp_path_factory.mktemp("publish_db") / "filters.h5"
    report = build(publish_zoo.parent, db, index=publish_zoo)
    return db, report


@pytest.fixture
def db_copy(publish_build, tmp_path) -> Path:
    """A private copy of the built database (master and shards)."""
    source = publish_build[0]
    target = tmp_path / source.name
    shutil.copy(source, target)
    shutil.copytree(source.with_name(source.name + ".shards"),
                    target.with_name(target.name + ".shards"))
    return target
