"""The dataset's datasheet (Datasheets for Datasets): facts computed, prose supplied.

:func:`compute` returns a plain dict (sections of questions, each answered from
the database, from a prose answer, or marked open; plus the tables the answers
rest on and the version table), which :func:`render_markdown` turns into
Markdown and the HTML report can reuse. Only the table interface of an opened
database is used (``models``, ``layers``, ``shapes``, ``filter_count``,
``dataset_info``, ``path``), so it works on any database object that offers it.

Prose answers come from ``datasheet.yaml`` (``answers:`` mapping question keys of
:data:`QUESTIONS` to text), stored in the database by ``build`` or
``describe --from``, or given to ``filterdb datasheet --answers``. A question with
neither a computed nor a prose answer is listed as open, never invented.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pandas as pd

from . import redundancy, runs
from .store import layout

OPEN = "open"
#: The verdict of a layer or model whose quality was not computed.
NOT_ASSESSED = "not assessed"
#: Columns whose values a row count per value is given for.
GROUPINGS = ("Task", "Visual Category", "Framework", "format", "producer")
#: Index columns that may hold when a model was collected.
DATE_COLUMNS = ("Date", "Collected", "Collection Date", "date", "collected")

#: (section, [(key, question), ...]) in the order of the seed's datasheet.
QUESTIONS = (
    ("Motivation", (
        ("purpose", "For what purpose was the dataset created?"),
        ("creators", "Who created this dataset and on behalf of which entity?"),
        ("funding", "Who funded the creation of the dataset?"),
        ("motivation_comments", "Any other comments?"))),
    ("Composition", (
        ("instances", "What do the instances that comprise the dataset represent?"),
        ("instance_count", "How many instances are there in total (of each type)?"),
        ("sample", "Does the dataset contain all possible instances or is it a sample?"),
        ("instance_content", "What data does each instance consist of?"),
        ("label", "Is there a label or target associated with each instance?"),
        ("missing", "Is any information missing from individual instances?"),
        ("relationships", "Are relationships between individual instances made explicit?"),
        ("splits", "Are there recommended data splits?"),
        ("errors", "Are there any errors, sources of noise, or redundancies in the dataset?"),
        ("self_contained", "Is the dataset self-contained, or does it rely on external "
                           "resources?"),
        ("confidential", "Does the dataset contain data that might be considered "
                         "confidential?"),
        ("offensive", "Does the dataset contain data that might be offensive?"),
        ("people", "Does the dataset relate to people?"),
        ("composition_comments", "Any other comments?"))),
    ("Collection process", (
        ("acquisition", "How was the data associated with each instance acquired?"),
        ("mechanisms", "What mechanisms or procedures were used to collect the data?"),
        ("sampling", "If the dataset is a sample, what was the sampling strategy?"),
        ("who_collected", "Who was involved in the data collection process and how were "
                          "they compensated?"),
        ("timeframe", "Over what timeframe was the data collected?"),
        ("ethics", "Were any ethical review processes conducted?"))),
    ("Preprocessing/cleaning/labeling", (
        ("preprocessing", "Was any preprocessing/cleaning/labeling of the data done?"),
        ("raw_saved", "Was the raw data saved in addition to the preprocessed data?"),
        ("software", "Is the software used to preprocess/clean/label the instances "
                     "available?"),
        ("preprocessing_comments", "Any other comments?"))),
    ("Uses", (
        ("used_for", "Has the dataset been used for any tasks already?"),
        ("repository", "Is there a repository that links to papers or systems that use the "
                       "dataset?"),
        ("other_tasks", "What (other) tasks could the dataset be used for?"),
        ("future_impact", "Is there anything about the composition or collection that might "
                          "impact future uses?"),
        ("not_for", "Are there tasks for which the dataset should not be used?"),
        ("uses_comments", "Any other comments?"))),
    ("Distribution", (
        ("third_parties", "Will the dataset be distributed to third parties?"),
        ("how_distributed", "How will the dataset be distributed?"),
        ("when_distributed", "When will the dataset be distributed?"),
        ("license", "Under which copyright or IP licence and terms of use?"))),
    ("Maintenance", (
        ("maintainer", "Who will be supporting/hosting/maintaining the dataset, and how can "
                       "they be contacted?"),
        ("errata", "Is there an erratum?"),
        ("updates", "Will the dataset be updated?"))),
)


def check_answers(answers: dict, source: str) -> None:
    """Refuse answer keys that name no question (a typo would leave its question open
    without a word), naming the closest key.

    Raises
    ------
    FilterDBError
    """
    import difflib

    from .errors import FilterDBError

    keys = [key for _, questions in QUESTIONS for key, _ in questions]
    unknown = [key for key in answers if key not in keys]
    if unknown:
        hints = [f"{key} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(
            key, keys, n=1)) else key for key in unknown]
        raise FilterDBError(f"{source}: unknown datasheet answer(s): {', '.join(hints)}; "
                            f"the questions' keys are {', '.join(keys)}")


def compute(db, answers: dict | None = None, scan: bool = True) -> dict:
    """Every factual datasheet answer computed from ``db``, prose from ``answers``.

    Parameters
    ----------
    db : FilterDB-like
        An opened database (see the module docstring for the interface used).
    answers : dict, optional
        Prose answers by question key; default those stored in the database.
    scan : bool
        Read every filter to count duplicates (else redundancy says "not computed").

    Returns
    -------
    dict
        ``title``, ``dataset`` (metadata), ``versions`` (changelog rows),
        ``facts`` (counts and tables), ``sections`` (name -> list of
        ``{key, question, answer, source}`` with source "computed", "provided" or
        "open") and ``open`` (keys of unanswered questions).

    Examples
    --------
    >>> data = compute(filterdb.open("db.h5"))            # doctest: +SKIP
    >>> data["facts"]["filters"]["3x3"]                    # doctest: +SKIP
    823
    """
    info = db.dataset_info
    prose = dict(getattr(db, "datasheet_answers", {}) if answers is None else answers)
    facts = _facts(db, scan)
    computed = _computed_answers(db, info, facts)
    sections, unanswered = {}, []
    for section, questions in QUESTIONS:
        rows = []
        for key, question in questions:
            if key in computed:
                answer, source = computed[key], "computed"
                if prose.get(key):
                    answer, source = f"{answer}\n\n{prose[key]}", "computed+provided"
            elif prose.get(key):
                answer, source = prose[key], "provided"
            else:
                answer, source = OPEN, OPEN
                unanswered.append(key)
            rows.append({"key": key, "question": question, "answer": answer,
                         "source": source})
        sections[section] = rows
    versions = [{"version": e["version"], "date": e.get("date", ""),
                 "doi": e.get("doi", ""), "comment": e.get("comment", "")}
                for e in info["changelog"]]
    return {"title": info["title"] or db.path.name, "dataset": info, "versions": versions,
            "facts": facts, "sections": sections, "open": unanswered}


def _facts(db, scan: bool) -> dict:
    models, layers = db.models, db.layers
    counted = [c for c in models.columns if re.fullmatch(r"\(\d+, \d+\) filters", str(c))]
    facts = {
        "models": len(models), "layers": len(layers),
        "filters": {layout.shape_label(s): int(db.filter_count(s)) for s in db.shapes},
        "filters_all_shapes": {c[:-len(" filters")]: int(models[c].sum()) for c in counted
                               if int(models[c].sum())},
        "groupings": {c: {str(k): int(v) for k, v in
                          models[c].astype(str).replace("", "(empty)").value_counts().items()}
                      for c in GROUPINGS if c in models},
        "empty_fields": redundancy.empty_fields(db),
        # None: no weights hash (a published or converted file) tells identical models.
        "identical_models": redundancy.identical_models(db) if _hashed(models) else None,
    }
    # A metadata-only file carries the facts of the full database it was exported from.
    exported = getattr(db, "exported_facts", None)
    facts["files"] = exported["files"] if exported else _files(db.path)
    if "verdict" in layers:
        assessed = layers[layers["verdict"] != NOT_ASSESSED]
        facts["layers_assessed"] = len(assessed)
        facts["degenerated_layers"] = int((assessed["verdict"] != "ok").sum())
    # A build without quality metrics (or a published file) assessed no model: no count.
    if "quality_verdict" in models and (models["quality_verdict"] != NOT_ASSESSED).any():
        facts["untrained_models"] = sorted(
            models.loc[models["quality_verdict"] == "looks untrained", "model"].astype(str))
    if runs.recorded(models):
        summary = runs.summarize_runs(models)
        facts["runs"] = {"counts": summary.counts, "failed": summary.failed,
                         "not_run": summary.not_run, "non_finite": summary.non_finite}
    dates = next((c for c in DATE_COLUMNS if c in models), None)
    if dates:
        parsed = pd.to_datetime(models[dates], errors="coerce").dropna()
        if len(parsed):
            facts["timeframe"] = [parsed.min().date().isoformat(),
                                  parsed.max().date().isoformat()]
    if exported is not None:
        if exported.get("redundancy") is not None:
            facts["redundancy"] = exported["redundancy"]
    elif scan:
        facts["redundancy"] = [redundancy.scan_filters(db, s) for s in db.shapes]
    return facts


def _hashed(models: pd.DataFrame) -> bool:
    """Whether the models table has a conv weights hash of some model."""
    return "weights_blake3" in models and bool((models["weights_blake3"].astype(str) != "")
                                               .any())


def _files(path: Path) -> list[dict]:
    """Size and sha256 of the master file, and total size of its shards if any."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    files = [{"file": path.name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()}]
    shards = layout.shards_dir(path)
    if shards.is_dir():
        parts = list(shards.glob("*.h5"))
        files.append({"file": f"{shards.name}/ ({len(parts)} shard files; per-shard filter "
                              "checksums in the models table)",
                      "bytes": sum(p.stat().st_size for p in parts), "sha256": "-"})
    return files


