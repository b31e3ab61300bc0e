"""The BentoML model store and Bento builds (BENTOML_HOME is project-local by default)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import dagster as dg


class ModelStoreResource(dg.ConfigurableResource):
    """Where trained models and Bentos live. `home` becomes BENTOML_HOME for this process."""

    home: str

    def activate(self) -> None:
        """Point BentoML at `home`; must run before bentoml is first imported in the process."""
        home = str(Path(self.home).resolve())
        current = os.environ.get("BENTOML_HOME")
        # BentoML binds its stores on first use: switching afterwards would silently use the old one.
        if "bentoml" in sys.modules and current and str(Path(current).resolve()) != home:
            raise RuntimeError(f"bentoml is already bound to BENTOML_HOME={current}; cannot switch to {home}")
        os.environ["BENTOML_HOME"] = home
        os.environ["BENTOML_DO_NOT_TRACK"] = "True"
        Path(home).mkdir(parents=True, exist_ok=True)

    def save_model(self, model_dir: Path, *, name: str, labels: dict[str, str], metadata: dict) -> str:
        self.activate()
        from kennel.serving.model_store import save_model

        return save_model(model_dir, name=name, labels=labels, metadata=metadata)

    def model_folder(self, tag: str) -> Path:
        """The store's folder of model `tag` (a model folder kennel.model loads)."""
        self.activate()
        from kennel.serving.model_store import load_model_folder

        return load_model_folder(tag)
