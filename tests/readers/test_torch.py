"""Tests of the PyTorch reader (state dicts, checkpoints, TorchScript) via ``open_model``."""

from __future__ import annotations

import importlib.util
import os
import pickle
import shutil
import sys
import warnings
import zipfile

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import filterdb
from filterdb.api import model_record
from filterdb.errors import FilterDBError, MissingDependencyError, ModelReadError
from filterdb.extraction import conv_depths, ordered_layers
from filterdb.readers import Limits, find_reader, is_model_file, open_model
from filterdb.readers import torch as torch_reader

from . import writers_torch
from .network import equivalence_network, expected_filters, write_onnx
from .refusals import one_line


@pytest.fixture(scope="module")
def network():
    return equivalence_network()


def _filters(record):
    return [layer.filters() for layer in ordered_layers(record)]


def _assert_network_filters(record, network):
    got, want = _filters(record), expected_filters(network)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.float32
        np.testing.assert_array_equal(g, w)
    assert [layer.name for layer in ordered_layers(record)] == [s.name for s in network]


# detection ---------------------------------------------------------------------------

def test_extensions_and_sniffing(tmp_path, network):
    claimed = set(torch_reader.EXTENSIONS)
    assert claimed == {".pt", ".pth", ".bin", ".ckpt", ".tar", ".pkl", ".jit", ".torchscript"}
    for kind, name in [("state_dict", "a.bin"), ("torchscript", "b.bin"),
                       ("torchscript", "c.jit"), ("torchscript", "d.torchscript")]:
        path = writers_torch.write(tmp_path / name, network, kind)
        assert is_model_file(path)
        assert find_reader(path) is torch_reader
    # a torch.save archive under a foreign suffix is recognised by content
    odd = writers_torch.write(tmp_path / "weights.data", network, "state_dict")
    assert find_reader(odd) is torch_reader
    legacy = tmp_path / "legacy.bin"
    torch.save({"w.weight": torch.ones(1, 1, 3, 3)}, legacy, _use_new_zipfile_serialization=False)
    assert is_model_file(legacy)
    assert find_reader(legacy) is torch_reader


def test_raw_tensor_bytes_in_bin_are_not_a_model(tmp_path, network):
    # ONNX external data: raw little-endian floats in a .bin beside the model
    model = onnx.load(str(write_onnx(tmp_path / "net.onnx", network)))
    onnx.save_model(model, str(tmp_path / "ext.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="ext.bin", size_threshold=0)
    raw = tmp_path / "ext.bin"
    assert raw.stat().st_size > 0
    assert not torch_reader.sniff(raw.read_bytes()[:64], raw)
    assert not is_model_file(raw)
    # a pickle (0x80 first) that is not a torch.save file is not claimed either
    plain = tmp_path / "plain.bin"
    plain.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    assert not is_model_file(plain)
    # a zip that is not a torch archive
    other = tmp_path / "other.bin"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("config.json", "{}")
    assert not is_model_file(other)


# real models -------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "count", "layers"),
                         [("pnet", 702, 5), ("rnet", 1428, 3), ("onet", 6240, 4)])
def test_facenet_mtcnn_state_dicts(facenet_models, name, count, layers):
    record = open_model(facenet_models / f"{name}.pt")
    assert record.framework == "pytorch"
    assert len(record.layers) == layers
    assert sum(layer.n_filters for layer in record.layers if layer.kernel_shape == (3, 3)) == count
    assert record.layers[0].name == "conv1"
    assert all(layer.depth_is_approximate for layer in record.layers)
    assert [layer.depth for layer in record.layers] == list(range(layers))
    state = torch.load(facenet_models / f"{name}.pt", weights_only=True)
    np.testing.assert_array_equal(record.layers[0].weight, state["conv1.weight"].numpy())


# the equivalence network -------------------------------------------------------------

@pytest.mark.parametrize("kind", ["state_dict", "checkpoint", "model_checkpoint", "lightning"])
def test_state_dicts_and_checkpoints(tmp_path, network, kind):
    path = writers_torch.write(tmp_path / f"{kind}.pt", network, kind)
    record = open_model(path)
    assert record.framework == "pytorch"
    assert record.name == kind
    assert record.path == os.fspath(path)
    _assert_network_filters(record, network)
    layers = ordered_layers(record)
    assert all(layer.depth_is_approximate for layer in layers)
    assert [d for d, _ in conv_depths(layers)] == list(range(6))
    assert all(layer.source_dtype == "float32" for layer in layers)
    # without a graph: direction and groups from names and neighbours, as in safetensors
    got = [(layer.op_type, layer.groups) for layer in layers]
    assert got == [("conv", 1), ("conv", 1), ("conv", 1), ("conv", 8),
                   ("conv_transpose", 1), ("conv", 1)]
    assert (layers[4].c_out, layers[4].c_in_per_group) == (4, 8)  # weight (c_in, c_out, ..)
    if kind == "lightning":
        assert record.producer == "pytorch-lightning 2.4.0"


def test_weight_normalised_convs_give_the_weights_they_stand_for(tmp_path):
    """State dicts of weight-normalised convs hold a magnitude and a direction, not the
    weight: both APIs (weight_g/weight_v; parametrizations' original0/original1, here
    over dim 1), read as g * v / |v|, computed here by hand."""
    torch.manual_seed(3)
    with warnings.catch_warnings():  # the older API is deprecated, its files remain
        warnings.simplefilter("ignore", FutureWarning)
        old_api = nn.utils.weight_norm(nn.Conv2d(3, 8, 3))
    new_api = nn.utils.parametrizations.weight_norm(nn.Conv2d(8, 4, 3), dim=1)
    net = nn.Sequential(old_api, new_api, nn.Conv2d(4, 2, 3))
    path = tmp_path / "weight_norm.pth"
    torch.save(net.state_dict(), path)
    state = {k: v.numpy().astype(np.float64) for k, v in net.state_dict().items()}

    g, v = state["0.weight_g"], state["0.weight_v"]
    first = g * v / np.sqrt((v ** 2).sum(axis=(1, 2, 3), keepdims=True))
    g = state["1.parametrizations.weight.original0"]
    v = state["1.parametrizations.weight.original1"]
    second = g * v / np.sqrt((v ** 2).sum(axis=(0, 2, 3), keepdims=True))
    record = open_model(path)
    assert [layer.name for layer in record.layers] == ["0", "1", "2"]
    for layer, want in zip(record.layers, [first, second, state["2.weight"]], strict=True):
        np.testing.assert_allclose(layer.weight, want, rtol=1e-6, atol=1e-7)


def test_checkpoint_of_several_networks_under_names_of_its_own(tmp_path):
    """A GAN checkpoint: both networks are read, named under their keys; the optimizer
    states beside them (momentum buffers shaped like the weights) are not."""
    torch.manual_seed(4)
    generator = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 3, 3))
    discriminator = nn.Sequential(nn.Conv2d(3, 16, 3))
    optimizer = torch.optim.SGD(generator.parameters(), lr=0.1, momentum=0.9)
    generator(torch.randn(1, 3, 8, 8)).sum().backward()
    optimizer.step()
    path = tmp_path / "gan.pth"
    torch.save({"netG": generator.state_dict(), "netD": discriminator.state_dict(),
                "optimizer_G": optimizer.state_dict(), "epoch": 3}, path)

    record = open_model(path)
    assert [layer.name for layer in record.layers] == ["netG.0", "netG.1", "netD.0"]
    for layer, conv in zip(record.layers, [generator[0], generator[1], discriminator[0]],
                           strict=True):
        np.testing.assert_array_equal(layer.weight, conv.weight.detach().numpy())


