"""State dict conventions the PyTorch and safetensors readers share (see
:mod:`filterdb.readers.statedict`): EMA copies inside one state dict, parametrizations
that cannot be computed, shared prefixes, and conv attributes of pickled modules kept
under names of their own."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from filterdb.errors import ModelReadError
from filterdb.readers import open_model

from .refusals import one_line


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3)).eval()


def _save(state: dict, path, suffix: str):
    """``state`` as a torch file (a Lightning-like checkpoint) or as safetensors."""
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        torch.save({"state_dict": state, "epoch": 1}, path)
    return path


def _mmcv_ema_hook(net):
    """mmcv 1.x EMAHook: a buffer ``ema_<name with _ for .>`` per parameter."""
    model = copy.deepcopy(net)
    for name, parameter in list(model.named_parameters()):
        model.register_buffer("ema_" + name.replace(".", "_"), parameter.detach() * 0.5)
    return model.state_dict()


def _lit_ema(net):
    """latent diffusion's LitEma: ``model_ema.<name without dots>`` beside ``model.``."""
    ema = nn.Module()
    for name, parameter in net.named_parameters():
        ema.register_buffer(name.replace(".", ""), parameter.detach() * 0.5)
    holder = nn.Module()
    holder.model, holder.model_ema = net, ema
    return holder.state_dict()


def _timm_ema_attribute(net):
    """timm's ModelEmaV2 kept as an attribute: ``model_ema.module.`` beside ``model.``."""
    ema = nn.Module()
    ema.module = copy.deepcopy(net)
    for parameter in ema.module.parameters():
        parameter.data *= 0.5
    holder = nn.Module()
    holder.model, holder.model_ema = net, ema
    return holder.state_dict()


def _ema_module_attribute(net):
    """A LightningModule keeping timm's EMA under ``ema``: ``ema.module.`` beside
    ``model.``."""
    ema = nn.Module()
    ema.module = copy.deepcopy(net)
    holder = nn.Module()
    holder.model, holder.ema = net, ema
    return holder.state_dict()


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("layout", [_mmcv_ema_hook, _lit_ema, _timm_ema_attribute,
                                    _ema_module_attribute])
def test_ema_copy_inside_a_state_dict_is_not_read(tmp_path, suffix, layout):
    net = _net()
    record = open_model(_save(layout(net), tmp_path / f"ema{suffix}", suffix))
    assert [layer.name for layer in record.layers] == ["0", "1"]
    for layer, conv in zip(record.layers, net, strict=True):
        np.testing.assert_array_equal(layer.weight, conv.weight.detach().numpy())


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_modules_named_ema_that_mirror_part_of_the_network_are_kept(tmp_path, suffix):
    """An EMA attention block (``ema``, ``ema_attn``) whose names and shapes echo some
    other layers' is no copy of the network: only a group mirroring every weight is."""
    torch.manual_seed(1)
    state = {"features.0.weight": torch.randn(8, 3, 3, 3),
             "stage2.attn.conv.weight": torch.randn(8, 8, 3, 3),
             "ema.0.weight": torch.randn(8, 3, 3, 3),
             "ema_attn.conv.weight": torch.randn(8, 8, 3, 3)}
    record = open_model(_save(state, tmp_path / f"attention{suffix}", suffix))
    assert sorted(layer.name for layer in record.layers) == [
        "ema.0", "ema_attn.conv", "features.0", "stage2.attn.conv"]


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_lone_ema_named_network_and_different_shapes_are_kept(tmp_path, suffix):
    """Only a copy counts: ``ema_<x>`` whose ``x`` has another shape is a layer of its own."""
    net = _net()
    state = {"conv.weight": net[0].weight.detach(),
             "ema_conv.weight": torch.randn(4, 3, 3, 3)}
    record = open_model(_save(state, tmp_path / f"own{suffix}", suffix))
    assert [layer.name for layer in record.layers] == ["conv", "ema_conv"]


def _parametrized(kind: str) -> nn.Module:
    net = _net()
    if kind == "orthogonal":
        nn.utils.parametrizations.orthogonal(net[1])
    elif kind == "chained":
        nn.utils.parametrizations.weight_norm(net[1])

        class Scale(nn.Module):
            def __init__(self):
                super().__init__()
                self.register_buffer("s", torch.tensor(3.0))

            def forward(self, weight):
                return weight * self.s

        nn.utils.parametrize.register_parametrization(net[1], "weight", Scale())
    return net


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("kind", ["orthogonal", "chained"])
def test_parametrization_that_cannot_be_computed_is_refused(tmp_path, suffix, kind):
    """An orthogonal (or any custom, or chained) parametrization stores neither its
    function nor the weight: one line naming the weight, not a dropped or wrong conv."""
    path = _save(_parametrized(kind).state_dict(), tmp_path / f"{kind}{suffix}", suffix)
    with pytest.raises(ModelReadError) as error:
        open_model(path)
    message = one_line(error.value)
    assert "'1.weight'" in message and "remove_parametrizations" in message


