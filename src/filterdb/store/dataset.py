"""Dataset metadata of a database: title, creators, licence, version and changelog.

Stored as a JSON string dataset of the master file (``/dataset``; attributes are
capped at 64 kB, a changelog and prose answers may grow past that), which the
writer carries across every commit. Versions are semantic (``MAJOR.MINOR.PATCH`` with an
optional ``-pre-release``); adding or removing models after a release turns the
version into a pre-release of the next patch (``1.0.1-dev``) until the next
release, so a changed database never claims a published version.
"""

from __future__ import annotations

import copy
import datetime
import json
import re

from ..errors import DatabaseError

#: Master-file dataset holding the dataset metadata as JSON.
INFO_DATASET = "dataset"
#: Master-file dataset holding the datasheet's prose answers as JSON.
ANSWERS_DATASET = "datasheet_answers"
#: File beside the meta index that ``build`` picks up (dataset fields and answers).
DATASHEET_FILE = "datasheet.yaml"

LICENSE = {
    "name": "CC BY-SA 4.0",
    "title": "Creative Commons Attribution-ShareAlike 4.0 International",
    "url": "https://creativecommons.org/licenses/by-sa/4.0/",
    "attribution": ("Give appropriate credit (creators, title, version/DOI), provide a link "
                    "to the licence, indicate if changes were made, and distribute "
                    "adaptations under the same licence."),
}
#: Version of a database that was never released.
UNRELEASED = "0.1.0-dev"
#: Fields a publisher sets (``filterdb describe``); the rest are managed by filterdb.
EDITABLE = ("title", "creators", "description", "license", "doi", "contact", "funding",
            "keywords")

_SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
                     r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
                     r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?")


def defaults() -> dict:
    """The metadata of a database nobody described yet.

    Examples
    --------
    >>> defaults()["license"]["name"]
    'CC BY-SA 4.0'
    """
    return {"title": "", "creators": [], "description": "", "license": dict(LICENSE),
            "version": UNRELEASED, "released": False, "doi": "", "contact": "",
            "funding": "", "keywords": [], "changelog": []}


def read_json(handle, name: str) -> dict:
    """A JSON string dataset of an open HDF5 file; ``{}`` when absent."""
    return json.loads(handle[name][()].decode()) if name in handle else {}


def write_json(handle, name: str, value: dict) -> None:
    if name in handle:
        del handle[name]
    handle.create_dataset(name, data=json.dumps(value), track_times=False)


def merged(stored: dict | None) -> dict:
    """``stored`` over the defaults (missing keys filled, licence fields too)."""
    info = defaults()
    for key, value in (stored or {}).items():
        info[key] = dict(info["license"], **value) if key == "license" else value
    return info


def parse_version(text: str) -> tuple:
    """A sortable key of a semantic version (pre-releases sort before the release).

    Raises
    ------
    ValueError
        If ``text`` is not ``MAJOR.MINOR.PATCH[-pre][+build]``.

    Examples
    --------
    >>> parse_version("1.0.1-dev") < parse_version("1.0.1") < parse_version("1.1.0")
    True
    """
    match = _SEMVER.fullmatch(str(text).strip())
    if not match:
        raise ValueError(f"not a semantic version: {text!r} (expected e.g. 1.0.0)")
    core = tuple(int(match[i]) for i in (1, 2, 3))
    if match[4] is None:
        return (*core, 1, ())
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in match[4].split("."))
    return (*core, 0, parts)


def last_release(info: dict) -> dict | None:
    """The newest changelog entry that is a release, or None."""
    releases = [e for e in info["changelog"] if e.get("kind") == "release"]
    return releases[-1] if releases else None


def is_released_as(info: dict, version: str, comment: str, doi: str = "") -> bool:
    """Whether ``info`` is this very release, unchanged since: running the same
    ``release`` again (after a crash left its outcome unknown) then has nothing to do.

    Examples
    --------
    >>> info = release(defaults(), "1.0.0", "first")
    >>> is_released_as(info, "1.0.0", "first"), is_released_as(mark_changed(info), "1.0.0", "first")
    (True, False)
    """
    last = last_release(info)
    return (info["released"] and last is not None and info["version"] == version
            and last["version"] == version and last["comment"] == comment
            and last["doi"] == doi)