def test_ema_copies_of_networks_are_not_read_again(tmp_path):
    """rosinality's StyleGAN2 checkpoints hold g, d and g_ema (the generator averaged):
    g and d are read, g_ema is the generator again; a lone EMA copy is read."""
    torch.manual_seed(5)
    generator = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 3, 3))
    discriminator = nn.Sequential(nn.Conv2d(3, 16, 3))
    averaged = {k: v * 0.5 for k, v in generator.state_dict().items()}
    path = tmp_path / "stylegan2.pt"
    torch.save({"g": generator.state_dict(), "d": discriminator.state_dict(),
                "g_ema": averaged, "g_optim": {"state": {}, "param_groups": []}}, path)
    assert [layer.name for layer in open_model(path).layers] == ["g.0", "g.1", "d.0"]
    torch.save({"ema_netG": averaged, "netD": discriminator.state_dict()}, path)
    assert [layer.name for layer in open_model(path).layers] == [
        "ema_netG.0", "ema_netG.1", "netD.0"]


def test_basicsr_params_and_params_ema(tmp_path, network):
    """BasicSR / Real-ESRGAN / GFPGAN checkpoints: ``params`` (and ``params_ema``, the
    EMA copy, read when alone)."""
    state = writers_torch.build_module(network).state_dict()
    halved = {k: v * 0.5 for k, v in state.items()}
    torch.save({"params": state, "params_ema": halved}, tmp_path / "both.pth")
    _assert_network_filters(open_model(tmp_path / "both.pth"), network)
    torch.save({"params_ema": state}, tmp_path / "ema.pth")
    _assert_network_filters(open_model(tmp_path / "ema.pth"), network)


def test_checkpoint_prefers_main_weights_over_ema(tmp_path, network):
    path = writers_torch.write(tmp_path / "ckpt.pth", network, "model_checkpoint")
    checkpoint = torch.load(path, weights_only=True)
    assert set(checkpoint) == {"epoch", "model", "ema", "optimizer"}
    record = open_model(path)
    _assert_network_filters(record, network)  # not the halved EMA copy


def test_ema_only_checkpoint_and_two_levels(tmp_path, network):
    state = writers_torch.build_module(network).state_dict()
    torch.save({"ema": {"module": state}, "epoch": 1}, tmp_path / "ema.pt")
    _assert_network_filters(open_model(tmp_path / "ema.pt"), network)
    torch.save({"model": {"state_dict": {f"_orig_mod.{k}": v for k, v in state.items()}}},
               tmp_path / "nested.ckpt")
    _assert_network_filters(open_model(tmp_path / "nested.ckpt"), network)


def test_partial_prefix_is_kept(tmp_path):
    weight = torch.randn(4, 3, 3, 3)
    torch.save({"model.conv.weight": weight, "head.conv.weight": weight.clone()},
               tmp_path / "p.pt")
    names = [layer.name for layer in open_model(tmp_path / "p.pt").layers]
    assert names == ["model.conv", "head.conv"]


