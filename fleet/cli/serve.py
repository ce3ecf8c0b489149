"""``edgeops fleet serve``: run the manager (HTTP API, TUF repository, rollout engine, MQTT
worker) as wired by :mod:`fleet.server`.
"""

from __future__ import annotations

from pathlib import Path

import click

from edgeops.errors import UsageError

__all__ = ["serve"]


@click.command()
@click.option("--db", default="sqlite:///fleet-data/fleet.db", show_default=True,
              envvar="EDGEOPS_FLEET_DB", help="sqlite:///RELATIVE.db, sqlite:////ABS.db, a path, or "
                   "postgresql://USER@HOST/DB.")
@click.option("--listen", default="127.0.0.1:8080", show_default=True,
              envvar="EDGEOPS_FLEET_LISTEN", help="HOST:PORT of the HTTP API.")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=Path("fleet-data"),
              show_default=True, envvar="EDGEOPS_FLEET_DATA",
              help="Directory for artifacts, uploads and admin.token.")
@click.option("--broker", envvar="EDGEOPS_BROKER", default=None,
              help="mqtt://HOST:PORT of the broker (omit to run without MQTT).")
@click.option("--broker-ca", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              envvar="EDGEOPS_BROKER_CA", default=None,
              help="CA certificate that signed the broker's (mqtts://).")
@click.option("--broker-cert", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              envvar="EDGEOPS_BROKER_CERT", default=None,
              help="The manager's client certificate for mutual TLS "
                   "(from `edgeops fleet ca issue --manager`).")
@click.option("--broker-key", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              envvar="EDGEOPS_BROKER_KEY", default=None,
              help="Private key of --broker-cert.")
@click.option("--broker-password-file", type=click.Path(path_type=Path, dir_okay=False),
              envvar="EDGEOPS_BROKER_PASSWORD_FILE", default=None,
              help="manager.password from `edgeops fleet broker-config`: log in on the broker's "
                   "manager listener and grant enrolled devices their topics there.")
@click.option("--keys", "keys_home", type=click.Path(path_type=Path), default=None,
              help="EDGEOPS_HOME holding keys/ and trust/root.json.")
@click.option("--public-url", default=None,
              help="URL devices use to reach this API (default http://LISTEN).")
@click.option("--device-broker", default=None,
              help="Broker URL written into enrolled agents' config (default --broker).")
@click.option("--require-blessing", is_flag=True, envvar="EDGEOPS_REQUIRE_BLESSING",
              help="Refuse deployments to hardware classes without a passing hardware test.")
@click.option("--mlflow-tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None,
              help="Tag each ended deployment's outcome on the MLflow model version its "
                   "bundle was built from (extra `mlflow`).")
@click.option("--tick", type=float, default=1.0, show_default=True,
              help="Seconds between rollout engine passes.")
def serve(db: str, listen: str, data_dir: Path, broker: str | None, broker_ca: Path | None,
          broker_cert: Path | None, broker_key: Path | None, broker_password_file: Path | None,
          keys_home: Path | None, public_url: str | None, device_broker: str | None,
          require_blessing: bool, mlflow_tracking_uri: str | None, tick: float) -> None:
    """Run the fleet manager: HTTP API, TUF repository, rollout engine, MQTT worker.

    \b
    Example:
      edgeops fleet serve --broker mqtt://127.0.0.1:1883 --db sqlite:///fleet.db \\
          --listen 127.0.0.1:8080 --data fleet-data
      edgeops fleet serve --broker mqtts://broker:8884 --broker-ca broker/ca.pem \\
          --broker-cert manager.crt --broker-key manager.key \\
          --broker-password-file manager.password --device-broker mqtts://broker:8883 \\
          --db postgresql://fleet@db/fleet
    """
    if (broker_cert is None) != (broker_key is None):
        raise UsageError("--broker-cert and --broker-key go together",
                         hint="pass both, from `edgeops fleet ca issue --manager`")
    from fleet.server import FleetServer, ServeOptions, announce

    server = FleetServer(ServeOptions(
        db=db, listen=listen, data=data_dir, broker=broker, broker_ca=broker_ca,
        broker_cert=broker_cert, broker_key=broker_key,
        broker_password_file=broker_password_file, keys_home=keys_home,
        public_url=public_url, device_broker_url=device_broker,
        require_blessing=require_blessing, tick_s=tick,
        mlflow_tracking_uri=mlflow_tracking_uri))
    server.serve(on_ready=announce)
