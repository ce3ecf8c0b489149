"""What the fleet's transport security costs: mutual TLS and the ACL on Mosquitto, and the CA.

Side by side in one run, same machine, same broker binary:

* connect (TCP + TLS handshake + MQTT 5 CONNACK): generated config (mutual TLS, CN username,
  ACL, CRL) vs plain TCP on a second broker;
* QoS 1 publish throughput of one device into its own ``state`` topic, with a manager
  subscriber receiving everything: generated config vs the same TLS listener without the ACL
  (the ACL's cost) vs plain TCP (TLS's cost);
* CA operations: enrolment (token + CSR → certificate), CRL signing and the manager's
  certificate check against a CRL of 1,000 revoked serials.

Run: ``python -m benchmarks.security`` → benchmarks/results/security.{json,md}.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import platform
import socket
import ssl
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cryptography
import paho.mqtt as paho_pkg
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgeops.protocol import topics
from fleet.broker_config import write_broker_config
from fleet.pki import MANAGER_IDENTITY, FleetCA, generate_key, make_csr

RESULTS = Path(__file__).resolve().parent / "results"
CONNECTS = 40
MESSAGES = 3000
PAYLOAD = b"x" * 256
INFLIGHT = 20
ROUNDS = 5
DEVICE = "cam-bench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _broker(conf: Path, port: int) -> Iterator[None]:
    proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port),
                                                                        timeout=0.2):
                break
            time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait(5)


def _client(name: str, port: int, tls: tuple[Path, Path, Path] | None) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    if tls is not None:
        ca, cert, key = tls
        c.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key))
    c.max_inflight_messages_set(INFLIGHT)
    return c


def _connect_ms(port: int, tls: tuple[Path, Path, Path] | None) -> list[float]:
    out = []
    for i in range(CONNECTS):
        done = threading.Event()
        c = _client(f"{DEVICE}-c{i}", port, tls)
        c.on_connect = lambda *_a, ev=done: ev.set()
        t0 = time.perf_counter()
        c.connect("127.0.0.1", port)
        c.loop_start()
        if not done.wait(10):
            raise RuntimeError("no CONNACK")
        out.append((time.perf_counter() - t0) * 1000)
        c.disconnect()
        c.loop_stop()
    return out


def _throughput(port: int, dev_tls: tuple[Path, Path, Path] | None,
                mgr_tls: tuple[Path, Path, Path] | None) -> dict[str, float]:
    topic = topics.device_topic(DEVICE, "state")
    got, acked = [0], [0]
    all_in, all_acked, sub_ok = threading.Event(), threading.Event(), threading.Event()

    def on_msg(*_a: Any) -> None:
        got[0] += 1
        if got[0] == MESSAGES:
            all_in.set()

    def on_pub(*_a: Any) -> None:
        acked[0] += 1
        if acked[0] == MESSAGES:
            all_acked.set()

    m = _client("manager-bench", port, mgr_tls)
    m.on_message = on_msg
    m.on_subscribe = lambda *_a: sub_ok.set()
    m.connect("127.0.0.1", port)
    m.loop_start()
    m.subscribe(topic, qos=1)
    sub_ok.wait(5)
    d = _client(DEVICE, port, dev_tls)
    d.on_publish = on_pub
    connected = threading.Event()
    d.on_connect = lambda *_a: connected.set()
    d.connect("127.0.0.1", port)
    d.loop_start()
    connected.wait(5)
    t0 = time.perf_counter()
    for _ in range(MESSAGES):
        d.publish(topic, PAYLOAD, qos=1)
    ok = all_acked.wait(120) and all_in.wait(120)
    elapsed = time.perf_counter() - t0
    d.disconnect()
    m.disconnect()
    d.loop_stop()
    m.loop_stop()
    if not ok:
        raise RuntimeError(f"lost messages: acked {acked[0]}, received {got[0]}")
    return {"msgs_per_s": MESSAGES / elapsed, "seconds": elapsed}


def _med(xs: list[float]) -> dict[str, float]:
    s = sorted(xs)
    return {"median": statistics.median(s), "p90": s[int(0.9 * (len(s) - 1))], "n": len(s)}


def _ca_ops(ca: FleetCA) -> dict[str, Any]:
    enroll = []
    for i in range(30):
        key = generate_key()
        token = ca.create_token(f"bench-{i}")
        csr = make_csr(key, f"bench-{i}")
        t0 = time.perf_counter()
        ca.enroll(csr, token)
        enroll.append((time.perf_counter() - t0) * 1000)
    # a CRL with 1,000 revoked serials: sign it, then check a certificate against it
    records = json.loads(ca.issued_path.read_text())
    now = datetime.now(UTC).isoformat()
    records += [{"serial": 10**20 + i, "identity": f"gone-{i}", "kind": "device",
                 "not_before": now, "not_after": now, "fingerprint_sha256": "",
                 "revoked_at": now, "reason": None} for i in range(1000)]
    ca.issued_path.write_text(json.dumps(records))
    t0 = time.perf_counter()
    ca.refresh_crl()
    crl_ms = (time.perf_counter() - t0) * 1000
    pem = (ca.dir.parent / "mgr" / "manager.crt").read_bytes()
    checks = []
    for _ in range(50):
        t0 = time.perf_counter()
        ca.check(pem)
        checks.append((time.perf_counter() - t0) * 1000)
    return {"enroll_ms": _med(enroll), "crl_sign_1000_ms": crl_ms, "check_ms": _med(checks)}


def main() -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="edgeops-bench-sec-"))
    ca = FleetCA(tmp / "ca")
    ca.init()
    port = _free_port()
    files = write_broker_config(ca, tmp / "broker", hostnames=("127.0.0.1",), port=port,
                                bind="127.0.0.1", user=getpass.getuser())
    mgr_key, mgr_cert = ca.issue_with_key(MANAGER_IDENTITY, tmp / "mgr", kind="manager")
    dev_key, dev_cert = ca.issue_with_key(DEVICE, tmp / "dev", kind="device")
    dev_tls, mgr_tls = (files.ca, dev_cert, dev_key), (files.ca, mgr_cert, mgr_key)
    # the subscriber must not be the bottleneck: lift the per-client queue on all three
    # brokers alike (Mosquitto's default of 1000 queued QoS 1 messages drops under a burst)
    queue_line = "max_queued_messages 100000\n"
    files.conf.write_text(queue_line + files.conf.read_text())
    noacl_port = _free_port()
    noacl = tmp / "noacl.conf"
    noacl.write_text("\n".join(line for line in files.conf.read_text().splitlines()
                               if not line.startswith("acl_file")).replace(
        f"listener {port}", f"listener {noacl_port}"))
    plain_port = _free_port()
    plain = tmp / "plain.conf"
    plain.write_text(queue_line + f"listener {plain_port} 127.0.0.1\nallow_anonymous true\n"
                     "persistence false\nlog_dest none\nmax_packet_size 1048576\n")

    results: dict[str, Any] = {}
    with _broker(files.conf, port), _broker(noacl, noacl_port), _broker(plain, plain_port):
        results["connect_ms"] = {"generated_mtls_acl": _med(_connect_ms(port, dev_tls)),
                                 "plain_tcp": _med(_connect_ms(plain_port, None))}
        runs: dict[str, list[float]] = {"generated_mtls_acl": [], "mtls_no_acl": [],
                                        "plain_tcp": []}
        for _ in range(ROUNDS):           # interleaved, so load changes hit all three alike
            runs["generated_mtls_acl"].append(
                _throughput(port, dev_tls, mgr_tls)["msgs_per_s"])
            runs["mtls_no_acl"].append(_throughput(noacl_port, dev_tls, mgr_tls)["msgs_per_s"])
            runs["plain_tcp"].append(_throughput(plain_port, None, None)["msgs_per_s"])
        results["publish_qos1"] = {k: {"msgs_per_s": statistics.median(v), "runs": v}
                                   for k, v in runs.items()}
    results["ca"] = _ca_ops(ca)
    c, p = results["connect_ms"], results["publish_qos1"]
    results["ratios"] = {
        "connect_mtls_over_plain": c["generated_mtls_acl"]["median"] / c["plain_tcp"]["median"],
        "throughput_acl_over_no_acl": p["generated_mtls_acl"]["msgs_per_s"]
        / p["mtls_no_acl"]["msgs_per_s"],
        "throughput_mtls_over_plain": p["mtls_no_acl"]["msgs_per_s"]
        / p["plain_tcp"]["msgs_per_s"]}
    mver = subprocess.run(["/usr/sbin/mosquitto", "-h"], capture_output=True, text=True,
                          check=False).stdout.splitlines()[0].replace("mosquitto version ", "")
    results["setup"] = {
        "versions": {"python": platform.python_version(), "mosquitto": mver,
                     "openssl": ssl.OPENSSL_VERSION, "paho-mqtt": paho_pkg.__version__,
                     "cryptography": cryptography.__version__},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_avg_at_start": os.getloadavg()},
        "threads": "one paho network thread per client; broker single-threaded",
        "connects": CONNECTS, "messages": MESSAGES, "payload_bytes": len(PAYLOAD),
        "max_inflight": INFLIGHT, "key": "EC P-256", "mqtt": "5"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "security.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    table = _table(results)
    (RESULTS / "security.md").write_text(table)
    print(table)
    return results


def _table(r: dict[str, Any]) -> str:
    c, p, ca, ra = r["connect_ms"], r["publish_qos1"], r["ca"], r["ratios"]
    v = r["setup"]["versions"]
    return "\n".join([
        "# Security overhead (mutual TLS, ACL, CA)", "",
        f"mosquitto {v['mosquitto']}, {v['openssl']}, paho-mqtt {v['paho-mqtt']}, "
        f"cryptography {v['cryptography']}, Python {v['python']}; "
        f"{r['setup']['machine']['cpus']} CPUs; {r['setup']['threads']}.", "",
        "Connect time includes building the client's TLS context (loading key and certificates) "
        "and the ECDHE/ECDSA P-256 handshake; throughput is bounded by the Python client as "
        "much as by the broker. All three brokers run with `max_queued_messages 100000`.", "",
        "| measure | generated config (mTLS + ACL) | baseline | ratio |", "|---|---|---|---|",
        f"| connect → CONNACK, median ms (n={CONNECTS}) | "
        f"{c['generated_mtls_acl']['median']:.2f} | plain TCP {c['plain_tcp']['median']:.2f} | "
        f"{ra['connect_mtls_over_plain']:.1f}× |",
        f"| QoS 1 publish, median msgs/s of {ROUNDS} interleaved runs ({MESSAGES} × "
        f"{len(PAYLOAD)} B, inflight {INFLIGHT}) | "
        f"{p['generated_mtls_acl']['msgs_per_s']:.0f} | mTLS without ACL "
        f"{p['mtls_no_acl']['msgs_per_s']:.0f} | {ra['throughput_acl_over_no_acl']:.2f} |",
        f"| QoS 1 publish, msgs/s: TLS's share | mTLS without ACL "
        f"{p['mtls_no_acl']['msgs_per_s']:.0f} | plain TCP {p['plain_tcp']['msgs_per_s']:.0f} | "
        f"{ra['throughput_mtls_over_plain']:.2f} |", "",
        "| CA operation | median ms | p90 ms |", "|---|---|---|",
        f"| enrol (token check + sign CSR + record) | {ca['enroll_ms']['median']:.2f} | "
        f"{ca['enroll_ms']['p90']:.2f} |",
        f"| sign a CRL of 1,000 revoked serials | {ca['crl_sign_1000_ms']:.1f} | – |",
        f"| manager check of a client certificate (chain, expiry, 1,000-entry CRL) | "
        f"{ca['check_ms']['median']:.2f} | {ca['check_ms']['p90']:.2f} |", ""])


if __name__ == "__main__":
    main()