@pytest.mark.parametrize("kind", ["torchscript", "torchscript_traced"])
def test_torchscript(tmp_path, network, kind):
    path = writers_torch.write(tmp_path / f"{kind}.pt", network, kind)
    record = open_model(path)
    assert record.framework == "torchscript"
    assert record.path == os.fspath(path)
    _assert_network_filters(record, network)
    layers = ordered_layers(record)
    assert [d for d, _ in conv_depths(layers)] == list(range(6))
    assert not any(layer.depth_is_approximate for layer in layers)
    by_name = {layer.name: layer for layer in layers}
    assert [by_name[s.name].groups for s in network] == [s.groups for s in network]
    assert by_name["depthwise"].depthwise
    assert not by_name["grouped"].depthwise
    assert by_name["strided"].strides == (2, 2)
    transposed = by_name["transposed"]
    assert transposed.op_type == "conv_transpose"
    assert (transposed.c_out, transposed.c_in_per_group) == (4, 8)
    for spec in network:
        assert (by_name[spec.name].c_out, by_name[spec.name].c_in_per_group) == (
            spec.c_out, spec.c_in // spec.groups)
    assert record.total_depth >= 12  # six convs and six ReLUs in a chain
    assert sum(count for op, count in record.operator_counts.items() if "conv" in op) == 6


class _TwoNames(nn.Module):
    """One conv module under two attribute names, called once under each."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = self.a

    def forward(self, x):
        return self.b(torch.relu(self.a(torch.relu(self.stem(x)))))


@pytest.mark.parametrize("kind", ["state_dict", "script", "trace", "module"])
def test_one_conv_under_two_names_is_one_layer(tmp_path, kind):
    """A weight shared by two names counts once, under its first name and depth, in
    every torch form, as in the other formats (a state dict and a scripted module gave
    two layers)."""
    torch.manual_seed(0)
    model = _TwoNames().eval()
    path = tmp_path / f"{kind}.pt"
    if kind == "state_dict":
        torch.save(model.state_dict(), path)
    elif kind == "module":
        torch.save(model, path)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scripted = (torch.jit.script(model) if kind == "script"
                        else torch.jit.trace(model, torch.randn(1, 3, 8, 8)))
        torch.jit.save(scripted, path)
    layers = ordered_layers(open_model(path))
    assert [layer.name for layer in layers] == ["stem", "a"]
    np.testing.assert_array_equal(layers[1].weight, model.a.weight.detach().numpy())
    if kind in ("script", "trace"):  # exact depths: stem 0, relu 1, a 2 (and 4 as b)
        assert [layer.depth for layer in layers] == [0, 2]


def test_quantized_torchscript_convs_of_one_shape_stay_apart(tmp_path):
    """Unpacked quantized weights are temporaries whose memory a later one may reuse:
    no two convs are merged by their storage (8 came out as 6)."""
    import torch.ao.quantization as quantization

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.dequant = quantization.QuantStub(), quantization.DeQuantStub()
            self.convs = nn.ModuleList(nn.Conv2d(8, 8, 3, padding=1) for _ in range(8))

        def forward(self, x):
            x = self.quant(x)
            for conv in self.convs:
                x = conv(x)
            return self.dequant(x)

    torch.manual_seed(0)
    engines = torch.backends.quantized.supported_engines
    torch.backends.quantized.engine = "fbgemm" if "fbgemm" in engines else "qnnpack"
    model = Net().eval()
    model.qconfig = quantization.get_default_qconfig(torch.backends.quantized.engine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantization.prepare(model, inplace=True)
        model(torch.randn(1, 8, 8, 8))
        quantization.convert(model, inplace=True)
        torch.jit.save(torch.jit.script(model), tmp_path / "quantized.pt")
    layers = open_model(tmp_path / "quantized.pt").layers
    assert [layer.name for layer in layers] == [f"convs.{k}" for k in range(8)]


class _Branches(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.left = nn.Conv2d(4, 4, 3, padding=1)
        self.right = nn.Conv2d(4, 4, 1)
        self.head = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        return self.head(self.left(x) + self.right(x))


def test_torchscript_parallel_branches_share_depth(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(_Branches()).save(str(tmp_path / "branches.pt"))
    layers = ordered_layers(open_model(tmp_path / "branches.pt"))
    depths = dict(zip([la.name for la in layers], [d for d, _ in conv_depths(layers)],
                      strict=True))
    assert depths == {"stem": 0, "left": 1, "right": 1, "head": 2}


class _Dense(nn.Module):
    """DenseNet's pattern: conv outputs appended to a list, which is then concatenated."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(16, 8, 3, padding=1)
        self.c4 = nn.Conv2d(8, 4, 3, padding=1)
        self.c5 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        features = [self.c1(x)]
        features.append(self.c2(features[-1]))
        y = self.c3(torch.cat(features, 1))
        y.add_(self.c5(y).sum())  # an in-place op: what reads y after it comes later
        return self.c4(y)


@pytest.mark.parametrize("export", ["script", "trace"])
def test_torchscript_depth_follows_list_appends_and_in_place_ops(tmp_path, export):
    module = _Dense().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved = (torch.jit.script(module) if export == "script"
                 else torch.jit.trace(module, torch.randn(1, 3, 8, 8)))
    saved.save(str(tmp_path / "dense.pt"))
    layers = ordered_layers(open_model(tmp_path / "dense.pt"))
    assert not any(layer.depth_is_approximate for layer in layers)
    depths = dict(zip([la.name for la in layers], [d for d, _ in conv_depths(layers)],
                      strict=True))
    assert depths == {"c1": 0, "c2": 1, "c3": 2, "c5": 3, "c4": 4}


def test_frozen_torchscript_reads_the_constant_weights(tmp_path):
    """torch.jit.freeze turns parameters into graph constants (and folds a BatchNorm
    into the conv before it): layers are named conv0, conv1, ... in graph order."""
    torch.manual_seed(0)
    module = _Branches().eval()
    with_bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 3)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.freeze(torch.jit.script(module)).save(str(tmp_path / "frozen.pt"))
        torch.jit.freeze(torch.jit.script(with_bn)).save(str(tmp_path / "frozen_bn.pt"))
    record = open_model(tmp_path / "frozen.pt")
    assert record.framework == "torchscript"
    layers = ordered_layers(record)
    assert not any(layer.depth_is_approximate for layer in layers)
    assert [layer.name for layer in layers] == ["conv0", "conv1", "conv2", "conv3"]
    assert [d for d, _ in conv_depths(layers)] == [0, 1, 1, 2]
    for layer, name in zip(layers, ("stem", "left", "right", "head"), strict=True):
        np.testing.assert_array_equal(layer.weight, getattr(module, name).weight.detach())
    folded = ordered_layers(open_model(tmp_path / "frozen_bn.pt"))
    assert [layer.weight.shape for layer in folded] == [(4, 3, 3, 3), (2, 4, 3, 3)]
    np.testing.assert_array_equal(folded[1].weight, with_bn[2].weight.detach().numpy())


