"""BentoML's model store and Bento store: where trained models and servable Bentos are kept.

The stores live under $BENTOML_HOME (default ~/bentoml). bentoml is imported inside each function
so that importing kennel stays fast for code that never touches the registry.

Building is not safe to run concurrently in one process: bentoml.bentos.build imports the service
by module name and changes the working directory and sys.path while it does; a lock serialises
builds within a process (separate processes, e.g. Dagster's, are independent).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import threading
from importlib.metadata import version
from pathlib import Path
from typing import Any, Mapping

from kennel.features import CARD_FILE, MODEL_FILE, SPEC_FILE, ModelCard
from kennel.serving import record_model
from kennel.spec import PROJECT_ROOT, load_spec

SERVICE_DIR = PROJECT_ROOT / "bentos"
SERVICE_FILE = "service.py"
SERVICE_MODULE = "service"
# Written into each Bento's source folder; bentos/service.py reads it at import to learn which
# model it serves, so a Bento always serves the exact model it was built for (never :latest).
MODEL_TAG_FILE = "kennel_model.json"
MODEL_FILES = (MODEL_FILE, CARD_FILE, SPEC_FILE)
# Pinned to the versions installed here so a Bento serves with what it was tested with.
RUNTIME_DISTRIBUTIONS = ("xgboost", "pandas", "pyarrow", "pydantic", "PyYAML", "numpy")

_LABEL_MAX_LEN = 63
_LABEL_DISALLOWED = re.compile(r"[^a-z0-9._-]+")
_LABEL_UNTRIMMED = re.compile(r"^[^a-z0-9]+|[^a-z0-9]+$")
_BUILD_LOCK = threading.Lock()


def sanitize_label(text: str) -> str:
    """Make `text` a valid label key or value.

    The rule is BentoML's tag rule, which is also Kubernetes' label-value rule that BentoCloud
    deployments enforce (local BentoML only requires strings): at most 63 characters of
    [a-z0-9._-], beginning and ending with a letter or digit. So: lower-case, replace each run of
    other characters with "-", trim non-alphanumerics from both ends, cut to 63 and trim again.
    E.g. "team:ML Platform" → "team-ml-platform". The result may be empty (a valid empty value).
    """
    value = _LABEL_UNTRIMMED.sub("", _LABEL_DISALLOWED.sub("-", str(text).lower()))
    return _LABEL_UNTRIMMED.sub("", value[:_LABEL_MAX_LEN])


def sanitize_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Sanitize keys and values; raises ValueError if a key becomes empty or two keys collide."""
    clean: dict[str, str] = {}
    for key, value in labels.items():
        clean_key = sanitize_label(key)
        if not clean_key:
            raise ValueError(f"label key {key!r} has no letters or digits")
        if clean_key in clean:
            raise ValueError(f"label keys collide after sanitizing: {key!r} becomes {clean_key!r}, already used")
        clean[clean_key] = sanitize_label(value)
    return clean


def _check_model_folder(model_dir: Path) -> ModelCard:
    """Fail before anything is stored if the folder could not be served."""
    missing = [name for name in MODEL_FILES if not (model_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"model folder {model_dir} lacks {', '.join(missing)}")
    card = ModelCard.load(model_dir)
    record_model(load_spec(model_dir / SPEC_FILE), card)  # raises if card and spec disagree
    return card


def save_model(model_dir: Path, *, name: str, labels: Mapping[str, str], metadata: Mapping[str, Any]) -> str:
    """Copy a trained model folder (model.ubj, model_card.json, spec.yaml) into the model store.

    Files are copied as they are (XGBoost's own format; nothing pickled). The card's dataset, spec
    fingerprint and threshold are added to the metadata (entries in `metadata` win). Labels are
    sanitized with `sanitize_label`. Returns the new model's tag, "name:version".
    """
    import bentoml

    model_dir = Path(model_dir)
    card = _check_model_folder(model_dir)
    facts = {"dataset": card.dataset, "spec_fingerprint": card.spec_fingerprint, "threshold": card.threshold}
    with bentoml.models.create(name, labels=sanitize_labels(labels), metadata={**facts, **metadata}) as model:
        for file_name in MODEL_FILES:
            shutil.copy2(model_dir / file_name, model.path_of(file_name))
    return str(model.tag)


def load_model_folder(tag: str) -> Path:
    """The model store folder of `tag` (holds model.ubj, model_card.json, spec.yaml)."""
    import bentoml

    return Path(bentoml.models.get(tag).path)


def _python_files_only(folder: str, names: list[str]) -> list[str]:
    """shutil.copytree ignore-callback: keep sub-packages and .py files, drop everything else."""
    return [n for n in names
            if n == "__pycache__" or not (n.endswith(".py") or (Path(folder) / n).is_dir())]


def build_bento(model_tag: str, *, bento_name: str, labels: Mapping[str, str]) -> str:
    """Build a Bento that serves exactly `model_tag` with bentos/service.py; returns the Bento tag.

    The build context is a temporary folder holding service.py, the kennel package (Python files
    only) and MODEL_TAG_FILE with the model's full tag ("name:latest" is resolved first). The
    service declares the model as a BentoModel, so the Bento records it as its model. Labels are
    sanitized with `sanitize_label`; runtime packages are pinned to the versions installed here.
    """
    import bentoml

    exact_tag = str(bentoml.models.get(model_tag).tag)
    with tempfile.TemporaryDirectory(prefix="kennel-bento-") as tmp:
        ctx = Path(tmp)
        shutil.copy2(SERVICE_DIR / SERVICE_FILE, ctx / SERVICE_FILE)
        shutil.copytree(Path(__file__).resolve().parent, ctx / "kennel", ignore=_python_files_only)
        (ctx / MODEL_TAG_FILE).write_text(json.dumps({"model_tag": exact_tag}))
        with _BUILD_LOCK:
            # bentoml imports the service by module name; a module cached by an earlier build
            # would still carry that build's model, and after the build its folder is gone.
            sys.modules.pop(SERVICE_MODULE, None)
            try:
                bento = bentoml.bentos.build(
                    service=f"{SERVICE_MODULE}:KennelService",
                    name=bento_name,
                    labels=sanitize_labels(labels),
                    description=f"Kennel classifier serving model {exact_tag}",
                    build_ctx=str(ctx),
                    include=[SERVICE_FILE, MODEL_TAG_FILE, "kennel/**/*.py"],
                    python={
                        "packages": [f"{dist}=={version(dist)}" for dist in RUNTIME_DISTRIBUTIONS],
                        "lock_packages": False,
                    },
                )
            finally:
                sys.modules.pop(SERVICE_MODULE, None)
    return str(bento.tag)
