"""Local inference for the device's own application: an in-process API and a local socket API.

Why here and not in the application: the agent owns which model is active, so it must also be
the one serving it, or an activation could tear a model out from under a request. The rule that
makes swaps safe is simple: :meth:`InferenceService.predict` reads the current
:class:`LoadedModel` reference once and runs on it; :meth:`InferenceService.swap` replaces the
reference. A request in flight keeps the old session alive (plain reference counting) until it
returns, so no request ever fails because of an activation.

The socket API is stdlib HTTP/1.1 (no extra dependency) on a Unix socket and/or a loopback TCP
port: ``GET /v1/model``, ``GET /v1/health``, ``GET /v1/stats``, ``POST /v1/predict`` with JSON
``{"inputs": {name: nested lists}}`` or an ``application/x-npz`` body (one array per input);
answers in the same format. It has no authentication, so it binds loopback only (the config
refuses anything else) and the Unix socket is created 0660.
"""

from __future__ import annotations

import contextlib
import http.client as httpclient
import io
import json
import logging
import os
import socket
import socketserver
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from device_agent.runtime import ModelRunError, ModelRunner, load_runner
from device_agent.slots import SlotInfo, SlotStore
from edgeops.bundle.manifest import Manifest, TensorSpec
from edgeops.errors import BadContentError, EdgeOpsError, TransportError

__all__ = [
    "InferenceLimits",
    "InferenceService",
    "InferenceStats",
    "LoadedModel",
    "LocalApiServer",
    "LocalClient",
    "NoModelError",
    "PredictInputError",
]

log = logging.getLogger(__name__)

Observer = Callable[[Mapping[str, np.ndarray], float, bool], None]
# Latency histogram bucket upper bounds in milliseconds (last bucket is open-ended).
LATENCY_BUCKETS_MS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0,
                      1000.0, 2500.0, float("inf"))


class NoModelError(EdgeOpsError):
    """No model is active yet (fresh device, or the only install failed)."""

    default_hint = "deploy a model to this device from the fleet manager"


class PredictInputError(BadContentError):
    """The request's inputs do not match the active model's signature."""

    default_hint = "GET /v1/model (or `edgeops agent status`) shows the expected inputs"


@dataclass(frozen=True)
class InferenceLimits:
    max_request_bytes: int = 32 * 1024**2
    request_timeout_s: float = 30.0


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to serve: its runner and what it is."""

    runner: ModelRunner
    name: str
    version: str
    target: str
    slot: str | None
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    loaded_at: float = field(default_factory=time.time)

    @cached_property
    def input_plan(self) -> tuple[tuple[str, np.dtype[Any] | None, int,
                                        tuple[tuple[int, int], ...]], ...]:
        """Per input: name, dtype, rank and fixed dims, precomputed for the hot path."""
        plan = []
        for t in self.inputs:
            try:
                dtype: np.dtype[Any] | None = np.dtype(t.dtype)
            except TypeError:
                dtype = None
            dims = tuple((i, d) for i, d in enumerate(t.shape) if isinstance(d, int) and d >= 0)
            plan.append((t.name, dtype, len(t.shape), dims))
        return tuple(plan)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "target": self.target,
                "slot": self.slot, "runtime": self.runner.runtime,
                "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs]}

    @classmethod
    def from_slot(cls, store: SlotStore, info: SlotInfo, threads: int = 1) -> LoadedModel:
        manifest = Manifest.from_bytes(store.path(info.slot, "manifest.json").read_bytes())
        entry = manifest.artifact_for(info.target)
        if entry is None:
            raise BadContentError(f"slot {info.slot} has no artifact for {info.target}")
        runner = load_runner(store.path(info.slot, info.model_file), runtime=entry.runtime,
                             providers=entry.providers, threads=threads)
        return cls(runner, info.name, info.version, info.target, info.slot, manifest.inputs,
                   manifest.outputs)


class InferenceStats:
    """Counters and a latency histogram, cheap enough to update on every request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.errors = 0
        self.buckets = [0] * len(LATENCY_BUCKETS_MS)

    def record(self, latency_ms: float, ok: bool) -> None:
        i = bisect_left(LATENCY_BUCKETS_MS, latency_ms)
        with self._lock:
            self.count += 1
            if not ok:
                self.errors += 1
            self.buckets[i] += 1

    def snapshot(self, reset: bool = False) -> dict[str, Any]:
        """Totals, histogram and p50/p95/p99 (bucket upper bounds) since the last reset."""
        with self._lock:
            count, errors, buckets = self.count, self.errors, list(self.buckets)
            if reset:
                self.count = self.errors = 0
                self.buckets = [0] * len(LATENCY_BUCKETS_MS)
        return {"count": count, "errors": errors,
                "p50_ms": _quantile(buckets, 0.50), "p95_ms": _quantile(buckets, 0.95),
                "p99_ms": _quantile(buckets, 0.99),
                "histogram": {"le_ms": [b if b != float("inf") else None
                                        for b in LATENCY_BUCKETS_MS], "counts": buckets}}


