"""The one adapter between edgeops and an MLflow tracking server (extra ``mlflow``).

Resolving and fetching are split so a build can pin what it resolved: :meth:`resolve` turns a
URI into a model version (name, version, run, commit, the digest pinned by an earlier build),
:meth:`fetch` downloads into a scratch directory, finds the ONNX file (the ``onnx`` flavour, or
one ``.onnx`` among the files), and refuses bytes whose digest differs from the pin. Every
MLflow failure becomes one edgeops error: :class:`RegistryError` (the registry's content is not
what the command needs; exit 1), :class:`edgeops.errors.TransportError` (server unreachable)
or :class:`edgeops.errors.UsageError` (no tracking URI).
"""

from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from edgeops.errors import BadContentError, ConfigError, TransportError, UsageError, VerificationError
from edgeops.registry.results import TAG_SOURCE_SHA256, deployment_tag
from edgeops.registry.uri import RegistryUri, parse_registry_uri

__all__ = ["FetchedModel", "MlflowRegistry", "RegistryError", "ResolvedModel", "onnx_digest",
           "public_uri", "sha256_file"]

HEALTH_TIMEOUT_S = 5.0              # the reachability probe before any MLflow call
REQUEST_TIMEOUT_S = 60              # one MLflow REST call
REQUEST_MAX_RETRIES = 2             # MLflow's default (7, exponential) waits minutes on a dead server
_EXTRA_HINT = "install the extra: pip install 'edgeops[mlflow]'"


class RegistryError(BadContentError):
    """The registry holds something other than what the command needs (no alias, no ONNX)."""

    default_hint = "check the name, version or alias in the MLflow UI (or `mlflow models`)"