def _computed_answers(db, info: dict, facts: dict) -> dict:
    out = {}
    if info["creators"]:
        out["creators"] = "; ".join(info["creators"])
    if info["funding"]:
        out["funding"] = info["funding"]
    shapes = ", ".join(facts["filters"])
    out["instances"] = (f"Individual convolution filters of kernel shape {shapes} "
                        "(float32), extracted from trained models, with per-model and "
                        "per-layer meta data.")
    stored = "; ".join(f"{n:,} filters of shape {s}" for s, n in facts["filters"].items())
    out["instance_count"] = (f"{stored}, from {facts['models']:,} models and "
                             f"{facts['layers']:,} convolution layers (filters of all shapes "
                             "are counted per model in the tables below).")
    out["instance_content"] = (
        f"A {shapes} float32 filter (a row of /{layout.FILTERS}; the row number is the "
        "filter id) and the structured meta information of its model and layer (model, "
        "conv_depth, conv_depth_norm and the model's index fields, via /meta filter_ids).")
    out["label"] = ("No per-instance label is stored; each filter carries its model's meta "
                    "fields (e.g. Task, Visual Category).")
    empty = {c: n for c, n in facts["empty_fields"].items() if n}
    out["missing"] = ("Empty meta fields (models): " + ", ".join(
        f"{c} {n}" for c, n in empty.items()) + "." if empty
        else "No meta field of the index is empty.")
    out["relationships"] = ("Filters of the same model and layer share a model_id and "
                            "conv_depth; /meta gives each (model_id, conv_depth) its "
                            "filter id range.")
    out["errors"] = _errors_answer(facts)
    if "runs" in facts:
        out["mechanisms"] = runs.verified_sentence(runs.RunSummary(**facts["runs"]))
    if "timeframe" in facts:
        out["timeframe"] = (f"Model collection dates in the index range from "
                            f"{facts['timeframe'][0]} to {facts['timeframe'][1]}.")
    formats = facts["groupings"].get("format", {})
    if formats:
        out["acquisition"] = ("Filters were extracted from model files of formats: "
                              + ", ".join(f"{k} {v}" for k, v in formats.items()) + ".")
    version = getattr(db, "attrs", {}).get("filterdb_version")
    if version:
        out["software"] = f"filterdb {version} extracted the filters and built the database."
    out["how_distributed"] = "; ".join(
        f"{f['file']}: {f['bytes']:,} bytes" + (f", sha256 {f['sha256']}"
                                                if f["sha256"] != "-" else "")
        for f in facts["files"])
    if info["license"].get("name"):  # a published file records no licence: left open
        out["license"] = licence_text(info["license"])
    if info["contact"]:
        out["maintainer"] = info["contact"]
    removals = [e for e in info["changelog"] if e.get("kind") == "removal"]
    out["errata"] = (" ".join(f"{e['version']} ({e['date']}): {e['comment']}."
                              for e in removals) if removals
                     else "No erratum is recorded in the changelog (no model was removed).")
    out["preprocessing"] = (
        "Each convolution weight (c_out, c_in/groups, kh, kw) was reshaped into "
        "c_out * c_in/groups filters of kh x kw, layers in graph-depth order; filters of "
        f"shape {shapes} are stored, other shapes only counted per model. Models whose conv "
        "weights equal those of a stored model are skipped when building; per-layer "
        "quality metrics were computed (see the errors answer).")
    releases = [e for e in info["changelog"] if e.get("kind") == "release"]
    if releases:
        out["when_distributed"] = "; ".join(
            f"{e['version']} on {e['date']}" + (f" (DOI {e['doi']})" if e.get("doi") else "")
            for e in releases)
    return out


