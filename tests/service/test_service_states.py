"""The job lifecycle table: what may follow what, and how Ray's statuses map onto it."""

import pytest

from raysft.service.jobs.states import ACTIVE, TERMINAL, TRANSITIONS, IllegalTransition, JobState, check_transition, from_ray_status


def test_terminal_states_lead_only_to_a_new_attempt_and_every_active_state_can_end():
    assert TERMINAL == {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
    assert TRANSITIONS[JobState.SUCCEEDED] == frozenset()
    for state in TERMINAL:
        assert state.terminal and TRANSITIONS[state] <= {JobState.QUEUED}
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
                                  (JobState.SUCCEEDED, JobState.QUEUED), (JobState.QUEUED, JobState.RUNNING),
                                  (JobState.CANCELLING, JobState.RUNNING), (JobState.CANCELLING, JobState.QUEUED)])
def test_illegal_transitions_name_both_states(a, b):
    with pytest.raises(IllegalTransition, match=f"job j is {a.value} and cannot become {b.value}"):
        check_transition("j", a, b)


def test_a_new_attempt_queues_again_after_a_retry_or_a_resume():
    for state in (JobState.STARTING, JobState.RUNNING, JobState.FAILED, JobState.CANCELLED):
        check_transition("j", state, JobState.QUEUED)


def test_ray_statuses_map_onto_job_states():
    assert [from_ray_status(s) for s in ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED")] == [
        JobState.STARTING, JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED]