def public_uri(uri: str) -> str:
    """The tracking URI without credentials, fit for a signed manifest and for logs."""
    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return uri


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def onnx_digest(path: Path) -> str:
    """SHA-256 over the model file, then its external data files in order of first reference:
    the same digest the build signs as ``source.sha256`` (converters.model_check), so the pin
    on a model version and the bundle's source digest can be compared directly."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    seen: dict[str, None] = {}
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            seen.update({e.value: None for e in t.external_data if e.key == "location"})
    h = hashlib.sha256()
    root = path.parent.resolve()
    for p in [path, *(path.parent / loc for loc in seen)]:
        if not p.resolve().is_relative_to(root):
            raise RegistryError(f"{path.name}: external data '{p.name}' lies outside the model",
                                hint="log the model with its data files beside it")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ResolvedModel:
    """What a URI pointed at when it was resolved."""

    uri: RegistryUri
    download_uri: str                 # models:/NAME/VERSION (pinned) or runs:/ID/PATH
    name: str | None
    version: str | None
    alias: str | None
    run_id: str | None
    experiment_id: str | None
    git_commit: str | None
    pinned_sha256: str | None         # TAG_SOURCE_SHA256 on the version, if an earlier build set it


@dataclass(frozen=True)
class FetchedModel:
    resolved: ResolvedModel
    path: Path                        # the .onnx file inside the scratch directory
    sha256: str


def _import_mlflow() -> Any:
    try:
        import mlflow
        from mlflow.tracking import MlflowClient  # noqa: F401 - fail here, not mid-build
    except ImportError:
        raise ConfigError("building from an MLflow registry needs the MLflow client",
                          hint=_EXTRA_HINT) from None
    return mlflow


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "error_code", ""))


def _first_line(exc: Exception) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class MlflowRegistry:
    """A tracking server (``MLFLOW_TRACKING_URI``), checked reachable on construction; the
    model registry is ``MLFLOW_REGISTRY_URI`` when set (as in MLflow), else the same server."""

    def __init__(self, tracking_uri: str | None = None, *, registry_uri: str | None = None,
                 health_timeout_s: float = HEALTH_TIMEOUT_S) -> None:
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise UsageError("no MLflow tracking server given",
                             hint="set MLFLOW_TRACKING_URI (e.g. http://127.0.0.1:5000)")
        self.mlflow = _import_mlflow()
        # MLflow reads these per request; bounded so a dead server fails in seconds, not minutes.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(REQUEST_MAX_RETRIES))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(REQUEST_TIMEOUT_S))
        # edgeops prints its own progress; MLflow's tqdm bars would break one-line errors.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.tracking_uri = uri
        self.public_uri = public_uri(uri)
        if uri.startswith(("http://", "https://")):
            self._probe(health_timeout_s)
        from mlflow.tracking import MlflowClient

        self.registry_uri = registry_uri or os.environ.get("MLFLOW_REGISTRY_URI") or uri
        self.client: Any = MlflowClient(tracking_uri=uri, registry_uri=self.registry_uri)

    def _probe(self, timeout_s: float) -> None:
        url = self.tracking_uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - http(s) only
                resp.read(64)
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):   # a server that wants credentials is still a server
                return
            raise TransportError(f"MLflow tracking server at {self.public_uri} answered "
                                 f"HTTP {exc.code} on /health") from None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TransportError(f"MLflow tracking server at {self.public_uri} is unreachable "
                                 f"({reason})",
                                 hint="start it (mlflow server ...) or fix MLFLOW_TRACKING_URI"
                                 ) from None

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """One MLflow call; MLflow's exceptions become ours with the server's first line."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            code = _error_code(exc)
            if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                raise RegistryError(f"{what}: {_first_line(exc)}") from None
            if type(exc).__module__.startswith("mlflow"):
                raise TransportError(f"{what}: {_first_line(exc)}") from None
            raise TransportError(f"{what}: {type(exc).__name__}: {_first_line(exc)}") from None

    # -- resolving ---------------------------------------------------------------------------
    def resolve(self, uri: RegistryUri | str) -> ResolvedModel:
        ref = parse_registry_uri(uri) if isinstance(uri, str) else uri
        if ref.kind == "run":
            assert ref.run_id is not None
            run = self._call(f"run {ref.run_id}", self.client.get_run, ref.run_id)
            return ResolvedModel(ref, ref.text, None, None, None, ref.run_id,
                                 run.info.experiment_id,
                                 run.data.tags.get("mlflow.source.git.commit"), None)
        assert ref.name is not None
        if ref.kind == "alias":
            assert ref.alias is not None
            mv = self._by_alias(ref.name, ref.alias)
        else:
            mv = self._call(f"model {ref.name} version {ref.version}",
                            self.client.get_model_version, ref.name, ref.version)
        run_id = mv.run_id or None
        experiment_id = commit = None
        if run_id:
            run = self._call(f"run {run_id}", self.client.get_run, run_id)
            experiment_id = run.info.experiment_id
            commit = run.data.tags.get("mlflow.source.git.commit")
        return ResolvedModel(ref, f"models:/{mv.name}/{mv.version}", mv.name, str(mv.version),
                             ref.alias, run_id, experiment_id, commit,
                             (mv.tags or {}).get(TAG_SOURCE_SHA256))

    def _by_alias(self, name: str, alias: str) -> Any:
        try:
            return self._call(f"alias {name}@{alias}", self.client.get_model_version_by_alias,
                              name, alias)
        except RegistryError:
            pass    # say which aliases exist (or that the model itself is unknown)
        model = self._call(f"registered model {name}", self.client.get_registered_model, name)
        known = ", ".join(f"@{a}" for a in sorted(model.aliases or {})) or "none"
        raise RegistryError(f"registered model {name} has no alias @{alias}",
                            hint=f"aliases it has: {known}; set one with "
                                 f"MlflowClient().set_registered_model_alias('{name}', "
                                 f"'{alias}', VERSION)")

    # -- downloading -------------------------------------------------------------------------
    def fetch(self, resolved: ResolvedModel, dest: Path) -> FetchedModel:
        """Download into ``dest`` (a scratch directory), find the ONNX file, check its digest."""
        dest.mkdir(parents=True, exist_ok=True)
        source = resolved.download_uri
        if resolved.name and resolved.version:
            # Where this client's registry says the files are (a logged model, a run path),
            # so the download never falls back on a process-wide registry URI.
            source = self._call(f"model {resolved.name} version {resolved.version}",
                                self.client.get_model_version_download_uri, resolved.name,
                                resolved.version)
        local = Path(self._call(f"download {resolved.download_uri}",
                                self.mlflow.artifacts.download_artifacts,
                                artifact_uri=source, dst_path=str(dest),
                                tracking_uri=self.tracking_uri))
        onnx_path = find_onnx(local, resolved.uri.text)
        try:
            digest = onnx_digest(onnx_path)
        except RegistryError:
            raise
        except Exception:    # not parsable ONNX: the build's model check names the problem
            digest = sha256_file(onnx_path)
        pinned = resolved.pinned_sha256
        if resolved.name and resolved.version:
            # Read the pin again after the download: a build that tagged the version meanwhile
            # (or an operator's edit) must not let different bytes through unnoticed.
            mv = self._call(f"model {resolved.name} version {resolved.version}",
                            self.client.get_model_version, resolved.name, resolved.version)
            pinned = (mv.tags or {}).get(TAG_SOURCE_SHA256) or pinned
        if pinned and pinned != digest:
            raise VerificationError(
                f"{resolved.download_uri} changed: its ONNX file is sha256 {digest[:12]}, but "
                f"the version was pinned at {pinned[:12]} (tag {TAG_SOURCE_SHA256})",
                hint="register the new model as a new version instead of overwriting artifacts")
        return FetchedModel(resolved, onnx_path, digest)

    def fetch_data(self, uri: str, dest: Path) -> Path:
        """A calibration or validation file (or directory) logged as a run artifact."""
        ref = parse_registry_uri(uri)
        if ref.kind != "run" or not ref.path:
            raise UsageError(f"data URI '{uri}' must name a run artifact",
                             hint="use runs:/RUN_ID/path/to/data.npz")
        dest.mkdir(parents=True, exist_ok=True)
        return Path(self._call(f"download {uri}", self.mlflow.artifacts.download_artifacts,
                               artifact_uri=uri, dst_path=str(dest),
                               tracking_uri=self.tracking_uri))

    # -- logging back --------------------------------------------------------------------------
    def log_build(self, run_id: str | None, name: str | None, version: str | None,
                  artifacts: list[Path], artifact_dir: str, metrics: Mapping[str, float],
                  tags: Mapping[str, str]) -> None:
        """Reports and metrics to the run; tags to the model version (where there is one)."""
        from mlflow.entities import Metric

        if run_id:
            now = int(time.time() * 1000)
            for path in artifacts:
                self._call(f"log {path.name} to run {run_id}", self.client.log_artifact,
                           run_id, str(path), artifact_dir)
            self._call(f"log metrics to run {run_id}", self.client.log_batch, run_id,
                       metrics=[Metric(k, v, now, 0) for k, v in sorted(metrics.items())])
            for k, v in sorted(tags.items()):
                self._call(f"tag run {run_id}", self.client.set_tag, run_id, k, v)
        if name and version:
            for k, v in sorted(tags.items()):
                self._call(f"tag model {name} version {version}",
                           self.client.set_model_version_tag, name, version, k, v)

    def tag_deployment(self, name: str, version: str, deployment_id: str, status: str,
                       reason: str | None) -> None:
        key, value = deployment_tag(deployment_id, status, reason)
        self._call(f"tag model {name} version {version}", self.client.set_model_version_tag,
                   name, version, key, value)


