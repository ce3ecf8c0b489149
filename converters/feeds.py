"""Samples from Python and samples in order: feed-dict streams and recurrent-state carrying.

Two things the file loaders in :mod:`converters.data` cannot do:

* **Feed streams.** Users of ONNX Runtime's ``CalibrationDataReader`` and TFLite's
  ``representative_dataset`` already have an iterable (or a callable returning an iterator) of
  feed dicts, ``{input_name: array}`` in the model's own input shapes. :func:`spool` reads one
  feed at a time, checks it like file data, and writes it to a scratch folder in chunks of
  :data:`SPOOL_CHUNK` samples; :class:`SpooledSamples` hands them back a chunk at a time, as
  often as the build needs (calibration, sensitivity, validation), so the set is never held in
  memory and a one-shot iterator is read once.
* **Sequences.** A streaming model (voice activity, keyword spotting, tracking) carries a state
  from each step to the next: an output that is the next step's input. Calibrated and validated
  on independent samples it would only ever see the initial state. :class:`CarriedSamples` runs
  the FP32 model along the samples, in order, and feeds each step the state the previous step
  produced; :func:`carry` does the same for any session, so a candidate is judged on its own
  free-running states, as it runs on the device.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from converters.data import DataError, InputSpec, SampleSet, to_sample, validate_samples
from converters.ort_session import open_session

__all__ = ["SPOOL_CHUNK", "CarriedSamples", "FeedSource", "Samples", "SpooledSamples", "carry",
           "is_feed_source", "spool"]

SPOOL_CHUNK = 64            # samples per scratch file: the most a spooled set holds in memory

FeedSource = Iterable[Mapping[str, Any]] | Callable[[], Iterable[Mapping[str, Any]]]


class Samples(Protocol):
    """What calibration and validation read: samples in order, fed with a batch of one."""

    batch_axes: dict[str, int | None]

    def __len__(self) -> int: ...
    def sample(self, i: int) -> dict[str, np.ndarray]: ...
    def iter_samples(self) -> Iterator[dict[str, np.ndarray]]: ...
    def head(self, n: int) -> SampleSet: ...


def is_feed_source(obj: object) -> bool:
    """A Python feed source rather than a path: a callable, a reader or a non-string iterable."""
    return not isinstance(obj, str | bytes | Path) and (
        callable(obj) or hasattr(obj, "get_next") or isinstance(obj, Iterable))


def _feeds(source: Any, what: str) -> Iterator[Mapping[str, Any]]:
    if hasattr(source, "get_next"):                     # an ORT CalibrationDataReader
        return iter(source.get_next, None)
    got = source() if callable(source) else source
    if hasattr(got, "get_next"):
        return iter(got.get_next, None)
    if not isinstance(got, Iterable):
        raise DataError(f"{what} source returned {type(got).__name__}, not an iterator of feeds",
                        hint="return an iterator of {input_name: array} dicts")
    return iter(got)


class SpooledSamples:
    """Checked samples in chunk files under a scratch folder; at most one chunk in memory."""

    def __init__(self, directory: Path, chunks: list[tuple[Path, int]],
                 batch_axes: dict[str, int | None]) -> None:
        self.directory, self._chunks, self.batch_axes = directory, chunks, batch_axes
        self._cache: tuple[int, SampleSet] | None = None

    def __len__(self) -> int:
        return sum(n for _, n in self._chunks)

    def _chunk(self, k: int) -> SampleSet:
        if self._cache is None or self._cache[0] != k:
            with np.load(self._chunks[k][0], allow_pickle=False) as z:
                self._cache = (k, SampleSet({n: z[n] for n in z.files}, dict(self.batch_axes)))
        return self._cache[1]

    def sample(self, i: int) -> dict[str, np.ndarray]:
        for k, (_, n) in enumerate(self._chunks):
            if i < n:
                return self._chunk(k).sample(i)
            i -= n
        raise IndexError(i)

    def iter_samples(self) -> Iterator[dict[str, np.ndarray]]:
        for k in range(len(self._chunks)):
            yield from self._chunk(k).iter_samples()

    def head(self, n: int) -> SampleSet:
        parts: list[SampleSet] = []
        left = n
        for k, (_, count) in enumerate(self._chunks):
            if left <= 0:
                break
            parts.append(self._chunk(k).head(left))
            left -= count
        return SampleSet({name: np.concatenate([p.arrays[name] for p in parts])
                          for name in parts[0].arrays}, dict(self.batch_axes))

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def spool(source: FeedSource, inputs: Sequence[InputSpec], *, what: str, workdir: Path,
          values: Mapping[str, float] | None = None, zeros: Sequence[str] = ()
          ) -> SpooledSamples:
    """Read ``source`` once, feed by feed, check each like file data, write chunks to disk.

    Each feed holds whole model inputs (``{name: array of the input's shape}``); a feed whose
    batch is over one gives that many samples. Every problem is one :class:`DataError` naming
    the feed.
    """
    Path(workdir).mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=f"{what}-", dir=workdir))
    chunks: list[tuple[Path, int]] = []
    pending: list[SampleSet] = []

    def flush() -> None:
        if not pending:
            return
        merged = {n: np.concatenate([p.arrays[n] for p in pending]) for n in pending[0].arrays}
        path = directory / f"chunk-{len(chunks):05d}.npz"
        np.savez(path, **merged)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
        chunks.append((path, len(next(iter(merged.values())))))
        pending.clear()

    try:
        for k, feed in enumerate(_feeds(source, what)):
            if not isinstance(feed, Mapping):
                raise DataError(f"{what} feed {k} is a {type(feed).__name__}, not a dict",
                                hint="yield {input_name: array} dicts, one model run each")
            try:
                pending.append(validate_samples({n: np.asarray(v)[None] for n, v in feed.items()},
                                                inputs, what=what, values=values, zeros=zeros))
            except DataError as exc:
                raise DataError(f"{what} feed {k}: {exc.message}", hint=exc.hint) from None
            if sum(len(p) for p in pending) >= SPOOL_CHUNK:
                flush()
        flush()
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    if not chunks:
        shutil.rmtree(directory, ignore_errors=True)
        raise DataError(f"{what} source yielded no feeds",
                        hint="give at least one sample (100+ recommended)")
    return SpooledSamples(directory, chunks, {s.name: s.batch_axis for s in inputs})


def carry(run: Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]],
          samples: Samples, states: Mapping[str, str]
          ) -> Iterator[tuple[dict[str, np.ndarray], Mapping[str, np.ndarray]]]:
    """Run ``samples`` in order, each state input fed from the previous step's state output.

    The first step takes the states its sample holds (zeros unless the data gives them).
    Yields (the feed actually given, the outputs).
    """
    prev: Mapping[str, np.ndarray] | None = None
    for feed in samples.iter_samples():
        if prev is not None:
            feed = {**feed, **{i: np.asarray(prev[o]).astype(feed[i].dtype)
                               for o, i in states.items()}}
        prev = run(feed)
        yield feed, prev


class CarriedSamples:
    """``base`` with each step's state inputs replaced by what the FP32 model carried there."""

    def __init__(self, base: Samples, model: Path | bytes, states: Mapping[str, str]) -> None:
        self.base, self.model, self.states = base, model, dict(states)
        self.batch_axes = dict(base.batch_axes)
        self._session: Any = None

    def __len__(self) -> int:
        return len(self.base)

    def _run(self, feed: dict[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        if self._session is None:
            self._session = open_session(self.model if isinstance(self.model, bytes)
                                         else Path(self.model), ("CPUExecutionProvider",), 1)
        names = list(self.states)
        return dict(zip(names, self._session.run(names, feed), strict=True))

    def iter_samples(self) -> Iterator[dict[str, np.ndarray]]:
        for feed, _ in carry(self._run, self.base, self.states):
            yield feed

    def sample(self, i: int) -> dict[str, np.ndarray]:
        for k, feed in enumerate(self.iter_samples()):
            if k == i:
                return feed
        raise IndexError(i)

    def head(self, n: int) -> SampleSet:
        rows: dict[str, list[np.ndarray]] = {}
        for k, feed in enumerate(self.iter_samples()):
            if k >= n:
                break
            for name, v in feed.items():
                rows.setdefault(name, []).append(to_sample(v, self.batch_axes.get(name, 0)))
        return SampleSet({k: np.stack(v) for k, v in rows.items()}, dict(self.batch_axes))
