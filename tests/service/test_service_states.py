"""The job lifecycle table: what may follow what, and how Ray's statuses map onto it."""

import pytest

from raysft.service.states import ACTIVE, TERMINAL, TRANSITIONS, IllegalTransition, JobState, check_transition, from_ray_status


def test_terminal_states_have_no_way_out_and_every_active_state_can_end():
    assert TERMINAL == {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
    for state in TERMINAL:
        assert TRANSITIONS[state] == frozenset() and state.terminal
    for state in ACTIVE:
        assert TRANSITIONS[state] & TERMINAL, f"{state} cannot end"


def test_the_happy_path_and_cancel_paths_are_allowed():
    path = [JobState.QUEUED, JobState.STARTING, JobState.RUNNING, JobState.SUCCEEDED]
    for a, b in zip(path, path[1:]):
        check_transition("j", a, b)
    check_transition("j", JobState.QUEUED, JobState.CANCELLED)  # never reached Ray
    check_transition("j", JobState.RUNNING, JobState.CANCELLING)
    check_transition("j", JobState.CANCELLING, JobState.CANCELLED)
    check_transition("j", JobState.CANCELLING, JobState.SUCCEEDED)  # it finished before the stop arrived


@pytest.mark.parametrize("a, b", [(JobState.SUCCEEDED, JobState.RUNNING), (JobState.CANCELLED, JobState.CANCELLING),
                                  (JobState.RUNNING, JobState.QUEUED), (JobState.QUEUED, JobState.RUNNING),
                                  (JobState.CANCELLING, JobState.RUNNING)])
def test_illegal_transitions_name_both_states(a, b):
    with pytest.raises(IllegalTransition, match=f"job j is {a.value} and cannot become {b.value}"):
        check_transition("j", a, b)


def test_ray_statuses_map_onto_job_states():
    assert [from_ray_status(s) for s in ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED")] == [
        JobState.STARTING, JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED]
