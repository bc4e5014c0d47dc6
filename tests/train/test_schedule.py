"""The step plan: every worker sees its share of the same global batch; resuming at a step is exact."""

from collections import Counter

from raysft.train.schedule import StepPlan, count_targets, make_rows


def _plan(world, micro, rows=10, global_batch=4):
    return StepPlan([[i] for i in range(rows)], global_batch, micro, world, seed=1)


def test_workers_partition_the_global_batch_of_each_step():
    one, two = _plan(1, 4), _plan(2, 2)
    for step in range(6):
        rows_one = [r for mb in one.micro_batches(step, 0) for r in mb]
        rows_two = [r for rank in (0, 1) for mb in two.micro_batches(step, rank) for r in mb]
        assert sorted(rows_one) == sorted(rows_two) == sorted(one.step_rows(step))
    assert one.accumulation_steps == 1 and _plan(1, 2).accumulation_steps == 2


def test_every_row_is_seen_each_epoch_and_epochs_reshuffle():
    plan = _plan(1, 4)
    assert plan.steps_per_epoch == 3  # 10 rows / 4 per step, the last step wraps around
    epoch0 = [r[0] for s in range(3) for r in plan.step_rows(s)]
    epoch1 = [r[0] for s in range(3, 6) for r in plan.step_rows(s)]
    assert set(epoch0) == set(range(10)) == set(epoch1) and len(epoch0) == 12
    assert epoch0 != epoch1
    # Deterministic: a fresh plan (a resumed worker) yields the same rows for the same step.
    assert _plan(1, 4).step_rows(4) == plan.step_rows(4)


def test_total_steps_respects_epochs_and_max_steps():
    plan = _plan(1, 4)
    assert plan.total_steps(2, None) == 6 and plan.total_steps(0.5, None) == 2 and plan.total_steps(3, 4) == 4


def test_rows_and_target_counts():
    examples = [{"input_ids": [1] * n, "labels": [-100] * (n - 2) + [5, 2]} for n in (5, 7, 3, 9)]
    rows = make_rows(examples, 12, packing=True)
    assert sorted(i for r in rows for i in r) == [0, 1, 2, 3]
    assert all(sum(len(examples[i]["input_ids"]) for i in r) <= 12 for r in rows)
    assert make_rows(examples, 12, packing=False) == [[0], [1], [2], [3]]
    assert count_targets({"labels": [7, -100, 3, 4]}) == 2  # the first label never counts
    assert Counter(map(len, rows)) == Counter({2: 2})
