"""Tests of filterdb.graph.node_depths and total_depth."""

from __future__ import annotations

import re
import time

import pytest

from filterdb.graph import GraphCycleError, Node, node_depths, total_depth


def test_diamond():
    nodes = [Node("a", ["x"], ["ta"]),
             Node("b", ["ta"], ["tb"]),
             Node("c1", ["ta"], ["tc1"]),
             Node("c2", ["tc1"], ["tc2"]),
             Node("d", ["tb", "tc2"], ["y"])]
    depths = node_depths(nodes, ["x"])
    assert depths == [0, 1, 1, 2, 3]
    assert total_depth(depths) == 4


def test_order_of_nodes_does_not_matter():
    nodes = [Node("d", ["tb", "tc"], ["y"]),
             Node("c", ["ta"], ["tc"]),
             Node("b", ["ta"], ["tb"]),
             Node("a", ["x"], ["ta"])]
    assert node_depths(nodes, ["x"]) == [2, 1, 1, 0]


def test_node_reading_input_and_deeper_tensor_takes_longest_path():
    nodes = [Node("a", ["x"], ["ta"]),
             Node("b", ["ta"], ["tb"]),
             Node("c", ["x", "tb"], ["y"])]
    assert node_depths(nodes, ["x"]) == [0, 1, 2]


def test_constant_fed_nodes_get_none():
    nodes = [Node("k", [], ["kt"]),                 # Constant
             Node("m", ["kt", "w"], ["mt"]),        # fed by a constant and an initializer
             Node("a", ["x"], ["ta"]),
             Node("n", ["mt", "ta"], ["y"])]        # joins constant and real paths
    depths = node_depths(nodes, ["x"])
    assert depths == [None, None, 0, 1]
    assert total_depth(depths) == 2


def test_no_real_input_all_none():
    nodes = [Node("k", [], ["kt"]), Node("m", ["kt"], ["y"])]
    depths = node_depths(nodes, [])
    assert depths == [None, None]
    assert total_depth(depths) == 0


def test_same_tensor_read_twice():
    nodes = [Node("a", ["x"], ["t"]), Node("b", ["t", "t"], ["y"])]
    assert node_depths(nodes, ["x"]) == [0, 1]


def test_cycle_raises():
    nodes = [Node("a", ["x", "tb"], ["ta"]), Node("b", ["ta"], ["tb"])]
    with pytest.raises(GraphCycleError, match="cycle"):
        node_depths(nodes, ["x"])


def test_cycle_message_names_a_node_on_the_cycle():
    # "down" hangs off the cycle a <-> b and comes first; the docstring promises
    # that the message names a node ON the cycle.
    nodes = [Node("down", ["tb"], ["y"]),
             Node("a", ["x", "tb"], ["ta"]),
             Node("b", ["ta"], ["tb"])]
    with pytest.raises(GraphCycleError) as caught:
        node_depths(nodes, ["x"])
    named = re.search(r"node '([^']*)'", str(caught.value))
    assert named is not None, str(caught.value)
    assert named.group(1) in {"a", "b"}, str(caught.value)


def test_self_loop_raises():
    with pytest.raises(GraphCycleError):
        node_depths([Node("a", ["x", "ta"], ["ta"])], ["x"])


@pytest.mark.parametrize("reverse", [False, True])
def test_long_chain(reverse):
    n = 5000
    nodes = [Node(f"n{i}", [f"t{i - 1}" if i else "x"], [f"t{i}"]) for i in range(n)]
    if reverse:
        nodes.reverse()
    start = time.perf_counter()
    depths = node_depths(nodes, ["x"])
    assert time.perf_counter() - start < 5.0
    if reverse:
        depths.reverse()
    assert depths == list(range(n))
    assert depths[-1] == 4999
    assert total_depth(depths) == n
