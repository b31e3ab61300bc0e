"""Kafka consumer settings for a spec's Kafka source, and the landing of its topic."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from kennel.ingestion.kafka import consumer_config, drain_topic
from kennel.ingestion.streams import LandingReport
from kennel.spec import DatasetSpec
from resources.streams import StreamResource


class KafkaResource(StreamResource):
    """Where the spec's topic is consumed from; bootstrap_servers here overrides the spec's (per environment)."""

    bootstrap_servers: str = Field(default="", description="Overrides the spec's kafka.bootstrap_servers")

    def land(self, spec: DatasetSpec, landing_dir: Path) -> LandingReport:
        return drain_topic(
            spec, consumer_config(spec, self.bootstrap_servers), landing_dir, max_messages=self.max_messages_per_run
        )
