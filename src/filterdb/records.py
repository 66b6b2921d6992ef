"""Format-free records that every reader returns.

Readers translate a model file into a :class:`ModelRecord`; nothing after the
readers knows which format a model came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Operator kinds of a convolution layer.
CONV = "conv"
CONV_TRANSPOSE = "conv_transpose"
QUANTIZED_CONV = "quantized_conv"


@dataclass
class ConvLayer:
    """One convolution layer.

    ``weight`` keeps the layout the source stores (for ONNX ``Conv`` that is
    (c_out, c_in_per_group, kh, kw); for ``ConvTranspose`` it is
    (c_in, c_out_per_group, kh, kw)), so that its 2-D filters are
    ``weight.reshape(-1, kh, kw)`` in the order the published database used.
    ``c_out`` and ``c_in_per_group`` always carry the true meaning.
    """

    name: str
    op_type: str
    weight: np.ndarray
    c_out: int
    c_in_per_group: int
    groups: int = 1
    strides: tuple[int, ...] = (1, 1)
    dilations: tuple[int, ...] = (1, 1)
    source_dtype: str = "float32"
    depth: int | None = None
    order: int = 0
    depth_is_approximate: bool = False

    @property
    def kernel_shape(self) -> tuple[int, int]:
        return int(self.weight.shape[2]), int(self.weight.shape[3])

    @property
    def n_filters(self) -> int:
        return int(self.weight.shape[0] * self.weight.shape[1])

    @property
    def depthwise(self) -> bool:
        """One filter per input channel: groups equal the input channels."""
        return self.groups > 1 and self.c_in_per_group == 1

    def filters(self) -> np.ndarray:
        """The layer's 2-D filters as a float32 (n, kh, kw) array."""
        kh, kw = self.kernel_shape
        return np.ascontiguousarray(self.weight, dtype=np.float32).reshape(-1, kh, kw)


@dataclass
class ModelRecord:
    """A model as filterdb sees it: provenance, graph summary and conv layers."""

    name: str
    path: str
    framework: str
    producer: str = ""
    opset: int | None = None
    operator_counts: dict[str, int] = field(default_factory=dict)
    total_depth: int | None = None
    layers: list[ConvLayer] = field(default_factory=list)


#: Whether a model ran: its forward pass finished, failed, or was not attempted.
RUNS_YES, RUNS_NO, NOT_RUN = "yes", "no", "not run"


@dataclass
class RunResult:
    """The outcome of running a model once on a seeded random input, whatever its format.

    ``runs`` is :data:`RUNS_YES`, :data:`RUNS_NO` (``reason`` says why) or
    :data:`NOT_RUN` (``reason`` says why not: the format has no graph to run, a
    package is missing, or no run was asked for). ``output_shapes`` lists one shape
    per output, ``finite`` says whether every output value is finite, ``seconds`` is
    the time of the one forward pass (None when the model did not run).
    """

    runs: str
    reason: str = ""
    input_shapes: list[tuple[int, ...]] = field(default_factory=list)
    output_shapes: list[tuple[int, ...]] = field(default_factory=list)
    finite: bool | None = None
    seconds: float | None = None
