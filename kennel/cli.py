"""`kennel`: the documented way from a folder of files to a served, monitored model.

    kennel init SOURCE --name NAME    sample landed files and write a commented spec for review
    kennel check SPEC                 validate a spec and dry-run cleaning on a sample
    kennel ingest --from DAY --to DAY land → clean + quarantine → checks → drift, for those days
    kennel train                      features → training set → model → gate → champion → Bento
    kennel serve                      serve the champion's Bento over HTTP
    kennel status                     champion, recent decisions, failed days, drift
    kennel lineage REQUEST_ID         the model, data days, gate decision and champion history behind an answer
    kennel lineage --at TIMESTAMP     the champion in force at a past moment
    kennel backup DEST                lake, model store and Dagster instance state to a folder or s3:// prefix
    kennel restore SRC                a backup into an empty environment (checksums verified first)

`ingest` and `train` run the project's Dagster jobs with `dagster job execute` in the project's instance
(DAGSTER_HOME), printing the exact command first: every run shows in the UI, and the same command works
without Kennel's wrapper. The wrapper checks the day range first and summarises what the run left in the
lake afterwards. Nothing here imports Dagster; `init`, `check`, `serve`, `status` and `lineage` never start it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from kennel.deployment import INGEST_JOB, TRAIN_JOB, load_deployment, scoped_name
from kennel.lake import LAKE_ROOT_ENV, Lake, configured_root
from kennel.lake.champion import ChampionRegistry
from kennel.onboarding.cli import add_check_parser, add_init_parser
from kennel.serving.model_store import DEFAULT_BENTOML_HOME
from kennel.spec import PROJECT_ROOT, DatasetSpec, SpecError

STATE = PROJECT_ROOT / ".kennel"
INSTANCE_SETTINGS = Path(__file__).with_name("dagster_instance.yaml")
RUN_CONFIG = Path(__file__).with_name("run_config_info_logs.yaml")
# Exit status of `kennel train` when everything worked and the promotion gate kept the champion.
GATE_KEPT_CHAMPION = 3


class CommandError(RuntimeError):
    """A command that cannot go on; the message says why and what to do."""


def project_environment() -> None:
    """The defaults `make` sets, for a `kennel` run from any shell: state inside the project, nothing sent
    anywhere. A variable already set wins."""
    os.environ.setdefault("DAGSTER_HOME", str(STATE / "dagster_home"))
    os.environ.setdefault("BENTOML_HOME", str(DEFAULT_BENTOML_HOME))
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DAGSTER_TELEMETRY_ENABLED", "False")
    home = Path(os.environ["DAGSTER_HOME"])
    if not (home / "dagster.yaml").exists():
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(INSTANCE_SETTINGS, home / "dagster.yaml")


def _dataset(name: str | None) -> tuple[DatasetSpec, bool]:
    """The data set a command is about, and whether the deployment holds several."""
    specs, several = load_deployment()
    names = [spec.name for spec in specs]
    if name is None:
        if len(specs) == 1:
            return specs[0], several
        raise CommandError(f"this deployment holds several data sets; name one with --dataset ({', '.join(names)})")
    for spec in specs:
        if spec.name == name:
            return spec, several
    raise CommandError(f"no data set {name!r} in this deployment (it holds {', '.join(names)})")


def _lake() -> Lake:
    root = configured_root()
    if root.startswith("s3://"):
        raise CommandError(f"{LAKE_ROOT_ENV} is {root}: `kennel status` and `kennel serve` read a local lake")
    return Lake(root)


def _executable(name: str) -> str:
    """A console script of this interpreter's environment (never another one from PATH)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise CommandError(f"{path} is missing: install the project with `make setup`")
    return str(path)


def run_dagster_job(job: str, tags: dict[str, str] | None = None) -> int:
    """Execute a job of the project's code location in its instance; the command is printed first."""
    command = [
        _executable("dagster"),
        "job",
        "execute",
        "-f",
        "definitions.py",
        "-j",
        job,
        "-c",
        str(RUN_CONFIG.relative_to(PROJECT_ROOT)),
    ]
    if tags:
        command += ["--tags", json.dumps(tags)]
    shown = shlex.join(["dagster", *command[1:]])
    print(f"$ cd {PROJECT_ROOT} && DAGSTER_HOME={os.environ['DAGSTER_HOME']} {shown}", flush=True)
    return subprocess.run(command, cwd=PROJECT_ROOT, check=False).returncode


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day (YYYY-MM-DD)") from None


