"""What a build worker hands to the writer: a model whose shard is on disk."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ModelEntry:
    """A model whose shard is on disk, ready to be committed."""

    model: str
    sha256: str
    source_path: str
    shard: str
    meta: dict[str, str]
    summary: dict
    layers: list[dict] = field(default_factory=list)