def test_untrained_spectral_norm_of_a_square_conv_is_the_convs(tmp_path):
    """Before any power iteration step u and v are random; a conv whose input and output
    channels agree is taken as a conv (the weight torch evaluates with), not as a
    transposed conv."""
    for seed in range(10):
        torch.manual_seed(seed)
        conv = nn.utils.spectral_norm(nn.Conv2d(8, 8, 3)).eval()
        path = tmp_path / f"sn{seed}.pt"
        torch.save(conv.state_dict(), path)
        with torch.no_grad():
            conv(torch.randn(1, 8, 5, 5))  # eval: uses the stored u and v, changes nothing
            expected = conv.weight.numpy()
        (layer,) = open_model(path).layers
        np.testing.assert_allclose(layer.weight, expected, rtol=1e-5, atol=1e-7)


def test_pickled_modules_under_names_of_their_own_keep_conv_attributes(tmp_path):
    """A GAN checkpoint of whole pickled modules whose classes are gone: groups, strides
    and direction come from the modules, as for a module under ``model``."""
    package = tmp_path / "gone"
    package.mkdir()
    (package / "ganmods.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        class G(nn.Module):
            def __init__(self):
                super().__init__()
                self.c = nn.Conv2d(8, 8, 3, stride=2, groups=4)
                self.up = nn.ConvTranspose2d(8, 4, 2, 2)
    """))
    path = tmp_path / "gan.pth"
    subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(package)!r})
        from ganmods import G
        torch.save({{"netG": G(), "netD": G(), "optimizer_G": {{}}}}, {str(path)!r})
    """)], check=True)
    layers = open_model(path).layers
    assert [(layer.name, layer.op_type, layer.groups, layer.strides) for layer in layers] == [
        ("netG.c", "conv", 4, (2, 2)), ("netG.up", "conv_transpose", 1, (2, 2)),
        ("netD.c", "conv", 4, (2, 2)), ("netD.up", "conv_transpose", 1, (2, 2))]


def test_safetensors_layer_names_drop_a_shared_prefix_as_torch_files_do(tmp_path):
    net = _net()
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    names = [[layer.name for layer in open_model(_save(state, tmp_path / f"ddp{s}", s)).layers]
             for s in (".pt", ".safetensors")]
    assert names == [["0", "1"], ["0", "1"]]