def find_onnx(local: Path, uri: str) -> Path:
    """The ONNX file of a downloaded model: a plain file, the onnx flavour, or one .onnx file."""
    if local.is_file():
        if local.suffix == ".onnx":
            return local
        raise RegistryError(f"{uri} is a {local.suffix or 'plain'} file, not an ONNX model",
                            hint="point at the .onnx artifact or at a model logged with "
                                 "mlflow.onnx.log_model")
    mlmodel = local / "MLmodel"
    flavours: list[str] = []
    if mlmodel.is_file():
        from mlflow.models import Model

        model = Model.load(str(mlmodel))
        flavours = sorted(model.flavors)
        data = (model.flavors.get("onnx") or {}).get("data")
        if isinstance(data, str) and (local / data).is_file():
            return local / data
    found = sorted(p for p in local.rglob("*.onnx") if p.is_file())
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        names = ", ".join(str(p.relative_to(local)) for p in found)
        raise RegistryError(f"{uri} holds several .onnx files ({names}) and no ONNX flavour",
                            hint="log it with mlflow.onnx.log_model, or name the file: "
                                 "runs:/RUN_ID/path/model.onnx")
    have = f" (it has {', '.join(flavours)})" if flavours else ""
    raise RegistryError(f"{uri} has no ONNX flavour{have}",
                        hint="export it to ONNX and log it with mlflow.onnx.log_model(model, "
                             "name='model'), or log the .onnx file with mlflow.log_artifact")
