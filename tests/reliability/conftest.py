"""Fixtures of the reliability tests."""

from __future__ import annotations

import pytest

from .harness import Workspace, make_workspace


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Workspace:
    """A generated 12-model zoo, its uninterrupted build, and the first half built alone."""
    return make_workspace(tmp_path_factory.mktemp("workspace"))
