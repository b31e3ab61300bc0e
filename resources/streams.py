"""The resource every stream transport's landing asset uses (kennel.ingestion.streams)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from kennel.ingestion.streams import LandingReport
from kennel.spec import DatasetSpec


class StreamResource(dg.ConfigurableResource):
    """Where a stream is consumed from, per environment; subclasses land it with their transport."""

    max_messages_per_run: int = Field(default=100_000, gt=0, description="Messages one landing run lands at most")

    def land(self, spec: DatasetSpec, landing_dir: Path) -> LandingReport:
        raise NotImplementedError(f"{type(self).__name__} does not land a stream")