class _ComputedWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, 4, 3, bias=False)

    def forward(self, x):
        return nn.functional.conv2d(x, self.proj.weight * 2.0)


def test_torchscript_unmapped_weight_falls_back_to_parameter_order(tmp_path):
    module = _ComputedWeight()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(module).save(str(tmp_path / "computed.pt"))
    record = open_model(tmp_path / "computed.pt")
    assert record.framework == "torchscript"
    assert [layer.name for layer in record.layers] == ["proj"]
    assert record.layers[0].depth_is_approximate
    np.testing.assert_array_equal(record.layers[0].weight, module.proj.weight.detach().numpy())


def test_live_script_module(network):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(writers_torch.build_module(network))
    record = model_record(scripted)
    assert record.framework == "torchscript"
    _assert_network_filters(record, network)
    assert not any(layer.depth_is_approximate for layer in record.layers)


# precision ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_half_precision_state_dicts(tmp_path, dtype):
    weight = torch.randn(6, 2, 3, 3).to(dtype)
    torch.save({"conv.weight": weight, "conv.bias": torch.zeros(6, dtype=dtype)},
               tmp_path / "half.pt")
    layer = open_model(tmp_path / "half.pt").layers[0]
    assert layer.source_dtype == str(dtype).removeprefix("torch.")
    assert layer.weight.dtype == np.float32
    np.testing.assert_array_equal(layer.weight, weight.float().numpy())


def test_quantized_tensors_in_a_state_dict(tmp_path):
    rng = torch.Generator().manual_seed(0)
    original = torch.randn(4, 3, 3, 3, generator=rng)
    scales = original.abs().amax(dim=(1, 2, 3)) / 127
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # quantized dtypes are deprecated
        per_tensor = torch.quantize_per_tensor(original, 0.02, 5, torch.quint8)
        per_channel = torch.quantize_per_channel(original, scales,
                                                 torch.zeros(4, dtype=torch.long), 0, torch.qint8)
    torch.save({"a.weight": per_tensor, "b.weight": per_channel}, tmp_path / "q.pt")
    a, b = open_model(tmp_path / "q.pt").layers
    assert (a.source_dtype, b.source_dtype) == ("quint8", "qint8")
    assert a.op_type == b.op_type == "quantized_conv"
    np.testing.assert_array_equal(a.weight, per_tensor.dequantize().numpy())
    np.testing.assert_array_equal(b.weight, per_channel.dequantize().numpy())
    inside = (original.abs() <= 0.02 * (255 - 5)) & (original >= -0.02 * 5)
    assert np.all(np.abs(a.weight - original.numpy())[inside.numpy()] <= 0.01 + 1e-6)
    step = scales.numpy()[:, None, None, None]
    assert np.all(np.abs(b.weight - original.numpy()) <= step / 2 + 1e-6)


