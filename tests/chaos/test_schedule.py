"""The seeded schedule: the same seed gives the same faults; options are validated."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from chaos.errors import ChaosConfigError
from chaos.options import ChaosOptions
from chaos.schedule import FaultKind, PlannedFault, parse_faults, plan

ALL = tuple(FaultKind)


def test_the_same_seed_gives_the_same_schedule() -> None:
    a = plan(42, 300, ALL, [1, 2, 3])
    b = plan(42, 300, ALL, [3, 1, 2])  # the brokers' order does not matter
    assert a == b
    assert len(a) >= 10
    assert plan(43, 300, ALL, [1, 2, 3]) != a


def test_a_schedule_fits_its_window_and_is_ordered() -> None:
    for seed in range(50):
        faults = plan(seed, 120, ALL, [1, 2, 3], first_s=5)
        assert faults, seed
        assert faults[0].start_s == 5
        assert [f.index for f in faults] == list(range(len(faults)))
        for prev, nxt in itertools.pairwise(faults):
            assert nxt.start_s >= prev.start_s + prev.hold_s + 5  # recovery and a gap
        for f in faults:
            assert f.start_s + f.hold_s <= 120
            assert (f.broker is None) == (f.kind is FaultKind.COORDINATOR_KILL)
            assert f.broker in (None, 1, 2, 3)
            if f.kind is FaultKind.RESTART:
                assert f.hold_s == 0
            else:
                assert 0.5 <= f.hold_s <= 10


def test_every_kind_and_both_hold_lengths_are_drawn() -> None:
    faults = plan(7, 3_000, ALL, [1, 2, 3])
    assert {f.kind for f in faults} == set(ALL)
    holds = [f.hold_s for f in faults if f.kind is not FaultKind.RESTART]
    assert any(h <= 2 for h in holds) and any(h >= 4 for h in holds)


def test_only_the_asked_kinds_are_planned() -> None:
    faults = plan(1, 600, (FaultKind.PAUSE,), [2])
    assert {(f.kind, f.broker) for f in faults} == {(FaultKind.PAUSE, 2)}


def test_a_window_too_short_plans_nothing() -> None:
    assert plan(1, 4, ALL, [1, 2, 3]) == ()


def test_planned_faults_describe_themselves() -> None:
    assert PlannedFault(3, 12.5, FaultKind.KILL, 2, 4.25).describe() == (
        "#3 at 12.5s: kill broker 2 for 4.2s"
    )
    restart = PlannedFault(0, 5, FaultKind.COORDINATOR_KILL, None, 1).describe()
    assert restart == "#0 at 5.0s: coordinator-kill coordinator leader for 1.0s"


def test_parse_faults() -> None:
    assert parse_faults("kill, pause,kill,coordinator-kill") == (
        FaultKind.KILL,
        FaultKind.PAUSE,
        FaultKind.COORDINATOR_KILL,
    )
    with pytest.raises(ChaosConfigError, match=r"unknown fault 'explode'; known: kill, pause"):
        parse_faults("kill,explode")
    with pytest.raises(ChaosConfigError, match="names no fault"):
        parse_faults(" , ")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"target": "k8s"}, "--target must be one of process, compose"),
        ({"duration_s": 5}, "--duration must be at least 10"),
        ({"partitions": 0}, "--partitions"),
        ({"producers": 0}, "--producers"),
        ({"consumers": -1}, "--consumers"),
        ({"rate": -1}, "--rate"),
        ({"quiet_s": 200}, "--quiet"),
        ({"faults": ()}, "--faults"),
    ],
)
def test_bad_options_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ChaosConfigError, match=message):
        ChaosOptions(**change).validated()  # type: ignore[arg-type]


def test_validation_fills_in_seed_topic_and_out_dir() -> None:
    opts = ChaosOptions(run_id="20240101-000000").validated()
    assert opts.seed is not None
    assert opts.topic == "chaos-20240101-000000"
    assert opts.out_dir == Path("chaos-20240101-000000")
    assert opts.group == "chaos-20240101-000000"
    assert opts.quiet == 30  # a quarter of 120 s
    assert ChaosOptions(duration_s=20).quiet == 10
    assert ChaosOptions(duration_s=1000).quiet == 60
    assert ChaosOptions(seed=5).validated().seed == 5
