"""PlanList: a run's plans held as rows, read back as the same `Plan`s (and slices, ids, columns without models)."""

from __future__ import annotations

import pytest

from distill.trajectory import Plan, PlanList, plan_column


def _plans(n: int, start: int = 0) -> list[Plan]:
    return [
        Plan(id=f"c{i:06d}", index=i, kind=("tool", "direct", "multi_turn")[i % 3], chunk_id=f"d{i % 4}#c0",
             doc_id=f"d{i % 4}", turns=2 if i % 3 == 2 else 1, tool=None if i % 3 == 1 else "Search", seed=10_000 + i)
        for i in range(start, start + n)
    ]


def test_plans_read_back_equal_and_in_order() -> None:
    plans = _plans(7)
    held = PlanList(plans)
    assert len(held) == 7
    assert list(held) == plans
    assert held[3] == plans[3] and held[-1] == plans[-1]
    assert held == plans and held == PlanList(plans)
    assert held.ids() == [p.id for p in plans]
    assert list(held.column("chunk_id")) == [p.chunk_id for p in plans]
    assert list(plan_column(plans, "seed")) == list(plan_column(held, "seed"))
    with pytest.raises(IndexError):
        held[7]


def test_slices_appends_and_sums() -> None:
    plans = _plans(10)
    held = PlanList(plans[:4])
    held += plans[4:6]
    held.extend(PlanList(plans[6:8]))
    held.append(plans[8])
    assert list(held) == plans[:9]
    assert isinstance(held[1::3], PlanList) and list(held[1::3]) == plans[1:9:3]
    both = held + [plans[9]]
    assert list(both) == plans and len(held) == 9  # + makes a new list
    assert PlanList.row(plans[2]) == held.rows_by_id()["c000002"]
    assert PlanList.row(plans[2]) != PlanList.row(plans[2].model_copy(update={"seed": 1}))
