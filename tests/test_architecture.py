"""The seams hold by test, not by promise: which modules may import what, and who knows the lake's layout.

Production code is kennel/, assets/, resources/, sensors/, bentos/, jobs.py, definitions.py and
scripts/ (tests and benchmarks may reach past the seams to compare against the bare libraries).
"""

import ast
from pathlib import Path

import pytest

from kennel.serving.model_store import KENNEL_DIR, serving_modules

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = [ROOT / name for name in ("kennel", "assets", "resources", "sensors", "bentos", "scripts")] + [
    ROOT / "jobs.py",
    ROOT / "definitions.py",
]
MODEL_LIBRARY_MODULES = {KENNEL_DIR / "model" / "booster.py", KENNEL_DIR / "model" / "distributed.py"}
LAKE_PACKAGE = KENNEL_DIR / "lake"
# Folders and files of the lake's layout (kennel/lake/__init__.py) and of its records.
LAKE_FOLDERS = {
    "raw",
    "clean",
    "quarantine",
    "quality",
    "training",
    "models",
    "monitoring",
    "registry",
    "predictions",
    "feedback",
    "labels",
    "_staging",
    "warehouse",
}
LAKE_FILES = {
    "decisions.jsonl",
    "champion.json",
    "history.jsonl",
    "training.json",
    "evaluation.json",
    "gate_decision.json",
}


def production_files() -> list[Path]:
    files: list[Path] = []
    for place in PRODUCTION:
        files += sorted(place.rglob("*.py")) if place.is_dir() else [place]
    return files


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at module level or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_production_file_list_is_not_empty():
    files = production_files()
    assert len(files) > 40 and ROOT / "kennel" / "model" / "booster.py" in files


def test_kennel_imports_no_dagster():
    offenders = [
        _name(p)
        for p in KENNEL_DIR.rglob("*.py")
        if any(m == "dagster" or m.startswith(("dagster.", "dagster_")) for m in imported_modules(p))
    ]
    assert offenders == []


def test_only_the_model_package_imports_the_model_library():
    offenders = [
        _name(p)
        for p in production_files()
        if p not in MODEL_LIBRARY_MODULES
        and any(m == "xgboost" or m.startswith("xgboost.") for m in imported_modules(p))
    ]
    assert offenders == [], "import the model library only in kennel/model/booster.py and distributed.py"
    assert all(any(m.startswith("xgboost") for m in imported_modules(p)) for p in MODEL_LIBRARY_MODULES)


def _lake_layout_literals(path: Path) -> list[str]:
    """String constants that spell the lake's layout: a record file name anywhere, a day-partition folder
    (date=…), or a layout folder used as a path segment (x / "quality", joinpath/glob/Path("quality"))."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in LAKE_FILES or node.value.startswith("date="):
                found.append(node.value)
        segments: list[ast.expr] = []
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            segments = [node.left, node.right]
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("joinpath", "glob", "rglob", "Path", "path"):
                segments = list(node.args)
        found += [
            s.value
            for s in segments
            if isinstance(s, ast.Constant) and isinstance(s.value, str) and s.value.split("/")[0] in LAKE_FOLDERS
        ]
    return found


def test_only_the_lake_package_knows_the_lake_layout():
    offenders = {
        _name(p): found
        for p in production_files()
        if LAKE_PACKAGE not in p.parents and (found := _lake_layout_literals(p))
    }
    assert offenders == {}, "ask kennel.lake for locations and records instead of spelling them"


def test_the_layout_check_catches_a_hand_built_lake_path(tmp_path):
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text(
        "import json\n"
        "def read(root, day):\n"
        '    return json.loads((root / "quality" / "credit_demo" / f"{day}.json").read_text())\n'
        'LOG = "decisions.jsonl"\n'
        "def part(root, day):\n"
        '    return root / f"date={day}"\n'
    )
    assert sorted(_lake_layout_literals(sneaky)) == ["date=", "decisions.jsonl", "quality"]


def test_asset_modules_meet_only_through_the_graph_module():
    """Asset modules share keys through assets/graph.py, not by importing each other; sensors and jobs too."""
    asset_modules = {f"assets.{p.stem}" for p in (ROOT / "assets").glob("*.py")} - {"assets.__init__"}
    shared = {"assets.graph", "assets.metadata"}
    offenders = {}
    for path in [*(ROOT / "assets").glob("*.py"), *(ROOT / "sensors").glob("*.py"), ROOT / "jobs.py"]:
        if path.name == "__init__.py" and path.parent.name == "assets":
            continue  # the one factory that composes the asset modules
        wrong = (imported_modules(path) & asset_modules) - shared
        if wrong:
            offenders[_name(path)] = sorted(wrong)
    assert offenders == {}


@pytest.mark.parametrize("package", ["ingestion", "training", "monitoring", "demo"])
def test_the_bento_ships_only_what_serving_imports(package):
    shipped = {p.relative_to(KENNEL_DIR).as_posix() for p in serving_modules()}
    assert {
        "__init__.py",
        "spec.py",
        "lake/__init__.py",
        "model/booster.py",
        "serving/api.py",
        "serving/prediction_log.py",
    } <= shipped
    assert not any(name.startswith(f"{package}/") for name in shipped)


def test_pyproject_names_every_package_and_nothing_else():
    """The installed project (the `kennel` console script) holds exactly the production packages: a new
    package missing from pyproject.toml would import from the checkout and fail once installed elsewhere."""
    import tomllib

    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("kennel", "assets", "resources", "sensors")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert set(settings["packages"]) == on_disk
    assert {f"{module}.py" for module in settings["py-modules"]} == {"definitions.py", "jobs.py"}
