"""The retraining decision logic: quality-aware, throttled, coalescing, and silent on repeated evidence."""

from datetime import datetime, timedelta

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
