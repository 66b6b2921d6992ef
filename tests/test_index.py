"""The meta index: CSV and YAML, published spellings, matching, findings, --strict."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import filterdb
from filterdb.build import BuildOptions, build
from filterdb.errors import IndexFileError
from filterdb.index import default_name, index_rows, plan_zoo
from filterdb.readers import is_model_file
from filterdb.synthetic import make_cnn

IS_MODEL = is_model_file


def read_index(path) -> pd.DataFrame:
    """The index as a DataFrame, to compare columns and cells."""
    columns, rows = index_rows(path)
    return pd.DataFrame(rows, columns=columns)

CSV_INDEX = (
    "model,path,name,TASK,visual_category,training dataset,Pretraining Dataset,paper,"
    "accessible,dataset_url,My Notes\n"
    """\
alpha,,Alpha Net,Classification,natural,ImageNet,,arxiv:1,hub,http://a,note a
beta,,Beta Net,,natural,MNIST,,,hub,,note b
gamma-model,sub/gamma.onnx,Gamma Net,Segmentation,medical ct,CT-1,ImageNet,,hub,,note c
ghost,,Ghost Net,Classification,natural,,,,,,
alpha,,Alpha again,Classification,natural,,,,,,
""")


@pytest.fixture
def zoo(tmp_path) -> Path:
    folder = tmp_path / "zoo"
    make_cnn(folder / "alpha.onnx", [4, 8], seed=1)
    make_cnn(folder / "beta.onnx", [4, 6], seed=2)
    make_cnn(folder / "sub" / "gamma.onnx", [3, 5], seed=3)
    make_cnn(folder / "orphan.onnx", [2, 4], seed=4)
    return folder


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_read_csv_maps_published_spellings(tmp_path):
    frame = read_index(_write(tmp_path / "index.csv", CSV_INDEX))
    assert list(frame.columns) == [
        "model", "path", "Name", "Task", "Visual Category", "Training-Dataset",
        "Pretraining-Dataset", "Paper", "Accessible", "Dataset URL", "My Notes"]
    assert len(frame) == 5
    assert frame.loc[0, "Task"] == "Classification"
    assert frame.loc[1, "Task"] == ""
    assert frame.loc[2, "path"] == "sub/gamma.onnx"


def test_alias_datatype_is_visual_category(tmp_path):
    frame = read_index(_write(tmp_path / "index.csv",
                              "model,Datatype,Task\nalpha,handwriting,Classification\n"))
    assert list(frame.columns) == ["model", "Visual Category", "Task"]
    assert frame.loc[0, "Visual Category"] == "handwriting"


def test_plan_matches_by_stem_and_path_and_reports_findings(zoo, tmp_path):
    index = _write(tmp_path / "index.csv", CSV_INDEX)
    plan = plan_zoo(zoo, IS_MODEL, index)
    planned = {m.name: m for m in plan.models}
    assert sorted(planned) == ["alpha", "beta", "gamma-model", "orphan"]
    assert planned["alpha"].path == zoo / "alpha.onnx"
    assert planned["gamma-model"].path.resolve() == (zoo / "sub" / "gamma.onnx").resolve()
    assert planned["alpha"].meta["Name"] == "Alpha Net"  # the first row wins
    assert planned["gamma-model"].meta["Visual Category"] == "medical ct"
    assert planned["orphan"].meta == {}
    assert "path" not in planned["gamma-model"].meta
    assert plan.findings == [
        "row 3 (beta): empty Task",
        f"row 5 (ghost): no model file in {zoo}",
        "row 6 (alpha): file alpha.onnx already matched by row for alpha",
        f"{zoo / 'orphan.onnx'}: no row in the index",
    ]


def test_empty_visual_category_and_both_required_fields(zoo, tmp_path):
    index = _write(tmp_path / "index.csv",
                   "model,Task,Visual Category\nalpha,,\nbeta,Classification,\n"
                   "orphan,Classification,natural\ngamma,Classification,natural\n")
    plan = plan_zoo(zoo, IS_MODEL, index)
    assert "row 2 (alpha): empty Task, Visual Category" in plan.findings
    assert "row 3 (beta): empty Visual Category" in plan.findings
    assert not [f for f in plan.findings if "orphan" in f]


def test_yaml_mapping_and_list_forms(zoo, tmp_path):
    mapping = _write(tmp_path / "index.yaml", """\
