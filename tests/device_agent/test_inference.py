"""Local inference: in-process API, Unix socket and loopback HTTP, swaps under load."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agent.inference import (
    InferenceService,
    InferenceStats,
    LoadedModel,
    NoModelError,
    PredictInputError,
)
from device_agent.local_api import (
    TENSORS,
    InferenceLimits,
    LocalApiServer,
    LocalClient,
    read_tensors,
    tensors_bytes,
)
from device_agent.slots import SlotStore
from edgeops.errors import TransportError
from tests.device_agent.bundles import FEATURES, Fleet, build_bundle, bundle_parts

X = np.arange(2 * FEATURES, dtype=np.float32).reshape(2, FEATURES)


def installed(store: SlotStore, bundle: Path) -> LoadedModel:
    parts = bundle_parts(bundle)
    w = store.begin_install()
    w.write_bytes("manifest.json", parts.manifest)
    w.write_bytes("model.onnx", parts.artifact)
    info = w.commit(name="classifier", version=bundle.name.split("-")[1], target="x86-cpu",
                    model_file="model.onnx")
    store.activate(info.slot)
    store.confirm()
    return LoadedModel.from_slot(store, info)


@pytest.fixture
def models(tmp_path: Path, fleet: Fleet, bundle_dir: Path) -> tuple[LoadedModel, LoadedModel]:
    store = SlotStore(tmp_path / "slots")
    m1 = installed(store, build_bundle(bundle_dir, fleet, version="1.0.0", scale=2.0))
    m2 = installed(store, build_bundle(bundle_dir, fleet, version="2.0.0", scale=3.0))
    return m1, m2


def test_in_process_predict_and_stats(models: tuple[LoadedModel, LoadedModel]) -> None:
    svc = InferenceService()
    with pytest.raises(NoModelError):
        svc.predict({"x": X})
    svc.swap(models[0])
    np.testing.assert_allclose(svc.predict({"x": X})["y"], X * 2 + 1)
    # lists and float64 are cast to the model's dtype
    np.testing.assert_allclose(svc.predict({"x": X.astype(np.float64)})["y"], X * 2 + 1)
    for bad, needle in (({}, "missing"), ({"x": X, "z": X}, "unexpected"),
                        ({"x": X[:, :2]}, "shape"), ({"x": np.array(["a"] * 4)}, "x")):
        with pytest.raises(PredictInputError, match=needle):
            svc.predict(bad)
    snap = svc.stats.snapshot()
    assert snap["count"] == 6 and snap["errors"] == 4
    assert snap["p50_ms"] is not None and sum(snap["histogram"]["counts"]) == 6
    assert svc.stats.snapshot(reset=True)["count"] == 6
    assert svc.stats.snapshot()["count"] == 0


def test_predict_accepts_mappings_and_casts_only_what_differs(
        models: tuple[LoadedModel, LoadedModel]) -> None:
    from types import MappingProxyType

    svc = InferenceService()
    svc.swap(models[0])
    np.testing.assert_allclose(svc.predict(MappingProxyType({"x": X}))["y"], X * 2 + 1)
    np.testing.assert_allclose(svc.predict({"x": X.tolist()})["y"], X * 2 + 1)
    big_endian = X.astype(">f4")             # equal values, another dtype: cast, not refused
    np.testing.assert_allclose(svc.predict({"x": big_endian})["y"], X * 2 + 1)
    with pytest.raises(PredictInputError, match="missing"):
        svc.predict({"z": X})
    with pytest.raises(PredictInputError, match="shape"):
        svc.predict({"x": X[0]})


def test_stats_periods_add_up_while_threads_record() -> None:
    """No lock on the request path: resets never lose or double-count a request."""
    stats = InferenceStats()
    per_thread, threads_n = 20_000, 4

    def hammer() -> None:
        for i in range(per_thread):
            stats.record(0.3 if i % 2 else 30.0, ok=i % 10 != 0)

    threads = [threading.Thread(target=hammer) for _ in range(threads_n)]
    for t in threads:
        t.start()
    periods = []
    while any(t.is_alive() for t in threads):
        periods.append(stats.snapshot(reset=True))
    for t in threads:
        t.join()
    periods.append(stats.snapshot(reset=True))
    assert sum(p["count"] for p in periods) == per_thread * threads_n
    assert sum(p["errors"] for p in periods) == per_thread * threads_n // 10
    counts = [sum(c) for c in zip(*(p["histogram"]["counts"] for p in periods), strict=True)]
    assert counts[2] == counts[8] == per_thread * threads_n // 2    # le 0.5 ms and le 50 ms
    assert stats.snapshot()["count"] == 0 and stats.snapshot()["p50_ms"] is None


@pytest.mark.parametrize("transport", ["http", "unix"])
def test_socket_api_json_and_npz(tmp_path: Path, models: tuple[LoadedModel, LoadedModel],
                                 transport: str) -> None:
    svc = InferenceService()
    # short (sun_path limit) and unique per process: xdist workers run beside each other
    sock = Path(f"/tmp/edgeops-test-{os.getpid()}-{tmp_path.name[-12:]}.sock")
    kw = {"http": ("127.0.0.1", 0)} if transport == "http" else {"unix_socket": sock}
    with LocalApiServer(svc, limits=InferenceLimits(max_request_bytes=4096), **kw) as srv:
        client = LocalClient(http=srv.http_address) if transport == "http" \
            else LocalClient(unix_socket=sock)
        status, body, _ = client.request("GET", "/v1/model")
        assert status == 503 and "no model" in json.loads(body)["error"]
        with pytest.raises(PredictInputError, match="503"):
            client.predict({"x": X})
        svc.swap(models[0])
        status, body, _ = client.request("GET", "/v1/model")
        assert status == 200 and json.loads(body)["model"]["version"] == "1.0.0"
        np.testing.assert_allclose(client.predict({"x": X})["y"], X * 2 + 1)
        np.testing.assert_allclose(client.predict({"x": X}, npz=False)["y"], X * 2 + 1)
        status, body, _ = client.request("POST", "/v1/predict", b"{not json")
        assert status == 400 and "inputs" in json.loads(body)["error"]
        status, body, _ = client.request("POST", "/v1/predict", b"garbage", "application/x-npz")
        assert status == 400 and "npz" in json.loads(body)["error"]
        status, body, _ = client.request("POST", "/v1/predict",
                                         json.dumps({"inputs": {"x": [[1, 2]]}}).encode())
        assert status == 400 and "shape" in json.loads(body)["error"]
        status, body, _ = client.request("POST", "/v1/predict", b"x" * 5000)
        assert status == 413
        client.close()
        client = LocalClient(http=srv.http_address) if transport == "http" \
            else LocalClient(unix_socket=sock)
        status, body, _ = client.request("GET", "/v1/stats")
        assert status == 200 and json.loads(body)["count"] >= 3
        assert client.request("GET", "/nope")[0] == 404
        client.close()
    if transport == "unix":
        assert not sock.exists()


def test_bind_failure_is_one_transport_error() -> None:
    svc = InferenceService()
    with LocalApiServer(svc, http=("127.0.0.1", 0)) as srv:
        assert srv.http_address is not None
        with pytest.raises(TransportError, match="local inference API"):
            LocalApiServer(svc, http=srv.http_address)


def test_swap_under_concurrent_load_fails_no_request(
        tmp_path: Path, models: tuple[LoadedModel, LoadedModel]) -> None:
    """Threads predict in-process and over the socket while the model flips 40 times."""
    m1, _ = models
    store = SlotStore(tmp_path / "slots")
    want = {"1.0.0": X * 2 + 1, "2.0.0": X * 3 + 1}
    svc = InferenceService()
    svc.swap(m1)
    stop = threading.Event()
    failures: list[str] = []
    answers: dict[str, int] = {"1.0.0": 0, "2.0.0": 0}
    lock = threading.Lock()

    def check(y: np.ndarray) -> None:
        for version, expected in want.items():
            if np.allclose(y, expected):
                with lock:
                    answers[version] += 1
                return
        failures.append(f"output matches neither model: {y.tolist()}")

    def in_process() -> None:
        while not stop.is_set():
            try:
                check(svc.predict({"x": X})["y"])
            except Exception as exc:
                failures.append(repr(exc))

    def over_socket(address: tuple[str, int]) -> None:
        client = LocalClient(http=address)
        while not stop.is_set():
            try:
                check(client.predict({"x": X})["y"])
            except Exception as exc:
                failures.append(repr(exc))
        client.close()

    with LocalApiServer(svc, http=("127.0.0.1", 0)) as srv:
        assert srv.http_address is not None
        threads = [threading.Thread(target=in_process) for _ in range(3)]
        threads += [threading.Thread(target=over_socket, args=(srv.http_address,))
                    for _ in range(2)]
        for t in threads:
            t.start()
        for i in range(40):
            # a fresh session from disk each time, as an activation loads one; the session
            # it replaces is dropped while requests may still be running on it
            svc.load_slot(store, store.info("b" if i % 2 == 0 else "a"))
            threading.Event().wait(0.01)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not failures, failures[:5]
    assert answers["1.0.0"] > 0 and answers["2.0.0"] > 0


_dtypes = st.sampled_from(["bool", "int8", "uint8", "int32", "int64", "float16", "float32",
                           "float64"])


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8),
                       st.tuples(_dtypes, st.lists(st.integers(0, 4), max_size=3)),
                       max_size=3))
def test_tensors_frame_round_trip(spec: dict[str, tuple[str, list[int]]]) -> None:
    rng = np.random.default_rng(0)
    arrays = {k: (rng.standard_normal(shape) * 10).astype(dtype)
              for k, (dtype, shape) in spec.items()}
    back = read_tensors(tensors_bytes(arrays))
    assert list(back) == list(arrays)
    for k, a in arrays.items():
        assert back[k].dtype == a.dtype and back[k].shape == a.shape
        np.testing.assert_array_equal(back[k], a)


@pytest.mark.parametrize(("frame", "needle"), [
    (b"NOPE" + b"\x00" * 8, "not an edgeops tensors frame"),
    (b"EOT1" + (10**6).to_bytes(4, "big") + b"{}", "out of range"),
    (b"EOT1" + (3).to_bytes(4, "big") + b"{x}", "malformed"),
    (b"EOT1" + (len(b'[{"name":"x","dtype":"object","shape":[1]}]')).to_bytes(4, "big")
     + b'[{"name":"x","dtype":"object","shape":[1]}]', "bad dtype"),
    (tensors_bytes({"x": np.zeros((2, 2), np.float32)})[:-1], "truncated"),
    (tensors_bytes({"x": np.zeros((2, 2), np.float32)}) + b"\x00", "trailing"),
])
def test_tensors_frame_rejects_bad_frames(frame: bytes, needle: str) -> None:
    with pytest.raises(PredictInputError, match=needle):
        read_tensors(frame)


def test_tensors_format_over_the_socket(tmp_path: Path,
                                        models: tuple[LoadedModel, LoadedModel]) -> None:
    svc = InferenceService()
    svc.swap(models[1])
    with LocalApiServer(svc, http=("127.0.0.1", 0)) as srv:
        assert srv.http_address is not None
        client = LocalClient(http=srv.http_address)
        np.testing.assert_allclose(client.predict({"x": X}, fmt="tensors")["y"], X * 3 + 1)
        status, body, _ = client.request("POST", "/v1/predict", b"EOT1junk", TENSORS)
        assert status == 400 and "header" in json.loads(body)["error"]
        with pytest.raises(ValueError, match="unknown format"):
            client.predict({"x": X}, fmt="xml")
        client.close()
