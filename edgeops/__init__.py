"""edgeops: compile trained ML models for edge hardware and ship them, signed, to fleets.

The shared core lives here: the signed bundle format (:mod:`edgeops.bundle`), keys
(:mod:`edgeops.keys`), configuration (:mod:`edgeops.config`) and the error tree
(:mod:`edgeops.errors`). The CLI in :mod:`edgeops.cli` is a thin shell over these.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