def ingest(args: argparse.Namespace) -> int:
    spec, several = _dataset(args.dataset)
    first, last = args.start, args.end or args.start
    # Daily partitions exist from the spec's start_date up to the last whole day (UTC).
    newest = datetime.now(UTC).date() - timedelta(days=1)
    if first > last:
        raise CommandError(f"--from {first} is after --to {last}")
    if first < spec.start_date:
        raise CommandError(f"--from {first} is before the data set's start_date {spec.start_date} (in its spec)")
    if last > newest:
        raise CommandError(f"--to {last}: the newest day that can be ingested is {newest}, the last whole day (UTC)")
    tags = {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }
    code = run_dagster_job(scoped_name(spec.name, INGEST_JOB, several), tags)
    data = _lake().dataset(spec.name)
    records = [r for r in data.quality_records() if first.isoformat() <= r.day <= last.isoformat()]
    print(f"\n{spec.name}: {len(records)} day(s) recorded between {first} and {last}")
    for r in records:
        verdict = "passed" if r.passed else f"FAILED ({', '.join(r.failed_checks)})"
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(r.reasons.items())) or "none"
        labelled = f"  {r.labelled_share:.0%} labelled" if r.labelled_share is not None else ""
        print(
            f"  {r.day}  {r.rows_in:>8,} in  {r.rows_clean:>8,} clean{labelled}  {r.rows_quarantined:>6,} "
            f"quarantined ({reasons})  {verdict}"
        )
    return code


def train(args: argparse.Namespace) -> int:
    spec, several = _dataset(args.dataset)
    registry = ChampionRegistry(_lake().dataset(spec.name))
    decided_before = len(registry.decisions())
    code = run_dagster_job(scoped_name(spec.name, TRAIN_JOB, several))
    decisions = registry.decisions()[decided_before:]
    champion = registry.current()
    if decisions:
        print(f"\npromotion gate: {decisions[-1].summary}")
    if champion is not None:
        print(
            f"champion of {spec.name}: {champion.model_tag} ({champion.event} {champion.since}); "
            f"Bento {champion.bento_tag}"
        )
    if code != 0 and decisions and not decisions[-1].passed:
        print("the gate kept the current champion; nothing else failed")
        return GATE_KEPT_CHAMPION
    return code


def serve(args: argparse.Namespace) -> int:
    spec, _ = _dataset(args.dataset)
    lake = _lake()
    champion = ChampionRegistry(lake.dataset(spec.name)).current()
    if champion is None or not champion.bento_tag:
        raise CommandError(f"{spec.name} has no champion with a Bento yet: run `kennel train` first")
    os.environ[LAKE_ROOT_ENV] = str(lake.root)  # the service logs predictions into this lake
    command = [_executable("bentoml"), "serve", champion.bento_tag, "--host", args.host, "--port", str(args.port)]
    print(
        f"$ BENTOML_HOME={os.environ['BENTOML_HOME']} {LAKE_ROOT_ENV}={lake.root} "
        f"{shlex.join(['bentoml', *command[1:]])}"
    )
    sys.stdout.flush()
    os.execv(command[0], command)  # the server takes this process: Ctrl-C and signals reach it directly


def status(args: argparse.Namespace) -> int:
    from kennel.training.card_page import LATEST_CARD

    specs, _ = load_deployment()
    chosen = [_dataset(args.dataset)[0]] if args.dataset else specs
    lake = _lake()
    for spec in chosen:
        data = lake.dataset(spec.name)
        print(f"== {spec.name}  (lake {lake.root})")
        pointer = ChampionRegistry(data).pointer()
        champion = pointer.current
        if champion is None:
            print("champion   none yet: run `kennel train`")
        else:
            auc = champion.metrics.get("roc_auc")
            print(
                f"champion   {champion.model_tag}  since {champion.since}  ({champion.event}: "
                f"{champion.reason or champion.decision_summary})"
                + (f"  test ROC-AUC {auc:.4f}" if isinstance(auc, float) else "")
            )
            card = data.cards_dir() / champion.run_id / LATEST_CARD
            if card.is_file():
                print(f"card       {card}")
        if pointer.shadow is not None:
            print(f"shadow     {pointer.shadow.model_tag}  since {pointer.shadow.since}  (shadow_evaluation decides)")
        records = data.quality_records()
        failed = [r for r in records if not r.passed]
        print(f"days       {len(records)} ingested, {len(records) - len(failed)} passed validation")
        for r in failed[-args.days :]:
            print(f"  failed   {r.day}: {', '.join(r.failed_checks)}")
        drift = data.monitoring_records("data_drift")
        measured = [drift[day] for day in sorted(drift) if drift[day].drifted_share is not None][-args.days :]
        print(f"drift      {'not measured yet (needs a champion)' if not measured else ''}")
        for m in measured:
            flag = "DRIFT" if m.dataset_drift else "ok"
            top = ", ".join(m.drifted_features[:3])
            print(
                f"  {m.day}  {flag:<5} drifted share {m.drifted_share:.2f}  "
                f"prediction PSI {m.prediction_psi or 0:.3f}  {top}"
            )
        estimated = data.monitoring_records("estimated_performance")
        shown = [estimated[day] for day in sorted(estimated) if estimated[day].estimated_roc_auc is not None]
        print(f"estimated  {'not measured yet (needs a champion)' if not shown else ''}")
        for e in shown[-args.days :]:
            auc = e.estimates["roc_auc"]
            error = e.estimation_error.get("roc_auc")
            checked = (
                f"  realized {e.roc_auc:.3f} (error {error:+.3f})"
                if e.roc_auc is not None and error is not None
                else ""
            )
            concept = "  CONCEPT DRIFT" if e.concept_drift_suspected else ""
            interval = f" [{auc.low:.3f}, {auc.high:.3f}]" if auc.low is not None and auc.high is not None else ""
            print(f"  {e.day}  AUC {auc.value:.3f}{interval} on {e.rows} rows{checked}{concept}")
        decisions = data.decisions()[-args.days :]
        print(f"decisions  {'none yet' if not decisions else ''}")
        for d in decisions:
            print(
                f"  {d.at[:19]}  {d.action:<7} {d.reason}  ({', '.join(d.days[:3])}{' …' if len(d.days) > 3 else ''})"
            )
    return 0


