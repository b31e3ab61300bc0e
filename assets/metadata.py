"""Small helpers that turn results into Dagster UI metadata."""

from __future__ import annotations

from typing import Any

import dagster as dg


def md_table(rows: list[dict[str, Any]], digits: int = 4) -> dg.MarkdownMetadataValue:
    """A markdown table from a list of dicts (keys of the first row are the columns)."""
    if not rows:
        return dg.MetadataValue.md("(none)")

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "–" if v != v else f"{v:.{digits}f}"
        return "–" if v is None else str(v)

    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return dg.MetadataValue.md("\n".join(lines))


def latest_metadata(context: dg.AssetExecutionContext, key: dg.AssetKey, name: str) -> Any:
    """A metadata value of the latest materialization of `key`: how an asset finds its upstream's output."""
    event = context.instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        raise dg.Failure(f"{key.to_user_string()} has never been materialized; materialize it first")
    value = event.asset_materialization.metadata.get(name)
    if value is None:
        raise dg.Failure(f"the latest materialization of {key.to_user_string()} has no {name!r} metadata")
    return value.value
