"""The step plan: every worker sees its share of the same global batch; resuming at a step is exact."""

from collections import Counter

from raysft.train.rowplan import MIN_STEPS, StepPlan, count_targets, make_rows, step_advice


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


def test_too_few_optimizer_steps_are_a_warning_naming_the_fix():
    # The spec defaults on ~110 packed rows: 16 rows a step for 6 epochs is 42 steps.
    defaults = StepPlan([[i] for i in range(110)], 16, 8, 1, seed=0)
    advice = step_advice(defaults, 6, None)
    assert advice.field == "train.global_batch_size" and "only 42 optimizer steps" in advice.message
    assert "set train.global_batch_size: 6, train.micro_batch_size: 6" in advice.message
    assert StepPlan(defaults.rows, 6, 6, 1, seed=0).total_steps(6, None) >= MIN_STEPS  # the fix it names works
    # Even one row per worker falls short: the epochs that reach MIN_STEPS as well.
    tiny = StepPlan([[i] for i in range(20)], 16, 1, 2, seed=0)
    assert "set train.global_batch_size: 2, train.epochs: 10" in step_advice(tiny, 3, None).message
    assert step_advice(StepPlan(defaults.rows, 2, 1, 2, seed=0), 12, None) is None  # the shipped recipes: 660 steps
    assert step_advice(defaults, 100, 50).field == "train.max_steps"