def _quantile(buckets: Sequence[int], q: float) -> float | None:
    total = sum(buckets)
    if not total:
        return None
    seen = 0
    for bound, n in zip(LATENCY_BUCKETS_MS, buckets, strict=True):
        seen += n
        if seen >= q * total:
            return bound if bound != float("inf") else LATENCY_BUCKETS_MS[-2]
    return None


class InferenceService:
    """The in-process API. Thread-safe; swapping the model never fails a request in flight."""

    def __init__(self, *, threads: int = 1, observers: Sequence[Observer] = ()) -> None:
        self._model: LoadedModel | None = None
        self._swap_lock = threading.Lock()
        self.threads = threads
        self.stats = InferenceStats()
        self.observers = list(observers)

    @property
    def model(self) -> LoadedModel | None:
        return self._model

    def swap(self, model: LoadedModel | None) -> LoadedModel | None:
        """Serve ``model`` from now on; return the one it replaced (do not close it: requests
        still running on it hold their own reference)."""
        with self._swap_lock:
            old, self._model = self._model, model
        if model is not None:
            log.info("serving %s@%s (slot %s)", model.name, model.version, model.slot)
        return old

    def load_slot(self, store: SlotStore, info: SlotInfo | None) -> None:
        """The installer's ``on_activate`` hook: load first, then swap (a load error leaves the
        current model serving and propagates)."""
        self.swap(None if info is None else LoadedModel.from_slot(store, info, self.threads))

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        model = self._model
        if model is None:
            raise NoModelError("no model is active on this device")
        t0 = time.perf_counter()
        ok = False
        try:
            out = model.runner.run(_check_inputs(model, inputs))
            ok = True
            return out
        finally:
            ms = (time.perf_counter() - t0) * 1000.0
            self.stats.record(ms, ok)
            for obs in self.observers:
                try:
                    obs(inputs, ms, ok)
                except Exception:  # an observer must never fail a request
                    log.exception("inference observer failed")


def _check_inputs(model: LoadedModel, inputs: Mapping[str, np.ndarray]
                  ) -> Mapping[str, np.ndarray]:
    """Names, dtypes and fixed dims against the manifest; casts (copies) only when needed."""
    plan = model.input_plan
    if len(inputs) != len(plan):
        names = {p[0] for p in plan}
        raise PredictInputError(f"inputs do not match the model: missing "
                                f"{sorted(names - set(inputs))}, unexpected "
                                f"{sorted(set(inputs) - names)}")
    fixed: dict[str, np.ndarray] | None = None
    for name, dtype, ndim, dims in plan:
        value = inputs.get(name)
        if value is None:
            raise PredictInputError(f"input {name!r} is missing")
        if type(value) is not np.ndarray or (dtype is not None and value.dtype is not dtype
                                             and value.dtype != dtype):
            try:
                cast = np.asarray(value, dtype=dtype)
            except (TypeError, ValueError) as exc:
                raise PredictInputError(f"input {name!r} cannot be read as {dtype}: "
                                        f"{exc}") from None
            fixed = dict(inputs) if fixed is None else fixed
            fixed[name] = value = cast
        shape = value.shape
        bad = len(shape) != ndim
        if not bad:
            for ax, d in dims:     # a plain loop: a generator costs more than the check
                if shape[ax] != d:
                    bad = True
                    break
        if bad:
            spec = next(t for t in model.inputs if t.name == name)
            raise PredictInputError(f"input {name!r} has shape {list(shape)}, the model "
                                    f"expects {list(spec.shape)}")
    return inputs if fixed is None else fixed


