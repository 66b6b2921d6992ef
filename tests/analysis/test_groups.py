"""Groupings: depth bins, categorical labels, file names, selections."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import filterdb
from filterdb.analysis import Grouping, analyze, slug
from filterdb.analysis.groups import DEPTH_LABELS, depth_bin, layer_table


def test_depth_bins_are_right_closed():
    values = np.array([0.0, 0.05, 0.1, 0.1000001, 0.2, 0.3, 0.1 + 0.2, 0.9, 0.95, 1.0])
    np.testing.assert_array_equal(depth_bin(values), [0, 0, 0, 1, 1, 2, 3, 8, 9, 9])
    # conv_depth_norm = k / (n - 1) lands exactly on the edges it should
    for n in (2, 3, 5, 6, 11, 21):
        for k in range(n):
            v = k / (n - 1)
            expected = max(0, int(np.ceil(round(v * 10, 9))) - 1)
            assert depth_bin(np.array([v]))[0] == expected, (k, n)
    codes, labels = Grouping.parse("depth").assign(
        pd.DataFrame({"conv_depth_norm": [1.0, 0.1, 0.1000001, 0.0]}))
    assert labels == ["0.0-0.1", "0.1-0.2", "0.9-1.0"]
    np.testing.assert_array_equal(codes, [2, 0, 1, 0])
    assert DEPTH_LABELS[0] == "0.0-0.1" and DEPTH_LABELS[-1] == "0.9-1.0"


def test_categorical_and_numeric_groupings():
    table = pd.DataFrame({"Task": ["b", "", "a", "b"], "opset": [17, 9, 17, 13],
                          "sparsity": [0.0, 0.5, 1.0, 0.25]})
    codes, labels = Grouping("Task", "Task").assign(table)
    assert labels == ["(empty)", "a", "b"]
    np.testing.assert_array_equal(codes, [2, 0, 1, 2])
    codes, labels = Grouping("opset", "opset").assign(table)
    assert labels == ["9", "13", "17"]  # by value, not as text
    np.testing.assert_array_equal(codes, [2, 0, 2, 1])
    codes, labels = Grouping("sparsity", "sparsity").assign(table)
    assert len(labels) == 4 and labels[0] == "0-0.1" and labels[-1] == "0.9-1"
    with pytest.raises(ValueError, match="no column 'nope'"):
        Grouping.parse("nope").assign(table)


def test_slug():
    assert slug("Visual Category") == "visual_category"
    assert slug("Task") == "task"
    assert slug("Pretraining-Dataset") == "pretraining_dataset"
    assert slug("a  -- b") == "a_b"


def test_layer_table_follows_select(zoo_db):
    db = filterdb.open(zoo_db)
    for where in ({}, {"Task": "Segmentation"}, {"Task": ["Classification", "Segmentation"]},
                  {"conv_depth_norm": (0.3, 0.7)}, {"depthwise": True}):
        table = layer_table(db, (3, 3), where)
        assert int(table["n"].sum()) == len(db.select(**where))
        assert table["filter_id_start"].is_monotonic_increasing


def test_where_selects_and_groups(zoo_db, in_memory):
    result = analyze(zoo_db, by=["Task", "model"], where={"Visual Category": "natural"})
    natural = in_memory.labels["Visual Category"] == "natural"
    assert result.n_filters == int(natural.sum())
    counts = result.groupings["Task"].counts
    assert list(counts.columns) == ["group", "models", "layers", "filters"]
    expected = pd.Series(in_memory.labels["Task"][natural]).value_counts().sort_index()
    assert list(counts["group"]) == list(expected.index)
    assert list(counts["filters"]) == list(expected)
    assert list(result.groupings["model"].counts["models"]) == [1] * len(
        result.groupings["model"].labels)
    with pytest.raises(ValueError, match="no column"):
        analyze(zoo_db, by=["Task"], where={"Nope": 1})
    with pytest.raises(ValueError, match="no filters"):
        analyze(zoo_db, by=["Task"], where={"Task": "Nope"})
