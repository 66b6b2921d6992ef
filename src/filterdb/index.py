"""The meta index: one row per model, matched to the zoo's files and checked against it.

Knows nothing of model formats or HDF5; the caller says which files are models.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import IndexFileError
from .store.layout import INDEX_COLUMNS

#: Columns a complete row must fill.
REQUIRED_COLUMNS = ("Task", "Visual Category")
#: Older spellings: 0.1.0 called the visual category "Datatype". ``Input Shape`` (the
#: shapes a verification run feeds a model) is not published, but spelled one way too.
ALIASES = {"datatype": "Visual Category", "inputshape": "Input Shape"}
ID_COLUMNS = ("model", "path")
#: Column of the published pipeline's index: 1 for models that go into the database.
SELECTION = "Selection"


@dataclass
class PlannedModel:
    """A zoo file and the index fields that describe it."""

    name: str
    path: Path
    meta: dict[str, str]


@dataclass
class ZooPlan:
    """What a build will read, and what the zoo/index cross-check found."""

    models: list[PlannedModel]
    findings: list[str] = field(default_factory=list)
    #: Files under the zoo that no reader recognises (not built, not findings).
    ignored: list[Path] = field(default_factory=list)


def _key(column: str) -> str:
    return re.sub(r"[^a-z0-9]", "", column.lower())


_CANONICAL = {_key(c): c for c in (*INDEX_COLUMNS, *ID_COLUMNS, SELECTION)} | {
    _key(k): v for k, v in ALIASES.items()}


def index_rows(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """The columns (published names) and rows (every column, text stripped) of a CSV or
    YAML meta index. Read without pandas, so that a build plans its zoo and starts its
    workers before that import.

    YAML may be a list of mappings or a mapping from model name to fields.

    Examples
    --------
    >>> columns, rows = index_rows("zoo/index.csv")   # doctest: +SKIP
    >>> columns[:3], rows[0]["Task"]                    # doctest: +SKIP
    (['model', 'Name', 'Task'], 'Classification')
    """
    path = Path(path)
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                if not all(isinstance(f, dict | None) for f in data.values()):
                    raise IndexFileError(f"{path}: a mapping of models needs the fields of "
                                         "each model as a mapping")
                data = [{"model": name, **(fields or {})} for name, fields in data.items()]
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise IndexFileError(f"{path}: expected a list of rows or a mapping of models")
            rows = [_yaml_row(path, row) for row in data]
            columns = list(dict.fromkeys(column for row in rows for column in row))
        else:
            columns, rows = _csv_rows(path)
    except (OSError, yaml.YAMLError, csv.Error, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
        raise IndexFileError(f"{path}: cannot read the meta index ({reason})") from None
    if len(set(columns)) < len(columns):
        twice = sorted({c for c in columns if columns.count(c) > 1})
        raise IndexFileError(f"{path}: columns given twice: {', '.join(twice)}")
    if not {"model", "Name", "path"} & set(columns):
        raise IndexFileError(f"{path}: needs a 'model', 'Name' or 'path' column to match files")
    return columns, [{c: row.get(c, "").strip() for c in columns} for row in rows]


def _csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header (published names) and rows of a CSV index; blank lines are skipped, a row
    with more fields than the header is an error, a shorter one is filled with ''.

    Fields are separated by commas, or by semicolons or tabs when the header line holds
    one of those and no comma (spreadsheets in many locales write ``;``)."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        first = handle.readline()
        handle.seek(0)
        delimiter = next((d for d in (";", "\t") if d in first and "," not in first), ",")
        records = [record for record in csv.reader(handle, delimiter=delimiter) if record]
    if not records:
        return [], []
    header = [_CANONICAL.get(_key(c), c.strip()) for c in records[0]]
    rows = []
    for number, record in enumerate(records[1:], start=2):
        if len(record) > len(header):
            raise IndexFileError(f"{path}: cannot read the meta index (row {number} has "
                                 f"{len(record)} fields, the header {len(header)})")
        unnamed = [value for name, value in zip(header, record, strict=False)
                   if not name and value.strip()]
        if unnamed:
            raise IndexFileError(f"{path}: row {number} has a value ({unnamed[0].strip()!r}) "
                                 "in a column without a name")
        rows.append({name: value for name, value in zip(header, record, strict=False)
                     if name})
    return [name for name in header if name], rows


def is_selected(meta: dict[str, str]) -> bool:
    """Whether an index row marks its model as selected (``Selection`` 1, as published;
    also ``true``, YAML's true, and ``yes``).

    Examples
    --------
    >>> is_selected({"Selection": "1"}), is_selected({"Selection": "0"}), is_selected({})
    (True, False, False)
    >>> is_selected({"Selection": "Yes"})
    True
    """
    return meta.get(SELECTION, "").strip().lower() in ("1", "1.0", "true", "yes", "y")


def _yaml_row(path: Path, row: dict) -> dict:
    """Published column names and text values, row by row (rows may spell columns apart)."""
    out: dict[str, str] = {}
    for key, value in row.items():
        column = _CANONICAL.get(_key(str(key)), str(key).strip())
        if column in out:
            raise IndexFileError(f"{path}: a row gives {column!r} twice")
        out[column] = "" if value is None else str(value)
    return out


def scan_zoo(zoo: str | Path, is_model: Callable[[Path], bool],
             members: Callable[[Path], list[Path]] | None = None
             ) -> tuple[list[Path], list[Path]]:
    """Model files and the other files under ``zoo`` (recursively, hidden files and
    folders skipped), each sorted; files that ``members`` says belong to another model
    file (the shards of a sharded checkpoint) are neither."""
    zoo = Path(zoo)
    if zoo.is_file():
        return [zoo], []
    if not zoo.is_dir():
        raise IndexFileError(f"{zoo}: no such model file or folder")
    models, others = [], []
    for p in sorted(zoo.rglob("*")):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(zoo).parts):
            (models if is_model(p) else others).append(p)
    if members is not None:
        taken = {member.resolve() for p in models for member in members(p)}
        models = [p for p in models if p.resolve() not in taken]
    return models, others


#: Second suffixes that belong to a model file's type, not to its name: Keras 3 names
#: weights files ``<name>.weights.h5``; PyTorch's ImageNet example saves
#: ``model_best.pth.tar``.
TYPE_SUFFIXES = (".weights", ".pth", ".pt", ".ckpt")
#: The index file of a sharded checkpoint names the model: ``model.safetensors.index.json``
#: is ``model``.
INDEX_SUFFIXES = (".safetensors.index", ".bin.index")


def default_name(path: Path) -> str:
    """A model's name from its file: the stem, without a second suffix of the file type.

    Examples
    --------
    >>> default_name(Path("resnet50.weights.h5")), default_name(Path("model_best.pth.tar"))
    ('resnet50', 'model_best')
    >>> default_name(Path("diffusion_pytorch_model.safetensors.index.json"))
    'diffusion_pytorch_model'
    """
    stem = path.stem
    for suffix in INDEX_SUFFIXES:
        if stem.lower().endswith(suffix) and len(stem) > len(suffix):
            return stem[:-len(suffix)]
    inner = Path(stem).suffix
    return stem[:-len(inner)] if inner.lower() in TYPE_SUFFIXES and stem != inner else stem


def default_names(files: list[Path], root: Path) -> dict[Path, str]:
    """Names of model files: :func:`default_name`, made unique by the fewest parent
    folders (relative to ``root``) that tell same-named files apart. A zoo of one folder
    per model with generic file names (``resnet50/model.onnx``, ``vit/model.onnx``)
    gives ``resnet50/model`` and ``vit/model``; files of one name in one folder (the same
    network in two formats) keep their file names."""
    groups: dict[str, list[Path]] = {}
    for path in files:
        groups.setdefault(default_name(path), []).append(path)
    names: dict[Path, str] = {}
    for name, group in groups.items():
        if len(group) == 1:
            names[group[0]] = name
            continue
        folders = {path: path.relative_to(root).parent.parts for path in group}
        for depth in range(1, max(len(f) for f in folders.values()) + 1):
            candidates = {path: "/".join([*folders[path][-depth:], name]) for path in group}
            if len(set(candidates.values())) == len(group):
                break
        else:
            candidates = {path: path.relative_to(root).as_posix() for path in group}
        names.update(candidates)
    return names


def plan_zoo(zoo: str | Path, is_model: Callable[[Path], bool],
             index: str | Path | None = None,
             members: Callable[[Path], list[Path]] | None = None) -> ZooPlan:
    """Match zoo files to index rows and report inconsistencies.

    A row names its file by a ``path`` column (relative to the zoo) or by its
    ``model`` (else ``Name``) equal to the file's name (:func:`default_names`) or stem.
    Files without a row are built with empty fields, under their names; rows without a
    file, empty required fields and duplicate names are findings.
    """
    zoo = Path(zoo)
    files, others = scan_zoo(zoo, is_model, members)
    root = zoo if zoo.is_dir() else zoo.parent
    findings: list[str] = []
    rows = [] if index is None else index_rows(index)[1]
    by_path = {p.resolve(): p for p in files}
    names = default_names(files, root)
    by_stem: dict[str, list[Path]] = {}
    for p in files:
        for key in {names[p], default_name(p), p.stem}:
            by_stem.setdefault(key, []).append(p)

    matched: dict[Path, tuple[str, dict]] = {}
    for number, row in enumerate(rows, start=2):
        name = row.get("model") or row.get("Name") or default_name(Path(row.get("path", "")))
        if row.get("path"):
            candidate = (root / row["path"]).resolve()
            target = candidate if candidate in by_path or candidate.is_file() else None
        else:
            stems = by_stem.get(name, [])
            target = stems[0].resolve() if len(stems) == 1 else None
            if len(stems) > 1:
                findings.append(f"row {number} ({name}): several files named {name}; "
                                "add a path column")
                continue
        if target is None:
            findings.append(f"row {number} ({name}): no model file in {zoo}")
            continue
        if target in matched:
            findings.append(f"row {number} ({name}): file {target.name} already matched by "
                            f"row for {matched[target][0]}")
            continue
        empty = [c for c in REQUIRED_COLUMNS if not row.get(c)]
        if empty:
            findings.append(f"row {number} ({name}): empty {', '.join(empty)}")
        fields = {k: v for k, v in row.items() if k not in ID_COLUMNS}
        matched[target] = (name, fields)

    models = []
    for p in files:
        if p.resolve() in matched:
            name, fields = matched[p.resolve()]
        else:
            name, fields = names[p], {}
            if index is not None:
                findings.append(f"{p}: no row in the index")
        models.append(PlannedModel(name=name, path=p, meta=fields))
    for extra in sorted(set(matched) - set(by_path)):
        name, fields = matched[extra]
        models.append(PlannedModel(name=name, path=extra, meta=fields))
    counts = Counter(m.name for m in models)
    for name, count in sorted(counts.items()):
        if count > 1:
            findings.append(f"model name {name!r} given to {count} files; only the first "
                            "is built")
    seen: set[str] = set()
    unique = []
    for model in sorted(models, key=lambda m: (m.name, str(m.path))):
        if model.name not in seen:
            seen.add(model.name)
            unique.append(model)
    listed = {m.path.resolve() for m in unique}  # built, or the index file itself
    if index is not None:
        listed.add(Path(index).resolve())
    ignored = [p for p in others if p.resolve() not in listed]
    return ZooPlan(models=unique, findings=findings, ignored=ignored)