def test_eager_mode_quantized_model(tmp_path):
    float_model = nn.Sequential(torch.ao.quantization.QuantStub(), nn.Conv2d(3, 8, 3),
                                nn.ReLU(), torch.ao.quantization.DeQuantStub()).eval()
    original = float_model[1].weight.detach().clone()
    float_model.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = torch.ao.quantization.prepare(float_model)
        prepared(torch.randn(8, 3, 12, 12))
        quantized = torch.ao.quantization.convert(prepared)
    torch.save(quantized.state_dict(), tmp_path / "int8.pt")
    (layer,) = open_model(tmp_path / "int8.pt").layers
    assert layer.source_dtype == "qint8"
    scales = quantized[1].weight().q_per_channel_scales().numpy()[:, None, None, None]
    assert np.all(np.abs(layer.weight - original.numpy()) <= scales / 2 + 1e-6)
    # the live quantized module gives the same weights and real depth
    live = model_record(quantized).layers
    assert len(live) == 1 and not live[0].depth_is_approximate
    np.testing.assert_array_equal(live[0].weight, layer.weight)
    # and so does its TorchScript archive, from the packed parameters
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(quantized).save(str(tmp_path / "int8_script.pt"))
    record = open_model(tmp_path / "int8_script.pt")
    assert record.framework == "torchscript"
    (scripted,) = record.layers
    assert (scripted.name, scripted.op_type, scripted.source_dtype) == (
        "1", "quantized_conv", "qint8")
    assert not scripted.depth_is_approximate
    np.testing.assert_array_equal(scripted.weight, layer.weight)


# safety ------------------------------------------------------------------------------

class _CreatesFile:
    """Unpickling this runs exec, which creates a file."""

    def __init__(self, target):
        self.target = os.fspath(target)

    def __reduce__(self):
        return (exec, (f"open({self.target!r}, 'w').close()",))


def test_foreign_objects_become_stand_ins_and_their_code_does_not_run(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    weight = torch.randn(2, 1, 3, 3)
    torch.save({"conv.weight": weight, "payload": _CreatesFile(marker)}, path)
    assert not marker.exists()
    record = open_model(path)
    assert not marker.exists()
    assert [layer.name for layer in record.layers] == ["conv"]
    np.testing.assert_array_equal(record.layers[0].weight, weight.numpy())
    # the flag unpickles it for real: the file's code runs
    record = open_model(path, Limits(allow_unsafe_pickle=True))
    assert marker.exists()
    assert [layer.name for layer in record.layers] == ["conv"]


class AttributeDict(dict):  # what Lightning stores its hyper-parameters in
    pass


def test_training_checkpoint_with_foreign_metadata(tmp_path):
    """timm and torchvision save the script's argparse.Namespace, Lightning an
    AttributeDict, many trainers numpy scalars and arrays: torch's weights-only
    unpickler refuses all of them."""
    import argparse

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=2))
    state = {f"model.{k}": v for k, v in net.state_dict().items()}
    checkpoint = {"state_dict": state, "args": argparse.Namespace(lr=0.1, arch="x"),
                  "hyper_parameters": AttributeDict(lr=0.1), "best_acc": np.float64(0.7),
                  "history": np.arange(5), "pytorch-lightning_version": "2.5.0"}
    path = tmp_path / "last.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    record = open_model(path)
    assert record.producer == "pytorch-lightning 2.5.0"
    assert [layer.name for layer in record.layers] == ["0", "2"]
    for layer, conv in zip(record.layers, (net[0], net[2]), strict=True):
        np.testing.assert_array_equal(layer.weight, conv.weight.detach().numpy())
        assert layer.depth_is_approximate


class Pickled(nn.Module):  # a class a full-model torch.save refers to
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.out = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.out(torch.relu(self.conv(x)))


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2)
        self.blocks = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8, dilation=2), nn.BatchNorm2d(8),
                                    nn.Conv2d(8, 6, (1, 3), groups=2))
        self.up = nn.ConvTranspose2d(6, 4, 3, stride=2, groups=2)

    def forward(self, x):
        return self.up(self.blocks(self.stem(x)))


def test_pickled_module_is_read_without_running_its_code(tmp_path):
    path = tmp_path / "full.pt"
    torch.save({"model": Pickled(), "epoch": 1}, path)
    record = open_model(path)
    assert [(la.name, la.depth, la.depth_is_approximate) for la in record.layers] == [
        ("conv", 0, True), ("out", 1, True)]
    # the flag unpickles the real module and traces its graph
    record = open_model(path, Limits(allow_unsafe_pickle=True))
    assert record.framework == "pytorch"
    assert [(la.name, la.depth, la.depth_is_approximate) for la in record.layers] == [
        ("conv", 0, False), ("out", 2, False)]


def test_pickled_module_conv_attributes(tmp_path):
    model = Mixed()
    path = tmp_path / "mixed.pth"
    torch.save(model, path)
    got = {la.name: la for la in open_model(path).layers}
    want = {la.name: la for la in open_model(path, Limits(allow_unsafe_pickle=True)).layers}
    assert list(got) == ["stem", "blocks.0", "blocks.2", "up"]
    assert set(got) == set(want)
    for name, layer in got.items():
        expected = want[name]
        assert (layer.op_type, layer.c_out, layer.c_in_per_group, layer.groups, layer.strides,
                layer.dilations) == (expected.op_type, expected.c_out, expected.c_in_per_group,
                                     expected.groups, expected.strides, expected.dilations)
        np.testing.assert_array_equal(layer.weight, expected.weight)
    assert (got["up"].op_type, got["up"].c_out, got["up"].c_in_per_group) == (
        "conv_transpose", 4, 3)
    assert got["blocks.0"].depthwise and got["blocks.0"].dilations == (2, 2)


