"""BentoML's model store and Bento store: where trained models and servable Bentos are kept.

The stores live under $BENTOML_HOME (the project's .kennel/bentoml by default, DEFAULT_BENTOML_HOME).
bentoml is imported inside each function so that importing kennel stays fast for code that never
touches the stores. A Bento ships bentos/service.py and only the kennel modules it imports
(`serving_modules`), not the pipeline.

Building is not safe to run concurrently in one process: bentoml.bentos.build imports the service
by module name and changes the working directory and sys.path while it does; a lock serialises
builds within a process (separate processes, e.g. Dagster's, are independent).
"""

from __future__ import annotations

import ast
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kennel.lake import Lake
from kennel.model import (
    CARD_FILE,
    CHECKSUMS_FILE,
    MODEL_FILE,
    RUNTIME_DISTRIBUTIONS,
    SPEC_FILE,
    ModelCard,
    verify_checksums,
)
from kennel.serving.api import record_model
from kennel.spec import PROJECT_ROOT, load_spec

DEFAULT_BENTOML_HOME = PROJECT_ROOT / ".kennel" / "bentoml"
SERVICE_DIR = PROJECT_ROOT / "bentos"
SERVICE_FILE = "service.py"
SERVICE_MODULE = "service"
KENNEL_DIR = Path(__file__).resolve().parents[1]
# Written into each Bento's source folder; bentos/service.py reads it at import to learn which
# model it serves, so a Bento always serves the exact model it was built for (never :latest).
BENTO_MANIFEST = "kennel_model.json"
# The champion's HTML model card, when a Bento carries one (next to service.py; GET /model_card).
MODEL_CARD_FILE = "model_card.html"
MODEL_FILES = (MODEL_FILE, CARD_FILE, SPEC_FILE)
# Pinned to the versions installed here so a Bento serves with what it was tested with.
SERVING_DISTRIBUTIONS = (*RUNTIME_DISTRIBUTIONS, "pandas", "pyarrow", "pydantic", "PyYAML", "numpy")


