"""Graph depth shared by every reader that has a graph.

A reader translates its graph into nodes with input and output tensor names;
:func:`node_depths` computes each node's depth in O(nodes + edges).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class GraphCycleError(ValueError):
    """The graph is not a DAG."""


@dataclass(frozen=True)
class Node:
    name: str
    inputs: Sequence[str]
    outputs: Sequence[str]


def node_depths(nodes: Sequence[Node], graph_inputs: Iterable[str],
                spans: Sequence[int] | None = None) -> list[int | None]:
    """Depth of every node: the longest path, in edges, from a node that reads a graph input.

    A node that reads a real graph input (not an initializer) directly has depth 0;
    every other node has 1 + the largest depth among the nodes feeding it. Nodes not
    reachable from a graph input (fed only by constants) get ``None`` and do not count.

    Parameters
    ----------
    nodes : sequence of Node
        The graph's nodes, in any order.
    graph_inputs : iterable of str
        Names of the real inputs, initializers excluded.
    spans : sequence of int, optional
        Steps each node counts for its successors (default 1 each): a node holding a
        subgraph spans that subgraph's depth levels.

    Returns
    -------
    list of int or None
        Depths in the order of ``nodes``.

    Raises
    ------
    GraphCycleError
        If the nodes form a cycle; the message names one node on it.

    Examples
    --------
    >>> a = Node("a", ["x"], ["t"]); b = Node("b", ["t", "w"], ["y"])
    >>> node_depths([b, a], ["x"])
    [1, 0]
    """
    producer: dict[str, int] = {}
    for index, node in enumerate(nodes):
        for out in node.outputs:
            if out:
                producer[out] = index
    real_inputs = set(graph_inputs)
    successors: list[list[int]] = [[] for _ in nodes]
    pending = [0] * len(nodes)
    depth: list[int | None] = [None] * len(nodes)
    for index, node in enumerate(nodes):
        for name in node.inputs:
            if name in producer:
                successors[producer[name]].append(index)
                pending[index] += 1
            elif name in real_inputs:
                depth[index] = 0
    queue = deque(i for i, count in enumerate(pending) if count == 0)
    done = 0
    while queue:
        index = queue.popleft()
        done += 1
        here = depth[index]
        step = 1 if spans is None else spans[index]
        for succ in successors[index]:
            if here is not None and (depth[succ] is None or depth[succ] < here + step):
                depth[succ] = here + step
            pending[succ] -= 1
            if pending[succ] == 0:
                queue.append(succ)
    if done != len(nodes):
        raise GraphCycleError(f"the graph has a cycle through node "
                              f"{nodes[_node_on_cycle(nodes, producer, pending)].name!r}")
    return depth


def _node_on_cycle(nodes: Sequence[Node], producer: dict[str, int], pending: list[int]) -> int:
    """Walk unfinished predecessors from an unfinished node until one repeats: it is on a
    cycle (every unfinished node has an unfinished predecessor)."""
    index = next(i for i, count in enumerate(pending) if count > 0)
    seen: set[int] = set()
    while index not in seen:
        seen.add(index)
        index = next(producer[name] for name in nodes[index].inputs
                     if name in producer and pending[producer[name]] > 0)
    return index


def total_depth(depths: Iterable[int | None]) -> int:
    """Number of distinct depth levels among counted nodes."""
    return len({d for d in depths if d is not None})
