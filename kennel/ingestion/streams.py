"""Stream transports: a source that is a message stream (Kafka today) is landed as daily JSON Lines files
in the spec's landing folder, which ingestion then reads like any other landed files.

A transport is a module with a function of the `Land` shape; the orchestrator gives each one a landing
asset, a job and a schedule (assets/ingestion.py, jobs.py) and a resource (resources/), registered once
in resources/__init__.py. Every transport reports what it landed as a `LandingReport`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kennel.spec import DatasetSpec


@dataclass
class LandingReport:
    """What one landing run wrote."""

    messages: int = 0
    files: list[Path] = field(default_factory=list)
    per_day: dict[str, int] = field(default_factory=dict)  # day → messages landed in that day's files
    positions: dict[str, int] = field(default_factory=dict)  # stream partition → where the next run starts


class Land(Protocol):
    """Land the messages available now (at most `max_messages`) into `landing_dir`; no message is lost or
    landed twice whatever point a run is killed at. `connection` holds the transport's client settings."""

    def __call__(
        self, spec: DatasetSpec, connection: dict[str, Any], landing_dir: str | Path, *, max_messages: int
    ) -> LandingReport: ...
