"""Live ``torch.nn.Module`` objects: depths from a torch.fx trace, filterdb.extract/quality."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import filterdb
from filterdb.errors import FilterDBError
from filterdb.extraction import conv_depths, ordered_layers
from filterdb.readers.arrays import from_module

from . import writers_torch
from .network import equivalence_network, expected_filters


def _depths(record) -> dict[str, int]:
    layers = ordered_layers(record)
    return {layer.name: depth for layer, (depth, _) in zip(layers, conv_depths(layers),
                                                           strict=True)}


class Branches(nn.Module):
    """stem -> (left 3x3 | right 1x1 then 3x3) -> head; registered in a shuffled order."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(4, 2, 3, padding=1)
        self.right = nn.Conv2d(4, 4, 1)
        self.right2 = nn.Conv2d(4, 4, 3, padding=1)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.left = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        return self.head(torch.cat([self.left(x), self.right2(self.right(x))], 1)[:, :4])


def test_parallel_branches_share_depth():
    record = from_module(Branches())
    assert record.framework == "torch-module"
    assert not any(layer.depth_is_approximate for layer in record.layers)
    depths = _depths(record)
    assert depths["left"] == depths["right"] == 1
    assert depths == {"stem": 0, "left": 1, "right": 1, "right2": 2, "head": 3}
    # graph depth, not registration order, orders the layers
    assert [layer.name for layer in ordered_layers(record)] == [
        "stem", "right", "left", "right2", "head"]


class StandardizedConv(nn.Conv2d):
    """A Conv2d subclass whose forward differs from Conv2d's."""

    def forward(self, x):
        weight = self.weight - self.weight.mean(dim=(1, 2, 3), keepdim=True)
        return self._conv_forward(x, weight, self.bias)


def test_conv2d_subclass():
    module = nn.Sequential(StandardizedConv(3, 8, 3), nn.ReLU(), StandardizedConv(8, 4, 5),
                           nn.Conv2d(4, 4, 1))
    record = from_module(module)
    assert [(la.name, la.depth, la.depth_is_approximate) for la in record.layers] == [
        ("0", 0, False), ("2", 2, False), ("3", 3, False)]
    np.testing.assert_array_equal(record.layers[1].weight, module[2].weight.detach().numpy())
    assert record.layers[1].kernel_shape == (5, 5)


def test_lazy_conv_after_one_forward():
    module = nn.Sequential(nn.LazyConv2d(6, 3), nn.ReLU(), nn.LazyConv2d(4, 3, groups=2))
    with pytest.raises(FilterDBError, match="lazy convolution not materialised"):
        from_module(module)
    module(torch.zeros(1, 2, 9, 9))
    record = from_module(module)
    assert [(la.c_out, la.c_in_per_group, la.groups) for la in record.layers] == [
        (6, 2, 1), (4, 3, 2)]
    assert [la.depth for la in record.layers] == [0, 2]
    assert not any(la.depth_is_approximate for la in record.layers)
    np.testing.assert_array_equal(record.layers[0].weight, module[0].weight.detach().numpy())


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Conv2d(3, 4, 3)
        self.second = nn.Conv2d(4, 4, 3)
        self.third = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        x = self.first(x)
        if x.sum() > 0:  # fx cannot trace a branch on data
            x = self.second(x)
        return self.third(x)


def test_untraceable_module_falls_back_to_registration_order():
    record = from_module(DataDependent())
    assert [(la.name, la.depth) for la in record.layers] == [
        ("first", 0), ("second", 1), ("third", 2)]
    assert all(la.depth_is_approximate for la in record.layers)
    table = filterdb.extract(DataDependent())
    assert table["depth_is_approximate"].all()


class Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.aux = nn.Conv2d(3, 2, 3)  # registered first, never called
        self.body = nn.Conv2d(3, 4, 3)
        self.shared = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        x = self.shared(torch.relu(self.body(x)))
        return self.shared(x)  # called twice: the first call's depth counts


def test_unused_and_shared_convs():
    record = from_module(Unused())
    by_name = {la.name: la for la in record.layers}
    assert (by_name["body"].depth, by_name["shared"].depth) == (0, 2)
    assert not by_name["body"].depth_is_approximate
    assert by_name["aux"].depth_is_approximate
    assert by_name["aux"].depth > by_name["shared"].depth
    assert [la.name for la in ordered_layers(record)] == ["body", "shared", "aux"]


def test_root_conv_and_dtypes():
    conv = nn.Conv2d(3, 4, 3).half()
    (layer,) = from_module(conv).layers
    assert (layer.name, layer.depth, layer.depth_is_approximate) == ("Conv2d", 0, False)
    assert layer.source_dtype == "float16"
    assert layer.weight.dtype == np.float32
    np.testing.assert_array_equal(layer.weight, conv.weight.detach().float().numpy())
    bf16 = nn.Sequential(nn.Conv2d(3, 4, 3)).to(torch.bfloat16)
    assert from_module(bf16).layers[0].source_dtype == "bfloat16"


def test_extract_equivalence_network():
    network = equivalence_network()
    module = writers_torch.build_module(network)
    table = filterdb.extract(module)
    assert isinstance(table, pd.DataFrame)
    assert "local_start" not in table.columns
    assert list(table["name"]) == [spec.name for spec in network]
    assert list(table["conv_depth"]) == list(range(6))
    assert not table["depth_is_approximate"].any()
    assert list(table["groups"]) == [spec.groups for spec in network]
    assert list(table["op_type"]) == ["conv"] * 4 + ["conv_transpose", "conv"]
    assert list(table["c_out"]) == [spec.c_out for spec in network]
    assert list(table["source_dtype"]) == ["float32"] * 6
    assert table.attrs["framework"] == "torch-module"
    expected = expected_filters(network)
    filters = table.attrs["filters"]
    assert set(filters) == {(3, 3), (1, 3)}
    want_3x3 = np.concatenate([f for f, s in zip(expected, network, strict=True)
                               if s.kernel == (3, 3)])
    assert filters[(3, 3)].dtype == np.float32
    np.testing.assert_array_equal(filters[(3, 3)], want_3x3)
    np.testing.assert_array_equal(filters[(1, 3)], expected[5])
    assert list(table["n_filters"]) == [len(f) for f in expected]


def test_extract_accepts_paths_and_mappings(tmp_path):
    network = equivalence_network()
    path = writers_torch.write(tmp_path / "net.pt", network, "torchscript")
    from_file = filterdb.extract(path)
    assert from_file.attrs["framework"] == "torchscript"
    live = filterdb.extract(writers_torch.build_module(network))
    pd.testing.assert_frame_equal(from_file, live, check_like=False)
    state = writers_torch.build_module(network).state_dict()
    from_mapping = filterdb.extract(state)
    assert from_mapping["depth_is_approximate"].all()
    np.testing.assert_array_equal(from_mapping.attrs["filters"][(3, 3)],
                                  live.attrs["filters"][(3, 3)])
    with pytest.raises(FilterDBError, match="no convolution layers"):
        filterdb.extract(nn.Linear(3, 2))
    assert "extract" in filterdb.__all__


def test_quality_of_a_live_module():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3))
    table = filterdb.quality(module)
    assert list(table["name"]) == ["0", "2"]
    assert list(table["n"]) == [48, 512]
    assert table.attrs["summary"]["layers"] == 2
    assert set(table["verdict"]) <= {"ok", "sparse", "low-diversity", "random-like",
                                     "non-finite"}
