"""A model file changed after it was saved is refused by its checksum wherever it is loaded: Model.load,
the model store and the promotion gate. A model already in memory keeps scoring."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kennel.model import CARD_FILE, CHECKSUMS_FILE, MODEL_FILE, SPEC_FILE, Model, ModelCard, ModelIntegrityError
from kennel.spec import DEFAULT_SPEC_PATH, load_spec
from kennel.training.config import GateConfig, TrainConfig
from kennel.training.gate import Candidate, decide
from kennel.training.trainer import train_model
from tests.training_data import training_frame


@pytest.fixture(scope="module")
def spec():
    return load_spec(DEFAULT_SPEC_PATH)


@pytest.fixture(scope="module")
def test_rows(spec):
    return training_frame(spec, "2026-01-03", 500, 3)


@pytest.fixture(scope="module")
def saved(spec, tmp_path_factory) -> Path:
    """A model folder written by Model.save, as the model asset writes it (never modified: copy it)."""
    train, validation = training_frame(spec, "2026-01-01", 1500, 1), training_frame(spec, "2026-01-02", 500, 2)
    config = TrainConfig(device="cpu", nthread=1, n_estimators=20)
    model, result = train_model(ModelCard.for_spec(spec), train, validation, config)
    folder = tmp_path_factory.mktemp("models") / "saved"
    Model(model.booster, ModelCard.for_spec(spec, threshold=result.threshold, run_id="saved")).save(
        folder, spec.resolved_yaml()
    )
    return folder


@pytest.fixture
def model_dir(saved, tmp_path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    return folder


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_save_records_size_and_sha256_of_every_model_file(model_dir):
    recorded = json.loads((model_dir / CHECKSUMS_FILE).read_text())["files"]
    assert set(recorded) == {MODEL_FILE, CARD_FILE, SPEC_FILE}
    for name, entry in recorded.items():
        assert entry == {"bytes": (model_dir / name).stat().st_size, "sha256": sha256(model_dir / name)}
    assert Model.load(model_dir).card.run_id == "saved"


def test_a_flipped_byte_in_the_model_file_is_refused_naming_the_file_and_both_digests(model_dir):
    expected = sha256(model_dir / MODEL_FILE)
    flip_byte(model_dir / MODEL_FILE)
    with pytest.raises(ModelIntegrityError) as refused:
        Model.load(model_dir)
    message = str(refused.value)
    assert str(model_dir / MODEL_FILE) in message
    assert expected in message and sha256(model_dir / MODEL_FILE) in message


def test_a_damaged_card_is_refused_by_its_checksum_before_it_is_parsed(model_dir):
    card = model_dir / CARD_FILE
    card.write_bytes(card.read_bytes()[:-10])  # truncated: no longer JSON
    with pytest.raises(ModelIntegrityError, match=f"{CARD_FILE} is corrupted"):
        Model.load(model_dir)


def test_a_folder_saved_before_models_carried_checksums_still_loads(model_dir, test_rows):
    (model_dir / CHECKSUMS_FILE).unlink()
    assert Model.load(model_dir).score(test_rows).shape == (len(test_rows),)


def test_a_loaded_model_keeps_scoring_after_its_file_is_corrupted(model_dir, test_rows):
    """What a running service relies on: it loaded (and checked) its model at start; only a new start
    reads the files again, and that one is refused."""
    running = Model.load(model_dir)
    before = running.score(test_rows)
    flip_byte(model_dir / MODEL_FILE)
    np.testing.assert_array_equal(running.score(test_rows), before)
    with pytest.raises(ModelIntegrityError):
        Model.load(model_dir)


def test_the_model_store_keeps_the_checksums_and_refuses_a_corrupted_copy(model_dir):
    import bentoml

    from kennel.serving.model_store import load_model_folder, save_model

    tag = save_model(model_dir, name="integrity_clf", labels={}, metadata={})
    stored = load_model_folder(tag)
    assert (stored / CHECKSUMS_FILE).read_bytes() == (model_dir / CHECKSUMS_FILE).read_bytes()
    flip_byte(stored / MODEL_FILE)
    with pytest.raises(ModelIntegrityError, match=f"{MODEL_FILE} is corrupted"):
        load_model_folder(tag)
    with pytest.raises(ModelIntegrityError, match=f"{MODEL_FILE} is corrupted"):
        Model.load(stored)

    # A corrupted source folder is refused before anything is stored.
    before = {str(m.tag) for m in bentoml.models.list("integrity_clf")}
    flip_byte(model_dir / MODEL_FILE)
    with pytest.raises(ModelIntegrityError, match=f"{MODEL_FILE} is corrupted"):
        save_model(model_dir, name="integrity_clf", labels={}, metadata={})
    assert {str(m.tag) for m in bentoml.models.list("integrity_clf")} == before


def test_the_gate_refuses_to_judge_against_a_corrupted_champion(saved, model_dir, test_rows):
    flip_byte(model_dir / MODEL_FILE)
    champion = Candidate("champion", model_dir)
    challenger = Candidate("challenger", saved)
    with pytest.raises(ModelIntegrityError, match=f"{MODEL_FILE} is corrupted"):
        decide(challenger, champion, test_rows, ["gender"], GateConfig())
