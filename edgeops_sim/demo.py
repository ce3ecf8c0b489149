"""``edgeops demo``: the whole story on this machine, with nothing installed beyond the package.

Act 1 (toolchain): train an example model, create keys, build and sign a bundle for the three
targets of the smart-city fleet, inspect and verify it offline. Act 2 (fleet): start an MQTT
broker (mosquitto if installed, else the embedded amqtt broker; or ``--broker``), a fleet
manager on SQLite with its HTTP API and console, and a simulated fleet of real device agents
(``edgeops_sim``); publish the bundle, roll it out in phases with live progress, show telemetry.
Act 3 (safety): ship a deliberately broken version (a corrupted export that yields NaN) and
watch the canary phase catch it: the devices' health checks fail and roll back, the deployment
aborts and rolls back automatically (``Strategy.auto_rollback``). Then a summary.

Everything lives in a work directory (default ``./edgeops-demo``) with its own
``EDGEOPS_HOME``, so the user's keys are untouched. Without ``--keep`` everything started is
stopped before the command returns.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from edgeops.errors import EdgeOpsError, TransportError

__all__ = ["DemoOptions", "corrupt_bundle", "demo", "run_demo"]

NAME = "vehicle-classifier"
TARGETS = ("arm64-cpu", "x86-cpu", "cuda-gpu")
PRECISION = "arm64-cpu=fp32,x86-cpu=fp32,cuda-gpu=fp16"
# the demo's own throw-away keys in its work directory, never the user's
PASSPHRASE = "edgeops-demo-passphrase"  # noqa: S105


@dataclass(frozen=True)
class DemoOptions:
    workdir: Path = Path("edgeops-demo")
    devices: int = 20
    fast: bool = False
    keep: bool = False
    broker: str | None = None
    broker_kind: str = "auto"
    listen: str = "127.0.0.1:0"
    quiet: bool = False                  # --json: no progress, only the summary on stdout
    timeout_s: float = 170.0             # per rollout wait
    mlflow: bool = False                 # go through a local MLflow registry (edgeops_sim.demo_mlflow)


@dataclass
class _Out:
    quiet: bool
    tty: bool = field(default_factory=lambda: sys.stderr.isatty())
    _live: bool = False

    def step(self, title: str) -> None:
        self.end_live()
        if not self.quiet:
            click.secho(f"\n▶ {title}", bold=True, err=True)

    def info(self, text: str) -> None:
        self.end_live()
        if not self.quiet:
            click.echo(f"  {text}", err=True)

    def live(self, text: str) -> None:
        if self.quiet:
            return
        if self.tty:
            click.echo(f"\r\033[K  {text}", nl=False, err=True)
            self._live = True
        else:
            click.echo(f"  {text}", err=True)

    def end_live(self) -> None:
        if self._live:
            click.echo("", err=True)
            self._live = False


def corrupt_bundle(good: Path, out_dir: Path, version: str, signer: Any) -> Path:
    """A signed bundle ``version`` whose models are ``good``'s with the first weight matrix
    set to +inf (a bad export that slipped past CI): every output is NaN, while the golden
    data still expect the good answers, so the device health check must refuse it."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from edgeops.bundle import read_bundle, write_bundle
    from edgeops.bundle.archive import file_ref
    from edgeops.bundle.manifest import Manifest

    b = read_bundle(good)
    src = out_dir / f".{version}-src"
    if src.exists():
        shutil.rmtree(src)
    b.extract(src)
    m = b.manifest
    artifacts = []
    files: dict[str, Path] = {}
    for a in m.artifacts:
        model_path = src / a.file.path
        model = onnx.load(str(model_path))
        for init in model.graph.initializer:
            arr = numpy_helper.to_array(init)
            if arr.ndim == 2 and arr.dtype.kind == "f":
                bad = arr.copy()
                bad[0, :] = np.inf
                init.CopyFrom(numpy_helper.from_array(bad, init.name))
                break
        onnx.save(model, str(model_path))
        ref = file_ref(a.file.path, model_path)
        artifacts.append(_replace(a, file=ref))
        files[a.file.path] = model_path
        if a.golden is not None:
            files[a.golden.path] = src / a.golden.path
    d = m.to_dict()
    d["version"] = version
    d["artifacts"] = [x.to_dict() for x in artifacts]
    bad_manifest = Manifest.from_dict(d)
    out = out_dir / f"{m.name}-{version}.edgebundle"
    write_bundle(out, bad_manifest, files, [signer])
    shutil.rmtree(src)
    return out


