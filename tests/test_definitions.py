"""The code location: loads fast, and its asset graph matches the reviewed snapshot.

After an intended change to the graph, regenerate with `KENNEL_UPDATE_SNAPSHOTS=1 make test` and review
the diff of tests/snapshots/asset_graph.json like any other code change.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from definitions import defs

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"


def _graph_summary(definitions: dg.Definitions) -> dict:
    graph = definitions.resolve_asset_graph()
    summary = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        spec = node.to_asset_spec() if hasattr(node, "to_asset_spec") else None
        summary[key.to_user_string()] = {
            "group": node.group_name,
            "kinds": sorted(spec.kinds) if spec else [],
            "owners": list(node.owners),
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "partitioned": node.partitions_def is not None,
            "checks": sorted(c.name for c in node.check_keys),
            "blocking_checks": sorted(c.name for c in node.check_keys if graph.get(c).blocking),
            "has_description": bool(node.description),
        }
    return summary


def test_asset_graph_matches_snapshot():
    summary = _graph_summary(defs)
    if os.environ.get("KENNEL_UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(json.dumps(summary, indent=2) + "\n")
    assert summary == json.loads(SNAPSHOT.read_text())


def test_every_asset_is_described_grouped_and_owned():
    for key, node in _graph_summary(defs).items():
        assert node["has_description"], key
        assert node["group"] in {"ingestion", "features", "training", "serving", "monitoring"}, key
        assert node["kinds"], key
        assert node["owners"], key


def test_loading_the_code_location_does_not_import_heavy_libraries():
    # pyspark itself is cheap to import (0.4 s, and dagster-pyspark imports it); these cost seconds each.
    code = ("import sys, definitions; heavy = [m for m in ('xgboost', 'bentoml', 'pandas', "
            "'great_expectations', 'sklearn') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent)
    assert out.stdout.strip() == ""