def test_pickled_module_that_contains_itself(tmp_path):
    model = Pickled()
    model._modules["again"] = model  # a cycle, as a hand-made pickle can hold
    path = tmp_path / "cycle.pt"
    torch.save(model, path)
    assert [layer.name for layer in open_model(path).layers] == ["conv", "out"]


def test_legacy_pickle_cut_inside_a_global_name_is_damaged_not_untrusted(tmp_path):
    """Cut in the middle of a GLOBAL opcode, a legacy pickle names a global that cannot
    exist (``torch._utils._rebuild``): that is damage, and the advice to allow unsafe
    unpickling would be wrong."""
    whole = tmp_path / "legacy.pt"
    torch.save({"conv.weight": torch.randn(4, 3, 3, 3)}, whole,
               _use_new_zipfile_serialization=False)
    data = whole.read_bytes()
    cut = data.index(b"_rebuild_tensor") + len(b"_rebuild_")
    path = tmp_path / "cut.pt"
    path.write_bytes(data[:cut])
    with pytest.raises(ModelReadError) as caught:
        open_model(path)
    message = one_line(caught.value)
    assert message.startswith(f"{path}: damaged or truncated pickle (it names "
                              "torch._utils._rebuild"), message
    assert message.endswith(", which does not exist)") and "unsafe" not in message


def test_onnx_from_the_dynamo_exporter_names_layers_like_the_state_dict(tmp_path):
    """torch.onnx.export(dynamo=True) names its nodes node_conv2d, node_conv2d_1, ...
    but keeps the parameters' names on the weights: the layers get the modules' names,
    as the same network's state dict gives them."""
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 2, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(1, 3, 8, 8),), str(tmp_path / "net.onnx"),
                          dynamo=True, verbose=False)
    nodes = [n.name for n in onnx.load(str(tmp_path / "net.onnx")).graph.node
             if n.op_type == "Conv"]
    assert all(name.startswith("node_") for name in nodes), nodes
    torch.save(net.state_dict(), tmp_path / "net.pth")
    from_onnx = open_model(tmp_path / "net.onnx").layers
    from_state = open_model(tmp_path / "net.pth").layers
    assert [la.name for la in from_onnx] == [la.name for la in from_state] == ["0", "2.0"]
    for a, b in zip(from_onnx, from_state, strict=True):
        np.testing.assert_array_equal(a.weight, b.weight)


class TaggedTensor(torch.Tensor):  # a tensor subclass: its class is needed to rebuild it
    pass


def test_tensor_subclass_needs_the_flag(tmp_path):
    path = tmp_path / "tagged.pt"
    torch.save({"conv.weight": torch.ones(2, 1, 3, 3).as_subclass(TaggedTensor)}, path)
    with pytest.raises(ModelReadError) as caught:
        open_model(path)
    message = one_line(caught.value)
    assert "refuses to unpickle tests.readers.test_torch.TaggedTensor" in message
    assert "--allow-unsafe-pickle" in message
    assert len(open_model(path, Limits(allow_unsafe_pickle=True)).layers) == 1


def test_legacy_pickle_protocol_4(tmp_path):
    """The weights-only unpickler cannot read a legacy file of protocol 4; stand-ins can."""
    path = tmp_path / "proto4.pt"
    torch.save({"c.weight": torch.ones(1, 1, 3, 3)}, path, pickle_protocol=4,
               _use_new_zipfile_serialization=False)
    with pytest.raises(pickle.UnpicklingError), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that it may not read protocol 4
        torch.load(path, weights_only=True)
    assert [layer.name for layer in open_model(path).layers] == ["c"]


def test_missing_torch(tmp_path, network, monkeypatch):
    path = writers_torch.write(tmp_path / "sd.pt", network, "state_dict")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingDependencyError) as caught:
        open_model(path)
    assert "filterdb[torch]" in one_line(caught.value)


def test_tensor_element_limit(tmp_path, network):
    path = writers_torch.write(tmp_path / "sd.pt", network, "state_dict")
    with pytest.raises(ModelReadError, match="beyond the element limit"):
        open_model(path, Limits(max_tensor_elements=100))


# bad input ---------------------------------------------------------------------------

def test_truncated_zip(tmp_path, network):
    good = writers_torch.write(tmp_path / "good.pt", network, "state_dict")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelReadError, match="damaged or truncated zip archive") as caught:
        open_model(bad)
    one_line(caught.value)


def test_truncated_legacy_file(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"c.weight": torch.ones(8, 8, 3, 3)}, good, _use_new_zipfile_serialization=False)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ModelReadError) as caught:
        open_model(bad)
    one_line(caught.value)


def test_legacy_file(tmp_path, network):
    state = writers_torch.build_module(network).state_dict()
    torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    _assert_network_filters(open_model(tmp_path / "legacy.pth"), network)


def test_random_bytes(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelReadError, match="not a PyTorch file") as caught:
        open_model(path)
    one_line(caught.value)


def test_zip_without_pickle(tmp_path):
    path = tmp_path / "archive.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ModelReadError, match="without data.pkl") as caught:
        open_model(path)
    one_line(caught.value)


def test_pickle_without_tensors(tmp_path):
    torch.save({"epoch": 3, "note": "no weights"}, tmp_path / "empty.pt")
    with pytest.raises(ModelReadError, match="holds no tensors") as caught:
        open_model(tmp_path / "empty.pt")
    one_line(caught.value)


