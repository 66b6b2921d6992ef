"""The dataset metadata model: semantic versions, releases, pre-releases, fields."""

from __future__ import annotations

import pytest

from filterdb.errors import DatabaseError
from filterdb.store import dataset


def test_versions_order_as_semver():
    keys = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta", "1.0.0", "1.0.1-dev", "1.0.1",
            "1.1.0", "2.0.0"]
    assert sorted(keys, key=dataset.parse_version) == keys
    for bad in ("1.0", "v1.0.0", "01.0.0", "1.0.0-", ""):
        with pytest.raises(ValueError, match="not a semantic version"):
            dataset.parse_version(bad)


def test_release_must_grow_and_not_be_a_pre_release():
    info = dataset.release(dataset.defaults(), "1.0.0", "first", doi="10.5281/x",
                           models=3, filters=9)
    assert info["version"] == "1.0.0" and info["released"] and info["doi"] == "10.5281/x"
    entry = info["changelog"][0]
    assert {k: entry[k] for k in ("kind", "version", "doi", "comment", "models", "filters")} == {
        "kind": "release", "version": "1.0.0", "doi": "10.5281/x", "comment": "first",
        "models": 3, "filters": 9}
    with pytest.raises(ValueError, match="not greater than the last release 1.0.0"):
        dataset.release(info, "1.0.0", "again")
    with pytest.raises(ValueError, match="pre-release"):
        dataset.release(info, "1.1.0-rc.1", "candidate")
    changed = dataset.mark_changed(info)
    assert (changed["version"], changed["released"]) == ("1.0.1-dev", False)
    assert dataset.mark_changed(changed)["version"] == "1.0.1-dev"
    # the last *release* is the bar, not the pre-release marker
    assert dataset.release(changed, "1.0.1", "fix")["version"] == "1.0.1"


def test_defaults_and_described_fields():
    info = dataset.defaults()
    assert info["license"]["url"] == "https://creativecommons.org/licenses/by-sa/4.0/"
    assert info["version"] == "0.1.0-dev" and info["changelog"] == []
    out = dataset.described(info, {"creators": "Ada", "license": {"url": "u"}}, "x.yaml")
    assert out["creators"] == ["Ada"]
    assert out["license"]["name"] == "CC BY-SA 4.0" and out["license"]["url"] == "u"
    with pytest.raises(DatabaseError, match="x.yaml: unknown dataset field.s. version"):
        dataset.described(info, {"version": "9.9.9"}, "x.yaml")


def test_a_datasheet_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "datasheet.yaml"
    path.write_bytes("dataset:\n  title: Filtres entra\u00een\u00e9s\n".encode("latin-1"))
    with pytest.raises(DatabaseError) as caught:
        dataset.read_publication(path)
    assert str(caught.value).startswith(f"{path}: cannot read the datasheet file ('utf-8' "
                                        "codec can't decode byte 0xee")


def test_answer_keys_that_name_no_question_are_refused_with_the_closest(tmp_path, cli,
                                                                          small_db):
    from filterdb.datasheet import QUESTIONS, check_answers
    from filterdb.errors import FilterDBError

    check_answers({"funding": "NSF", "purpose": "study"}, "x.yaml")  # known keys pass
    with pytest.raises(FilterDBError) as caught:
        check_answers({"fundng": "NSF", "zzz": "?"}, "x.yaml")
    assert str(caught.value).startswith(
        "x.yaml: unknown datasheet answer(s): fundng (did you mean funding?), zzz; the "
        "questions' keys are purpose, creators, funding")
    assert len(QUESTIONS) >= 5
    answers = tmp_path / "answers.yaml"
    answers.write_text("answers:\n  fundng: NSF\n")
    result = cli("datasheet", small_db, "--answers", answers, "--no-scan")
    assert result.returncode == 2
    assert result.stderr.startswith(f"filterdb: error: {answers}: unknown datasheet answer(s): "
                                    "fundng (did you mean funding?)")
