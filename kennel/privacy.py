"""Private by declaration: the values of a spec's `personal_columns` stay in the data tables (raw, clean,
quarantine). Everything else Kennel writes (the prediction log, check metadata and quality records,
reference profiles, monitoring records, model cards, Dagster metadata and logs) takes them through a
`Redactor` first:

- text (the id column, a categorical feature) becomes "h:" + 24 hex digits, a keyed BLAKE2b of the
  trimmed value (96 bits). The same value always gets the same hash under one salt, so drift still
  compares hashed categories with hashed categories, slices and fairness groups keep one name per value,
  and joins by a personal id work when both sides are hashed. Without the salt a hash cannot be
  reversed by trying likely values (names, postcodes, ids).
- a number or boolean is dropped (null): hashing would break ranges and bins, and a number's
  neighbourhood would give it away anyway. Monitoring does not profile such a column.

The salt comes from the environment variable KENNEL_PERSONAL_SALT (the same value on every host and
process that redacts for one data set). When it is unset, Kennel keeps a random 32-byte salt per data
set in the lake, next to the request-id key (mode 0600, created once by whichever process comes first),
and warns once per process. The salt is never logged nor shown by repr. Changing or losing it makes new
hashes differ from old ones: monitoring against a reference profile built under the old salt then sees
every personal category as new.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kennel.spec import WHITESPACE, DatasetSpec, FeatureType

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from kennel.lake import DatasetLake

logger = logging.getLogger(__name__)

SALT_ENV = "KENNEL_PERSONAL_SALT"
SALT_FILE = "personal.salt"  # in the data set's serving folder of the lake, beside request_id.key
HASH_PREFIX = "h:"
DIGEST_BYTES = 12  # 96 bits: no two of a data set's values collide in practice
_PERSON = b"kennel.pii.v1"  # BLAKE2b personalization: this use of the salt, format version 1
_HASHED = re.compile(rf"{HASH_PREFIX}[0-9a-f]{{{2 * DIGEST_BYTES}}}")
_warned_salt_files: set[Path] = set()


def salt_path(lake: DatasetLake) -> Path:
    """Where the data set's own salt lives when KENNEL_PERSONAL_SALT is unset."""
    return lake.request_id_key_path().with_name(SALT_FILE)


def load_salt(lake: DatasetLake) -> bytes:
    """The salt: KENNEL_PERSONAL_SALT (any text, digested to 32 bytes), else the data set's salt file in
    the lake, created on first use (mode 0600), with one warning per process."""
    configured = os.environ.get(SALT_ENV)
    if configured:
        return hashlib.sha256(configured.encode()).digest()
    from kennel.serving.request_ids import load_or_create_key

    path = salt_path(lake)
    if path not in _warned_salt_files:
        _warned_salt_files.add(path)
        logger.warning(
            "%s is not set: personal columns are hashed with the data set's own salt in %s; set %s to one "
            "secret shared by every process of the data set",
            SALT_ENV,
            path,
            SALT_ENV,
        )
    return load_or_create_key(path)


def is_hashed(value: object) -> bool:
    """Whether `value` is a hash `Redactor.hash_value` made (which redaction keeps as it is)."""
    return isinstance(value, str) and _HASHED.fullmatch(value) is not None


class Redactor:
    """Hashes the personal text columns and drops the personal numeric and boolean ones of a frame or
    Arrow table (see the module docstring). Redaction is idempotent: a value already hashed passes
    unchanged, so a frame mixing landed rows with rows read back from the prediction log is redacted
    whole. A redactor with nothing to redact returns its input itself."""

    def __init__(self, hashed: tuple[str, ...] = (), dropped: tuple[str, ...] = (), salt: bytes = b"") -> None:
        if hashed and not salt:
            raise ValueError("hashing personal columns needs a salt")
        self.hashed_columns = hashed
        self.dropped_columns = dropped
        self._keyed = hashlib.blake2b(key=salt[:64], digest_size=DIGEST_BYTES, person=_PERSON) if salt else None

    @classmethod
    def for_spec(cls, spec: DatasetSpec, lake: DatasetLake) -> Redactor:
        """The data set's redactor; a spec without personal columns gets one that does nothing (and reads
        no salt)."""
        if not spec.personal_columns:
            return cls()
        features = {f.name: f for f in spec.features}
        dropped = tuple(
            c for c in spec.personal_columns if c in features and features[c].type is not FeatureType.categorical
        )
        hashed = tuple(c for c in spec.personal_columns if c not in dropped)
        return cls(hashed, dropped, load_salt(lake) if hashed else b"")

    def __repr__(self) -> str:
        return f"Redactor(hashed={list(self.hashed_columns)}, dropped={list(self.dropped_columns)}, <salt hidden>)"

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column this redactor changes."""
        return self.hashed_columns + self.dropped_columns

    def __bool__(self) -> bool:
        return bool(self.columns)

    def hash_value(self, value: str) -> str:
        """The hash standing for `value` (trimmed first, as cleaning trims landed values)."""
        if self._keyed is None:
            raise ValueError("this redactor hashes nothing: the spec declares no personal text column")
        if is_hashed(value):
            return value
        keyed = self._keyed.copy()  # the key block is already absorbed
        keyed.update(value.strip(WHITESPACE).encode("utf-8", "surrogatepass"))
        return HASH_PREFIX + keyed.hexdigest()

    def _hash_any(self, value: Any) -> Any:
        return None if value is None else self.hash_value(str(value))

    def redact_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A copy of `frame` with its personal columns redacted (columns it lacks are skipped; a dropped
        column stays, all missing, so readers keep their schema); `frame` itself when there is nothing
        to redact."""
        present = [c for c in self.columns if c in frame.columns]
        if not present:
            return frame
        import pandas as pd

        redacted = frame.copy()
        for column in present:
            values = frame[column]
            if column in self.dropped_columns:
                # Numbers (booleans too, as 0/1 would be) become NaN floats; anything else None.
                numeric = values.dtype.kind in "fiub"
                redacted[column] = pd.Series(
                    float("nan") if numeric else None, index=frame.index, dtype="float64" if numeric else "object"
                )
                continue
            codes, uniques = pd.factorize(values, use_na_sentinel=True)
            hashed = [self.hash_value(str(u)) for u in uniques]
            redacted[column] = pd.Series(
                [None if code < 0 else hashed[code] for code in codes], index=frame.index, dtype="object"
            )
        return redacted

    def redact_table(self, table: pa.Table) -> pa.Table:
        """`table` with its personal columns redacted (same schema: a dropped column is all null, a hashed
        one keeps its string or dictionary type); `table` itself when there is nothing to redact."""
        present = [c for c in self.columns if c in table.column_names]
        if not present:
            return table
        import pyarrow as pa
        import pyarrow.compute as pc

        for column in present:
            index = table.schema.get_field_index(column)
            field = table.schema.field(index)
            values = table.column(index)
            if column in self.dropped_columns:
                replacement: pa.ChunkedArray | pa.Array = pa.nulls(len(table), field.type)
            else:
                encoded = pc.dictionary_encode(values.combine_chunks().cast(pa.string()))
                hashed = pa.array([self._hash_any(v) for v in encoded.dictionary.to_pylist()], pa.string())
                replacement = pa.DictionaryArray.from_arrays(encoded.indices, hashed).cast(field.type)
            table = table.set_column(index, field, replacement)
        return table