def licence_text(licence: dict) -> str:
    """The licence in one line: title (name), URL, attribution.

    Examples
    --------
    >>> licence_text({"name": "MIT", "title": "MIT License", "url": "", "attribution": ""})
    'MIT License (MIT)'
    """
    return " ".join(p for p in (
        f"{licence.get('title') or licence.get('name')} ({licence.get('name')})",
        licence.get("url", ""), f"Attribution: {licence['attribution']}"
        if licence.get("attribution") else "") if p)


def version_text(info: dict) -> str:
    """The version line: version, pre-release note, DOI; or that none is recorded.

    Examples
    --------
    >>> version_text({"version": "1.0.0", "released": True, "doi": ""})
    'Version 1.0.0.'
    >>> version_text({"version": "", "released": False, "doi": ""})
    'No version is recorded in this file.'
    """
    if not info["version"]:
        return "No version is recorded in this file."
    return (f"Version {info['version']}"
            + ("" if info["released"] else " (pre-release: changed since the last release)")
            + (f", DOI {info['doi']}" if info["doi"] else "") + ".")


def identical_text(groups: list[list[str]] | None) -> str:
    """The groups of models with identical conv weights, in words (None: unknown).

    Examples
    --------
    >>> identical_text([["a", "b"]])
    '1 group(s) of models with identical conv weights: a, b'
    """
    if groups is None:
        return "identical models cannot be told (the models table has no conv weights hash)"
    return (f"{len(groups)} group(s) of models with identical conv weights"
            + (": " + "; ".join(", ".join(g) for g in groups) if groups else ""))