def test_state_dict_without_conv_weights(tmp_path):
    torch.save(nn.Linear(4, 2).state_dict(), tmp_path / "linear.pt")
    record = open_model(tmp_path / "linear.pt")
    assert record.layers == []
    with pytest.raises(FilterDBError, match="no convolution layers"):
        filterdb.quality(tmp_path / "linear.pt")


def test_non_weight_and_integer_4d_tensors_are_skipped(tmp_path):
    torch.save({"pos_embed": torch.ones(1, 4, 3, 3), "conv.weight": torch.ones(2, 2, 3, 3),
                "int.weight": torch.ones(2, 2, 3, 3, dtype=torch.int8),
                "bn.running_mean": torch.ones(2)}, tmp_path / "mixed.pt")
    assert [la.name for la in open_model(tmp_path / "mixed.pt").layers] == ["conv"]


def test_damaged_torchscript(tmp_path, network):
    good = writers_torch.write(tmp_path / "ts.pt", network, "torchscript")
    bad = tmp_path / "bad_ts.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                data = data[:10]
            dst.writestr(info, data)
    with pytest.raises(ModelReadError, match="not a readable TorchScript archive") as caught:
        open_model(bad)
    one_line(caught.value)


# command line ------------------------------------------------------------------------

def test_cli_check(tmp_path, network, cli):
    path = writers_torch.write(tmp_path / "model.pt", network, "torchscript")
    result = cli("check", path, "--format", "csv")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 7
    assert [line.split(",")[0] for line in lines[1:]] == [s.name for s in network]


def test_cli_check_does_not_run_pickled_code(tmp_path, cli):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    torch.save({"conv.weight": torch.randn(8, 4, 3, 3), "payload": _CreatesFile(marker)}, path)
    result = cli("check", path)
    assert result.returncode == 0, result.stderr
    assert "1 conv layers" in result.stdout
    assert not marker.exists()
    result = cli("check", path, "--allow-unsafe-pickle")
    assert result.returncode == 0, result.stderr
    assert marker.exists()


def test_cli_build_adds_pytorch_files(tmp_path, network, facenet_models, cli):
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    for name in ("pnet", "rnet", "onet"):
        shutil.copy(facenet_models / f"{name}.pt", zoo / f"{name}.pt")
    # another seed: the same weights in two files would be skipped as duplicates
    writers_torch.write(zoo / "scripted.pt", equivalence_network(seed=1), "torchscript")
    writers_torch.write(zoo / "lightning.ckpt", network, "lightning")
    db = tmp_path / "db.h5"
    result = cli("build", zoo, "-o", db)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{db}: 5 added, 0 already present, 0 skipped, 0 failed")
    network_3x3 = sum(s.weight.shape[0] * s.weight.shape[1] for s in network
                      if s.kernel == (3, 3))
    models = filterdb.open(db).models.set_index("model")
    assert dict(models["format"]) == {"pnet": "pytorch", "rnet": "pytorch", "onet": "pytorch",
                                      "scripted": "torchscript", "lightning": "pytorch"}
    assert int(models["total_filters"].sum()) > 702 + 1428 + 6240 + 2 * network_3x3 - 1


class _BlurPool(nn.Module):
    """timm's BlurPool2d: a fixed filter applied with groups and stride from attributes."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels, self.stride = channels, 2
        kernel = torch.tensor([1.0, 2.0, 1.0])
        kernel = (kernel[:, None] * kernel[None]) / 16
        self.register_buffer("filt", kernel[None, None].repeat(channels, 1, 1, 1),
                             persistent=False)

    def forward(self, x):
        return nn.functional.conv2d(x, self.filt, stride=self.stride, groups=self.channels)


def test_torchscript_conv_arguments_from_module_attributes(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3), _BlurPool(16), nn.Conv2d(16, 8, 3)).eval()
    path = tmp_path / "blur.pt"
    torch.jit.script(net).save(path)
    layers = {layer.name: layer for layer in open_model(path).layers}
    blur = layers["1.filt"]
    assert (blur.groups, blur.strides, blur.depthwise) == (16, (2, 2), True)
    np.testing.assert_array_equal(blur.weight, net[1].filt.numpy())
    assert [(layer.groups, layer.strides) for name, layer in layers.items()
            if name != "1.filt"] == [(1, (1, 1)), (1, (1, 1))]


def test_torchscript_calling_a_packages_operators_names_the_package(tmp_path):
    # A scripted torchvision detection model calls torchvision::nms, which only importing
    # torchvision registers; written here with a stand-in operator of that namespace.
    import subprocess
    import textwrap

    path = tmp_path / "detector.pt"
    script = textwrap.dedent(f"""
        import torch
        torch.library.define("torchvision::filterdb_probe", "(Tensor x) -> Tensor")
        torch.library.impl("torchvision::filterdb_probe", "CPU")(lambda x: x)
        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = torch.nn.Conv2d(3, 4, 3)
            def forward(self, x):
                return torch.ops.torchvision.filterdb_probe(self.conv(x))
        torch.jit.script(Net()).save({str(path)!r})
    """)
    writer = tmp_path / "write_detector.py"  # TorchScript compiles from source files
    writer.write_text(script)
    subprocess.run([sys.executable, str(writer)], check=True)
    with pytest.raises(ModelReadError) as caught:
        open_model(path)
    message = str(caught.value)
    assert "\n" not in message and "torchvision::filterdb_probe" in message
    if importlib.util.find_spec("torchvision") is None:
        assert message.endswith("the package 'torchvision' registers; pip install "
                                "torchvision)")


class _FeatureDict(nn.Module):
    """torchvision's IntermediateLayerGetter feeding heads: features stored in a dict by
    name, read back by name."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.stage = nn.Sequential(*[nn.Conv2d(8, 8, 3, padding=1) for _ in range(4)])
        self.low = nn.Conv2d(8, 4, 1)
        self.high = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        features: dict[str, torch.Tensor] = {}
        x = self.stem(x)
        features["low"] = x
        features["high"] = self.stage(x)
        return self.low(features["low"]).mean() + self.high(features["high"]).mean()