def last_removal(info: dict, model: str) -> dict | None:
    """The newest changelog entry that removed ``model``, or None."""
    removals = [e for e in info["changelog"]
                if e.get("kind") == "removal" and e.get("model") == model]
    return removals[-1] if removals else None


def _today() -> str:
    return datetime.datetime.now(datetime.UTC).date().isoformat()


def release(info: dict, version: str, comment: str, doi: str = "",
            models: int = 0, filters: int = 0) -> dict:
    """A copy of ``info`` with a release recorded.

    Parameters
    ----------
    info : dict
        Current metadata (see :func:`merged`).
    version : str
        Semantic version, greater than the last release; not a pre-release.
    comment : str
        What changed, for the changelog.
    doi : str, optional
        The DOI the release is published under.
    models, filters : int
        Number of models and 3x3 filters released (recorded in the changelog).

    Examples
    --------
    >>> info = release(defaults(), "1.0.0", "first")
    >>> info["version"], info["released"], info["changelog"][0]["version"]
    ('1.0.0', True, '1.0.0')
    """
    key = parse_version(version)
    if key[3] == 0:
        raise ValueError(f"{version}: a release cannot be a pre-release version")
    previous = last_release(info)
    if previous is not None and key <= parse_version(previous["version"]):
        raise ValueError(f"{version} is not greater than the last release "
                         f"{previous['version']}")
    out = copy.deepcopy(info)
    out.update(version=version, released=True)
    if doi:
        out["doi"] = doi
    out["changelog"].append({"kind": "release", "version": version, "date": _today(),
                             "doi": doi, "comment": comment, "models": models,
                             "filters": filters})
    return out


def mark_changed(info: dict) -> dict:
    """A copy of ``info`` as a pre-release of the next patch after a change of content.

    Examples
    --------
    >>> mark_changed(release(defaults(), "1.0.0", "first"))["version"]
    '1.0.1-dev'
    """
    out = copy.deepcopy(info)
    if out["released"]:
        major, minor, patch = parse_version(out["version"])[:3]
        out.update(version=f"{major}.{minor}.{patch + 1}-dev", released=False)
    return out


def record_removal(info: dict, comment: str, details: dict) -> dict:
    """A copy of ``info`` (as a pre-release) with a model removal in the changelog."""
    out = mark_changed(info)
    out["changelog"].append({"kind": "removal", "version": out["version"], "date": _today(),
                             "doi": "", "comment": comment, **details})
    return out


def described(info: dict, fields: dict, source: str) -> dict:
    """A copy of ``info`` with publisher fields set; unknown fields are an error."""
    unknown = sorted(set(fields) - set(EDITABLE))
    if unknown:
        raise DatabaseError(f"{source}: unknown dataset field(s) {', '.join(unknown)}; "
                            f"choose from {', '.join(EDITABLE)}")
    out = copy.deepcopy(info)
    for key, value in fields.items():
        if key in ("creators", "keywords"):
            value = [value] if isinstance(value, str) else [str(v) for v in value]
        elif key == "license":
            value = dict(out["license"], **value) if isinstance(value, dict) else {
                "name": str(value), "title": str(value), "url": "", "attribution": ""}
        else:
            value = "" if value is None else str(value)
        out[key] = value
    return out


def read_publication(path) -> tuple[dict, dict]:
    """The ``dataset:`` fields and ``answers:`` of a datasheet YAML file.

    The file holds two optional mappings: ``dataset`` (any of :data:`EDITABLE`) and
    ``answers`` (datasheet question key -> prose, see :mod:`filterdb.datasheet`).

    Examples
    --------
    >>> fields, answers = read_publication("zoo/datasheet.yaml")   # doctest: +SKIP
    """
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
        raise DatabaseError(f"{path}: cannot read the datasheet file ({reason})") from None
    if not isinstance(data, dict) or set(data) - {"dataset", "answers"}:
        raise DatabaseError(f"{path}: expected a mapping with 'dataset' and/or 'answers'")
    fields, answers = data.get("dataset") or {}, data.get("answers") or {}
    if not isinstance(fields, dict) or not isinstance(answers, dict):
        raise DatabaseError(f"{path}: 'dataset' and 'answers' must be mappings")
    described(defaults(), fields, str(path))  # validates the field names
    return fields, {str(k): "" if v is None else str(v) for k, v in answers.items()}
