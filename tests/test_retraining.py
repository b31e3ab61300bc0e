"""The retraining decision logic: quality-aware, throttled, coalescing, and silent on repeated evidence;
decision ids that follow the evidence, and a decision log that keeps each id once."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from kennel.lake import Lake
from kennel.lake.records import RetrainDecisionRecord
from kennel.monitoring.retraining import (
    LoopState,
    PartitionSignal,
    RetrainPolicy,
    decide,
)

T0 = datetime(2026, 2, 1, 12, 0)
POLICY = RetrainPolicy(cooldown=timedelta(hours=6), max_retrains_per_day=2, min_new_validated_rows=500)


def drift(day, share=0.5, rows=1000):
    return PartitionSignal(day=day, quality_passed=True, rows=rows, drifted_share=share)


def test_drift_retrains_once_and_repeated_ticks_repeat_nothing():
    decisions, state = decide(POLICY, [drift("2026-02-01")], LoopState(), T0)
    assert [d.action for d in decisions] == ["skip", "retrain"]
    assert decisions[-1].run_key and decisions[-1].days == ("2026-02-01",)
    # The restarted sensor replays the same evidence from its cursor: no new decision, no new run.
    again, state2 = decide(
        POLICY, [drift("2026-02-01")], LoopState.from_json(state.to_json()), T0 + timedelta(minutes=1)
    )
    assert again == [] and state2.pending == []


def test_failed_partition_alerts_and_never_triggers_training():
    bad = PartitionSignal(
        day="2026-02-01", quality_passed=False, rows=1000, drifted_share=0.9, failed_checks=("gx_row_count",)
    )
    decisions, state = decide(POLICY, [bad], LoopState(), T0)
    assert [(d.action, d.reason) for d in decisions] == [("alert", "partition failed validation: gx_row_count")]
    assert state.pending == [] and state.rows_since_retrain == 0


def test_burst_during_cooldown_is_coalesced_into_one_retrain():
    _, state = decide(POLICY, [drift("2026-02-01")], LoopState(), T0)
    held, state = decide(POLICY, [drift("2026-02-02"), drift("2026-02-03")], state, T0 + timedelta(hours=1))
    assert held[-1].action == "skip" and "cooldown" in held[-1].reason
    quiet, state = decide(POLICY, [], state, T0 + timedelta(hours=2))
    assert quiet == []  # still held for the same reason: nothing new to log
    released, state = decide(POLICY, [], state, T0 + timedelta(hours=7))
    assert [d.action for d in released] == ["retrain"]
    assert released[0].days == ("2026-02-02", "2026-02-03")


def test_daily_limit_and_minimum_rows_hold_retraining():
    policy = RetrainPolicy(cooldown=timedelta(0), max_retrains_per_day=1, min_new_validated_rows=500)
    _, state = decide(policy, [drift("2026-02-01")], LoopState(), T0)
    held, state = decide(policy, [drift("2026-02-02")], state, T0 + timedelta(hours=1))
    assert "daily limit" in held[-1].reason
    small, _ = decide(POLICY, [drift("2026-02-05", rows=100)], LoopState(), T0)
    assert small[-1].action == "skip" and "new validated rows" in small[-1].reason


def test_performance_decay_triggers_and_no_signal_only_logs():
    decay = PartitionSignal(day="2026-02-01", quality_passed=True, rows=1000, realized_auc=0.70, champion_auc=0.80)
    calm = PartitionSignal(
        day="2026-02-02", quality_passed=True, rows=1000, drifted_share=0.05, realized_auc=0.79, champion_auc=0.80
    )
    decisions, _ = decide(POLICY, [decay, calm], LoopState(), T0)
    assert [d.action for d in decisions] == ["skip", "skip", "retrain"]
    assert "performance decay" in decisions[0].reason and decisions[1].reason.startswith("no drift")
    assert decisions[-1].days == ("2026-02-01",)


def test_decision_ids_follow_the_evidence_not_the_clock():
    signals = [drift("2026-02-01"), PartitionSignal(day="2026-02-02", quality_passed=False, rows=0)]
    first, state = decide(POLICY, signals, LoopState(), T0)
    # The same cursor evaluated later (a preview, then the tick) decides the same ids and run key.
    replay, _ = decide(POLICY, signals, LoopState(), T0 + timedelta(minutes=5))
    assert [d.decision_id for d in replay] == [d.decision_id for d in first]
    assert [d.at for d in replay] != [d.at for d in first]
    assert len({d.decision_id for d in first}) == len(first)
    retrain = first[-1]
    assert retrain.action == "retrain" and retrain.run_key == f"retrain-{retrain.decision_id}"

    # The same days with new evidence are a new decision, and a retrain on them a new run.
    again, _ = decide(POLICY, [drift("2026-02-01", share=0.6)], state, T0 + timedelta(hours=7))
    assert again[-1].action == "retrain" and again[-1].days == retrain.days
    assert again[-1].run_key != retrain.run_key
    assert not {d.decision_id for d in again} & {d.decision_id for d in first}


def test_evidence_that_returns_is_decided_again():
    failed = PartitionSignal(day="2026-02-01", quality_passed=False, rows=0, failed_checks=("gx_row_count",))
    alert, state = decide(POLICY, [failed], LoopState(), T0)
    _, state = decide(POLICY, [drift("2026-02-01", share=0.0)], state, T0 + timedelta(hours=1))  # fixed
    alert_again, _ = decide(POLICY, [failed], state, T0 + timedelta(hours=2))  # and broken the same way
    assert [d.action for d in alert_again] == ["alert"]
    assert alert_again[0].decision_id != alert[0].decision_id


def test_the_decision_log_keeps_one_entry_per_decision_id(tmp_path):
    data = Lake(tmp_path / "lake").dataset("loop")
    decisions, _ = decide(POLICY, [drift("2026-02-01"), drift("2026-02-02")], LoopState(), T0)
    records = [d.record() for d in decisions]
    assert data.append_decisions(records[:1]) == records[:1]
    assert data.append_decisions(records) == records[1:]  # the first is logged already
    assert data.append_decisions(records) == []
    assert [r.decision_id for r in data.decisions()] == [r.decision_id for r in records]


def test_concurrent_evaluations_log_each_decision_once(tmp_path):
    data = Lake(tmp_path / "lake").dataset("loop")
    decisions, _ = decide(POLICY, [drift(f"2026-02-{d:02d}") for d in range(1, 8)], LoopState(), T0)
    records = [d.record() for d in decisions]
    start = threading.Barrier(8)

    def evaluate() -> list[RetrainDecisionRecord]:
        start.wait()
        return data.append_decisions(records)

    with ThreadPoolExecutor(8) as pool:
        logged_by = list(pool.map(lambda _: evaluate(), range(8)))
    assert sorted(len(new) for new in logged_by) == [0] * 7 + [len(records)]
    assert [r.decision_id for r in data.decisions()] == [r.decision_id for r in records]


def estimated(day, auc, rows=2000, champion_auc=0.85):
    return PartitionSignal(
        day=day, quality_passed=True, rows=rows, estimated_auc=auc, estimated_rows=rows, champion_auc=champion_auc
    )


def test_an_estimated_drop_retrains_marked_as_an_estimate():
    decisions, _ = decide(POLICY, [estimated("2026-02-01", 0.78)], LoopState(), T0)
    noted = [d for d in decisions if d.reason.startswith("signal noted")]
    assert len(noted) == 1 and "estimated performance decay (no labels)" in noted[0].reason
    assert noted[0].numbers["estimated_auc"] == 0.78 and decisions[-1].action == "retrain"
    assert decisions[-1].thresholds["estimated_auc_drop"] == POLICY.estimated_auc_drop


def test_an_estimate_on_too_few_rows_or_a_disabled_policy_does_not_retrain():
    few, _ = decide(POLICY, [estimated("2026-02-01", 0.70, rows=300)], LoopState(), T0)
    assert [d.action for d in few] == ["skip"] and few[0].reason == "no drift or decay above thresholds"
    off = RetrainPolicy(estimated_auc_drop=None, min_new_validated_rows=500)
    disabled, _ = decide(off, [estimated("2026-02-01", 0.70)], LoopState(), T0)
    assert [d.action for d in disabled] == ["skip"]


def test_a_cursor_saved_before_estimates_existed_keeps_its_fingerprints():
    """Signal fields added later enter a fingerprint only once set: a sensor upgraded in place does not
    decide every day it already decided on again."""
    _, state = decide(POLICY, [drift("2026-02-01")], LoopState(), T0)
    again, _ = decide(POLICY, [drift("2026-02-01")], state, T0 + timedelta(hours=1))
    assert again == []
    # The fingerprint the code before estimates gave this signal (kennel/monitoring/retraining.py, issue 12).
    assert state.seen["2026-02-01"] == "aa2875cfdfa9"