# -- the socket API -----------------------------------------------------------------------
NPZ = "application/x-npz"
_DRAIN_BYTES = 1024 * 1024


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    named: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
    np.savez(buf, **named)
    return buf.getvalue()


def _read_npz(data: bytes) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # numpy raises many kinds for a bad archive
        raise PredictInputError(f"request body is not a readable npz ({exc})") from None


class _Handler(BaseHTTPRequestHandler):
    server_version = "edgeops-agent"
    protocol_version = "HTTP/1.1"

    service: InferenceService
    limits: InferenceLimits

    def address_string(self) -> str:  # Unix sockets have no peer address
        return str(self.client_address[0]) if self.client_address else "unix"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("local api: " + format, *args)

    def _send(self, status: int, body: bytes, ctype: str = "application/json",
              headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode())

    def _error(self, status: int, exc: EdgeOpsError) -> None:
        self._json(status, {"error": exc.message, "hint": exc.hint})

    def do_GET(self) -> None:
        model = self.service.model
        if self.path == "/v1/stats":
            self._json(200, self.service.stats.snapshot())
        elif self.path in ("/v1/model", "/v1/health"):
            if model is None:
                self._error(503, NoModelError("no model is active on this device"))
            else:
                self._json(200, {"ok": True, "model": model.describe()})
        else:
            self._json(404, {"error": f"no such endpoint {self.path}"})

    def do_POST(self) -> None:
        if self.path != "/v1/predict":
            self._json(404, {"error": f"no such endpoint {self.path}"})
            return
        try:
            length = int(self.headers.get("Content-Length", "-1"))
        except ValueError:
            length = -1
        if length < 0:
            self._json(411, {"error": "Content-Length is required"})
            return
        if length > self.limits.max_request_bytes:
            # Drain a modest overrun so the client reads our answer instead of a broken pipe;
            # anything bigger is cut off.
            if length <= self.limits.max_request_bytes + _DRAIN_BYTES:
                self.rfile.read(length)
            else:
                self.close_connection = True
            self._json(413, {"error": f"request of {length} bytes is over the "
                                      f"{self.limits.max_request_bytes}-byte limit"})
            return
        body = self.rfile.read(length)
        ctype = self.headers.get("Content-Type", "application/json").split(";")[0].strip()
        try:
            inputs = _read_npz(body) if ctype == NPZ else _json_inputs(body)
            outputs = self.service.predict(inputs)
        except NoModelError as exc:
            self._error(503, exc)
            return
        except (PredictInputError, ModelRunError) as exc:
            self._error(400, exc)
            return
        model = self.service.model
        version = f"{model.name}@{model.version}" if model else ""
        if ctype == NPZ:
            self._send(200, _npz_bytes(outputs), NPZ, {"X-Edgeops-Model": version})
        else:
            self._json(200, {"model": version,
                             "outputs": {k: np.asarray(v).tolist() for k, v in outputs.items()}})


def _json_inputs(body: bytes) -> dict[str, np.ndarray]:
    try:
        d = json.loads(body)
        raw = d["inputs"]
        if not isinstance(raw, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError, RecursionError):
        raise PredictInputError('request body must be JSON {"inputs": {name: array}}') from None
    out: dict[str, np.ndarray] = {}
    for k, v in raw.items():
        try:
            out[str(k)] = np.asarray(v)
        except (ValueError, TypeError):
            raise PredictInputError(f"input {k!r} is not a rectangular array") from None
        if out[str(k)].dtype == object:
            raise PredictInputError(f"input {k!r} is not a rectangular numeric array")
    return out


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _TCPServer(ThreadingHTTPServer):
    daemon_threads = True


class _TCP6Server(_TCPServer):
    address_family = socket.AF_INET6