alpha:
  Task: Classification
  Datatype: natural
  Training Dataset: ImageNet
  My Notes: from yaml
beta:
  Task: Segmentation
  Datatype: medical mri
gamma-model:
  path: sub/gamma.onnx
  Task: Object Detection
  Datatype: natural
orphan:
  Task: Classification
  Datatype:
""")
    frame = read_index(mapping)
    assert frame.loc[0, "Visual Category"] == "natural"
    assert frame.loc[0, "My Notes"] == "from yaml"
    assert frame.loc[3, "Visual Category"] == ""
    plan = plan_zoo(zoo, IS_MODEL, mapping)
    planned = {m.name: m.meta for m in plan.models}
    assert sorted(planned) == ["alpha", "beta", "gamma-model", "orphan"]
    assert planned["alpha"]["Training-Dataset"] == "ImageNet"
    assert planned["gamma-model"]["Task"] == "Object Detection"
    assert plan.findings == ["row 5 (orphan): empty Visual Category"]

    listed = _write(tmp_path / "list.yml", """\
- model: alpha
  Task: Classification
  Visual Category: natural
- path: sub/gamma.onnx
  Task: Segmentation
  Visual Category: medical ct
""")
    plan = plan_zoo(zoo, IS_MODEL, listed)
    planned = {m.name: m.meta for m in plan.models}
    assert sorted(planned) == ["alpha", "beta", "gamma", "orphan"]
    assert planned["gamma"]["Task"] == "Segmentation"
    assert sorted(plan.findings) == sorted([f"{zoo / 'beta.onnx'}: no row in the index",
                                            f"{zoo / 'orphan.onnx'}: no row in the index"])


def test_yaml_rows_may_spell_a_column_differently(zoo, tmp_path):
    # YAML rows are separate mappings: an entry copied from a 0.1.0 index says
    # "Datatype", a new one "Visual Category"; no row gives the column twice.
    index = _write(tmp_path / "index.yaml", """\
alpha:
  Task: Classification
  Datatype: natural
beta:
  Task: Segmentation
  Visual Category: medical mri
""")
    frame = read_index(index)
    assert list(frame.columns) == ["model", "Task", "Visual Category"]
    assert list(frame["Visual Category"]) == ["natural", "medical mri"]
    plan = plan_zoo(zoo, IS_MODEL, index)
    planned = {m.name: m.meta for m in plan.models}
    assert planned["beta"] == {"Task": "Segmentation", "Visual Category": "medical mri"}


def test_yaml_numbers_keep_their_spelling(zoo, tmp_path):
    # A field only some rows fill must not turn 2016 into "2016.0".
    index = _write(tmp_path / "index.yaml", """\
alpha:
  Task: Classification
  Visual Category: natural
  Year: 2016
beta:
  Task: Classification
  Visual Category: natural
