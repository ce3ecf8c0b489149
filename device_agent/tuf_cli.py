"""``edgeops-tuf-client``: the agent's TUF update client behind tuf-conformance's client CLI.

Why this module exists: python-tuf's ``tuf-conformance`` suite tests a TUF client through a small
command-line protocol (its CLIENT-CLI.md: ``init``, ``refresh``, ``download``). This executable
speaks that protocol with exactly what a device runs for an HTTP update: :class:`TufClient`,
its :class:`HttpFetcher` and the ngclient limits of :class:`DownloadLimits`. Only the directory
layout differs (the suite names the metadata and target directories), so a conformance run
tests the agent's configuration, not a look-alike.

    edgeops-tuf-client --metadata-dir DIR init ROOT.json
    edgeops-tuf-client --metadata-dir DIR --metadata-url URL refresh
    edgeops-tuf-client --metadata-dir DIR --metadata-url URL --target-name PATH \\
        --target-base-url URL --target-dir DIR download

Exit status 0 on success and 1 on any failure (the protocol's rule, usage errors included);
one line on stderr says why.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from device_agent.tuf_client import DownloadLimits
from device_agent.tuf_update import HttpFetcher, TufClient
from edgeops.errors import EdgeOpsError, UsageError
from edgeops.fsutil import atomic_write

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="edgeops-tuf-client",
                description="The edgeops agent's TUF client, for the tuf-conformance suite.")
    p.add_argument("--metadata-dir", required=True, type=Path,
                   help="Trusted metadata, non-versioned file names (root.json, ...).")
    p.add_argument("--metadata-url", help="Base URL of the repository's metadata.")
    p.add_argument("--target-name", help="TUF target path to download.")
    p.add_argument("--target-base-url", help="Base URL of the repository's targets.")
    p.add_argument("--target-dir", type=Path, help="Where verified targets are stored.")
    sub = p.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="Trust this root.json (no network).")
    init.add_argument("trusted_root", type=Path)
    sub.add_parser("refresh", help="Update the top-level metadata from the repository.")
    sub.add_parser("download", help="Refresh, then download and verify one target.")
    return p


def _client(args: argparse.Namespace, targets_url: str = "", targets_dir: Path | None = None
            ) -> TufClient:
    """The agent's HTTP client (fetcher, ngclient limits), on the suite's directories."""
    if not args.metadata_url:
        raise UsageError(f"{args.command} needs --metadata-url")
    limits = DownloadLimits()
    meta = args.metadata_dir
    return TufClient(meta / "root.json", meta, HttpFetcher(limits.http_timeout_s),
                     args.metadata_url, targets_url, limits, metadata_dir=meta,
                     targets_dir=targets_dir or meta / "targets")


def run(args: argparse.Namespace) -> str:
    """Carry out one command; returns what to print, raises EdgeOpsError on failure."""
    if args.command == "init":
        try:
            data = args.trusted_root.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read the trusted root {args.trusted_root}: {exc}") from None
        atomic_write(args.metadata_dir / "root.json", data)
        return f"initialized {args.metadata_dir} with {args.trusted_root}"
    if args.command == "refresh":
        _client(args).refresh()
        return f"refreshed metadata in {args.metadata_dir}"
    if not (args.target_name and args.target_base_url and args.target_dir):
        raise UsageError("download needs --target-name, --target-base-url and --target-dir")
    client = _client(args, args.target_base_url, args.target_dir)
    client.refresh()
    info = client.target_info(args.target_name)
    if info is None:
        raise UsageError(f"{args.target_name} is not a target of this repository")
    return f"downloaded {args.target_name} to {client.download(info)}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        print(run(args))
    except EdgeOpsError as exc:
        print(f"error: {exc.diagnostics()}", file=sys.stderr)
        return 1
    except OSError as exc:       # metadata or target directory not writable, and the like
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
