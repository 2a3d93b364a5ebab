"""Packer CLI: machine-readable output parsing and a streaming, signal-aware runner (no Airflow)."""

from bakery.packer.machine_readable import Artifact, BuildError, Event, MachineReadableParser, parse_line
from bakery.packer.runner import Masker, PackerError, PackerResult, PackerRunner

__all__ = [
    "Artifact",
    "BuildError",
    "Event",
    "MachineReadableParser",
    "Masker",
    "PackerError",
    "PackerResult",
    "PackerRunner",
    "parse_line",
]
