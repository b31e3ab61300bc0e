"""Where landed files are and which daily partition each belongs to.

A landed file belongs to day D when D (YYYY-MM-DD) names one of its folders or appears in its file
name, e.g. `landing/credit_demo/2026-01-03/part-00000.csv` or `landing/x/export_2026-01-03.csv`.
"""

from __future__ import annotations

import re
from pathlib import Path

_DAY = re.compile(r"(\d{4}-\d{2}-\d{2})")


def partition_of(relative: Path) -> str | None:
    for part in reversed(relative.parts):
        m = _DAY.search(part)
        if m:
            return m.group(1)
    return None


def landed_files(source_dir: str | Path, file_format: str) -> dict[str, list[Path]]:
    """Day → landed files of the spec's format, sorted; files without a day in their path are ignored."""
    root = Path(source_dir)
    by_day: dict[str, list[Path]] = {}
    if not root.exists():
        return by_day
    for path in sorted(root.rglob(f"*.{file_format}")):
        if path.is_file() and not any(p.startswith((".", "_")) for p in path.relative_to(root).parts):
            day = partition_of(path.relative_to(root))
            if day:
                by_day.setdefault(day, []).append(path)
    return by_day
