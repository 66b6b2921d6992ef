"""How the reader tests check a refusal: one line, and bounded memory before it."""

from __future__ import annotations

import tracemalloc

import pytest

from filterdb.errors import ModelReadError
from filterdb.readers import open_model


def one_line(error: BaseException) -> str:
    """The error's text, asserted to be one line without a traceback."""
    text = str(error)
    assert "\n" not in text and "Traceback" not in text, text
    return text


def refused_within(path, peak_bytes: int) -> ModelReadError:
    """``open_model(path)`` raises ModelReadError having allocated less than
    ``peak_bytes`` (traced numpy and Python memory); returns the error."""
    tracemalloc.start()
    try:
        with pytest.raises(ModelReadError) as caught:
            open_model(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < peak_bytes
    return caught.value