def _errors_answer(facts: dict) -> str:
    parts = []
    parts.append(identical_text(facts["identical_models"]))
    for scan in facts.get("redundancy", []):
        parts.append(f"{scan['shape']}: {scan['duplicate_filters']:,} of "
                     f"{scan['filters']:,} filters duplicate an earlier filter exactly "
                     f"({scan['zero_filters']:,} all-zero); {scan['shared_layers']} layers "
                     f"({scan['shared_layer_groups']} groups) are identical between models")
    if "redundancy" not in facts:
        parts.append("duplicate filters were not counted for this datasheet")
    if "degenerated_layers" in facts and facts["layers_assessed"]:
        share = facts["degenerated_layers"] / facts["layers_assessed"]
        parts.append(f"{facts['degenerated_layers']:,} of {facts['layers_assessed']:,} "
                     f"assessed layers ({share:.1%}) are degenerated (sparse, low-diversity, "
                     "random-like or non-finite)")
    if not facts.get("layers_assessed") and "untrained_models" not in facts:
        parts.append("layer quality was not assessed")
    if "untrained_models" in facts:
        untrained = facts["untrained_models"]
        parts.append(f"{len(untrained)} model(s) look untrained"
                     + (": " + ", ".join(untrained) if untrained else ""))
    return "; ".join(parts) + "."


_NEUTRALISE = ("=", "+", "-", "@")


def cell(value) -> str:
    """A Markdown table cell: text from the index made inert.

    ``|`` is escaped, newlines become spaces, and text starting with ``=``, ``+``,
    ``-`` or ``@`` gets a leading ``'`` so spreadsheets do not run it as a formula.
    Numbers are formatted, not neutralised.

    Examples
    --------
    >>> cell("=HYPERLINK(1)|x"), cell(-3)
    ("'=HYPERLINK(1)\\\\|x", '-3')
    """
    if not isinstance(value, str):
        return f"{value:,}" if isinstance(value, int) else str(value)
    text = re.sub(r"\s*[\r\n]+\s*", " ", value).replace("\\", "\\\\").replace("|", "\\|")
    return "'" + text if text.startswith(_NEUTRALISE) else text


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def render_markdown(data: dict) -> str:
    """The datasheet as Markdown, from :func:`compute`'s dict.

    Examples
    --------
    >>> Path("DATASHEET.md").write_text(render_markdown(compute(db)))  # doctest: +SKIP
    """
    info, facts = data["dataset"], data["facts"]
    lines = [f"# Datasheet: {cell(data['title'])}", ""]
    if info["description"]:
        lines += [info["description"], ""]
    lines += [cell(version_text(info)), ""]
    lines += ["## Versions", ""]
    lines += (_table(["Version", "Date", "DOI", "Comment"],
                     [[v["version"], v["date"], v["doi"], v["comment"]]
                      for v in data["versions"]])
              if data["versions"] else ["No release recorded yet.", ""])
    for section, rows in data["sections"].items():
        lines += [f"## {section}", ""]
        for row in rows:
            note = {"open": " *(open)*", "provided": ""}.get(row["source"], "")
            answer = "*Open: no answer provided.*" if row["source"] == OPEN else row["answer"]
            lines += [f"**{row['question']}**{note}", "", answer, ""]
        if section == "Composition":
            lines += _composition_tables(facts)
    return "\n".join(lines).rstrip() + "\n"


def _composition_tables(facts: dict) -> list[str]:
    lines = ["### Filters per kernel shape (all layers)", ""]
    lines += _table(["Shape", "Filters"], [[s, n] for s, n in facts["filters_all_shapes"]
                                           .items()])
    for column, counts in facts["groupings"].items():
        lines += [f"### Models per {column}", ""]
        lines += _table([column, "Models"], [[k, v] for k, v in counts.items()])
    lines += ["### Empty meta fields", ""]
    lines += _table(["Field", "Models with it empty"],
                    [[c, n] for c, n in facts["empty_fields"].items()])
    return lines