def _replace(obj: Any, **kw: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **kw)


def _publish(client: Any, keys: Any, bundle: Path) -> None:
    from tuf.api.metadata import Metadata, Root

    from edgeops.bundle import read_bundle
    from edgeops.trust import root_path
    from fleet.repository import sign_targets_update

    root = Metadata[Root].from_file(str(root_path(keys)))
    targets = sign_targets_update(client.current_targets(), read_bundle(bundle), root,
                                  keys.signer("targets", PASSPHRASE.encode()))
    client.publish(client.upload(bundle)["upload"], targets)


def _wait(what: str, check: Callable[[], Any], timeout_s: float,
          tick: Callable[[], None] | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        if tick is not None:
            tick()
        time.sleep(0.5)
    raise TransportError(f"the demo timed out waiting for {what}",
                         hint="the machine may be overloaded; try --devices 8 --fast")


def _counts_line(st: dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(st["counts"].items()))
    return (f"phase {st['phase_index'] + 1}/{st['phases']} · {st['status']} · "
            f"{st['progress']:.0%} · {counts}")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Any:
    """SIGTERM (``kill``, a service manager, a CI timeout) stops like Ctrl-C.

    Python's default SIGTERM ends the process at once, skipping every ``finally``: the demo's
    MLflow server (a child process) and its broker would be left running. Raised as
    KeyboardInterrupt, it takes the same stop path as Ctrl-C. Only the main thread can set a
    handler; elsewhere (a test calling the demo from a thread) nothing changes.
    """
    def _interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:          # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(opts: DemoOptions) -> dict[str, Any]:
    """The demo as a function (the command is a thin shell); returns the summary."""
    from edgeops.examples import make_vehicle_classifier

    out = _Out(opts.quiet)
    t0 = time.monotonic()
    if opts.broker is not None:
        _check_broker(opts.broker)          # fail in a second, not after the training
    work = opts.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ["EDGEOPS_HOME"] = str(work / "home")
    os.environ["EDGEOPS_KEY_PASSPHRASE"] = PASSPHRASE
    summary: dict[str, Any] = {"workdir": str(work), "devices": opts.devices}
    timings: dict[str, float] = {}

    # -- act 1: toolchain ---------------------------------------------------------------
    out.step("Training an example model: vehicle classifier from roadside sensor features")
    model_dir = work / "model"
    ex = None
    if (model_dir / "model.onnx").exists():
        out.info("model already trained, reusing it")
    else:
        ex = make_vehicle_classifier(model_dir)
        out.info(f"{ex.model} (held-out accuracy {ex.accuracy:.1%})")

    from edgeops.keys import KeyStore

    keys = KeyStore(work / "home")
    out.step("Creating signing keys (offline root/targets, online snapshot/timestamp/manager)")
    from edgeops.trust import root_path

    if not root_path(keys).exists():
        _cli(["keys", "init"], opts.quiet)
    else:
        out.info("keys already exist, reusing them")

    good = work / "out" / f"{NAME}-1.0.0.edgebundle"
    model_src, cal, val = (str(model_dir / "model.onnx"), str(model_dir / "calibration.npz"),
                           str(model_dir / "validation.npz"))
    registry = None
    if opts.mlflow:
        from edgeops_sim.demo_mlflow import start_registry

        out.step("Starting an MLflow tracking server; logging the model with "
                 "mlflow.onnx.log_model, registering it, alias @champion")
        registry = start_registry(work, NAME, model_dir / "model.onnx",
                                  [model_dir / "calibration.npz", model_dir / "validation.npz"],
                                  ex.accuracy if ex is not None else None)
        out.info(f"{registry.uri}: {NAME} version {registry.version} @champion, run "
                 f"{registry.run_id[:12]}")
        model_src = registry.model_uri
        cal, val = registry.data_uri("calibration.npz"), registry.data_uri("validation.npz")
        for stale in (good, work / "out" / f"{NAME}-1.1.0.edgebundle"):
            stale.unlink(missing_ok=True)   # rebuilt from this run's registry
    out.step(f"Building {NAME} 1.0.0 for {', '.join(TARGETS)} (signed)"
             + (f" from {model_src}, results logged back to MLflow" if registry else ""))
    args = []
    if not good.exists():
        args = ["build", model_src, "--name", NAME, "--version", "1.0.0",
                "--calibration", cal, "--validation", val, "--precision", PRECISION,
                "--out", str(work / "out")]
        for t in TARGETS:
            args += ["--target", t]
        if registry is not None:
            args.append("--mlflow-log")
    bad = work / "out" / f"{NAME}-1.1.0.edgebundle"
    try:
        if not good.exists():
            _cli(args, opts.quiet)
        out.info(str(good))
        if not opts.quiet:
            out.step("Inspecting the bundle and verifying it offline against the trust root")
            _cli(["bundle", "inspect", str(good)], False)
        _cli(["bundle", "verify", str(good)], True)
        out.step(f"Making a broken {NAME} 1.1.0 (corrupted export: NaN outputs), signed all "
                 "the same")
        if not bad.exists():
            corrupt_bundle(good, work / "out", "1.1.0",
                           keys.signer("targets", PASSPHRASE.encode()))
    except BaseException:
        if registry is not None:    # the MLflow server is a child process: never leave it
            registry.stop()
        raise
    out.info(str(bad))
    timings["toolchain_s"] = round(time.monotonic() - t0, 1)

    # -- act 2: the fleet ---------------------------------------------------------------
    stack = _Stack(opts, work, out, registry.uri if registry else None)
    try:
        stack.start()
        summary.update(stack.story(good, bad, timings))
        if registry is not None:
            from edgeops_sim.demo_mlflow import read_back

            out.step("Reading back from MLflow: the build's metrics and the fleet's outcomes")
            summary["mlflow"] = read_back(registry, deployments=2)
            for k, v in summary["mlflow"]["version_tags"].items():
                out.info(f"{NAME} v{registry.version}  {k} = {v}")
    except BaseException:
        stack.stop()
        if registry is not None:
            registry.stop()
        raise
    summary["timings"] = timings
    summary["console_url"] = f"{stack.url}/console/"
    summary["api_url"] = stack.url
    summary["broker"] = {"url": stack.broker_url, "kind": stack.broker_kind}
    if opts.keep:
        summary["operator_token"] = stack.operator_token
        summary["kept_running"] = True
        summary["elapsed_s"] = round(time.monotonic() - t0, 1)
        try:
            _print_summary(out, summary)
            if opts.quiet:
                click.echo(json.dumps(summary, indent=2, sort_keys=True))
            try:
                click.echo(f"\nconsole: {stack.url}/console/  (operator token: "
                           f"{stack.operator_token})\nPress Ctrl-C to stop.", err=True)
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass     # the stop this asks for, also when it lands before the line is out
        finally:         # whatever ends the wait, nothing is left running
            stack.stop()
            if registry is not None:
                registry.stop()
        summary["stray_threads"] = stack.stray_threads()
        click.echo("stopped; " + (f"threads still running: {', '.join(summary['stray_threads'])}"
                                  if summary["stray_threads"] else "nothing left running"),
                   err=True)
        return summary
    stack.stop()
    if registry is not None:
        registry.stop()
    summary["stray_threads"] = stack.stray_threads()
    summary["elapsed_s"] = round(time.monotonic() - t0, 1)
    return summary


def _check_broker(url: str) -> None:
    """A bad ``--broker`` URL is a usage error (exit 2); an unreachable broker exits 1."""
    import socket

    from fleet.mqtt import parse_broker_url

    addr = parse_broker_url(url)
    try:
        socket.create_connection((addr.host, addr.port), timeout=3).close()
    except OSError as exc:
        raise TransportError(f"cannot reach the MQTT broker at {addr.url}: "
                             f"{exc.strerror or exc}",
                             hint="start it, fix --broker, or leave --broker out to let the "
                                  "demo start one") from None


class _Stack:
    """Broker + manager + simulated fleet, started and stopped together."""

    def __init__(self, opts: DemoOptions, work: Path, out: _Out,
                 mlflow_uri: str | None = None) -> None:
        self.opts, self.work, self.out = opts, work, out
        self.mlflow_uri = mlflow_uri    # the manager tags deployment outcomes there
        self.broker: Any = None
        self.broker_url = opts.broker or ""
        self.broker_kind = "external" if opts.broker else ""
        self.server: Any = None
        self.uv: Any = None
        self.uv_thread: threading.Thread | None = None
        self.sim: Any = None
        self.url = ""
        self.operator_token = ""
        self._threads_before = {t.ident for t in threading.enumerate()}

    def start(self) -> None:
        import uvicorn

        from fleet.embedded_broker import EmbeddedBroker
        from fleet.mqtt import MqttOptions
        from fleet.server import FleetServer, ServeOptions
        from fleet.worker import ManagerWorker, WorkerConfig, default_client_id

        out, opts = self.out, self.opts
        mqtt_version = 5
        if opts.broker is None:
            out.step("Starting an MQTT broker on loopback")
            self.broker = EmbeddedBroker(opts.broker_kind)
            self.broker_url = self.broker.start()
            self.broker_kind = self.broker.kind
            mqtt_version = self.broker.mqtt_version
            out.info(f"{self.broker.kind} at {self.broker_url} (MQTT "
                     f"{'5' if mqtt_version == 5 else '3.1.1'})")
        self.mqtt_version = mqtt_version

        out.step("Starting the fleet manager (SQLite, HTTP API, console, rollout loop)")
        data = self.work / "fleet-data"
        if data.exists():
            shutil.rmtree(data)             # a fresh fleet every run: the story starts empty
        devices_dir = self.work / "sim"
        if devices_dir.exists():
            shutil.rmtree(devices_dir)
        from fleet.server import parse_listen

        host, port = parse_listen(opts.listen)
        if port == 0:
            from fleet.embedded_broker import _free_port

            port = _free_port()
        sopts = ServeOptions(db=f"sqlite:///{data / 'fleet.db'}", listen=f"{host}:{port}",
                             data=data, broker=None, keys_home=self.work / "home",
                             device_broker_url=self.broker_url,
                             tick_s=0.25 if opts.fast else 0.5,
                             mlflow_tracking_uri=self.mlflow_uri)
        import logging

        logging.getLogger("fleet.server").setLevel(logging.ERROR)  # "no --broker": ours below
        self.server = FleetServer(sopts)
        self.server.start_background()
        cfg = WorkerConfig(mqtt=MqttOptions(client_id=f"{default_client_id()}-{port}",
                                            protocol_version=mqtt_version),
                           share_group="" if mqtt_version != 5 else WorkerConfig().share_group)
        # our own broker, MQTT version and client id: the server wires the worker in
        self.server.attach_worker(ManagerWorker(
            self.server.store, self.broker_url, data, client_id=f"{default_client_id()}-{port}",
            on_state=self.server.engine.on_state, on_status=self.server.engine.on_status,
            config=cfg))
        sock = self.server.bind()
        self.uv = uvicorn.Server(uvicorn.Config(self.server.app, log_level="warning",
                                                access_log=False, lifespan="off"))
        self.uv.install_signal_handlers = lambda: None
        self.uv_thread = threading.Thread(target=self.uv.run, kwargs={"sockets": [sock]},
                                          name="demo-http", daemon=True)
        self.uv_thread.start()
        _wait("the HTTP API", lambda: self.uv.started, 20)
        self.url = f"http://{host}:{port}"
        admin = self.server.admin_token or (data / "admin.token").read_text().strip()
        from fleet.client import FleetClient

        self.admin = FleetClient(self.url, admin)
        self.operator_token = self.admin.create_token("operator", "demo")["token"]
        out.info(f"API {self.url} · console {self.url}/console/")

    def story(self, good: Path, bad: Path, timings: dict[str, float]) -> dict[str, Any]:
        from edgeops.keys import KeyStore
        from edgeops_sim import FaultPlan, SimFleet, SimOptions, smart_city

        out, opts, c = self.out, self.opts, self.admin
        keys = KeyStore(self.work / "home")
        specs = smart_city(opts.devices)
        kinds: dict[str, int] = {}
        for s in specs:
            kinds[s.kind] = kinds.get(s.kind, 0) + 1
        out.step("Enrolling a simulated smart-city fleet: "
                 + ", ".join(f"{n} {k}" for k, n in kinds.items()))
        t = time.monotonic()
        self.sim = SimFleet(specs, self.work / "sim", self.broker_url, SimOptions(
            mqtt_version=self.mqtt_version, tick_s=1.0, telemetry_interval_s=2.0,
            sensor_interval_s=2.0, idle_poll_s=0.5,
            deferred_retry_s=2.0, vehicles_roam=False, drive_for_s=8.0 if opts.fast else 15.0,
            faults=FaultPlan()))
        self.sim.enrol(c)
        self.sim.start()
        _wait("every device online", lambda: c.devices(online="true")["total"] == len(specs),
              60, tick=lambda: out.live(f"{c.devices(online='true')['total']}/{len(specs)} "
                                        "online"))
        out.info(f"{len(specs)} real agents online (one process, "
                 f"{threading.active_count()} threads); vehicles are driving: their installs "
                 "will wait until they park")
        timings["fleet_up_s"] = round(time.monotonic() - t, 1)

        # -- the good version ----------------------------------------------------------
        out.step(f"Publishing {NAME} 1.0.0 to the fleet's TUF repository")
        _publish(c, keys, good)
        phases = ["10%", "50%", "100%"]
        bake = 1.0 if opts.fast else 3.0
        out.step(f"Rolling out 1.0.0 in phases {','.join(phases)} (bake {bake:g} s)")
        t = time.monotonic()
        good_strategy = {"phases": phases, "bake_s": bake, "abort_max_failures": 2,
                         "device_timeout_s": 150.0}
        if self.mlflow_uri:
            out.info(f"by moving the fleet alias {NAME}@champion to 1.0.0, as in MLflow")
            dep = c.set_alias(NAME, "champion", "1.0.0",
                              {"selector": "all", "strategy": good_strategy})["deployment"]
        else:
            dep = c.deploy(NAME, "1.0.0", "all", good_strategy)
        st = self._follow(dep["id"])
        timings["rollout_good_s"] = round(time.monotonic() - t, 1)
        good_fleet = c.devices(version=f"{NAME}@1.0.0")["total"]
        out.info(f"{st['status']}: {good_fleet}/{len(specs)} devices run {NAME}@1.0.0 "
                 f"({_counts_line(st)})")
        time.sleep(3.0 if opts.fast else 6.0)     # let a few telemetry intervals arrive
        agg = c.aggregate(deployment=dep["id"])
        snap = self.sim.snapshot()
        out.step("Telemetry from the fleet")
        out.info(f"inferences reported {agg.get('inferences', 0)}, error rate "
                 f"{agg.get('error_rate') or 0:.2%}, mean p95 "
                 f"{agg.get('p95_ms_mean') or 0:.3f} ms; simulator: {snap['predictions']} "
                 f"predictions, {snap['sensor_records']} sensor readings")

        # -- the broken version --------------------------------------------------------
        out.step(f"Publishing the broken {NAME} 1.1.0 and rolling it out the same way")
        _publish(c, keys, bad)
        t = time.monotonic()
        dep2 = c.deploy(NAME, "1.1.0", "all", {"phases": phases, "bake_s": bake,
                                               "abort_max_failures": 1, "auto_rollback": True,
                                               "device_timeout_s": 150.0})
        st2 = self._follow(dep2["id"])
        timings["rollout_broken_s"] = round(time.monotonic() - t, 1)
        _wait("every device to settle back on 1.0.0",
              lambda: c.devices(version=f"{NAME}@1.0.0")["total"] == len(specs), 60)
        rows = c.deployment_devices(dep2["id"])["items"]
        reached = [r for r in rows if r["state"] != "pending"]
        out.info(f"{st2['status']}: {st2.get('reason')}")
        out.info(f"the canary caught it: {len(reached)} of {len(rows)} devices were ever "
                 f"told to install 1.1.0; every device still serves 1.0.0")
        serving = self.sim.snapshot()["serving"]
        return {
            "good": {"deployment": dep["id"], "status": st["status"], "counts": st["counts"],
                     "devices_on_version": good_fleet,
                     "healthy_pct": round(100.0 * st["counts"].get("healthy", 0)
                                          / max(1, st["devices"]), 1)},
            "broken": {"deployment": dep2["id"], "status": st2["status"],
                       "reason": st2.get("reason"), "counts": st2["counts"],
                       "aborted_in_phase": st2["phase_index"] + 1, "phases": st2["phases"],
                       "devices_reached": len(reached),
                       "devices_on_good_version_after": c.devices(
                           version=f"{NAME}@1.0.0")["total"]},
            "telemetry": {"inferences": agg.get("inferences", 0),
                          "error_rate": agg.get("error_rate"),
                          "p95_ms_mean": agg.get("p95_ms_mean")},
            "serving": serving, "device_kinds": kinds,
            "simulator": self.sim.snapshot()}

    def _follow(self, dep_id: str) -> dict[str, Any]:
        c, out = self.admin, self.out
        last: dict[str, Any] = {}

        def done() -> bool:
            nonlocal last
            last = c.deployment(dep_id)
            out.live(_counts_line(last))
            return bool(last["status"] != "running")

        _wait(f"deployment {dep_id}", done, self.opts.timeout_s)
        out.end_live()
        return last

    def stop(self) -> None:
        if self.sim is not None:
            self.sim.stop()
            self.sim = None
            from edgeops.netloop import NetLoop

            NetLoop.close_shared_if_idle()   # the agents' network thread: nothing left on it
        if self.uv is not None:
            self.uv.should_exit = True
            if self.uv_thread is not None:
                self.uv_thread.join(10)
            self.uv = None
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    def stray_threads(self) -> list[str]:
        time.sleep(0.2)
        return sorted(t.name for t in threading.enumerate()
                      if t.ident not in self._threads_before and t.is_alive())


def _cli(args: list[str], quiet: bool) -> None:
    """Run an ``edgeops`` subcommand in-process (the same code path a user would take)."""
    import contextlib
    import io

    from edgeops.cli.main import cli

    if quiet:
        args = [*args, "--json"] if args[0] in ("build",) else args
        buf_out, buf_err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
            cli.main(args, standalone_mode=False)
    else:
        with contextlib.redirect_stdout(sys.stderr):
            cli.main(args, standalone_mode=False)


def _print_summary(out: _Out, s: dict[str, Any]) -> None:
    if out.quiet:
        return
    out.step("Summary")
    g, b = s["good"], s["broken"]
    out.info(f"1.0.0: {g['status']}, {g['healthy_pct']:g}% of {s['devices']} devices healthy")
    out.info(f"1.1.0: {b['status']} in phase {b['aborted_in_phase']}/{b['phases']} "
             f"({b['devices_reached']} devices reached): {b['reason']}")
    out.info(f"telemetry: {s['telemetry']['inferences']} inferences reported")
    out.info("timings: " + ", ".join(f"{k} {v:g}" for k, v in s["timings"].items()))
    out.info(f"console: {s['console_url']}")
    if "mlflow" in s:
        out.info(f"MLflow: {s['mlflow']['tracking_uri']} ({s['mlflow']['model_uri']}, "
                 f"{len(s['mlflow']['run_metrics'])} edgeops metrics on run "
                 f"{s['mlflow']['run_id'][:12]})")
    if "elapsed_s" in s:
        click.secho(f"\n✔ demo finished in {s['elapsed_s']:.0f} s", fg="green", err=True)


@click.command()
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False),
              default=Path("edgeops-demo"), show_default=True,
              help="Where the demo writes keys, models, bundles, the fleet's data and devices.")
