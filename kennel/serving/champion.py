"""Serving the champion: its Bento (built once per champion, reused after a rollback) and the command line.

    python -m kennel.serving.champion show     [--dataset NAME] [--lake PATH]
    python -m kennel.serving.champion history  [--dataset NAME] [--lake PATH]
    python -m kennel.serving.champion rollback [--dataset NAME] [--lake PATH] [--reason TEXT]

No Dagster needed; the rollback_champion job does the same inside Dagster.
"""

from __future__ import annotations

import argparse
import os
import sys

from kennel.lake import Lake, configured_root
from kennel.lake.champion import ChampionRegistry, NothingToRollBack, bento_name
from kennel.lake.records import ChampionEntry
from kennel.serving.model_store import DEFAULT_BENTOML_HOME, MODEL_CARD_FILE


def ensure_bento(registry: ChampionRegistry, lake: Lake) -> tuple[ChampionEntry, bool]:
    """The current champion with a Bento that serves it: the one recorded if it is still in the
    store, else a new build (labelled like its stored model). Returns (entry, built).

    While a challenger is in shadow beside this champion (pointer.shadow), the Bento serves both
    (recorded on the shadow entry, `record_shadow_bento`) and the returned entry's bento_tag names
    it; otherwise the champion's own (entry.bento_tag). The champion's HTML card as of promotion
    (cards_dir()/<run_id>/promotion.html), when there is one, ships in the Bento as MODEL_CARD_FILE.
    """
    import bentoml

    from kennel.serving.model_store import build_bento

    pointer = registry.pointer()
    entry = pointer.current
    if entry is None:
        raise LookupError(f"{registry.dataset} has no champion yet: no model has passed the promotion gate")
    shadow = pointer.shadow if pointer.shadow and pointer.shadow.champion_run_id == entry.run_id else None
    recorded = shadow.bento_tag if shadow else entry.bento_tag
    if recorded:
        try:
            bentoml.bentos.get(recorded)
            return entry.model_copy(update={"bento_tag": recorded}), False
        except bentoml.exceptions.NotFound:
            pass
    labels = dict(bentoml.models.get(entry.model_tag).info.labels)
    if shadow:
        labels["shadow_model"] = shadow.model_tag
    card = lake.dataset(registry.dataset).cards_dir() / entry.run_id / "promotion.html"
    bento_tag = build_bento(
        entry.model_tag,
        bento_name=bento_name(registry.dataset),
        labels=labels,
        lake=lake,
        shadow_model_tag=shadow.model_tag if shadow else None,
        extra_files={MODEL_CARD_FILE: card} if card.is_file() else {},
    )
    if shadow:
        registry.record_shadow_bento(shadow.run_id, bento_tag)
    else:
        registry.record_bento(entry.run_id, bento_tag)
    return entry.model_copy(update={"bento_tag": bento_tag}), True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kennel.serving.champion", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["show", "history", "rollback"])
    parser.add_argument("--dataset", help="data-set name (default: the spec in KENNEL_DATASET_SPEC)")
    parser.add_argument(
        "--lake", default=str(configured_root()), help="lake root (default: $KENNEL_LAKE_ROOT or .kennel/lake)"
    )
    parser.add_argument("--reason", default="", help="why (recorded in the history)")
    args = parser.parse_args(argv)
    if args.dataset is None:
        from kennel.spec import load_spec

        args.dataset = load_spec().name
    lake = Lake(args.lake)
    registry = ChampionRegistry(lake.dataset(args.dataset))
    if args.command == "show":
        print(registry.pointer().model_dump_json(indent=2))
    elif args.command == "history":
        for event in registry.history():
            print(event.model_dump_json(exclude_none=True))
    else:
        os.environ.setdefault("BENTOML_HOME", str(DEFAULT_BENTOML_HOME))
        os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
        try:
            restored = registry.rollback(args.reason or "rollback from the command line")
        except NothingToRollBack as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        entry, built = ensure_bento(registry, lake)
        print(f"champion of {args.dataset} is now {restored.run_id} (model {entry.model_tag})")
        print(f"Bento {entry.bento_tag} ({'built' if built else 'already in the store'}); serve it with:")
        print(f"  BENTOML_HOME={os.environ['BENTOML_HOME']} bentoml serve {entry.bento_tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
