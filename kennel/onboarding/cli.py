"""The `kennel init` and `kennel check` subcommands (argparse); kennel/cli.py adds them to `kennel`.

Exit codes: 0 done; 1 the landed files cannot be listed or read; 2 the user must act (an invalid spec,
a choice to make, a column to rename, a spec file that exists).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kennel.onboarding.dry_run import DEFAULT_DAYS, DEFAULT_ROWS_PER_FILE, dry_run
from kennel.onboarding.infer import SAMPLE_ROWS_PER_DAY, InitRequest, OnboardingError, init_spec
from kennel.onboarding.landed import FILE_FORMATS, SourceError
from kennel.spec import SpecError, load_spec


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def ask_on_terminal(question: str, candidates: list[tuple[str, str]]) -> str:
    """Ask on the terminal until one of the candidates is named (by number or name)."""
    print(question)
    for number, (name, evidence) in enumerate(candidates, start=1):
        print(f"  {number}. {name}" + (f"  ({evidence})" if evidence else ""))
    names = [name for name, _ in candidates]
    while True:
        try:
            answer = input(f"number (1-{len(names)}) or name: ").strip()
        except EOFError:
            raise OnboardingError(f"no answer to: {question}") from None
        if answer in names:
            return answer
        if answer.isdigit() and 1 <= int(answer) <= len(names):
            return names[int(answer) - 1]


def run_init(args: argparse.Namespace) -> int:
    request = InitRequest(
        source=args.source,
        name=args.name,
        out=Path(args.out or f"{args.name}.yaml"),
        label=args.label,
        positive=args.positive,
        id_column=args.id_column,
        timestamp_column=args.timestamp_column,
        file_format=args.file_format,
        rows_per_day=args.rows,
        force=args.force,
    )
    try:
        draft = init_spec(request, ask_on_terminal if sys.stdin.isatty() else None)
    except SourceError as exc:
        print(f"kennel init: error: {exc}", file=sys.stderr)
        return 1
    except OnboardingError as exc:
        print(f"kennel init: {exc}", file=sys.stderr)
        return 2
    for note in draft.notes:
        print(note)
    print(
        f"wrote {request.out}: review it (each choice is explained in a comment), then run: kennel check {request.out}"
    )
    return 0


def run_check(args: argparse.Namespace) -> int:
    try:
        spec = load_spec(args.spec)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        report = dry_run(spec, days=args.days, rows_per_file=args.rows)
    except SourceError as exc:
        print(f"kennel check: error: {exc}", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    return 0


def add_init_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "init",
        help="draft a data-set spec from landed files",
        description="Sample the first, middle and last landed days of SOURCE and write a commented data-set "
        "spec for review. Ambiguous choices are asked on a terminal; elsewhere name them with the flags.",
    )
    parser.add_argument("source", metavar="SOURCE", help="folder of landed daily files, or s3://bucket/prefix")
    parser.add_argument("--name", required=True, help="data-set name (lower case letters, digits, _)")
    parser.add_argument("--label", metavar="COL", help="the label column")
    parser.add_argument("--positive", metavar="VALUE", help="the label value meaning positive")
    parser.add_argument("--id", dest="id_column", metavar="COL", help="the record id column")
    parser.add_argument("--timestamp", dest="timestamp_column", metavar="COL", help="the event time column")
    parser.add_argument("--out", metavar="SPEC.yaml", help="where to write the spec (default: NAME.yaml)")
    parser.add_argument("--format", dest="file_format", choices=FILE_FORMATS, help="when files of several formats land")
    parser.add_argument(
        "--rows", type=_positive_int, default=SAMPLE_ROWS_PER_DAY, help="rows sampled per day (default: %(default)s)"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing spec file")
    parser.set_defaults(func=run_init)
    return parser


def add_check_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "check",
        help="validate a spec and dry-run cleaning on a sample of its files",
        description="Validate SPEC, then run the real cleaning on up to N landed days (first, middle, last) and "
        "up to M rows of each file, in a temporary lake; print what would be clean and quarantined, and why.",
    )
    parser.add_argument("spec", metavar="SPEC", help="the data-set spec (YAML)")
    parser.add_argument("--days", type=_positive_int, default=DEFAULT_DAYS, help="days to clean (default: %(default)s)")
    parser.add_argument(
        "--rows", type=_positive_int, default=DEFAULT_ROWS_PER_FILE, help="rows per file (default: %(default)s)"
    )
    parser.set_defaults(func=run_check)
    return parser
