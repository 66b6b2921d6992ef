"""The large tensors of an ONNX file, found in its protobuf wire format before parsing.

Parsing a ModelProto copies every tensor's ``raw_data`` into the parser's memory, and
reading the field from Python copies it again: two copies of every weight. Here the
top-level graph's large initializers are cut out of the bytes handed to the parser and
remembered by where their data lies in the file, which the reader then reads once,
straight into a numpy array. Only lengths and tags are decoded (the wire format:
https://protobuf.dev/programming-guides/encoding/); anything unexpected leaves the
file to the full parser.
"""

from __future__ import annotations

from dataclasses import dataclass

# ModelProto.graph, GraphProto.initializer; TensorProto.name, .raw_data,
# .external_data, .data_location.
_GRAPH, _INITIALIZER = 7, 5
_NAME, _RAW_DATA, _EXTERNAL_DATA, _DATA_LOCATION = 8, 9, 13, 14
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
#: Initializers with fewer bytes of raw data stay in the parsed model.
MIN_CUT_BYTES = 1 << 16


@dataclass(frozen=True)
class Span:
    """Where a tensor's raw data lies in the file."""

    offset: int
    length: int


class WireError(ValueError):
    """Bytes that are not the expected wire format; the full parser decides."""


def cut_initializers(data, min_bytes: int = MIN_CUT_BYTES) -> tuple[bytes, dict[str, Span]] | None:
    """The model's bytes without the raw data of its large top-level initializers, and
    where that data lies, by initializer name.

    None when there is nothing to cut, or the bytes are not laid out as this expects
    (several graph fields, a duplicate or undecodable initializer name, a malformed
    field): the caller then parses the whole file.

    Examples
    --------
    >>> import onnx, numpy as np
    >>> weight = onnx.numpy_helper.from_array(np.ones((64, 64, 3, 3), np.float32), "w")
    >>> graph = onnx.helper.make_graph([], "g", [], [], initializer=[weight])
    >>> data = onnx.helper.make_model(graph).SerializeToString()
    >>> small, spans = cut_initializers(data)
    >>> len(small) < 100, spans["w"].length
    (True, 147456)
    """
    try:
        return _cut(memoryview(data), min_bytes)
    except (WireError, IndexError, UnicodeDecodeError):
        return None


def _cut(view: memoryview, min_bytes: int) -> tuple[bytes, dict[str, Span]] | None:
    pieces, spans, graphs = [], {}, 0
    for field, wire, start, value, end in _fields(view, 0, len(view)):
        if field == _GRAPH and wire == _LENGTH:
            graphs += 1
            graph = _cut_graph(view, value, end, min_bytes, spans)
            pieces += [_key(_GRAPH, _LENGTH), _varint(len(graph)), graph]
        else:
            pieces.append(view[start:end])
    if graphs != 1 or not spans:
        return None
    return b"".join(pieces), spans


def _cut_graph(view: memoryview, begin: int, stop: int, min_bytes: int,
               spans: dict[str, Span]) -> bytes:
    pieces, names = [], set()
    for field, wire, start, value, end in _fields(view, begin, stop):
        if field != _INITIALIZER or wire != _LENGTH:
            pieces.append(view[start:end])
            continue
        name, raw, keep = None, None, []
        external = False
        for t_field, t_wire, t_start, t_value, t_end in _fields(view, value, end):
            if t_field == _NAME and t_wire == _LENGTH:
                name = bytes(view[t_value:t_end]).decode()
            if t_field == _RAW_DATA and t_wire == _LENGTH:
                if raw is not None:
                    raise WireError("raw_data given twice")
                raw = Span(t_value, t_end - t_value)
            else:
                keep.append(view[t_start:t_end])
            external = external or t_field in (_EXTERNAL_DATA, _DATA_LOCATION)
        if name is None or name in names:
            raise WireError("an initializer without a name or with a duplicate one")
        names.add(name)
        if raw is None or raw.length < min_bytes or external:
            pieces.append(view[start:end])
            continue
        tensor = b"".join(keep)
        pieces += [_key(_INITIALIZER, _LENGTH), _varint(len(tensor)), tensor]
        spans[name] = raw
    return b"".join(pieces)


def _fields(view: memoryview, begin: int, stop: int):
    """(field number, wire type, field start, value start, field end) of each field."""
    position = begin
    while position < stop:
        start = position
        key, position = _read_varint(view, position)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            _, position = _read_varint(view, position)
            value = start
        elif wire == _LENGTH:
            length, value = _read_varint(view, position)
            position = value + length
        elif wire in (_FIXED64, _FIXED32):
            value = position
            position += 8 if wire == _FIXED64 else 4
        else:
            raise WireError(f"wire type {wire}")
        if field == 0 or position > stop:
            raise WireError("a field beyond its message")
        yield field, wire, start, value, position


def _read_varint(view: memoryview, position: int) -> tuple[int, int]:
    result = shift = 0
    while shift < 64:
        byte = view[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, position
        shift += 7
    raise WireError("a varint longer than 10 bytes")


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)
