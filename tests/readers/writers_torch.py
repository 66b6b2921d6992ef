"""Save the equivalence network (tests/readers/network.py) in PyTorch's formats."""

from __future__ import annotations

import warnings
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from .network import INPUT_CHANNELS, INPUT_SIZE, ConvSpec

#: What :func:`write` can save.
KINDS = ("state_dict", "checkpoint", "model_checkpoint", "lightning", "torchscript",
         "torchscript_traced")


def build_module(network: list[ConvSpec]) -> nn.Sequential:
    """An nn.Sequential of the network's convs (named like the specs), a ReLU after each,
    holding exactly the specs' weights."""
    children: OrderedDict[str, nn.Module] = OrderedDict()
    for spec in network:
        kh, kw = spec.kernel
        cls = nn.ConvTranspose2d if spec.kind == "conv_transpose" else nn.Conv2d
        conv = cls(spec.c_in, spec.c_out, (kh, kw), stride=spec.stride,
                   padding=(kh // 2, kw // 2), groups=spec.groups, bias=False)
        assert tuple(conv.weight.shape) == spec.weight.shape
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(spec.weight))
        children[spec.name] = conv
        children[f"{spec.name}_relu"] = nn.ReLU()
    return nn.Sequential(children)


def example_input() -> torch.Tensor:
    return torch.zeros(1, INPUT_CHANNELS, INPUT_SIZE, INPUT_SIZE)


def _optimizer_state(module: nn.Module) -> dict:
    """An Adam state after one step: holds 4-D tensors (exp_avg) shaped like the weights."""
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    module(torch.ones(1, INPUT_CHANNELS, INPUT_SIZE, INPUT_SIZE)).sum().backward()
    optimizer.step()
    return optimizer.state_dict()


def write(path: Path, network: list[ConvSpec], kind: str) -> Path:
    """Save ``network`` to ``path`` as one of :data:`KINDS`.

    state_dict: the plain state dict. checkpoint: ``{"state_dict": {"module." + key},
    "epoch", ...}`` (DataParallel names). model_checkpoint: ``{"model": state dict,
    "optimizer", "ema": other weights, "epoch"}``. lightning: a Lightning-style
    checkpoint (``"model."`` prefix, ``pytorch-lightning_version``, optimizer states).
    torchscript / torchscript_traced: ``torch.jit.script`` / ``torch.jit.trace`` archives.
    """
    path = Path(path)
    module = build_module(network)
    state = module.state_dict()
    if kind == "state_dict":
        torch.save(state, path)
    elif kind == "checkpoint":
        torch.save({"epoch": 7, "arch": "equivalence", "best_acc1": torch.tensor(0.5),
                    "state_dict": OrderedDict((f"module.{k}", v) for k, v in state.items())},
                   path)
    elif kind == "model_checkpoint":
        ema = {k: v * 0.5 for k, v in state.items()}  # must not be read
        torch.save({"epoch": 3, "model": state, "ema": ema,
                    "optimizer": _optimizer_state(build_module(network))}, path)
    elif kind == "lightning":
        torch.save({
            "epoch": 2, "global_step": 20, "pytorch-lightning_version": "2.4.0",
            "state_dict": OrderedDict((f"model.{k}", v) for k, v in state.items()),
            "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 2}}}},
            "callbacks": {}, "optimizer_states": [_optimizer_state(build_module(network))],
            "lr_schedulers": [], "hparams_name": "kwargs", "hyper_parameters": {"lr": 1e-3},
        }, path)
    elif kind in ("torchscript", "torchscript_traced"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            scripted = (torch.jit.script(module) if kind == "torchscript"
                        else torch.jit.trace(module.eval(), example_input()))
            scripted.save(str(path))
    else:
        raise ValueError(f"unknown kind {kind!r}; one of {KINDS}")
    return path
