"""The delta format: round trips byte for byte, tensor matching, and every way a delta is bad."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import numpy_helper as nh

import edgeops.delta.apply as ap
from edgeops.delta import (
    DeltaError,
    FileId,
    apply_delta,
    apply_delta_file,
    diff_artifacts,
    read_delta_header,
    tensor_regions,
)
from edgeops.delta.format import DeltaHeader
from tests.edgeops.delta_models import mlp_model

_model = mlp_model


def _apply(tmp_path: Path, old: bytes, delta: bytes, expect: FileId | None = None) -> bytes:
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "d").write_bytes(delta)
    out = io.BytesIO()
    apply_delta(tmp_path / "old", tmp_path / "d", out, expect=expect)
    return out.getvalue()


def test_onnx_initialisers_are_found_by_name_shape_and_span() -> None:
    data = _model(0)
    regions = {r.name: r for r in tensor_regions(data)}
    assert set(regions) == {"w1", "b1", "w2", "w3"}
    w2 = regions["w2"]
    assert (w2.shape, w2.dtype, w2.width, w2.length) == ((128, 128), "float32", 4, 128 * 128 * 4)
    parsed = {t.name: nh.to_array(t) for t in onnx.load_from_string(data).graph.initializer}
    raw = np.frombuffer(data[w2.offset:w2.offset + w2.length], np.float32).reshape(128, 128)
    assert np.array_equal(raw, parsed["w2"])


def test_head_retrain_sends_only_the_head(tmp_path: Path) -> None:
    old, new = _model(0), _model(0, head_seed=99)
    d = diff_artifacts(old, new)
    why = {p.name: p.why for p in d.planned if p.name}
    # b1 (512 bytes) is under SMALL_TENSOR_BYTES: it travels in the graph stream
    assert why == {"w1": "unchanged", "w2": "unchanged", "w3": "changed"}
    assert d.worthwhile and d.size < 128 * 10 * 4 + 400   # the head, plus header and graph
    assert _apply(tmp_path, old, d.to_bytes()) == new


def test_small_fine_tune_uses_a_difference_smaller_than_the_tensor(tmp_path: Path) -> None:
    old = _model(0, hidden=256)
    m = onnx.load_from_string(old)
    for t in m.graph.initializer:
        a = nh.to_array(t)
        t.CopyFrom(nh.from_array((a * np.float32(1.0001)).astype(np.float32), t.name))
    new = m.SerializeToString()
    d = diff_artifacts(old, new)
    kinds = {p.op.kind for p in d.planned if p.name}
    assert kinds <= {"xor", "sub"}
    assert d.size < 0.8 * len(new)
    assert _apply(tmp_path, old, d.to_bytes()) == new


def test_unrelated_model_is_not_worthwhile_but_still_exact(tmp_path: Path) -> None:
    old = _model(0)
    new = np.random.default_rng(5).bytes(20_000)
    d = diff_artifacts(old, new)
    assert not d.worthwhile
    assert _apply(tmp_path, old, d.to_bytes()) == new


def test_renamed_unchanged_tensor_is_copied() -> None:
    old = _model(0)
    m = onnx.load_from_string(old)
    m.graph.initializer[2].name = "w2_renamed"
    m.graph.node[3].input[1] = "w2_renamed"
    d = diff_artifacts(old, m.SerializeToString())
    assert {p.name: p.why for p in d.planned if p.name}["w2_renamed"] == "moved"


@settings(max_examples=40, deadline=None)
@given(old=st.binary(max_size=3000), edits=st.lists(
    st.tuples(st.integers(0, 3000), st.binary(max_size=40)), max_size=6))
def test_any_two_files_round_trip(tmp_path_factory: pytest.TempPathFactory, old: bytes,
                                  edits: list[tuple[int, bytes]]) -> None:
    new = bytearray(old)
    for pos, chunk in edits:
        new[pos:pos + len(chunk)] = chunk
    d = diff_artifacts(old, bytes(new))
    assert _apply(tmp_path_factory.mktemp("rt"), old, d.to_bytes()) == bytes(new)


# -- bad input -------------------------------------------------------------------------------
@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path, bytes]:
    old, new = _model(0), _model(0, head_seed=7)
    (tmp_path / "old.onnx").write_bytes(old)
    (tmp_path / "x.edgedelta").write_bytes(diff_artifacts(old, new).to_bytes())
    return tmp_path / "old.onnx", tmp_path / "x.edgedelta", new


def _expect_failure(old: Path, delta: Path, dest: Path, match: str,
                    expect: FileId | None = None) -> None:
    dest.write_bytes(b"previous")
    with pytest.raises(DeltaError, match=match):
        apply_delta_file(old, delta, dest, expect=expect)
    assert dest.read_bytes() == b"previous"                 # nothing half-written
    assert not list(dest.parent.glob(f".{dest.name}.*"))    # no temp file left


def test_truncated_delta_is_refused_before_writing(pair: tuple[Path, Path, bytes]) -> None:
    old, delta, _ = pair
    delta.write_bytes(delta.read_bytes()[:-10])
    _expect_failure(old, delta, old.parent / "out", "truncated or padded")


def test_corrupted_payload_is_caught(pair: tuple[Path, Path, bytes]) -> None:
    old, delta, _ = pair
    data = bytearray(delta.read_bytes())
    data[-20] ^= 0xFF
    delta.write_bytes(bytes(data))
    _expect_failure(old, delta, old.parent / "out", "corrupt")


def test_corrupted_header_is_caught(pair: tuple[Path, Path, bytes]) -> None:
    old, delta, _ = pair
    data = bytearray(delta.read_bytes())
    data[:8] = b"NOTADELT"
    delta.write_bytes(bytes(data))
    _expect_failure(old, delta, old.parent / "out", "bad magic")


def test_delta_for_another_from_version_is_refused(pair: tuple[Path, Path, bytes]) -> None:
    old, delta, _ = pair
    old.write_bytes(_model(1))
    _expect_failure(old, delta, old.parent / "out", "does not hold")


def test_delta_yielding_another_artifact_than_signed_is_refused(
        pair: tuple[Path, Path, bytes]) -> None:
    old, delta, new = pair
    wrong = FileId(hashlib.sha256(b"other").hexdigest(), len(new))
    _expect_failure(old, delta, old.parent / "out", "not the signed artifact", expect=wrong)
    right = FileId(hashlib.sha256(new).hexdigest(), len(new))
    apply_delta_file(old, delta, old.parent / "out", expect=right)
    assert (old.parent / "out").read_bytes() == new


def test_header_reading_past_the_old_file_is_refused(tmp_path: Path) -> None:
    old, new = _model(0), _model(0, head_seed=3)
    d = diff_artifacts(old, new)
    (tmp_path / "d").write_bytes(d.to_bytes())
    header, _ = read_delta_header(tmp_path / "d")
    body = header.to_bytes().replace(b'["copy",', b'["copy",99999999', 1)
    assert body != header.to_bytes()
    with pytest.raises(DeltaError, match="past the end|do not add up"):
        DeltaHeader.from_bytes(body)


def test_out_of_disk_leaves_no_partial_file(pair: tuple[Path, Path, bytes],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    old, delta, _ = pair
    dest = old.parent / "out"
    dest.write_bytes(b"previous")
    real = ap.atomic_open

    class FullDisk:
        def write(self, _data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    @contextlib.contextmanager
    def full_disk(path: Path) -> Iterator[FullDisk]:
        with real(path):
            yield FullDisk()

    monkeypatch.setattr(ap, "atomic_open", full_disk)
    with pytest.raises(OSError, match="No space"):
        apply_delta_file(old, delta, dest)
    assert dest.read_bytes() == b"previous"
    assert not list(dest.parent.glob(".out.*"))


def test_tflite_buffers_are_matched_by_tensor_name(tmp_path: Path) -> None:
    from converters.tflite import convert

    old = convert(onnx.load_from_string(_model(0)), precision="fp32").model
    new = convert(onnx.load_from_string(_model(0, head_seed=5)), precision="fp32").model
    regions = tensor_regions(old)
    assert regions and all(r.dtype == "float32" for r in regions if r.length >= 40)
    d = diff_artifacts(old, new)
    assert d.header.fmt == "tflite"
    changed = [p for p in d.planned if p.why in ("changed", "new")]
    assert len(changed) == 1 and changed[0].op.length == 128 * 10 * 4
    assert _apply(tmp_path, old, d.to_bytes()) == new


def _op_payloads(delta: Path) -> list[tuple[int, int, bytes]]:
    """(op length, payload start, payload) of every op that has one."""
    header, start = read_delta_header(delta)
    data, pos, out = delta.read_bytes(), start + header.graph_payload, []
    for op in header.ops:
        if op.payload:
            out.append((op.length, pos, data[pos:pos + op.payload]))
            pos += op.payload
    return out


def test_payloads_are_block_frames_each_decompressible_alone(
        pair: tuple[Path, Path, bytes]) -> None:
    import zstandard

    from edgeops.delta.format import BLOCK_BYTES, FRAME_PREFIX

    payloads = _op_payloads(pair[1])
    assert payloads
    for length, _, payload in payloads:
        sizes, pos = [], 0
        while pos < len(payload):
            n = int.from_bytes(payload[pos:pos + FRAME_PREFIX], "big")
            frame = payload[pos + FRAME_PREFIX:pos + FRAME_PREFIX + n]
            sizes.append(zstandard.get_frame_parameters(frame).content_size)
            pos += FRAME_PREFIX + n
        assert pos == len(payload)
        assert sizes == [min(BLOCK_BYTES, length - k) for k in range(0, length, BLOCK_BYTES)]


def test_block_frame_length_past_its_payload_is_refused(pair: tuple[Path, Path, bytes]) -> None:
    old, delta, _ = pair
    _, start, payload = _op_payloads(delta)[0]
    data = bytearray(delta.read_bytes())
    data[start:start + 4] = len(payload).to_bytes(4, "big")     # 4 bytes past its end
    delta.write_bytes(bytes(data))
    _expect_failure(old, delta, old.parent / "out", "shorter than declared")


def test_block_frame_of_the_wrong_size_is_refused(pair: tuple[Path, Path, bytes]) -> None:
    import zstandard

    old, delta, _ = pair
    _, start, payload = _op_payloads(delta)[0]
    short = zstandard.ZstdCompressor().compress(b"\0" * 8)   # a valid frame, 8 bytes of content
    body = len(short).to_bytes(4, "big") + short
    body += b"\0" * (len(payload) - len(body))              # keep the declared payload size
    data = delta.read_bytes()
    delta.write_bytes(data[:start] + body + data[start + len(payload):])
    _expect_failure(old, delta, old.parent / "out", "block of 8 bytes|longer than declared")


def test_delta_of_an_older_format_is_refused_with_a_hint(pair: tuple[Path, Path, bytes]) -> None:
    old, delta, _ = pair
    data = bytearray(delta.read_bytes())
    data[:8] = b"EDGEDLT1"
    delta.write_bytes(bytes(data))
    with pytest.raises(DeltaError, match="delta format '1' is not the '2'") as exc:
        apply_delta_file(old, delta, old.parent / "out")
    assert "full artifact" in (exc.value.hint or "")


def test_ops_and_graph_spanning_several_block_frames_round_trip(tmp_path: Path) -> None:
    from edgeops.delta.format import BLOCK_BYTES

    old, new = _model(0), _model(1)                        # every tensor changed
    d = diff_artifacts(old, new)
    assert any(op.kind in ("xor", "sub") and op.length > BLOCK_BYTES for op in d.header.ops)
    assert _apply(tmp_path, old, d.to_bytes()) == new
    rng = np.random.default_rng(0)                         # no tensor map: all graph stream
    blob = rng.integers(0, 4, 3 * BLOCK_BYTES + 123, dtype=np.uint8).tobytes()
    edited = blob[:BLOCK_BYTES - 5] + b"edit across a frame boundary" + blob[BLOCK_BYTES + 23:]
    d = diff_artifacts(blob, edited)
    assert d.header.fmt == "bytes" and d.header.graph_length > 3 * BLOCK_BYTES
    assert _apply(tmp_path, blob, d.to_bytes()) == edited


def test_block_frame_larger_than_a_block_compresses_to_is_refused(tmp_path: Path) -> None:
    from edgeops.delta.format import BLOCK_BYTES, MAX_FRAME_BYTES

    rng = np.random.default_rng(1)
    old = rng.integers(0, 256, 2 * BLOCK_BYTES, dtype=np.uint8).tobytes()
    new = rng.integers(0, 256, 2 * BLOCK_BYTES, dtype=np.uint8).tobytes()   # incompressible
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "d").write_bytes(diff_artifacts(old, new).to_bytes())
    header, start = read_delta_header(tmp_path / "d")
    assert header.graph_payload > MAX_FRAME_BYTES + 4              # room for the lie below
    data = bytearray((tmp_path / "d").read_bytes())
    data[start:start + 4] = (MAX_FRAME_BYTES + 1).to_bytes(4, "big")
    (tmp_path / "d").write_bytes(bytes(data))
    _expect_failure(tmp_path / "old", tmp_path / "d", tmp_path / "out",
                    "more than one block compresses to")
