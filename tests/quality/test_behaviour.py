"""Verdicts on layers whose nature is known: fresh torch initialisations, a small CNN
trained on scikit-learn's digits, copies of one filter, all-zero layers; and
``filterdb.quality`` on live torch modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import filterdb
from filterdb.layer_quality import Thresholds

DEFAULTS = Thresholds()


def train_digits_cnn(seed: int = 0, epochs: int = 10) -> tuple[torch.nn.Module, dict, float]:
    """conv 1->32->64 3x3, max-pool, linear; Adam lr 1e-3, batch 64, 10 epochs on the
    1797 8x8 digits (benchmarks/quality_thresholds.py trains the same). Returns the
    model, its state dict at initialisation and its training accuracy."""
    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(labels)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(64 * 4 * 4, 10))
    initial = {key: value.clone() for key, value in model.state_dict().items()}
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            batch = order[start:start + 64]
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        accuracy = (model(x).argmax(dim=1) == y).float().mean().item()
    return model, initial, accuracy


@pytest.fixture(scope="module")
def digits_cnn():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # small matrices: one thread is faster and load-proof
    try:
        return train_digits_cnn()
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("c_out, c_in", [(64, 64), (128, 64), (256, 256), (32, 16)])
def test_fresh_torch_conv_layers_are_random_like(c_out, c_in):
    torch.manual_seed(c_out + c_in)
    conv = torch.nn.Conv2d(c_in, c_out, 3)
    table = filterdb.quality(torch.nn.Sequential(conv))
    row = table.iloc[0]
    assert row["shape"] == f"{c_out}x{c_in}x3x3"
    assert row["sparsity"] == 0.0
    assert row["variance_entropy_norm"] >= DEFAULTS.random_like
    assert row["verdict"] == "random-like"
    assert table.attrs["summary"]["verdict"] == "looks untrained"


def test_fresh_depthwise_and_kaiming_layers_are_random_like():
    torch.manual_seed(0)
    depthwise = torch.nn.Conv2d(96, 96, 3, groups=96)
    kaiming = torch.nn.Conv2d(64, 128, 3)
    torch.nn.init.kaiming_normal_(kaiming.weight, mode="fan_out", nonlinearity="relu")
    table = filterdb.quality(torch.nn.Sequential(depthwise, kaiming))
    assert list(table["shape"]) == ["96x1x3x3", "128x64x3x3"]
    assert list(table["groups"]) == [96, 1]
    assert list(table["verdict"]) == ["random-like", "random-like"]


def test_trained_digits_cnn_is_not_random_like(digits_cnn):
    model, initial, accuracy = digits_cnn
    assert accuracy > 0.9
    trained = filterdb.quality(model)
    fresh = filterdb.quality(initial)
    assert list(trained["name"]) == ["0", "2"]
    assert list(fresh["name"]) == ["0.weight", "2.weight"]
    assert list(fresh["verdict"]) == ["random-like", "random-like"]
    # training lowered the normalised entropy of every layer
    assert (trained["variance_entropy_norm"].to_numpy()
            < fresh["variance_entropy_norm"].to_numpy()).all()
    # the 32 -> 64 layer (2048 filters) learned structure: no longer random-like
    second = trained.iloc[1]
    assert second["variance_entropy_norm"] < DEFAULTS.random_like, second.to_dict()
    assert second["verdict"] != "random-like"
    assert trained.attrs["summary"]["verdict"] != "looks untrained", trained.attrs["summary"]


def test_quality_of_a_module_equals_quality_of_its_state_dict(digits_cnn):
    model = digits_cnn[0]
    live = filterdb.quality(model)
    state = filterdb.quality(model.state_dict())
    columns = ["shape", "groups", "n", "sparsity", "variance_entropy", "variance_entropy_norm",
               "variance_entropy_clean", "variance_entropy_clean_norm", "orthogonality",
               "verdict"]
    assert live[columns].equals(state[columns])
    assert list(live["shape"]) == ["32x1x3x3", "64x32x3x3"]


#: A filter whose 128 x 64 copies must still measure as one pattern.
PLAIN = [0.5747557282447815, -0.643056333065033, 3.1887035369873047, 1.0964783430099487,
         1.258226990699768, 0.4067537188529968, 0.6729674935340881, 0.9514230489730835,
         0.8097874522209167]


@pytest.mark.parametrize("c_out, c_in, values", [
    (4, 4, None), (64, 64, None), (256, 256, None), (128, 64, PLAIN),
    (128, 64, [1 + i / 9 for i in range(9)])])
def test_copies_of_one_filter_have_entropy_zero(c_out, c_in, values):
    if values is None:
        values = np.random.default_rng(c_out).standard_normal(9)
    one = np.asarray(values, np.float32).reshape(1, 1, 3, 3)
    weight = np.broadcast_to(one, (c_out, c_in, 3, 3)).copy()
    row = filterdb.quality({"copies.weight": weight}).iloc[0]
    assert row["sparsity"] == 0.0
    assert row["variance_entropy"] == pytest.approx(0.0, abs=1e-9)
    assert row["variance_entropy_clean"] == pytest.approx(0.0, abs=1e-9)
    assert row["variance_entropy_clean_norm"] < DEFAULTS.low_diversity
    assert row["verdict"] == "low-diversity"
    assert row["orthogonality"] == pytest.approx(0.0, abs=1e-5)


def test_all_zero_layer_is_sparse():
    table = filterdb.quality({"zero.weight": torch.zeros(64, 32, 3, 3)})
    row = table.iloc[0]
    assert row["sparsity"] == 1.0
    assert row["verdict"] == "sparse"
    assert table.attrs["summary"] == {"layers": 1, "degenerated_share": 1.0,
                                      "random_like_share": 0.0,
                                      "verdict": "has degenerated layers"}


class FancyConv(torch.nn.Conv2d):
    """A Conv2d subclass, as libraries define them (weight standardisation etc.)."""

    def forward(self, x):
        return super().forward(x) * 2


def test_quality_of_modules_with_subclassed_and_lazy_convs():
    torch.manual_seed(0)
    model = torch.nn.Sequential(FancyConv(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.LazyConv2d(16, 3), torch.nn.ReLU(),
                                torch.nn.Conv2d(16, 4, 1))
    with pytest.raises(filterdb.FilterDBError, match="lazy convolution"):
        filterdb.quality(model)
    model(torch.zeros(1, 3, 12, 12))
    table = filterdb.quality(model)
    assert list(table["name"]) == ["0", "2", "4"]
    assert list(table["shape"]) == ["8x3x3x3", "16x8x3x3", "4x16x1x1"]
    assert list(table["verdict"][:2]) == ["random-like", "random-like"]
    direct = filterdb.quality({"a": model[0].weight, "b": model[2].weight})
    assert table["variance_entropy"][:2].tolist() == direct["variance_entropy"].tolist()


def test_lazy_conv_alone_raises_before_materialisation():
    with pytest.raises(filterdb.FilterDBError):
        filterdb.quality(torch.nn.LazyConv2d(8, 3))
