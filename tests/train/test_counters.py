"""Early stopping, the throughput counter and the versioned trainer state, without a model."""

import pytest

from raysft.train.counters import EarlyStopping, Throughput
from raysft.train.checkpoint import CheckpointFormatError, TrainerState, spec_differences


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_tokens_per_second_leaves_out_paused_time_and_restarts_at_reset():
    clock = _Clock()
    meter = Throughput(clock)
    meter.add(600)
    clock.now += 2.0
    with meter.paused():  # an evaluation: 5 s that are not training
        clock.now += 5.0
    meter.add(400)
    clock.now += 0.5
    assert meter.tokens_per_s() == pytest.approx(1000 / 2.5)
    meter.reset()
    meter.add(300)
    clock.now += 3.0
    assert meter.tokens_per_s() == pytest.approx(100.0)


def test_early_stopping_counts_evaluations_that_miss_the_best_by_min_delta():
    rule = EarlyStopping(higher_is_better=False, min_delta=0.1, patience=2)
    state = TrainerState()
    assert not rule.update(state, 1, 2.0)
    assert not rule.update(state, 2, 1.95)  # better, but by less than min_delta
    assert not rule.update(state, 3, 1.5)  # a real improvement resets the count
    assert (state.best, state.best_step, state.bad_evals) == (1.5, 3, 0)
    assert not rule.update(state, 4, None)  # no score (no validation data this time): nothing changes
    assert not rule.update(state, 5, 1.6) and rule.update(state, 6, 1.45)
    assert (state.best, state.best_step, state.bad_evals) == (1.5, 3, 2)


def test_higher_is_better_and_no_patience_only_tracks_the_best():
    rule, state = EarlyStopping(higher_is_better=True), TrainerState()
    assert not any(rule.update(state, step, score) for step, score in [(1, 0.5), (2, 0.4), (3, 0.75), (4, 0.1)])
    assert (state.best, state.best_step, state.bad_evals) == (0.75, 3, 1)


def test_trainer_state_round_trips_and_migrates_the_unversioned_layout():
    state = TrainerState(step=8, epoch=2.0, rows_consumed=32, trained_tokens=900, best=1.25, best_step=6, bad_evals=1)
    assert TrainerState.from_json(state.to_json(), source="c", steps_per_epoch=99, rows_per_step=99) == state
    old = {"step": 8, "best": 1.25, "best_step": 6, "bad_evals": 1, "trained_tokens": 900}  # raysft before versions
    assert TrainerState.from_json(old, source="c", steps_per_epoch=4, rows_per_step=4) == state


@pytest.mark.parametrize("data, message", [
    ({"version": 2, "step": 1}, "c: trainer_state.json has version 2; this raysft reads versions 0 to 1"),
    ({"version": 1, "step": 1, "history": []}, "has fields this raysft does not know: history"),
])
def test_trainer_state_of_an_unknown_layout_is_refused_by_name(data, message):
    with pytest.raises(CheckpointFormatError, match=message):
        TrainerState.from_json(data, source="c", steps_per_epoch=1, rows_per_step=1)


def test_spec_differences_name_each_dotted_field(tmp_path):
    (tmp_path / "spec.yaml").write_text("train: {learning_rate: 0.001, seed: 1}\ndata: {train: [a.jsonl]}\n")
    assert spec_differences(tmp_path, "train: {learning_rate: 0.002, seed: 1}\ndata: {train: [a.jsonl, b.jsonl]}\n") == [
        ("data.train", '["a.jsonl"]', '["a.jsonl", "b.jsonl"]'), ("train.learning_rate", "0.001", "0.002")]
    assert spec_differences(tmp_path / "none", "train: {}\n") == []
