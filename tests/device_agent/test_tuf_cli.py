"""``edgeops-tuf-client``: tuf-conformance's client CLI protocol (CLIENT-CLI.md), against a real
TUF repository (python-tuf metadata, real keys) served over HTTP on loopback.

What the suite observes, checked here: exit status (0 success, 1 any failure), the metadata the
client trusts in ``--metadata-dir`` (non-versioned names), the artifacts in ``--target-dir``, and
the HTTP requests it makes (none on ``init``; no second artifact request when cached).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from device_agent.tuf_cli import main
from edgeops.keys import KeyStore
from tests.edgeops.bundles import make_keystore
from tests.tuf_repo import HttpRepoServer, TufRepo

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return make_keystore(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def served(keys: KeyStore) -> Iterator[tuple[TufRepo, HttpRepoServer]]:
    repo = TufRepo(keys)
    repo.add_target("files/hello.txt", b"hello, device\n")
    repo.publish()
    server = HttpRepoServer(repo)
    try:
        yield repo, server
    finally:
        server.close()


class Client:
    """The suite's view: one metadata dir, one target dir, argv as CLIENT-CLI.md writes it."""

    def __init__(self, tmp: Path, server: HttpRepoServer) -> None:
        self.meta, self.targets = tmp / "metadata", tmp / "targets"
        self.meta.mkdir(parents=True)
        self.targets.mkdir()
        self.url = server.url

    def init(self, root: Path) -> int:
        return main(["--metadata-dir", str(self.meta), "init", str(root)])

    def refresh(self) -> int:
        return main(["--metadata-dir", str(self.meta), "--metadata-url",
                     f"{self.url}/tuf/metadata", "refresh"])

    def download(self, name: str) -> int:
        return main(["--metadata-dir", str(self.meta), "--metadata-url",
                     f"{self.url}/tuf/metadata", "--target-name", name, "--target-base-url",
                     f"{self.url}/tuf/targets", "--target-dir", str(self.targets), "download"])

    def trusted_version(self, role: str) -> int:
        return int(json.loads((self.meta / f"{role}.json").read_bytes())["signed"]["version"])

    def downloaded(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted(self.targets.rglob("*")) if p.is_file()]


@pytest.fixture
def client(served: tuple[TufRepo, HttpRepoServer], tmp_path: Path) -> Client:
    repo, server = served
    root = tmp_path / "initial_root.json"
    root.write_bytes(repo.root_bytes)
    c = Client(tmp_path, server)
    assert c.init(root) == 0
    return c


def test_init_trusts_the_root_without_any_request(served: tuple[TufRepo, HttpRepoServer],
                                                  client: Client) -> None:
    repo, server = served
    assert (client.meta / "root.json").read_bytes() == repo.root_bytes
    assert server.requests == []


def test_refresh_stores_top_level_metadata_under_unversioned_names(
        served: tuple[TufRepo, HttpRepoServer], client: Client) -> None:
    repo, server = served
    assert client.refresh() == 0
    names = sorted(p.name for p in client.meta.iterdir() if p.is_file())
    assert names == ["root.json", "snapshot.json", "targets.json", "timestamp.json"]
    assert client.trusted_version("targets") == repo.targets.signed.version
    repo.add_target("files/other.txt", b"x")
    repo.publish()
    assert client.refresh() == 0
    assert client.trusted_version("targets") == repo.targets.signed.version
    assert all(r.startswith("/tuf/metadata/") for r in server.requests)


def test_download_verifies_stores_and_caches(served: tuple[TufRepo, HttpRepoServer],
                                             client: Client) -> None:
    repo, server = served
    assert client.download("files/hello.txt") == 0
    assert client.downloaded() == [b"hello, device\n"]
    target_requests = [r for r in server.requests if r.startswith("/tuf/targets/")]
    assert len(target_requests) == 1 and target_requests[0].endswith(".hello.txt")
    assert client.download("files/hello.txt") == 0                 # cached: not fetched again
    assert [r for r in server.requests if r.startswith("/tuf/targets/")] == target_requests
    repo.add_target("files/hello.txt", b"hello again\n")            # new content, same path
    repo.publish()
    assert client.download("files/hello.txt") == 0
    assert client.downloaded() == [b"hello again\n"]                # same file name, replaced


def test_every_failure_exits_one(served: tuple[TufRepo, HttpRepoServer], client: Client,
                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo, server = served
    assert client.download("files/missing.txt") == 1
    assert "not a target" in capsys.readouterr().err
    server.overrides[f"/tuf/targets/{_hashed(repo, 'files/hello.txt')}"] = b"hello, attacker"
    assert client.download("files/hello.txt") == 1                  # length/hash mismatch
    assert client.downloaded() == []
    del server.overrides[f"/tuf/targets/{_hashed(repo, 'files/hello.txt')}"]
    repo.publish(timestamp_expires=datetime.now(UTC) - timedelta(hours=1))
    assert client.refresh() == 1
    assert "expired" in capsys.readouterr().err
    fresh = Client(tmp_path / "never-initialised", server)
    assert fresh.refresh() == 1                                     # no trusted root
    assert main(["--metadata-dir", str(fresh.meta), "refresh"]) == 1   # no --metadata-url
    with pytest.raises(SystemExit) as bad:
        main(["--metadata-dir", str(fresh.meta), "frobnicate"])
    assert bad.value.code == 1


def test_tampered_metadata_refresh_fails_and_keeps_the_trusted_copy(
        served: tuple[TufRepo, HttpRepoServer], client: Client) -> None:
    repo, _server = served
    assert client.refresh() == 0
    before = client.trusted_version("targets")
    repo.add_target("files/evil.txt", b"evil")
    repo.publish()
    name = f"{repo.targets.signed.version}.targets.json"
    repo.tamper(name, b"evil.txt", b"evi1.txt")
    assert client.refresh() == 1
    assert client.trusted_version("targets") == before


def _hashed(repo: TufRepo, path: str) -> str:
    tf = repo.targets.signed.targets[path]
    d, _, base = path.rpartition("/")
    return f"{d}/{tf.hashes['sha256']}.{base}"


def test_the_executable_is_declared_and_runs_as_a_process(
        served: tuple[TufRepo, HttpRepoServer], tmp_path: Path) -> None:
    """pyproject installs it as ``edgeops-tuf-client``; the suite runs it as a subprocess."""
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["edgeops-tuf-client"] == "device_agent.tuf_cli:main"
    repo, server = served
    root = tmp_path / "root.json"
    root.write_bytes(repo.root_bytes)
    c = Client(tmp_path, server)
    exe = [sys.executable, "-m", "device_agent.tuf_cli", "--metadata-dir", str(c.meta)]
    url = ["--metadata-url", f"{server.url}/tuf/metadata"]
    for argv, code in ((["init", str(root)], 0), ([*url, "refresh"], 0),
                       ([*url, "--target-name", "files/hello.txt", "--target-base-url",
                         f"{server.url}/tuf/targets", "--target-dir", str(c.targets),
                         "download"], 0),
                       ([*url, "--target-name", "nope", "--target-base-url",
                         f"{server.url}/tuf/targets", "--target-dir", str(c.targets),
                         "download"], 1)):
        r = subprocess.run([*exe, *argv], capture_output=True, text=True, timeout=60,
                           cwd=REPO_ROOT)
        assert r.returncode == code, r.stderr
        assert "Traceback" not in r.stderr
    assert c.downloaded() == [b"hello, device\n"]