""")
    frame = read_index(index)
    assert list(frame["Year"]) == ["2016", ""]
    db = tmp_path / "db.h5"
    build(zoo, db, index=index)
    models = filterdb.open(db).models.set_index("model")
    assert models.loc["alpha", "Year"] == "2016"
    assert models.loc["beta", "Year"] == ""


def test_match_by_name_column_when_no_model_column(zoo, tmp_path):
    index = _write(tmp_path / "index.csv",
                   "Name,Task,Visual Category\nalpha,Classification,natural\n")
    plan = plan_zoo(zoo, IS_MODEL, index)
    planned = {m.name: m for m in plan.models}
    assert planned["alpha"].meta == {"Name": "alpha", "Task": "Classification",
                                     "Visual Category": "natural"}


def test_same_file_names_in_different_folders_are_named_by_their_folders(tmp_path):
    """A zoo of one folder per model with generic file names builds every model."""
    zoo = tmp_path / "zoo"
    for folder in ("a", "b", "c/a"):
        make_cnn(zoo / folder / "net.onnx", [4, 8], seed=len(folder))
    make_cnn(zoo / "other.onnx", [4, 8], seed=9)
    plan = plan_zoo(zoo, IS_MODEL)
    assert {m.name: m.path.relative_to(zoo).as_posix() for m in plan.models} == {
        "a/net": "a/net.onnx", "b/net": "b/net.onnx", "c/a/net": "c/a/net.onnx",
        "other": "other.onnx"}
    assert plan.findings == []

    index = _write(tmp_path / "index.csv", "model,Task,Visual Category\nnet,Classification,x\n"
                   "b/net,Segmentation,y\n")
    plan = plan_zoo(zoo, IS_MODEL, index)
    assert plan.findings[0] == "row 2 (net): several files named net; add a path column"
    assert {m.name: m.meta.get("Task") for m in plan.models} == {
        "a/net": None, "b/net": "Segmentation", "c/a/net": None, "other": None}

    by_path = _write(tmp_path / "paths.csv", "model,path,Task,Visual Category\n"
                     "net,a/net.onnx,Classification,x\nnet,b/net.onnx,Classification,y\n")
    plan = plan_zoo(zoo, IS_MODEL, by_path)
    assert [(m.name, m.meta["Visual Category"]) for m in plan.models
            if m.name == "net"] == [("net", "x")]
    assert plan.findings[-1] == "model name 'net' given to 2 files; only the first is built"


def test_one_name_in_one_folder_keeps_the_file_names(tmp_path):
    """The same network in two formats side by side: both built, told apart by suffix."""
    zoo = tmp_path / "zoo"
    make_cnn(zoo / "net.onnx", [4, 8], seed=1)
    (zoo / "net.pt").write_bytes((zoo / "net.onnx").read_bytes())  # read by content
    plan = plan_zoo(zoo, IS_MODEL)
    assert sorted(m.name for m in plan.models) == ["net.onnx", "net.pt"]
    assert plan.findings == []


def test_type_suffixes_are_not_part_of_the_name():
    assert default_name(Path("resnet50.weights.h5")) == "resnet50"
    assert default_name(Path("model_best.pth.tar")) == "model_best"
    assert default_name(Path("yolo.v5.pt")) == "yolo.v5"
    assert default_name(Path(".pth.tar")) == ".pth"


def test_extra_columns_kept_in_models_and_meta(zoo, tmp_path):
    index = _write(tmp_path / "index.csv", CSV_INDEX)
    db = tmp_path / "db.h5"
    report = build(zoo, db, index=index)
    assert report.count("added") == 4
    assert len(report.findings) == 4
    models = filterdb.open(db).models.set_index("model")
    assert models.loc["alpha", "My Notes"] == "note a"
    assert models.loc["gamma-model", "My Notes"] == "note c"
    assert models.loc["orphan", "My Notes"] == ""
    assert models.loc["alpha", "Dataset URL"] == "http://a"
    assert models.loc["gamma-model", "Pretraining-Dataset"] == "ImageNet"
    assert models.loc["beta", "Task"] == ""
    meta = pd.read_hdf(db, "meta")
    assert set(meta.loc[meta["model"] == "alpha", "My Notes"]) == {"note a"}
    assert set(meta.loc[meta["model"] == "gamma-model", "Visual Category"]) == {"medical ct"}


def test_strict_turns_findings_into_an_error(zoo, tmp_path, cli):
    index = _write(tmp_path / "index.csv", CSV_INDEX)
    db = tmp_path / "db.h5"
    with pytest.raises(IndexFileError, match="4 index problem"):
        build(zoo, db, index=index, options=BuildOptions(strict=True))
    assert not db.exists()

    result = cli("build", zoo, "--index", index, "-o", db, "--strict")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("filterdb: error: ")
    assert "4 index problem(s)" in lines[0] and "row 3 (beta): empty Task" in lines[0]
    assert not db.exists()

    clean = _write(tmp_path / "clean.csv", "model,Task,Visual Category\n"
                   "alpha,Classification,natural\nbeta,Classification,natural\n"
                   "orphan,Classification,natural\n"
                   "gamma,Segmentation,medical ct\n")
    result = cli("build", zoo, "--index", clean, "-o", db, "--strict")
    assert result.returncode == 0, result.stderr
    assert len(filterdb.open(db).models) == 4


def test_unreadable_index_is_one_error_line(zoo, tmp_path, cli):
    bad = _write(tmp_path / "index.yaml", "just a string\n")
    with pytest.raises(IndexFileError, match="expected a list of rows"):
        read_index(bad)
    strings = _write(tmp_path / "strings.yaml", 'alpha: "just a string"\n')
    with pytest.raises(IndexFileError, match="needs the fields of each model as a mapping"):
        read_index(strings)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("alpha:\n  Task: entra\u00eenement\n".encode("latin-1"))
    with pytest.raises(IndexFileError, match="cannot read the meta index .'utf-8' codec"):
        read_index(latin)
    nameless = _write(tmp_path / "index.csv", "Task,Visual Category\nClassification,natural\n")
    with pytest.raises(IndexFileError, match="needs a 'model', 'Name' or 'path' column"):
        read_index(nameless)
    result = cli("build", zoo, "--index", nameless, "-o", tmp_path / "db.h5")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f"filterdb: error: {nameless}: needs a 'model', 'Name' or 'path' column to match files"]


# CSV read with the csv module (a build plans its zoo before importing pandas) ---------

def test_csv_quoting_bom_blank_lines_and_short_rows(tmp_path):
    text = ('\ufeffmodel,Task,Notes\n'
            'alpha,Classification,"one, two\nthree"\n'
            '\n'
            'beta,Detection\n')
    frame = read_index(_write(tmp_path / "index.csv", text))
    assert list(frame.columns) == ["model", "Task", "Notes"]
    assert frame.to_dict("records") == [
        {"model": "alpha", "Task": "Classification", "Notes": "one, two\nthree"},
        {"model": "beta", "Task": "Detection", "Notes": ""}]


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_csv_separated_by_semicolons_or_tabs(tmp_path, delimiter):
    text = delimiter.join(["model", "Visual Category", "Notes"]) + "\n" + delimiter.join(
        ["alpha", "natural", '"a, b"']) + "\n"
    frame = read_index(_write(tmp_path / "index.csv", text))
    assert frame.to_dict("records") == [
        {"model": "alpha", "Visual Category": "natural", "Notes": "a, b"}]


@pytest.mark.parametrize("text, message", [
    ("model,Task\nalpha,Classification,extra\n",
     "cannot read the meta index (row 2 has 3 fields, the header 2)"),
    ("model,Task,task\nalpha,Classification,Detection\n", "columns given twice: Task"),
    ("model,Task,\nalpha,Classification,stray\n",
     "row 2 has a value ('stray') in a column without a name"),
    ("model,Task\nalpha,\xe9\n".encode("latin-1"), "cannot read the meta index ("),
])
def test_csv_problems_are_one_error_naming_the_file(tmp_path, text, message):
    path = tmp_path / "index.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(IndexFileError) as error:
        read_index(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_an_empty_trailing_column_is_dropped(tmp_path):
    frame = read_index(_write(tmp_path / "index.csv", "model,Task,\nalpha,Classification,\n"))
    assert list(frame.columns) == ["model", "Task"]


def test_planning_a_build_with_an_index_imports_no_pandas(zoo, tmp_path):
    """The workers get their first models before the main process imports pandas (a
    fifth of a second here), which its first commit does."""
    import subprocess
    import sys

    index = _write(tmp_path / "index.csv", CSV_INDEX)
    code = ("import sys\n"
            "from filterdb.build import plan_zoo, is_model_file\n"
            "from filterdb.store.writer import DatabaseWriter\n"
            f"plan = plan_zoo({str(zoo)!r}, is_model_file, {str(index)!r})\n"
            f"with DatabaseWriter({str(tmp_path / 'db.h5')!r}) as writer:\n"
            "    known = writer.known_hashes, writer.known_names, writer.known_weights\n"
            "print(len(plan.models), known, 'pandas' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split("\n")[0] == "4 ({}, set(), {}) False"