class LocalApiServer:
    """Serves :class:`InferenceService` on a Unix socket and/or loopback HTTP, in threads."""

    def __init__(self, service: InferenceService, *, http: tuple[str, int] | None = None,
                 unix_socket: Path | None = None,
                 limits: InferenceLimits = InferenceLimits()) -> None:
        if http is None and unix_socket is None:
            raise ValueError("give http and/or unix_socket")
        attrs = {"service": service, "limits": limits, "timeout": limits.request_timeout_s}
        # Headers and body go out in separate writes: on TCP, Nagle + delayed ACK would add
        # ~40 ms to every keep-alive answer. (Unix sockets have no such option.)
        tcp_handler = type("TcpHandler", (_Handler,), {**attrs, "disable_nagle_algorithm": True})
        unix_handler = type("UnixHandler", (_Handler,), attrs)
        self._servers: list[socketserver.BaseServer] = []
        self.unix_socket = unix_socket
        self.http_address: tuple[str, int] | None = None
        try:
            if http is not None:
                host, port = http
                server_cls = _TCP6Server if ":" in host else _TCPServer
                tcp = server_cls((host, port), tcp_handler)
                self.http_address = (host, tcp.server_address[1])
                self._servers.append(tcp)
            if unix_socket is not None:
                unix_socket.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    unix_socket.unlink()           # a stale socket from a killed agent
                old = os.umask(0o117)
                try:
                    self._servers.append(_UnixHTTPServer(str(unix_socket), unix_handler))
                finally:
                    os.umask(old)
        except OSError as exc:
            self.close()
            raise TransportError(f"cannot open the local inference API: {exc.strerror}",
                                 hint="pick a free port / a writable socket path in the "
                                      "agent config (inference.http / inference.socket)"
                                 ) from None
        self._threads: list[threading.Thread] = []

    def start(self) -> LocalApiServer:
        for srv in self._servers:
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.5},
                                 name="agent-local-api", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def close(self) -> None:
        for srv in self._servers:
            if self._threads:
                srv.shutdown()
            srv.server_close()
        self._servers = []
        if self.unix_socket is not None:
            with contextlib.suppress(FileNotFoundError):
                self.unix_socket.unlink()

    def __enter__(self) -> LocalApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class _UnixConnection(httpclient.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


class LocalClient:
    """A small client for the local API (used by tests, benchmarks and applications)."""

    def __init__(self, *, http: tuple[str, int] | None = None,
                 unix_socket: Path | None = None, timeout_s: float = 30.0) -> None:
        if (http is None) == (unix_socket is None):
            raise ValueError("give exactly one of http or unix_socket")
        self._http, self._unix, self._timeout = http, unix_socket, timeout_s
        self._conn: httpclient.HTTPConnection | None = None

    def _connection(self) -> httpclient.HTTPConnection:
        if self._conn is None:
            if self._unix is not None:
                self._conn = _UnixConnection(self._unix, self._timeout)
            else:
                assert self._http is not None
                self._conn = httpclient.HTTPConnection(*self._http, timeout=self._timeout)
        return self._conn

    def request(self, method: str, path: str, body: bytes | None = None,
                ctype: str = "application/json") -> tuple[int, bytes, str]:
        conn = self._connection()
        headers = {"Content-Type": ctype} if body is not None else {}
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, httpclient.HTTPException) as exc:
            self.close()
            raise TransportError(f"local inference API unreachable: {exc}") from None
        return resp.status, data, resp.getheader("Content-Type", "")

    def predict(self, inputs: Mapping[str, np.ndarray], *, npz: bool = True
                ) -> dict[str, np.ndarray]:
        if npz:
            status, data, _ = self.request("POST", "/v1/predict", _npz_bytes(inputs), NPZ)
        else:
            body = json.dumps({"inputs": {k: np.asarray(v).tolist()
                                          for k, v in inputs.items()}}).encode()
            status, data, _ = self.request("POST", "/v1/predict", body)
        if status != 200:
            err = json.loads(data) if data.startswith(b"{") else {"error": data.decode()}
            raise PredictInputError(f"local API answered {status}: {err.get('error')}",
                                    hint=err.get("hint") or PredictInputError.default_hint)
        if npz:
            return _read_npz(data)
        return {k: np.asarray(v) for k, v in json.loads(data)["outputs"].items()}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