@click.option("--devices", type=click.IntRange(4, 80), default=20, show_default=True,
              help="Simulated devices (air-quality and bin sensors, cameras, vehicles), in "
                   "this process; for more use `edgeops sim` against a running manager.")
@click.option("--fast", is_flag=True, help="Shorter bake times and driving spells (for CI).")
@click.option("--keep", is_flag=True,
              help="Keep the manager, console and fleet running until Ctrl-C.")
@click.option("--broker", metavar="URL", default=None,
              help="Use this MQTT broker instead of starting one (mqtt://HOST:PORT).")
@click.option("--broker-kind", type=click.Choice(["auto", "mosquitto", "amqtt"]),
              default="auto", show_default=True,
              help="Which broker to start: mosquitto if installed, else embedded amqtt.")
@click.option("--listen", default="127.0.0.1:0", show_default=True,
              help="HOST:PORT for the manager's API and console (port 0: any free port).")
@click.option("--mlflow", "use_mlflow", is_flag=True,
              help="Start a local MLflow server, register the model there and build from "
                   "models:/vehicle-classifier@champion, logging results back (extra `mlflow`).")
@click.option("--json", "as_json", is_flag=True,
              help="No progress; print the summary as JSON on stdout.")
def demo(workdir: Path, devices: int, fast: bool, keep: bool, broker: str | None,
         broker_kind: str, listen: str, use_mlflow: bool, as_json: bool) -> None:
    """Show the whole product on this machine: build, sign, publish, roll out, catch a bad model.

    Trains an example model, builds signed bundles for arm64-cpu, x86-cpu and cuda-gpu,
    starts a broker, a fleet manager on SQLite and a simulated smart-city fleet of real agents,
    rolls 1.0.0 out in phases, then ships a broken 1.1.0 that the canary phase catches
    (automatic abort and rollback). About 1-3 minutes on 2 cores.

    \b
    Example:
      edgeops demo
      edgeops demo --devices 8 --fast --json
      edgeops demo --keep            # then open the console URL it prints
      edgeops demo --mlflow          # the model goes through an MLflow registry first
    """
    opts = DemoOptions(workdir=workdir, devices=devices, fast=fast, keep=keep, broker=broker,
                       broker_kind=broker_kind, listen=listen, quiet=as_json, mlflow=use_mlflow)
    try:
        with sigterm_as_interrupt():
            summary = run_demo(opts)
    except EdgeOpsError:
        raise
    if keep:
        return
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        _print_summary(_Out(False), summary)
