"""What the demo zoo shows: untrained controls look untrained and trained models do
not, over-parameterised models degenerate, the deepest layers drift most."""

from __future__ import annotations

import numpy as np

import filterdb
from filterdb.analysis.engine import analyze


def test_untrained_controls_and_only_they_look_untrained(models):
    controls = models[models["role"] == "untrained control"]
    trained = models[models["role"] != "untrained control"]
    assert len(controls) == 5 and len(trained) == 36
    assert (controls["quality_verdict"] == "looks untrained").all(), controls
    assert (controls["random_like_share"] > 0.5).all()
    assert not (trained["quality_verdict"] == "looks untrained").any(), \
        trained.loc[trained["quality_verdict"] == "looks untrained", "model"].tolist()
    # measured: at most 4 of 9 layers random-like (depthwise-separable nets, whose
    # depthwise layers hold few filters); most trained models have 0 or 1
    assert (trained["random_like_share"] <= 0.45).all(), \
        trained.sort_values("random_like_share")[["model", "random_like_share"]].tail()


def test_over_parameterised_models_degenerate_more_than_their_twins(demo, models):
    db = filterdb.open(demo.database)
    by_name = models.set_index("model")
    over = models[models["role"] == "over-parameterised"]
    assert len(over) == 2
    for row in over.itertuples():
        twin = by_name.loc[row.twin]
        assert twin["role"] == "trained" and twin["family"] == row.family
        assert int(row.train_samples) == 20 and int(twin["train_samples"]) > 1000
        # same architecture: the same conv layer shapes
        layers = db.layers
        mine = layers[layers["model_id"] == row.model_id]
        theirs = layers[layers["model_id"] == twin["model_id"]]
        assert len(mine) == len(theirs)
        assert row.degenerated_share >= twin["degenerated_share"] + 0.5, (row.model,
                                                                           row.twin)
        assert mine["sparsity"].mean() > theirs["sparsity"].mean() + 0.3


def test_deepest_depth_bin_drifts_more_than_the_first(demo):
    """Drift over depth bins (KL of the PCA coefficient histograms, as published).

    In this zoo the first bin (the input layers: zero-mean edge filters on one
    standardised channel) also stands apart from the middle bins, so the mean drift of
    the deepest bin beats that of the first bin only narrowly (0.198 vs 0.190 when
    measured); what holds with margin is asserted here: the deepest bin is the one that
    drifted farthest from the first, farther than the first bins from each other, and
    its mean drift exceeds that of the second bin.
    """
    result = analyze(filterdb.open(demo.database), by=["depth"])
    grouping = result.groupings["depth"]
    drift = grouping.drift
    assert np.isfinite(drift.to_numpy()).all()
    counts = grouping.counts.set_index("group")["models"]
    filled = [g for g in counts.index if counts[g] >= 10]
    first, second, deepest = "0.0-0.1", "0.1-0.2", "0.9-1.0"
    assert {first, second, deepest} <= set(filled)
    from_first = drift.loc[first, [g for g in filled if g != first]]
    assert from_first.idxmax() == deepest, from_first.round(3).to_dict()
    assert drift.loc[first, deepest] > 1.3 * drift.loc[first, second]
    mean = drift.sum(axis=1) / (len(drift) - 1)
    assert mean[deepest] > 1.2 * mean[second], mean.round(3).to_dict()
    middle = [g for g in filled if g not in (first, second, deepest)]
    assert mean[deepest] > 1.5 * mean[middle].max(), mean.round(3).to_dict()
