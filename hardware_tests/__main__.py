"""``python -m hardware_tests --bundle FILE ...``: run the installed suite on this device.

On a device the suite is an installed package, not a checkout, so there is no directory to
name on the pytest command line; this finds it and passes every argument through.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


def main(argv: list[str] | None = None) -> int:
    here = str(Path(__file__).parent)
    args = list(sys.argv[1:] if argv is None else argv)
    return int(pytest.main([here, "-p", "no:cacheprovider", *args]))


if __name__ == "__main__":
    sys.exit(main())