def test_torchscript_dict_read_by_key_gives_the_value_stored_under_it(tmp_path):
    path = tmp_path / "features.pt"
    torch.jit.script(_FeatureDict().eval()).save(path)
    depths = {layer.name: layer.depth for layer in open_model(path).layers}
    # stem 0, the stage's convs 1..4; low reads the stem's features, high the stage's,
    # each one step (the dict read) after them
    assert depths == {"stem": 0, "stage.0": 1, "stage.1": 2, "stage.2": 3, "stage.3": 4,
                      "low": 2, "high": 6}


class _LayerGetter(nn.ModuleDict):
    """torchvision's IntermediateLayerGetter: each returned stage's output stored under
    the name a dict attribute gives it."""

    def __init__(self):
        super().__init__({"stem": nn.Conv2d(3, 8, 3),
                          "stage": nn.Sequential(*[nn.Conv2d(8, 8, 3, padding=1)
                                                   for _ in range(4)])})
        self.return_layers = {"stem": "low", "stage": "high"}

    def forward(self, x):
        out: dict[str, torch.Tensor] = {}
        for name, module in self.items():
            x = module(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out


class _Heads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = _LayerGetter()
        self.low = nn.Conv2d(8, 4, 1)
        self.high = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        features = self.body(x)
        return self.low(features["low"]).mean() + self.high(features["high"]).mean()


def test_torchscript_dict_keys_from_a_dict_attribute(tmp_path):
    path = tmp_path / "heads.pt"
    torch.jit.script(_Heads().eval()).save(path)
    depths = {layer.name: layer.depth for layer in open_model(path).layers}
    assert depths["body.stage.3"] == 4
    # low reads the stem's output (depth 0) through the dict, not the last stage's
    assert depths["body.stem"] < depths["low"] < depths["body.stage.0"] + 2
    assert depths["high"] > depths["body.stage.3"]


class _DictWrites(nn.Module):
    """A dict value reached by other writes than a constant key's (the subclasses): conv_c
    must come after the deep path in each."""

    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(3, 8, 3, padding=1)
        self.deep = nn.Sequential(*[nn.Conv2d(8, 8, 3, padding=1) for _ in range(3)])
        self.conv_c = nn.Conv2d(8, 8, 3, padding=1)


class _KeyAtRunTime(_DictWrites):
    def forward(self, x):
        d: dict[str, torch.Tensor] = {"0": self.conv_a(x)}
        for i in range(int(x.shape[0])):
            d[str(i)] = self.deep(d[str(i)])
        return self.conv_c(d["0"])


class _Update(_DictWrites):
    def forward(self, x):
        d: dict[str, torch.Tensor] = {"0": self.conv_a(x)}
        d.update({"0": self.deep(d["0"])})
        return self.conv_c(d["0"])


class _InPlace(_DictWrites):
    def forward(self, x):
        a = self.conv_a(x)
        d: dict[str, torch.Tensor] = {"0": a}
        a.add_(self.deep(self.conv_a(x)))
        return self.conv_c(d["0"])


class _Branch(_DictWrites):
    def forward(self, x):
        a = self.conv_a(x)
        d: dict[str, torch.Tensor] = {"0": self.deep(a)}
        if bool(x.sum() > 0):  # may not run: the deep value may be read
            d["0"] = a
        return self.conv_c(d["0"])


@pytest.mark.parametrize("network", [_KeyAtRunTime, _Update, _InPlace, _Branch])
def test_torchscript_dict_reads_come_after_every_write_that_may_reach_them(tmp_path, network):
    path = tmp_path / "writes.pt"
    torch.jit.script(network().eval()).save(path)
    depths = {layer.name: layer.depth for layer in open_model(path).layers}
    assert depths["conv_c"] > depths["deep.2"] > depths["conv_a"]


class _TupleArguments(nn.Module):
    """A conv given stride and dilation from tuple attributes (``self.stride = (2, 2)``)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 3, 3, 3))
        self.stride: tuple[int, int] = (2, 3)
        self.dilation: tuple[int, int] = (2, 1)

    def forward(self, x):
        return nn.functional.conv2d(x, self.weight, stride=self.stride, dilation=self.dilation)


def test_torchscript_conv_arguments_from_tuple_attributes(tmp_path):
    path = tmp_path / "tuples.pt"
    torch.jit.script(_TupleArguments()).save(path)
    (layer,) = open_model(path).layers
    assert (layer.strides, layer.dilations) == ((2, 3), (2, 1))
