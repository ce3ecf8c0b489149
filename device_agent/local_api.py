"""The local socket API: the device application's door to :class:`InferenceService`.

Why a separate module: the agent imports it only when the config names a socket or a port, so a
device that uses the in-process API only does not carry an HTTP server in memory.

Stdlib HTTP/1.1 (no extra dependency) on a Unix socket and/or a loopback TCP port:
``GET /v1/model``, ``GET /v1/health``, ``GET /v1/stats``, ``POST /v1/predict`` with JSON
``{"inputs": {name: nested lists}}``, an ``application/x-npz`` body (one array per input) or
the compact ``application/x-edgeops-tensors`` frame (:func:`tensors_bytes`); answers in the
same format, with the request's prediction id in ``X-Edgeops-Prediction-Id`` (and
``prediction_id`` in JSON) when the agent keeps predictions for ground truth, which
``POST /v1/feedback`` takes as JSON ``{"prediction_id", "label"}`` or ``{..., "value"}``
(device_agent/feedback.py). It has no authentication, so it binds loopback only (the config
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
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from device_agent.feedback import FeedbackRefused
from device_agent.inference import InferenceService, NoModelError, PredictInputError
from edgeops.errors import EdgeOpsError, TransportError
from edgeops.runtime import ModelRunError

__all__ = [
    "NPZ",
    "TENSORS",
    "InferenceLimits",
    "LocalApiServer",
    "LocalClient",
    "read_tensors",
    "tensors_bytes",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceLimits:
    max_request_bytes: int = 32 * 1024**2
    request_timeout_s: float = 30.0


NPZ = "application/x-npz"
TENSORS = "application/x-edgeops-tensors"
_DRAIN_BYTES = 1024 * 1024
_TENSORS_MAGIC = b"EOT1"
# Plain numeric dtypes only: nothing that could carry Python objects.
_TENSOR_DTYPES = frozenset({"bool", "int8", "uint8", "int16", "uint16", "int32", "uint32",
                            "int64", "uint64", "float16", "float32", "float64"})


def tensors_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """The compact body format: ``EOT1`` + u32 header length + JSON header + raw C-order data.

    Header: ``[{"name", "dtype", "shape"}, ...]`` in data order. About ten times cheaper to
    encode and decode than npz (no zip container), which matters per request.
    """
    header, blobs = [], []
    for name, value in arrays.items():
        a = np.asarray(value)              # tobytes() below is C order whatever the layout
        if a.dtype.name not in _TENSOR_DTYPES:
            raise PredictInputError(f"{name!r} has dtype {a.dtype.name}, not a plain numeric "
                                    "type")
        header.append({"name": name, "dtype": a.dtype.name, "shape": list(a.shape)})
        blobs.append(a.tobytes())
    h = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([_TENSORS_MAGIC, len(h).to_bytes(4, "big"), h, *blobs])


def read_tensors(data: bytes) -> dict[str, np.ndarray]:
    """Parse :func:`tensors_bytes` output; every size is checked before a byte is used."""
    if len(data) < 8 or data[:4] != _TENSORS_MAGIC:
        raise PredictInputError("body is not an edgeops tensors frame (EOT1)")
    hlen = int.from_bytes(data[4:8], "big")
    if 8 + hlen > len(data) or hlen > 64 * 1024:
        raise PredictInputError("tensors header length is out of range")
    try:
        header = json.loads(data[8:8 + hlen])
        specs = [(str(e["name"]), str(e["dtype"]), tuple(int(d) for d in e["shape"]))
                 for e in header]
    except (ValueError, KeyError, TypeError):
        raise PredictInputError("tensors header is malformed") from None
    out: dict[str, np.ndarray] = {}
    pos = 8 + hlen
    for name, dtype, shape in specs:
        if dtype not in _TENSOR_DTYPES or any(d < 0 for d in shape):
            raise PredictInputError(f"tensor {name!r}: bad dtype or shape")
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if pos + nbytes > len(data):
            raise PredictInputError(f"tensor {name!r} is truncated")
        out[name] = (np.frombuffer(data, dtype=dtype, count=nbytes // np.dtype(dtype).itemsize,
                                   offset=pos).reshape(shape) if nbytes
                     else np.empty(shape, dtype=dtype))
        pos += nbytes
    if pos != len(data):
        raise PredictInputError("tensors frame has trailing bytes")
    return out


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    named: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
    np.savez(buf, **named)
    return buf.getvalue()


# numpy reads each .npy header with ast.literal_eval, and CPython 3.11's AST constructor keeps
# its recursion-depth count in state the server's request threads share: two requests parsing at
# once can fail a valid body with "SystemError: AST constructor recursion depth mismatch"
# (python/cpython#106905; seen once in five full runs of
# test_swap_under_concurrent_load_fails_no_request). The parse is small; it runs one at a time.
_NPZ_PARSE = threading.Lock()


def _read_npz(data: bytes) -> dict[str, np.ndarray]:
    try:
        with _NPZ_PARSE, np.load(io.BytesIO(data), allow_pickle=False) as z:
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
        if self.path not in ("/v1/predict", "/v1/feedback"):
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
        if self.path == "/v1/feedback":
            self._feedback(body)
            return
        ctype = self.headers.get("Content-Type", "application/json").split(";")[0].strip()
        try:
            inputs = (read_tensors(body) if ctype == TENSORS else
                      _read_npz(body) if ctype == NPZ else _json_inputs(body))
            outputs = self.service.predict(inputs)
        except NoModelError as exc:
            self._error(503, exc)
            return
        except (PredictInputError, ModelRunError) as exc:
            self._error(400, exc)
            return
        model = self.service.model
        version = f"{model.name}@{model.version}" if model else ""
        headers = {"X-Edgeops-Model": version}
        predictions = self.service.predictions
        pid = predictions.record(version or None, outputs) if predictions is not None else None
        if pid is not None:
            headers["X-Edgeops-Prediction-Id"] = pid
        if ctype == TENSORS:
            self._send(200, tensors_bytes(outputs), TENSORS, headers)
        elif ctype == NPZ:
            self._send(200, _npz_bytes(outputs), NPZ, headers)
        else:
            answer: dict[str, Any] = {"model": version, "outputs": {
                k: np.asarray(v).tolist() for k, v in outputs.items()}}
            if pid is not None:
                answer["prediction_id"] = pid
            self._send(200, json.dumps(answer).encode(), "application/json", headers)

    def _feedback(self, body: bytes) -> None:
        predictions = self.service.predictions
        if predictions is None:
            self._json(404, {"error": "this agent does not keep predictions for feedback"})
            return
        try:
            d = json.loads(body)
            if not isinstance(d, dict) or "prediction_id" not in d:
                raise TypeError
        except (ValueError, TypeError, RecursionError):
            self._json(400, {"error": 'feedback must be JSON {"prediction_id", "label"} or '
                                      '{"prediction_id", "value"}', "reason": "malformed"})
            return
        try:
            result = predictions.feedback(d["prediction_id"], label=d.get("label"),
                                          value=d.get("value"))
        except FeedbackRefused as exc:
            status = {"unknown-id": 404, "expired": 410, "duplicate": 409}.get(exc.reason, 400)
            self._json(status, {"error": exc.message, "hint": exc.hint, "reason": exc.reason})
            return
        self._json(200, {"accepted": True, **result})


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
        self.last_prediction_id: str | None = None   # of the last answer (ground truth)

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
        self.last_prediction_id = resp.getheader("X-Edgeops-Prediction-Id")
        return resp.status, data, resp.getheader("Content-Type", "")

    def predict(self, inputs: Mapping[str, np.ndarray], *, npz: bool = True,
                fmt: str | None = None) -> dict[str, np.ndarray]:
        """``fmt``: ``"tensors"`` (compact, fastest), ``"npz"`` or ``"json"``; without it,
        ``npz`` picks npz (default) or JSON."""
        fmt = fmt or ("npz" if npz else "json")
        if fmt == "tensors":
            status, data, _ = self.request("POST", "/v1/predict", tensors_bytes(inputs),
                                           TENSORS)
        elif fmt == "npz":
            status, data, _ = self.request("POST", "/v1/predict", _npz_bytes(inputs), NPZ)
        elif fmt == "json":
            body = json.dumps({"inputs": {k: np.asarray(v).tolist()
                                          for k, v in inputs.items()}}).encode()
            status, data, _ = self.request("POST", "/v1/predict", body)
        else:
            raise ValueError(f"unknown format {fmt!r}")
        if status != 200:
            err = json.loads(data) if data.startswith(b"{") else {"error": data.decode()}
            raise PredictInputError(f"local API answered {status}: {err.get('error')}",
                                    hint=err.get("hint") or PredictInputError.default_hint)
        if fmt == "tensors":
            return read_tensors(data)
        if fmt == "npz":
            return _read_npz(data)
        return {k: np.asarray(v) for k, v in json.loads(data)["outputs"].items()}

    def feedback(self, prediction_id: str, *, label: Any = None, value: Any = None
                 ) -> tuple[int, dict[str, Any]]:
        """``POST /v1/feedback``: (HTTP status, answer)."""
        body: dict[str, Any] = {"prediction_id": prediction_id}
        if label is not None:
            body["label"] = label
        if value is not None:
            body["value"] = value
        status, data, _ = self.request("POST", "/v1/feedback", json.dumps(body).encode())
        return status, json.loads(data)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
