"""The packed counts of a drift sketch: the agent's encoding decodes to the same counts on the
manager, and every malformed input is refused with its reason, within the size cap."""

from __future__ import annotations

import base64
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeops.drift.sketch_codec import (
    MAX_COUNT,
    MAX_VARINT_BYTES,
    SketchEncodingError,
    pack_counts,
    unpack_counts,
)

BINS = [20, 20, 5, 4]
COUNTS = [[11, 9, 14, 0, 130, 7, 12, 10, 11, 9, 12, 13, 8, 10, 11, 12, 9, 10, 11, 12],
          list(range(20)), [0, 0, 0, 0, 0], [225, 0, 17000, 3]]

features = st.lists(
    st.lists(st.integers(min_value=0, max_value=MAX_COUNT), min_size=1, max_size=64),
    min_size=1, max_size=24)


@settings(max_examples=200, deadline=None)
@given(features)
def test_what_the_agent_packs_the_manager_unpacks(counts: list[list[int]]) -> None:
    packed = pack_counts(counts)
    assert isinstance(packed, str) and packed.isascii()
    assert unpack_counts(packed, [len(c) for c in counts]) == counts


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_to_counts_or_a_reason_never_a_crash(data: bytes) -> None:
    for text in (base64.b64encode(data).decode(), base64.b64encode(zlib.compress(data)).decode()):
        try:
            got = unpack_counts(text, BINS)
        except SketchEncodingError as e:
            assert e.reason in ("bad-encoding", "bins-mismatch")
        else:        # unsigned varints: a negative count cannot come out
            assert [len(c) for c in got] == BINS and all(v >= 0 for c in got for v in c)


def _z(raw: bytes) -> str:
    return base64.b64encode(zlib.compress(raw)).decode()


def _varints(values: list[int]) -> bytes:
    out = bytearray()
    for v in values:
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


GOOD = pack_counts(COUNTS)
FLAT = [v for c in COUNTS for v in c]
_STREAM = base64.b64decode(GOOD)


@pytest.mark.parametrize(("text", "reason", "words"), [
    ("not base64 at all!", "bad-encoding", "not base64"),
    (GOOD[:-2], "bad-encoding", "not base64"),                        # padding cut
    ("é" + GOOD, "bad-encoding", "not base64"),
    (base64.b64encode(b"\x00" * 40).decode(), "bad-encoding", "not zlib"),
    (base64.b64encode(_STREAM[:-5]).decode(), "bad-encoding", "cut short"),
    (base64.b64encode(_STREAM + b"\x00junk").decode(), "bad-encoding", "after the zlib stream"),
    (_z(b"\x01" * (sum(BINS) * MAX_VARINT_BYTES + 1)), "bad-encoding", "decompress past"),
    (_z(b"\x00" * 20_000_000), "bad-encoding", "decompress past"),    # a bomb: 20 MB of zeros
    (_z(_varints(FLAT[:-1])), "bins-mismatch", "48 packed counts"),
    (_z(_varints([*FLAT, 1])), "bins-mismatch", "50 packed counts"),
    (_z(_varints(FLAT)[:-1] + b"\x80"), "bad-encoding", "inside a count"),
    (_z(_varints(FLAT[:-1]) + b"\xff" * MAX_VARINT_BYTES + b"\x01"), "bad-encoding", "longer"),
])
def test_bad_packed_counts_are_refused_with_a_reason(text: str, reason: str, words: str) -> None:
    with pytest.raises(SketchEncodingError) as e:
        unpack_counts(text, BINS)
    assert e.value.reason == reason and words in str(e.value)


def test_the_bomb_stops_at_the_cap() -> None:
    """20 MB of zeros is ~20 KB of zlib; decoding reads at most the cap, never the 20 MB."""
    bomb = _z(b"\x00" * 20_000_000)
    assert len(bomb) < 100_000
    import tracemalloc

    tracemalloc.start()
    with pytest.raises(SketchEncodingError):
        unpack_counts(bomb, BINS)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1_000_000


@pytest.mark.parametrize("bad", [[[-1, 2]], [[MAX_COUNT + 1]]])
def test_the_agent_cannot_pack_a_count_outside_the_range(bad: list[list[int]]) -> None:
    with pytest.raises(ValueError, match="outside"):
        pack_counts(bad)


def test_packed_counts_are_a_fraction_of_the_json_form() -> None:
    import json

    names = {f"input:features[{i}]": c for i, c in enumerate(COUNTS)}
    assert len(GOOD) < 0.5 * len(json.dumps(names, separators=(",", ":")))
