"""The lake: one root folder holding every table Kennel writes, laid out by data set and day."""

from __future__ import annotations

from pathlib import Path

import dagster as dg


class LakeResource(dg.ConfigurableResource):
    """Local lake folder (the embedded default). Layout under `root`:

    raw/<dataset>/<day>/…                    landed files, copied unchanged
    clean/<dataset>/date=<day>/part-00000.parquet
    quarantine/<dataset>/date=<day>/part-00000.parquet
    quality/<dataset>/<day>.json             per-partition data-quality record
    warehouse.duckdb                         dbt feature models
    training/<dataset>/{train,validation,test}.parquet
    models/<dataset>/<run id>/               model.ubj, model_card.json, spec.yaml, evaluation.json
    _staging/                                half-written outputs before their atomic swap
    """

    root: str

    def path(self, *parts: str) -> Path:
        if self.root.startswith("s3://"):
            raise NotImplementedError(
                "an s3:// lake root is not supported yet; set KENNEL_LAKE_ROOT to a local folder"
            )
        return Path(self.root).resolve().joinpath(*parts)

    def raw_dir(self, dataset: str, day: str) -> Path:
        return self.path("raw", dataset, day)

    def clean_dir(self, dataset: str, day: str) -> Path:
        return self.path("clean", dataset, f"date={day}")

    def clean_glob(self, dataset: str) -> str:
        return str(self.path("clean", dataset)) + "/*/*.parquet"

    def quarantine_dir(self, dataset: str, day: str) -> Path:
        return self.path("quarantine", dataset, f"date={day}")

    def quality_record(self, dataset: str, day: str) -> Path:
        return self.path("quality", dataset, f"{day}.json")

    def warehouse(self) -> Path:
        return self.path("warehouse.duckdb")

    def training_dir(self, dataset: str) -> Path:
        return self.path("training", dataset)

    def model_dir(self, dataset: str, run_id: str) -> Path:
        return self.path("models", dataset, run_id)

    def staging(self) -> Path:
        return self.path("_staging")
