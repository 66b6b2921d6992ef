"""Weight-normalised and spectrally normalised convs: the weight the module uses, from
a PyTorch state dict and from the same tensors in a safetensors file."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from filterdb.errors import ModelReadError
from filterdb.readers import open_model, reparam

from .refusals import one_line


def _trained_network() -> nn.Sequential:
    """Both spectral norm APIs (a conv and a transposed conv whose input and output
    channels are equal: u's axis is ambiguous by shape) and both weight norm APIs
    (one over dim 1, one over the whole tensor), after a few training steps, so the
    stored u and v lag the stored weights as in a real checkpoint."""
    torch.manual_seed(7)
    with warnings.catch_warnings():  # the older APIs are deprecated, their files remain
        warnings.simplefilter("ignore", FutureWarning)
        old_spectral = nn.utils.spectral_norm(nn.Conv2d(3, 8, 3, padding=1))
        old_transposed = nn.utils.spectral_norm(nn.ConvTranspose2d(8, 8, 3, padding=1))
        old_weight = nn.utils.weight_norm(nn.Conv2d(8, 6, 3, padding=1), dim=None)
    new_spectral = nn.utils.parametrizations.spectral_norm(nn.Conv2d(6, 5, 3, padding=1))
    new_weight = nn.utils.parametrizations.weight_norm(nn.Conv2d(5, 4, 3, padding=1), dim=1)
    net = nn.Sequential(old_spectral, old_transposed, old_weight, new_spectral, new_weight,
                        nn.Conv2d(4, 2, 3))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(3):
        net(torch.randn(2, 3, 8, 8)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return net.eval()


def _effective_weights(net: nn.Sequential) -> list[np.ndarray]:
    """The weights the modules use in evaluation (the old APIs set them in a forward
    pre-hook; the parametrizations compute them on access)."""
    with torch.no_grad():
        net(torch.randn(1, 3, 8, 8))
        return [module.weight.detach().numpy().copy() for module in net]


@pytest.fixture(scope="module")
def trained():
    net = _trained_network()
    return net, _effective_weights(net), {k: v.detach().clone().contiguous()
                                          for k, v in net.state_dict().items()}


def test_state_dict_gives_the_weights_the_modules_use(tmp_path, trained):
    net, want, state = trained
    assert "0.weight" not in state and "3.weight" not in state  # parts only
    path = tmp_path / "normalised.pth"
    torch.save(state, path)
    record = open_model(path)
    assert [layer.name for layer in record.layers] == ["0", "1", "2", "3", "4", "5"]
    for layer, weight in zip(record.layers, want, strict=True):
        np.testing.assert_allclose(layer.weight, weight, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_safetensors_file_gives_the_same_weights_as_the_state_dict(tmp_path, trained,
                                                                     dtype):
    _, want, state = trained
    state = {k: v.to(dtype) for k, v in state.items()}
    torch.save(state, tmp_path / "net.pth")
    save_file(state, tmp_path / "net.safetensors", metadata={"format": "pt"})
    from_torch = open_model(tmp_path / "net.pth")
    from_safetensors = open_model(tmp_path / "net.safetensors")
    assert [layer.name for layer in from_safetensors.layers] == ["0", "1", "2", "3", "4", "5"]
    for a, b, weight in zip(from_torch.layers, from_safetensors.layers, want, strict=True):
        np.testing.assert_array_equal(a.weight, b.weight)
        assert a.source_dtype == b.source_dtype == str(dtype).removeprefix("torch.")
        tolerance = 2e-6 if dtype == torch.float32 else 1e-2
        np.testing.assert_allclose(b.weight, weight, rtol=tolerance, atol=tolerance)


def test_fold_by_hand():
    """The formulas on small arrays, computed independently."""
    rng = np.random.default_rng(0)
    v, g = rng.normal(size=(4, 2, 3, 3)), rng.normal(size=(4, 1, 1, 1))
    item = reparam.Reparametrised(reparam.WEIGHT_NORM, "w", ("v", "g"))
    want = np.stack([g[i, 0, 0, 0] * v[i] / np.linalg.norm(v[i]) for i in range(4)])
    np.testing.assert_allclose(reparam.fold(item, [v, g]), want, rtol=1e-6)
    weight, u, right = rng.normal(size=(4, 2, 3, 3)), rng.normal(size=4), rng.normal(size=18)
    item = reparam.Reparametrised(reparam.SPECTRAL_NORM, "w", ("W", "u", "v"))
    sigma = sum(u[i] * weight[i].reshape(-1) @ right for i in range(4))
    np.testing.assert_allclose(reparam.fold(item, [weight, u, right]), weight / sigma,
                               rtol=1e-6)


def test_parts_are_paired_by_kind():
    found = reparam.find(["a.weight_orig", "a.weight_u", "a.weight_v", "b.weight_g",
                          "b.weight_v", "c.weight_v", "xweight_g", "xweight_v"])
    assert {k: (v.kind, v.name) for k, v in found.items()} == {
        "a.weight_orig": (reparam.SPECTRAL_NORM, "a.weight"),
        "b.weight_v": (reparam.WEIGHT_NORM, "b.weight")}
    assert reparam.parts_of(found) == {"a.weight_orig", "a.weight_u", "a.weight_v",
                                       "b.weight_g", "b.weight_v"}


def test_parts_that_do_not_fit_are_one_line_errors(tmp_path):
    state = {"conv.weight_orig": torch.randn(4, 2, 3, 3), "conv.weight_u": torch.randn(5),
             "conv.weight_v": torch.randn(18)}
    torch.save(state, tmp_path / "bad.pth")
    save_file(state, tmp_path / "bad.safetensors")
    for path in (tmp_path / "bad.pth", tmp_path / "bad.safetensors"):
        with pytest.raises(ModelReadError) as caught:
            open_model(path)
        message = one_line(caught.value)
        assert str(path) in message and "conv.weight: spectral norm vectors" in message


def _pruned_network() -> nn.Sequential:
    """torch.nn.utils.prune on two convs (unstructured and structured): each stores
    ``weight_orig`` and the buffer ``weight_mask``, no ``weight``."""
    from torch.nn.utils import prune

    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 6, 3), nn.Conv2d(6, 4, 1))
    prune.l1_unstructured(net[0], "weight", amount=0.5)
    prune.ln_structured(net[2], "weight", amount=0.5, n=2, dim=0)
    return net.eval()


@pytest.mark.parametrize("kind", ["state_dict", "safetensors", "pickled_module",
                                  "torchscript_traced"])
def test_pruned_convs_give_the_weights_the_modules_use(tmp_path, kind):
    net = _pruned_network()
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    assert "0.weight_mask" in state and "0.weight" not in state
    path = tmp_path / ("net.safetensors" if kind == "safetensors" else "net.pt")
    if kind == "state_dict":
        torch.save(state, path)
    elif kind == "safetensors":
        save_file(state, path)
    elif kind == "pickled_module":
        torch.save(net, path)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.trace(net, torch.randn(1, 3, 8, 8)).save(str(path))
    record = open_model(path)
    assert [layer.name for layer in record.layers] == ["0", "2", "3"]
    for layer, module in zip(record.layers, (net[0], net[2], net[3]), strict=True):
        np.testing.assert_array_equal(layer.weight, module.weight.detach().numpy())
    # half of conv 0's values and half of conv 2's output channels are zero
    assert (record.layers[0].weight == 0).sum() == 8 * 3 * 9 // 2
    assert (np.abs(record.layers[1].weight).sum(axis=(1, 2, 3)) == 0).sum() == 3


def test_pruning_mask_that_does_not_fit_is_a_one_line_error(tmp_path):
    state = {"conv.weight_orig": torch.randn(4, 2, 3, 3), "conv.weight_mask": torch.ones(4, 2)}
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ModelReadError) as caught:
        open_model(tmp_path / "bad.pth")
    assert "conv.weight: pruning mask of shape (4, 2)" in one_line(caught.value)
