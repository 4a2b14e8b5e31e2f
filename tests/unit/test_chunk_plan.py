"""The chunk plan (`da3_core.chunks.plan`): spans, overlaps, who owns each frame, the guard's search."""

from __future__ import annotations

import pytest

from da3_core.chunks.plan import ChunkPlan, default_overlap, largest_chunk, plan_chunks


@pytest.mark.parametrize(
    "n,c,o", [(1, 4, 1), (4, 4, 2), (5, 4, 2), (40, 12, 4), (128, 16, 5), (1000, 120, 60), (7, 2, 1)]
)
def test_every_chunk_is_full_and_every_overlap_at_least_o(n, c, o):
    plan = plan_chunks(n, c, o)
    assert plan.spans[0][0] == 0 and plan.spans[-1][1] == n
    for k, (s, e) in enumerate(plan.spans):
        assert e - s == min(c, n)
        if k:
            assert plan.spans[k - 1][1] - s >= o and s > plan.spans[k - 1][0]
    owners = [plan.owner(f) for f in range(n)]
    assert owners == sorted(owners)  # frames go to chunks in order
    covered = [f for k in range(plan.n_chunks) for f in range(*plan.owned(k))]
    assert covered == list(range(n))  # each frame from exactly one chunk
    for f in range(n):
        s, e = plan.spans[plan.owner(f)]
        assert s <= f < e
    assert ChunkPlan.from_json(plan.to_json()) == plan


def test_the_known_shape_of_a_plan():
    plan = plan_chunks(10, 4, 2)
    assert plan.spans == ((0, 4), (2, 6), (4, 8), (6, 10))
    assert plan.overlap_with_previous(1) == (2, 4)
    assert plan.frames_computed == 16
    assert [plan.owned(k) for k in range(4)] == [(0, 3), (3, 5), (5, 7), (7, 10)]


@pytest.mark.parametrize(
    "n,c,o,match",
    [(0, 4, 1, "at least one frame"), (5, 1, 0, "at least 2"), (5, 4, 4, "overlap"), (5, 4, 0, "overlap")],
)
def test_bad_plans_say_which_number(n, c, o, match):
    with pytest.raises(ValueError, match=match):
        plan_chunks(n, c, o)


def test_the_guard_search_finds_the_largest_chunk_that_fits():
    assert largest_chunk(lambda k: k <= 37, 500) == 37
    assert largest_chunk(lambda k: True, 500) == 120
    assert largest_chunk(lambda k: True, 9) == 9
    assert largest_chunk(lambda k: False, 9) == 0
    assert default_overlap(120) == 40 and default_overlap(4) == 1 and default_overlap(2) == 1