def lineage(args: argparse.Namespace) -> int:
    from kennel.lineage import champion_at, parse_moment
    from kennel.lineage import lineage as request_lineage

    if (args.request_id is None) == (args.at is None):
        raise CommandError("give a REQUEST_ID or --at TIMESTAMP (one of them)")
    spec, _ = _dataset(args.dataset)
    data = (Lake(args.lake) if args.lake else _lake()).dataset(spec.name)
    try:
        found = champion_at(data, parse_moment(args.at)) if args.at else request_lineage(data, args.request_id)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    except LookupError as exc:
        print(f"kennel lineage: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(found.to_json(), indent=2) if args.json else found.render())
    return 0


def backup(args: argparse.Namespace) -> int:
    from kennel.backup import BackupError
    from kennel.backup import backup as back_up
    from kennel.lake.s3 import S3TransferError

    try:
        manifest = back_up(args.destination, include_raw=not args.without_raw)
    except (BackupError, S3TransferError) as exc:
        raise CommandError(str(exc)) from None
    total = sum(f.bytes for f in manifest.files)
    print(f"backed up {len(manifest.files)} files ({total:,} bytes) to {args.destination}")
    for dataset, tag in manifest.champions.items():
        print(f"  {dataset}: champion {tag or '(none)'}")
    return 0


def restore(args: argparse.Namespace) -> int:
    from kennel.backup import BackupError
    from kennel.backup import restore as restore_backup
    from kennel.lake.s3 import S3TransferError

    try:
        manifest = restore_backup(args.source, force=args.force)
    except (BackupError, S3TransferError) as exc:
        raise CommandError(str(exc)) from None
    print(f"restored {len(manifest.files)} files from {args.source} (backed up {manifest.created_at})")
    for dataset, tag in manifest.champions.items():
        print(f"  {dataset}: champion {tag or '(none)'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kennel", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_init_parser(commands)
    add_check_parser(commands)
    dataset = argparse.ArgumentParser(add_help=False)
    dataset.add_argument("--dataset", help="the data set, when the deployment (KENNEL_DATASETS) holds several")

    p = commands.add_parser("ingest", parents=[dataset], help="ingest landed days (Dagster job ingest_daily)")
    p.add_argument("--from", dest="start", type=_day, required=True, metavar="DAY", help="first day, YYYY-MM-DD")
    p.add_argument("--to", dest="end", type=_day, metavar="DAY", help="last day (default: --from)")
    p.set_defaults(func=ingest)
    p = commands.add_parser(
        "train", parents=[dataset], help="train, gate, promote, package (Dagster job train_and_package)"
    )
    p.set_defaults(func=train)
    p = commands.add_parser("serve", parents=[dataset], help="serve the champion's Bento (bentoml serve)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=serve)
    p = commands.add_parser("status", parents=[dataset], help="champion, failed days, drift and decisions")
    p.add_argument("--days", type=int, default=7, help="how many recent days and decisions to list")
    p.set_defaults(func=status)
    p = commands.add_parser(
        "lineage", parents=[dataset], help="what answered a request, and from what; or the champion at a moment"
    )
    p.add_argument("request_id", nargs="?", metavar="REQUEST_ID", help="a request id the service returned")
    p.add_argument("--at", metavar="TIMESTAMP", help="ISO 8601 moment (naive = UTC): the champion then")
    p.add_argument("--lake", metavar="PATH", help=f"the lake's root folder (default: {LAKE_ROOT_ENV} or .kennel/lake)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=lineage)
    p = commands.add_parser("backup", help="back up the lake, the model store and the Dagster instance's state")
    p.add_argument("destination", metavar="DEST", help="a new or empty local folder, or s3://bucket/prefix")
    p.add_argument("--without-raw", action="store_true", help="leave out raw/ (the landed files, kept elsewhere)")
    p.set_defaults(func=backup)
    p = commands.add_parser("restore", help="restore a backup (stop the Dagster daemon and servers first)")
    p.add_argument("source", metavar="SRC", help="the backup's local folder or s3://bucket/prefix")
    p.add_argument("--force", action="store_true", help="replace a lake, model store or instance that holds state")
    p.set_defaults(func=restore)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    project_environment()
    try:
        return int(args.func(args))
    except (CommandError, SpecError) as exc:
        print(f"kennel {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