class BentoManifest(BaseModel):
    """What a Bento serves and, unless KENNEL_LAKE_ROOT says otherwise, where it logs its predictions:
    the lake of the project that built it, so the monitoring of that project reads them."""

    model_tag: str
    lake_root: str
    # A challenger served in shadow: scored beside the champion on every request, never answering.
    shadow_model_tag: str | None = None


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
    """Fail before anything is stored if the folder could not be served (ModelIntegrityError for a
    file that differs from the folder's checksum manifest)."""
    missing = [name for name in MODEL_FILES if not (model_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"model folder {model_dir} lacks {', '.join(missing)}")
    verify_checksums(model_dir)
    card = ModelCard.load(model_dir)
    record_model(load_spec(model_dir / SPEC_FILE), card)  # raises if card and spec disagree
    return card


def save_model(model_dir: Path, *, name: str, labels: Mapping[str, str], metadata: Mapping[str, Any]) -> str:
    """Copy a trained model folder (model.ubj, model_card.json, spec.yaml and checksums.json) into the
    model store.

    Files are verified against the folder's checksums, then copied as they are (XGBoost's own format;
    nothing pickled), the checksums with them, so the stored copy is checked wherever it is loaded. A
    folder saved before models carried checksums is stored without them. The card's dataset, spec
    fingerprint and threshold are added to the metadata (entries in `metadata` win). Labels are
    sanitized with `sanitize_label`. Returns the new model's tag, "name:version".
    """
    import bentoml

    model_dir = Path(model_dir)
    card = _check_model_folder(model_dir)
    facts = {"dataset": card.dataset, "spec_fingerprint": card.spec_fingerprint, "threshold": card.threshold}
    with bentoml.models.create(name, labels=sanitize_labels(labels), metadata={**facts, **metadata}) as model:
        for file_name in (*MODEL_FILES, CHECKSUMS_FILE):
            if (model_dir / file_name).is_file():
                shutil.copy2(model_dir / file_name, model.path_of(file_name))
        verify_checksums(model.path)  # the copy, before the store commits it
    return str(model.tag)


def load_model_folder(tag: str) -> Path:
    """The model store folder of `tag` (holds model.ubj, model_card.json, spec.yaml, checksums.json),
    once its files match their checksums (ModelIntegrityError otherwise)."""
    import bentoml

    folder = Path(bentoml.models.get(tag).path)
    verify_checksums(folder)
    return folder


def _module_files(dotted: str) -> list[Path]:
    """The files importing `dotted` (a kennel module or package) executes: each package's __init__ on
    the way, then the module itself."""
    parts = dotted.split(".")[1:]
    files = [KENNEL_DIR.joinpath(*parts[:i], "__init__.py") for i in range(len(parts) + 1)]
    files.append(KENNEL_DIR.joinpath(*parts).with_suffix(".py"))
    return [f for f in files if f.is_file()]


def serving_modules(entry: Path = SERVICE_DIR / SERVICE_FILE) -> list[Path]:
    """The kennel files `entry` imports, directly or through each other, including imports inside
    functions: what a Bento must ship, and nothing of ingestion, training or monitoring."""
    found: set[Path] = set()
    todo = [entry]
    while todo:
        tree = ast.parse(todo.pop().read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for name in names:
                if name == "kennel" or name.startswith("kennel."):
                    new = [f for f in _module_files(name) if f not in found]
                    found.update(new)
                    todo.extend(new)
    return sorted(found)


def build_bento(
    model_tag: str,
    *,
    bento_name: str,
    labels: Mapping[str, str],
    lake: Lake,
    shadow_model_tag: str | None = None,
    extra_files: Mapping[str, Path] = {},
) -> str:
    """Build a Bento that serves exactly `model_tag` with bentos/service.py; returns the Bento tag.

    The build context is a temporary folder holding service.py, the kennel modules it imports
    (`serving_modules`), BENTO_MANIFEST with the model's full tag ("name:latest" is resolved
    first), the shadow challenger's full tag if any, and the lake it logs to, and `extra_files`
    (name in the Bento → file here, e.g. "model_card.html") next to service.py. The service declares
    the model (and the challenger) as BentoModels, so the Bento records them as its models. Labels
    are sanitized with `sanitize_label`; runtime packages are pinned to the versions installed here.
    """
    import bentoml

    exact_tag = str(bentoml.models.get(model_tag).tag)
    exact_shadow = str(bentoml.models.get(shadow_model_tag).tag) if shadow_model_tag else None
    reserved = {SERVICE_FILE, BENTO_MANIFEST}
    for name in extra_files:
        if Path(name).name != name or name in reserved or name.startswith("."):
            raise ValueError(f"extra file name {name!r}: a plain file name other than {sorted(reserved)} expected")
    description = f"Kennel classifier serving model {exact_tag}"
    if exact_shadow:
        description += f", with challenger {exact_shadow} in shadow"
    with tempfile.TemporaryDirectory(prefix="kennel-bento-") as tmp:
        ctx = Path(tmp)
        shutil.copy2(SERVICE_DIR / SERVICE_FILE, ctx / SERVICE_FILE)
        for module in serving_modules():
            target = ctx / "kennel" / module.relative_to(KENNEL_DIR)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(module, target)
        for name, source in extra_files.items():
            shutil.copy2(source, ctx / name)
        manifest = BentoManifest(model_tag=exact_tag, lake_root=str(lake.root), shadow_model_tag=exact_shadow)
        (ctx / BENTO_MANIFEST).write_text(manifest.model_dump_json())
        with _BUILD_LOCK:
            # bentoml imports the service by module name; a module cached by an earlier build
            # would still carry that build's model, and after the build its folder is gone.
            sys.modules.pop(SERVICE_MODULE, None)
            try:
                bento = bentoml.bentos.build(
                    service=f"{SERVICE_MODULE}:KennelService",
                    name=bento_name,
                    labels=sanitize_labels(labels),
                    description=description,
                    build_ctx=str(ctx),
                    include=[SERVICE_FILE, BENTO_MANIFEST, "kennel/**/*.py", *extra_files],
                    python={
                        "packages": [f"{dist}=={version(dist)}" for dist in SERVING_DISTRIBUTIONS],
                        "lock_packages": False,
                    },
                )
            finally:
                sys.modules.pop(SERVICE_MODULE, None)
    return str(bento.tag)
