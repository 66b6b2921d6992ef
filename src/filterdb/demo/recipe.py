"""How a demo network is trained (no torch needed to describe it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """How a network is trained.

    ``optimizer`` is ``"SGD"`` (momentum 0.9, Nesterov) or ``"Adam"``; weight decay is
    the L2 term both add to the gradient. ``samples`` limits training to that many
    examples (equal per class where there are labels); None uses all. The learning
    rate follows a cosine from ``lr`` to zero over ``steps``.
    """

    optimizer: str = "Adam"
    lr: float = 3e-3
    weight_decay: float = 0.0
    steps: int = 300
    batch: int = 32
    samples: int | None = None
    seed: int = 0
