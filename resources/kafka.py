"""Kafka consumer settings for a spec's Kafka source."""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import Field

from kennel.kafka_ingest import consumer_config
from kennel.spec import DatasetSpec


class KafkaResource(dg.ConfigurableResource):
    """Where the spec's topic is consumed from; bootstrap_servers here overrides the spec's (per environment)."""

    bootstrap_servers: str = Field(default="", description="Overrides the spec's kafka.bootstrap_servers")
    max_messages_per_run: int = Field(default=100_000, gt=0, description="Messages one kafka_landing run lands at most")

    def consumer_config(self, spec: DatasetSpec) -> dict[str, Any]:
        return consumer_config(spec, self.bootstrap_servers)
