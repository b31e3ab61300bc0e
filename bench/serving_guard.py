"""Benchmark: what the request guard (kennel/serving/guard.py, commit 3ab05fb) protects and what it costs,
as ratios side by side; nothing here passes or fails.

    apt-get install wrk          # the load generator
    .venv/bin/python bench/serving_guard.py [--duration 10] [--rounds 3] [--write]   # ~5-10 minutes
    .venv/bin/python bench/serving_guard.py --quick                                  # a ~2 minute look

1. A single record's latency while hostile bodies are refused. One `bentoml serve` of a Bento built from
   this tree (one worker, prediction log on, KENNEL_MAX_REQUEST_BYTES raised to 40 MiB for the run).
   wrk sends single-record POST /predict at one connection (closed loop) for --duration seconds, alone
   and, in turns, while a second client (a thread of this script, one connection at a time) sends ~30 MB
   hostile bodies back to back: JSON columns with every value of the wrong type (/predict_columns), 10,000
   records each with one bad value (/predict_batch), and for /predict_arrow random bytes, an lz4
   decompression bomb (~7 GiB declared) and a well-formed 100,000-row stream whose every row has an
   out-of-range value. "Alone" runs sit between the hostile ones, so the machine's other load shows up as
   their spread. Reported: p50/p99/max of the single records, p99 against the median alone p99 (goal:
   <= 2x), the hostile bodies' answers (all should be 4xx; 5xx and dropped connections are counted) and
   whether any single record waited past the 10 s request timeout.
2. Server CPU per request before and after the guards. The same requests at one connection against
   (A) that Bento and (B) the service as of commit 8d417a7, served from a git worktree of that commit
   (`bentoml serve bentos.service:KennelService --working-dir <worktree>`, PYTHONPATH=<worktree>, same
   BENTOML_HOME and model), alternating A, B, A, B, ... for --rounds rounds: single-record /predict and
   1,000-row /predict_batch. CPU per request = user + system CPU seconds of the server's process tree
   (psutil; the guard's screening child included) over the measurement / requests answered. Reported:
   median and min-max per server, and the ratio of the medians (goal: <= 1.05x).

The model is the demo spec's, trained like bench/serving.py trains it, with the training ranges on its
card as the `model` asset records them (so out-of-distribution flags are computed as in production).
Helpers for training, Bentos, servers, ports and wrk come from bench/serving.py.

--write replaces the "Serving guard" section of BENCHMARKS.md (bench.common.write_section("serving-guard"));
results are also printed and saved by bench.common.save_results (.kennel/bench/serving-guard-latest.json).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    Goal,
    Results,
    conditions_line,
    goals_table,
    load_average,
    save_results,
    spread,
    write_section,
)
from bench.serving import (  # noqa: E402
    Server,
    _wrk_version,
    free_port,
    lua_script,
    profile_note,
    py_spy,
    request_records,
    start_server,
    train_demo_model,
    wrk,
)

BEFORE_COMMIT = "8d417a7"
BEFORE_TREE = Path("/tmp/kennel-before")
HOSTILE_BYTES = 30_000_000
MAX_REQUEST_BYTES = 40 * 1024 * 1024  # KENNEL_MAX_REQUEST_BYTES for the run: the hostile bodies fit
REQUEST_TIMEOUT_S = 10  # the service's default KENNEL_REQUEST_TIMEOUT_S
BATCH_ROWS = 1_000
BATCH_BODIES = 4
SINGLE_POOL = 1_000
FLUSH_S = 5
ARROW = "application/vnd.apache.arrow.stream"
JSON = "application/json"
AFTER_SECTION = "<!-- serving:end -->"  # the new section goes after the Serving one


# --- model ---------------------------------------------------------------------------------------


def train_model(work: Path, days: int, rows_per_day: int) -> tuple[Any, Any, Path]:
    """bench/serving.py's model, saved again with the training ranges on its card (as the `model` asset
    records them since 3ab05fb): its training rows are regenerated with the same seed."""
    import numpy as np
    import pandas as pd

    from kennel.demo import generate_frame
    from kennel.model import Model

    spec, result = train_demo_model(work / "model-plain", days, rows_per_day)
    rng = np.random.default_rng(11)  # as train_demo_model draws them
    data = pd.concat([generate_frame(spec, date(2026, 1, 1 + d), rows_per_day, rng) for d in range(days)])
    training = data.iloc[: int(len(data) * 0.8)]
    plain = Model.load(work / "model-plain")
    model_dir = work / "model"
    Model(plain.booster, plain.card.with_training(training)).save(model_dir, spec.resolved_yaml())
    return spec, result, model_dir


# --- hostile bodies ------------------------------------------------------------------------------


def _wrong_type(feature_type: Any) -> Any:
    """A JSON value of the wrong type for a field: text for numbers and booleans, a number for text."""
    from kennel.spec import FeatureType

    return "not-a-number" if feature_type in (FeatureType.numeric, FeatureType.boolean) else 12345.678901


def hostile_bodies(spec: Any, card: Any, records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each hostile kind: route, media type, body (~HOSTILE_BYTES) and what is wrong with it."""
    import pyarrow as pa

    from kennel.serving.api import MAX_BATCH_RECORDS, MAX_COLUMN_ROWS, input_field_names
    from kennel.spec import FeatureType
    from tests.arrow_mutations import compression_bomb

    fields = input_field_names(spec, card)
    types = {f.name: f.type for f in spec.features}  # the id column: None (text or integer)
    numeric = [f for f in spec.features if f.type is FeatureType.numeric and f.name in fields]

    # (a) columns: every value of every field the wrong type, as many rows as fit (at most MAX_COLUMN_ROWS)
    row_bytes = sum(len(json.dumps(_wrong_type(types.get(name)))) + 1 for name in fields)
    n_rows = min(MAX_COLUMN_ROWS, HOSTILE_BYTES // row_bytes)
    columns = json.dumps({name: [_wrong_type(types.get(name))] * n_rows for name in fields}, separators=(",", ":"))

    # (b) records: MAX_BATCH_RECORDS valid records, each with one numeric field replaced by long text
    pad = HOSTILE_BYTES // MAX_BATCH_RECORDS - len(json.dumps(records[0]))
    bad_records = []
    for i in range(MAX_BATCH_RECORDS):
        record = dict(records[i % len(records)])
        record[numeric[i % len(numeric)].name] = "x" * max(pad, 1)
        bad_records.append(record)
    batch = json.dumps({"records": bad_records}, separators=(",", ":"))

    # (c) Arrow: random bytes; a decompression bomb; a well-formed stream with an out-of-range value per row
    garbage = random.Random(7).randbytes(HOSTILE_BYTES)
    small = _arrow(pa.Table.from_pylist(records[:BATCH_ROWS]))
    one_gib = 1 << 30
    ratio = one_gib / len(compression_bomb(small, "lz4", size=one_gib))
    bomb = compression_bomb(small, "lz4", size=int(HOSTILE_BYTES * ratio) // (1 << 20) << 20)
    tiled = pa.Table.from_pylist([records[i % len(records)] for i in range(MAX_COLUMN_ROWS)])
    target = numeric[0]  # every row below the field's minimum
    tiled = tiled.set_column(
        tiled.column_names.index(target.name), target.name, pa.array([target.min - 1.0] * MAX_COLUMN_ROWS)
    )
    ids = tiled.column_names.index(spec.id_column)  # ids long enough for HOSTILE_BYTES in all
    id_chars = HOSTILE_BYTES - len(_arrow(tiled.set_column(ids, spec.id_column, pa.array([""] * MAX_COLUMN_ROWS))))
    id_chars = max(1, id_chars // MAX_COLUMN_ROWS)
    values = _arrow(
        tiled.set_column(ids, spec.id_column, pa.array([f"{i:0{id_chars}d}" for i in range(MAX_COLUMN_ROWS)]))
    )

    return {
        "columns": {
            "route": "/predict_columns",
            "media_type": JSON,
            "body": columns.encode(),
            "what": f"JSON columns, {n_rows:,} rows, every value the wrong type",
        },
        "batch": {
            "route": "/predict_batch",
            "media_type": JSON,
            "body": batch.encode(),
            "what": f"{MAX_BATCH_RECORDS:,} records, each with one number sent as {pad:,} characters of text",
        },
        "arrow_garbage": {
            "route": "/predict_arrow",
            "media_type": ARROW,
            "body": garbage,
            "what": "random bytes",
        },
        "arrow_bomb": {
            "route": "/predict_arrow",
            "media_type": ARROW,
            "body": bomb,
            "what": f"lz4 decompression bomb ({int(HOSTILE_BYTES * ratio) / one_gib:.1f} GiB declared)",
        },
        "arrow_values": {
            "route": "/predict_arrow",
            "media_type": ARROW,
            "body": values,
            "what": f"well-formed stream, {MAX_COLUMN_ROWS:,} rows, every {target.name} below its minimum",
        },
    }


def _arrow(table: Any) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


class HostileClient(threading.Thread):
    """Posts one body over and over, one request at a time (a fresh connection each), until stopped;
    records each answer's status (None: the connection broke or timed out) and its time."""

    def __init__(self, port: int, route: str, media_type: str, body: bytes) -> None:
        super().__init__(daemon=True)
        self.port, self.route, self.media_type, self.body = port, route, media_type, body
        self.stop = threading.Event()
        self.answers: list[tuple[int | None, float]] = []
        self.first_answer: dict[str, Any] | None = None

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            status: int | None = None
            try:
                connection.request("POST", self.route, body=self.body, headers={"Content-Type": self.media_type})
                response = connection.getresponse()
                answer = response.read()
                status = response.status
                if self.first_answer is None:
                    self.first_answer = _answer_summary(status, answer)
            except (OSError, http.client.HTTPException):
                pass
            finally:
                connection.close()
            self.answers.append((status, time.perf_counter() - started))

    def summary(self) -> dict[str, Any]:
        statuses = [s for s, _ in self.answers]
        seconds = sorted(t for _, t in self.answers)
        return {
            "sent": len(statuses),
            "4xx": sum(1 for s in statuses if s is not None and 400 <= s < 500),
            "5xx": sum(1 for s in statuses if s is not None and s >= 500),
            "2xx": sum(1 for s in statuses if s is not None and s < 300),
            "dropped": sum(1 for s in statuses if s is None),
            "statuses": sorted({s for s in statuses if s is not None}),
            "answer_s_median": statistics.median(seconds) if seconds else None,
            "answer_s_max": seconds[-1] if seconds else None,
            "first_answer": self.first_answer,
        }


def _answer_summary(status: int, answer: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(answer)
    except ValueError:
        return {"status": status, "bytes": len(answer)}
    return {"status": status, "bytes": len(answer), "error_count": payload.get("error_count"), **_error(payload)}


def _error(payload: Any) -> dict[str, Any]:
    return {"error": str(payload.get("error", ""))[:200]} if isinstance(payload, dict) else {}


# --- servers -------------------------------------------------------------------------------------


def cpu_by_role(server: Server) -> dict[str, float]:
    """User + system CPU seconds so far of the server's process tree ("total"), and of the guard's
    screening child ("screen": a multiprocessing spawn child of the worker)."""
    import psutil

    total = screen = 0.0
    root = psutil.Process(server.proc.pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            command = " ".join(process.cmdline())
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
        if "spawn_main" in command:
            screen += times.user + times.system
    return {"total": total, "screen": screen}


def worker_profile(server: Server, body: dict[str, Any], seconds: float, output: Path) -> dict[str, Any]:
    """py-spy of the server's worker while one client posts `body` over and over (bench.serving.py_spy)."""
    port = int(server.base_url.rsplit(":", 1)[1])
    client = HostileClient(port, body["route"], body["media_type"], body["body"])
    client.start()
    try:
        # Leaving the block waits for py-spy's `seconds`; the client posts all along.
        with py_spy(server, seconds, output) as profile:
            pass
    finally:
        client.stop.set()
        client.join(timeout=120)
    return profile


def measure(server: Server, script: Path, seconds: float) -> dict[str, Any]:
    """One wrk run at one connection, with the server's CPU over it and the load average after."""
    before = cpu_by_role(server)
    result = wrk(server.base_url, script, 1, seconds)
    after = cpu_by_role(server)
    result["server_cpu_s"] = after["total"] - before["total"]
    result["screen_cpu_s"] = after["screen"] - before["screen"]
    result["server_cpu_us_per_request"] = result["server_cpu_s"] / max(result["requests"], 1) * 1e6
    result["load1"] = round(os.getloadavg()[0], 2)
    return result


def before_tree(commit: str) -> tuple[Path, bool]:
    """A read-only checkout of `commit` at BEFORE_TREE (git worktree); True when this run made it."""
    wanted = _git("rev-parse", f"{commit}^{{commit}}")
    if BEFORE_TREE.exists():
        head = subprocess.run(
            ["git", "-C", str(BEFORE_TREE), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        if head != wanted:
            raise RuntimeError(f"{BEFORE_TREE} exists and is not a checkout of {commit}; remove it first")
        return BEFORE_TREE, False
    _git("worktree", "add", "--detach", str(BEFORE_TREE), wanted)
    return BEFORE_TREE, True


# Run in the worktree of BEFORE_COMMIT, with its code: the demo spec as that commit renders it, the card's
# spec fingerprint made that spec's, and the checksums rewritten (the booster and card values unchanged).
_AS_BEFORE = """
import json, sys
from pathlib import Path
from kennel.model import CARD_FILE, SPEC_FILE
from kennel.model.booster import write_checksums
from kennel.spec import load_spec
folder, spec = Path(sys.argv[1]), load_spec(Path("datasets/credit_demo.yaml"))
(folder / SPEC_FILE).write_text(spec.resolved_yaml())
card = json.loads((folder / CARD_FILE).read_text())
card["spec_fingerprint"] = spec.fingerprint()
(folder / CARD_FILE).write_text(json.dumps(card))
write_checksums(folder)
"""


def model_for_before(model_dir: Path, tree: Path) -> str:
    """The model stored once more, for B: specs gained fields after BEFORE_COMMIT that its spec code
    refuses, so the stored copy is rewritten by that commit's code (see _AS_BEFORE). Returns its tag."""
    import bentoml

    from kennel.serving.model_store import save_model

    tag = save_model(model_dir, name="kennel-credit-demo", labels={}, metadata={})
    folder = bentoml.models.get(tag).path
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run([sys.executable, "-c", _AS_BEFORE, folder], cwd=tree, env=env, check=True)
    return tag


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()


def _head() -> str:
    """This tree's commit, and whether the serving code (kennel/, bentos/) had uncommitted changes."""
    dirty = _git("status", "--porcelain", "--", "kennel", "bentos")
    return _git("rev-parse", "--short", "HEAD") + (" + uncommitted changes in kennel/ or bentos/" if dirty else "")


def _post(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    import requests

    answer = requests.post(f"{server.base_url}/predict", json=body, timeout=30)
    answer.raise_for_status()
    return answer.json()


# --- report --------------------------------------------------------------------------------------


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def _hostile_cpu(run: dict[str, Any], alone: list[dict[str, Any]]) -> tuple[float, float]:
    """(server CPU, screening child CPU) per hostile body of a run: the single records' share taken out
    at their median CPU per request alone."""
    per_single = statistics.median(r["server_cpu_us_per_request"] for r in alone) / 1e6
    sent = max(run["hostile"]["sent"], 1)
    return (run["server_cpu_s"] - run["single"]["requests"] * per_single) / sent, run["screen_cpu_s"] / sent


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """The ratios: hostile p99 / median alone p99, and CPU per request A / B (medians)."""
    part1 = results["latency"]
    alone_p99 = statistics.median(r["p99_us"] for r in part1["alone"])
    p99_ratio = {kind: run["single"]["p99_us"] / alone_p99 for kind, run in part1["hostile"].items()}
    cpu = {}
    for scenario in ("single", "batch"):
        a = [r["server_cpu_us_per_request"] for r in results["cpu"][scenario]["A"]]
        b = [r["server_cpu_us_per_request"] for r in results["cpu"][scenario]["B"]]
        cpu[scenario] = statistics.median(a) / statistics.median(b)
    return {"alone_p99_us": alone_p99, "p99_ratio": p99_ratio, "cpu_ratio": cpu}


def goals_of(results: dict[str, Any], quick: bool) -> list[Goal]:
    """The guard's goals: single-record p99 under hostile bodies, and CPU per request against before."""
    summary = results["summary"]
    worst = max(summary["p99_ratio"], key=lambda kind: summary["p99_ratio"][kind])
    goals = [
        Goal(
            name="serving guard: single-record p99 under hostile bodies / alone, c=1",
            target="<= 2x",
            measured=f"{summary['p99_ratio'][worst]:.2f}x at worst ({worst})",
            met=None if quick else summary["p99_ratio"][worst] <= 2,
            note=profile_note(results["profile"], f"under {results['profile']['kind']} bodies alone")
            if summary["p99_ratio"][worst] > 2
            else "",
        )
    ]
    for scenario, label in (("single", "single record"), ("batch", f"{BATCH_ROWS:,}-row /predict_batch")):
        ratio = summary["cpu_ratio"][scenario]
        goals.append(
            Goal(
                name=f"serving guard: server CPU per request after / before the guards, {label}",
                target="<= 1.05x",
                measured=f"{ratio:.2f}x",
                met=None if quick else ratio <= 1.05,
                note=cpu_account(results["cpu"][scenario]) if ratio > 1.05 else "",
            )
        )
    return goals


def cpu_account(runs: dict[str, list[dict[str, Any]]]) -> str:
    """Where A's extra CPU per request goes, by process (psutil): its screening child's share of the
    difference between the medians, the rest being the worker's."""
    a = statistics.median(r["server_cpu_us_per_request"] for r in runs["A"])
    b = statistics.median(r["server_cpu_us_per_request"] for r in runs["B"])
    child = statistics.median(r["screen_cpu_s"] / max(r["requests"], 1) * 1e6 for r in runs["A"])
    return (
        f"of the {a - b:,.0f} µs more per request, the screening child's validation is {child:,.0f} µs (a "
        f"body over the 64 KiB inline limit is validated there, then again in the worker), the worker's "
        f"own {a - b - child:,.0f} µs"
    )


def report(results: dict[str, Any], bench_run: Results) -> str:
    """The BENCHMARKS.md section for one run."""
    env, settings, summary = results["environment"], results["settings"], results["summary"]
    part1, bodies = results["latency"], results["bodies"]
    alone = part1["alone"]
    lines = [
        "## Serving guard (bench/serving_guard.py)",
        "",
        conditions_line(bench_run),
        "",
        goals_table(bench_run.goals),
        "",
        f"1-minute load during the measurements {min(env['load1_during']):.1f}–{max(env['load1_during']):.1f}; "
        f"bentoml {env['bentoml']}, {env['wrk']}.",
        f"Model: the demo spec's ({results['model']['trees']} trees, {results['model']['features']} features, "
        f"training ranges on its card), nthread=1. Servers: `bentoml serve`, 1 worker, prediction log on "
        f"(flushed every {settings['flush_s']} s), KENNEL_MAX_REQUEST_BYTES={MAX_REQUEST_BYTES:,} for the run. "
        f"wrk: one thread, one connection, closed loop, {settings['duration_s']} s per measurement "
        f"(after a {settings['warmup_s']} s warm-up for the CPU runs); single records rotate through "
        f"{SINGLE_POOL:,} distinct records, batches through {BATCH_BODIES} distinct {BATCH_ROWS:,}-row bodies.",
        "",
        "**Single record under hostile bodies.** Single-record POST /predict at c=1 alone and while a second "
        "client posts one hostile body after another (a new connection each, the next when the answer "
        "arrives). Alone runs alternate with the hostile ones; the ratio is against their median p99.",
        "",
        "| single-record /predict, c=1 | requests | p50 ms | p99 ms | max ms | p99 / alone | "
        "hostile bodies: sent, 4xx / 5xx / dropped | hostile answer s, median (max) | problems counted |",
        "|---|---:|---:|---:|---:|---:|---|---|---:|",
        f"| alone ({len(alone)} runs: median; p99 {_ms(min(r['p99_us'] for r in alone))}–"
        f"{_ms(max(r['p99_us'] for r in alone))} ms) | "
        f"{statistics.median(r['requests'] for r in alone):,.0f} | "
        f"{_ms(statistics.median(r['p50_us'] for r in alone))} | {_ms(summary['alone_p99_us'])} | "
        f"{_ms(max(r['max_us'] for r in alone))} | 1.00x | | | |",
    ]
    for kind, run in part1["hostile"].items():
        single, hostile, body = run["single"], run["hostile"], bodies[kind]
        first = hostile.get("first_answer") or {}
        problems = f"{first['error_count']:,}" if first.get("error_count") else "–"
        lines.append(
            f"| with {body['route']}: {body['what']}, {body['bytes'] / 1e6:.1f} MB | {single['requests']:,} | "
            f"{_ms(single['p50_us'])} | {_ms(single['p99_us'])} | {_ms(single['max_us'])} | "
            f"{summary['p99_ratio'][kind]:.2f}x | {hostile['sent']}: {hostile['4xx']} / {hostile['5xx']} / "
            f"{hostile['dropped']} | {hostile['answer_s_median'] or 0:.2f} ({hostile['answer_s_max'] or 0:.2f}) | "
            f"{problems} |"
        )
    singles = [part1["hostile"][k]["single"] for k in part1["hostile"]] + alone
    longest = max(r["max_us"] for r in singles) / 1e6
    non_2xx = sum(r["status_errors"] + r["socket_errors"] for r in singles)
    hostile_5xx = sum(run["hostile"]["5xx"] + run["hostile"]["dropped"] for run in part1["hostile"].values())
    hostile_2xx = sum(run["hostile"]["2xx"] for run in part1["hostile"].values())
    slowest = max((run["hostile"]["answer_s_max"] or 0, kind) for kind, run in part1["hostile"].items())
    lines += [
        "",
        f"Goal: p99 under hostile bodies <= 2x alone. Longest single-record request in all these runs: "
        f"{longest:.2f} s ({'past' if longest > REQUEST_TIMEOUT_S else 'within'} the {REQUEST_TIMEOUT_S} s "
        f"request timeout); single records answered other than 2xx or not at all: {non_2xx}. Hostile bodies "
        f"answered 5xx or dropped: {hostile_5xx}; accepted (2xx): {hostile_2xx}; the slowest was answered after "
        f"{slowest[0]:.1f} s ({slowest[1]}), against the {REQUEST_TIMEOUT_S} s after which the guard stops "
        "waiting for its screening process and answers 503. Server CPU per hostile "
        "body (the run's server CPU less its single records' at their cost alone, per body sent; in "
        "brackets the screening child's): "
        + "; ".join(
            f"{kind} {_hostile_cpu(run, alone)[0]:.2f} s ({_hostile_cpu(run, alone)[1]:.2f} s)"
            for kind, run in part1["hostile"].items()
        )
        + ".",
        "",
        f"**Server CPU per request, before and after the guards.** (A) a Bento of this tree, (B) commit "
        f"{BEFORE_COMMIT} (the service before the guards) served from a worktree with the same model and "
        f"settings. Runs alternate A, B, A, B, … ({settings['rounds']} each), every one after a warm-up; "
        "median (min–max) over the runs.",
        "",
        f"| c=1 | A: after ({results['head']}) | B: before ({BEFORE_COMMIT}) | A / B, medians | goal |",
        "|---|---:|---:|---:|---|",
    ]
    for scenario, label, scale, unit in (
        ("single", "single record /predict", 1.0, "µs"),
        ("batch", f"{BATCH_ROWS:,}-row /predict_batch", 1000.0, "ms"),
    ):
        a, b = results["cpu"][scenario]["A"], results["cpu"][scenario]["B"]
        digits = 0 if unit == "µs" else 1
        lines.append(
            f"| {label}: server CPU per request, {unit} | "
            f"{spread([r['server_cpu_us_per_request'] / scale for r in a], digits)} | "
            f"{spread([r['server_cpu_us_per_request'] / scale for r in b], digits)} | "
            f"{summary['cpu_ratio'][scenario]:.2f}x | <= 1.05x |"
        )
        screen = [r["screen_cpu_s"] / max(r["requests"], 1) * 1e6 / scale for r in a]
        lines.append(
            f"| {label}: of which A's screening child, {unit} | {statistics.median(screen):,.{digits}f} | – | | |"
        )
        lines.append(
            f"| {label}: req/s | {spread([r['rps'] for r in a], digits=0)} | "
            f"{spread([r['rps'] for r in b], digits=0)} | "
            f"{statistics.median(r['rps'] for r in a) / statistics.median(r['rps'] for r in b):.2f}x | reported |"
        )
    lines += [
        "",
        "A is everything 3ab05fb changed in serving, not the guard alone: the guard's parse-once hand-over, "
        "the out-of-distribution flags, signed request ids and the larger prediction log all count in it. "
        "Bodies over the guard's inline limit (64 KiB; a 1,000-row batch is about "
        f"{results['batch_body_bytes'] / 1024:,.0f} KiB) are validated twice by design: once in the "
        "screening child, then again by the worker (the screen's verdict is not handed over), which the "
        "child's share above shows. Raw figures: `.kennel/bench/serving-guard-latest.json`.",
    ]
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each CPU measurement")
    parser.add_argument("--rounds", type=int, default=3, help="A, B rounds of the CPU comparison")
    parser.add_argument("--days", type=int, default=10, help="generated days to train on")
    parser.add_argument("--rows-per-day", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="a short look: 3 s measurements, 4 training days")
    parser.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.days = 3, 1, 4
    if not shutil.which("wrk"):
        parser.error("wrk is not installed (apt-get install wrk)")
    bench_run = Results(name="serving-guard", quick=args.quick)

    work = Path(tempfile.mkdtemp(prefix="kennel-bench-guard-"))
    os.environ.update({"BENTOML_HOME": str(work / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"})
    servers: list[Server] = []
    tree, made_tree = before_tree(BEFORE_COMMIT)
    try:
        print(f"load average {' '.join(map(str, bench_run.load_before))}; training the demo model …", flush=True)
        spec, train_result, model_dir = train_model(work, args.days, args.rows_per_day)

        from kennel.lake import Lake
        from kennel.model import ModelCard
        from kennel.serving.model_store import build_bento, save_model

        lake_a, lake_b = Lake(work / "lake-a"), Lake(work / "lake-b")
        model_tag = save_model(model_dir, name="kennel-credit-demo", labels={}, metadata={})
        bento_tag = build_bento(model_tag, bento_name="kennel-credit-demo", labels={}, lake=lake_a)
        card = ModelCard.load(model_dir)
        records = request_records(spec, SINGLE_POOL + BATCH_BODIES * BATCH_ROWS)
        singles, batch_records = records[:SINGLE_POOL], records[SINGLE_POOL:]
        batches = [batch_records[i * BATCH_ROWS : (i + 1) * BATCH_ROWS] for i in range(BATCH_BODIES)]
        print("building hostile bodies …", flush=True)
        hostile = hostile_bodies(spec, card, singles)
        batch_bodies = [json.dumps({"records": b}).encode() for b in batches]
        scripts = {
            "single": lua_script("/predict", [json.dumps(r).encode() for r in singles], work, "single"),
            "batch": lua_script("/predict_batch", batch_bodies, work, "batch"),
        }

        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["KENNEL_PREDICTION_LOG_FLUSH_S"] = str(FLUSH_S)
        env["KENNEL_MAX_REQUEST_BYTES"] = str(MAX_REQUEST_BYTES)
        env["KENNEL_REQUEST_TIMEOUT_S"] = str(REQUEST_TIMEOUT_S)
        bentoml_cli = str(Path(sys.executable).parent / "bentoml")
        print("starting A (a Bento of this tree) …", flush=True)
        port_a = free_port()
        server_a = start_server(
            "A",
            [bentoml_cli, "serve", bento_tag, "--host", "127.0.0.1", "--port", str(port_a)],
            {**env, "KENNEL_LAKE_ROOT": str(lake_a.root)},
            work / "a.log",
            port_a,
        )
        servers.append(server_a)
        load1_during: list[float] = []

        # 1. latency of single records under hostile bodies
        wrk(server_a.base_url, scripts["single"], 1, args.warmup)
        alone: list[dict[str, Any]] = []
        hostile_runs: dict[str, Any] = {}

        def alone_run() -> None:
            run = measure(server_a, scripts["single"], args.duration)
            alone.append(run)
            load1_during.append(run["load1"])
            print(f"  alone: p50 {_ms(run['p50_us'])} ms  p99 {_ms(run['p99_us'])} ms  load {run['load1']}", flush=True)

        alone_run()
        for kind, body in hostile.items():
            client = HostileClient(port_a, body["route"], body["media_type"], body["body"])
            before = cpu_by_role(server_a)
            client.start()
            time.sleep(0.2)
            single = measure(server_a, scripts["single"], args.duration)
            client.stop.set()
            client.join(timeout=120)
            after = cpu_by_role(server_a)
            summary = client.summary()
            hostile_runs[kind] = {
                "single": single,
                "hostile": summary,
                "server_cpu_s": after["total"] - before["total"],
                "screen_cpu_s": after["screen"] - before["screen"],
            }
            load1_during.append(single["load1"])
            print(
                f"  {kind:14s}: p50 {_ms(single['p50_us'])} ms  p99 {_ms(single['p99_us'])} ms  "
                f"max {_ms(single['max_us'])} ms  hostile {summary['sent']} sent, {summary['4xx']} 4xx, "
                f"{summary['5xx']} 5xx, {summary['dropped']} dropped, answer {summary['answer_s_median']} s  "
                f"load {single['load1']}",
                flush=True,
            )
            alone_run()

        # Where the worker's time goes under the body that stretched the tail most (a run of its own)
        worst = max(hostile_runs, key=lambda kind: hostile_runs[kind]["single"]["p99_us"])
        profile = worker_profile(server_a, hostile[worst], args.duration, work / "py-spy.txt")
        profile["kind"] = worst
        print(f"  py-spy of the worker under {worst} bodies: {profile}", flush=True)

        # 2. CPU per request, A against B
        print(f"starting B ({BEFORE_COMMIT} from {tree}) …", flush=True)
        port_b = free_port()
        server_b = start_server(
            "B",
            [
                bentoml_cli,
                "serve",
                "bentos.service:KennelService",
                "--working-dir",
                str(tree),
                "--host",
                "127.0.0.1",
                "--port",
                str(port_b),
            ],
            {
                **env,
                "PYTHONPATH": str(tree),
                "KENNEL_MODEL_TAG": model_for_before(model_dir, tree),
                "KENNEL_LAKE_ROOT": str(lake_b.root),
            },
            work / "b.log",
            port_b,
        )
        servers.append(server_b)
        # The answers tell the two apart: 3ab05fb added `warnings` to every prediction.
        if "warnings" not in _post(server_a, singles[0]) or "warnings" in _post(server_b, singles[0]):
            raise RuntimeError("A and B do not answer as the current and the old service: check their logs")
        cpu_runs: dict[str, dict[str, list[dict[str, Any]]]] = {s: {"A": [], "B": []} for s in scripts}
        for round_ in range(args.rounds):
            for scenario in scripts:
                for server in (server_a, server_b):
                    wrk(server.base_url, scripts[scenario], 1, args.warmup)
                    run = measure(server, scripts[scenario], args.duration)
                    cpu_runs[scenario][server.name].append(run)
                    load1_during.append(run["load1"])
                    print(
                        f"  round {round_ + 1} {scenario:6s} {server.name}: "
                        f"{run['server_cpu_us_per_request']:9,.0f} µs CPU/request  {run['rps']:7.1f} req/s  "
                        f"errors {run['status_errors']}/{run['socket_errors']}  load {run['load1']}",
                        flush=True,
                    )
        bench_run.load_after = load_average()
        for server in servers:
            server.stop()
        servers.clear()

        import bentoml

        results: dict[str, Any] = {
            "head": _head(),
            "environment": {
                "bentoml": bentoml.__version__,
                "wrk": _wrk_version(),
                "load1_during": load1_during,
            },
            "settings": {
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "rounds": args.rounds,
                "flush_s": FLUSH_S,
                "max_request_bytes": MAX_REQUEST_BYTES,
                "before_commit": BEFORE_COMMIT,
                "ready_s": {"A": server_a.ready_s, "B": server_b.ready_s},
            },
            "model": {
                "tag": model_tag,
                "trees": train_result.num_boosted_rounds,
                "features": len(spec.model_features),
                "train_rows": int(args.days * args.rows_per_day * 0.8),
            },
            "bodies": {
                kind: {"route": b["route"], "what": b["what"], "bytes": len(b["body"])} for kind, b in hostile.items()
            },
            "batch_body_bytes": statistics.mean(len(b) for b in batch_bodies),
            "latency": {"alone": alone, "hostile": hostile_runs},
            "profile": profile,
            "cpu": cpu_runs,
        }
        results["summary"] = summarise(results)
        bench_run.goals = goals_of(results, args.quick)
        bench_run.raw = results
        text = report(results, bench_run)
        print("\n" + text)
        print(f"\nraw figures: {save_results(bench_run)}")
        if args.write:
            write_section("serving-guard", text, after=AFTER_SECTION)
            print("wrote the Serving guard section of BENCHMARKS.md")
        return 0
    finally:
        for server in servers:
            server.stop()
        if made_tree:
            _git("worktree", "remove", "--force", str(tree))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