def _layout(shapes: dict) -> dict:
    """Tensors of the given shapes, a 1-D bias beside each 4-D weight."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for name, shape in shapes.items():
        state[name] = torch.randn(shape, generator=generator)
        if len(shape) == 4 and name.endswith(".weight"):
            state.setdefault(name.removesuffix("weight") + "bias", torch.zeros(shape[0]))
    return state


#: name -> (weight shape, op_type, groups) the readers must give; the networks' own modules.
LAYOUTS = {
    "diffusers UNet, name order puts a downsampler before the next block": {
        "down_blocks.0.resnets.0.conv1.weight": ((16, 16, 3, 3), "conv", 1),
        "down_blocks.0.downsamplers.0.conv.weight": ((16, 16, 3, 3), "conv", 1),
        "down_blocks.1.downsamplers.0.conv.weight": ((32, 32, 3, 3), "conv", 1),
        "down_blocks.1.resnets.0.conv1.weight": ((32, 16, 3, 3), "conv", 1),
        "down_blocks.1.resnets.0.conv2.weight": ((32, 32, 3, 3), "conv", 1),
        "down_blocks.1.resnets.0.conv_shortcut.weight": ((32, 16, 1, 1), "conv", 1),
    },
    "grayscale VAE: a 1-channel input conv is not depthwise": {
        "decoder.conv_in.weight": ((16, 4, 3, 3), "conv", 1),
        "decoder.conv_out.weight": ((1, 16, 3, 3), "conv", 1),
        "encoder.conv_in.weight": ((16, 1, 3, 3), "conv", 1),
        "encoder.conv_out.weight": ((8, 16, 3, 3), "conv", 1),
    },
    "torchvision MobileNetV2": {
        "features.0.0.weight": ((32, 3, 3, 3), "conv", 1),
        "features.1.conv.0.0.weight": ((32, 1, 3, 3), "conv", 32),
        "features.1.conv.1.weight": ((16, 32, 1, 1), "conv", 1),
        "features.2.conv.0.0.weight": ((96, 16, 1, 1), "conv", 1),
        "features.2.conv.1.0.weight": ((96, 1, 3, 3), "conv", 96),
        "features.2.conv.2.weight": ((24, 96, 1, 1), "conv", 1),
    },
    "transformers MobileNetV2: name order is not the data flow": {
        "layer.0.conv_3x3.convolution.weight": ((96, 1, 3, 3), "conv", 96),
        "layer.0.expand_1x1.convolution.weight": ((96, 16, 1, 1), "conv", 1),
        "layer.0.reduce_1x1.convolution.weight": ((24, 96, 1, 1), "conv", 1),
    },
    "timm names": {
        "blocks.0.0.conv_dw.weight": ((32, 1, 5, 5), "conv", 32),
        "blocks.0.0.conv_pw.weight": ((16, 32, 1, 1), "conv", 1),
    },
    "torchvision ConvNeXt: a Linear after the depthwise conv": {
        "features.1.0.block.0.weight": ((96, 1, 7, 7), "conv", 96),
        "features.1.0.block.2.weight": ((96,), None, None),
        "features.1.0.block.3.weight": ((384, 96), None, None),
    },
    "timm names: depthwise by the container's name (dw_mid.conv, dwconv2.conv)": {
        "blocks.2.0.dw_mid.conv.weight": ((32, 1, 3, 3), "conv", 32),
        "blocks.2.0.head.weight": ((10, 32, 3, 3), "conv", 1),
        "stages.0.1.dwconv2.conv.weight": ((24, 1, 7, 7), "conv", 24),
        "stages.0.1.dwconv.conv.weight": ((24, 3, 7, 7), "conv", 1),
    },
    "several one-per-channel convs without telling names or neighbours": {
        "a.x.weight": ((8, 3, 3, 3), "conv", 1),
        "a.y.weight": ((8, 1, 3, 3), "conv", 8),
        "b.x.weight": ((8, 8, 3, 3), "conv", 1),
        "b.y.weight": ((8, 1, 5, 5), "conv", 8),
    },
    "a grayscale network's input conv among depthwise convs stays plain": {
        "conv_in.weight": ((16, 1, 3, 3), "conv", 1),
        "blocks.0.mix.weight": ((16, 1, 3, 3), "conv", 16),
        "blocks.1.mix.weight": ((16, 1, 3, 3), "conv", 16),
    },
    "NFNet: two grouped 3x3 convs in a row": {
        "stages.1.0.conv1.weight": ((128, 256, 1, 1), "conv", 1),
        "stages.1.0.conv2.weight": ((128, 64, 3, 3), "conv", 2),
        "stages.1.0.conv2b.weight": ((128, 64, 3, 3), "conv", 2),
        "stages.1.0.conv3.weight": ((512, 128, 1, 1), "conv", 1),
    },
    "ResNeXt bottleneck": {
        "layer1.0.conv1.weight": ((128, 64, 1, 1), "conv", 1),
        "layer1.0.conv2.weight": ((128, 4, 3, 3), "conv", 32),
        "layer1.0.conv3.weight": ((256, 128, 1, 1), "conv", 1),
    },
    "ResNet-50 bottleneck: the widening conv3 after conv2 is no sign of groups": {
        "layer1.0.conv1.weight": ((64, 64, 1, 1), "conv", 1),
        "layer1.0.conv2.weight": ((64, 64, 3, 3), "conv", 1),
        "layer1.0.conv3.weight": ((256, 64, 1, 1), "conv", 1),
        "layer1.0.downsample.0.weight": ((256, 64, 1, 1), "conv", 1),
    },
    "SqueezeNet Fire: expand1x1 and expand3x3 read the same squeeze output": {
        "features.3.squeeze.weight": ((16, 64, 1, 1), "conv", 1),
        "features.3.expand1x1.weight": ((64, 16, 1, 1), "conv", 1),
        "features.3.expand3x3.weight": ((64, 16, 3, 3), "conv", 1),
    },
    "a 4-D buffer not called weight is no conv (BlurPool's filter)": {
        "stem.weight": ((16, 3, 3, 3), "conv", 1),
        "aa.blur_weight": ((16, 1, 3, 3), None, None),
        "aa.filt": ((16, 1, 3, 3), None, None),
    },
    "ConvNeXt V2's GRN is no conv": {
        "stages.0.0.dwconv.weight": ((64, 1, 7, 7), "conv", 64),
        "stages.0.0.grn.weight": ((1, 1, 1, 64), None, None),
        "stages.0.0.grn.bias": ((1, 1, 1, 64), None, None),
    },
    "transposed by the module's or its container's name": {
        "head.deconv1.weight": ((16, 8, 4, 4), "conv_transpose", 1),
        "head.deconv_layers.0.weight": ((8, 4, 4, 4), "conv_transpose", 1),
        "head.final.weight": ((2, 4, 1, 1), "conv", 1),
    },
}


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_groups_and_direction_inferred_alike_in_both_formats(tmp_path, suffix, layout):
    spec = LAYOUTS[layout]
    state = _layout({name: shape for name, (shape, _, _) in spec.items()})
    record = open_model(_save(state, tmp_path / f"m{suffix}", suffix))
    got = {layer.name: (layer.op_type, layer.groups) for layer in record.layers}
    want = {name.removesuffix(".weight"): (op, groups)
            for name, (_, op, groups) in spec.items() if op is not None}
    assert got == want
    for layer in record.layers:
        weight = state[layer.name + ".weight"].numpy()
        np.testing.assert_array_equal(layer.weight, weight)
        rows, columns = weight.shape[:2]
        if layer.op_type == "conv_transpose":  # (c_in, c_out / groups, kh, kw)
            assert (layer.c_out, layer.c_in_per_group) == (columns, rows)
        else:
            assert (layer.c_out, layer.c_in_per_group) == (rows, columns)
