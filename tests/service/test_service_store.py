"""The SQL store on a real SQLite file and a real PostgreSQL database: idempotency under concurrency, gapless
sequences (also with two stores writing, as two servers do), paging, durability."""

import threading

import pytest

from raysft.service.jobs.errors import AlreadyExists, NotFound
from raysft.service.jobs.states import JobState
from raysft.service.jobs.store import JobRecord, NewEvent, Store


@pytest.fixture
def store(db_url):
    s = Store(db_url)
    yield s
    s.close()


def _job(job_id, request_id=None, labels=None, state=JobState.QUEUED):
    return JobRecord(id=job_id, kind="train", spec={"model": {"name_or_path": "m"}}, request_id=request_id,
                     labels=labels or {}, state=state)


def test_concurrent_creates_with_one_request_id_store_one_job(store):
    results, errors = [], []

    def create(i):
        try:
            results.append(store.create_job(_job(f"job-{i}", request_id="req-1"), [NewEvent("info", "state_changed", "q")], "hash-a"))
        except Exception as exc:  # pragma: no cover - the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(created for _, created in results) == 1
    assert len({job.id for job, _ in results}) == 1
    assert len(store.list_jobs()) == 1
    with pytest.raises(AlreadyExists, match="request_id 'req-1' was already used for job"):
        store.create_job(_job("job-x", request_id="req-1"), [], "hash-b")


def test_events_get_gapless_sequences_under_concurrent_writers(store):
    store.create_job(_job("j"), [NewEvent("info", "state_changed", "queued")])

    def append(n):
        for i in range(n):
            store.update("j", lambda job, ckpts: [NewEvent("info", "metrics", f"m{i}", {"i": i})])

    threads = [threading.Thread(target=append, args=(25,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = store.events("j")
    assert [e.sequence for e in events] == list(range(1, 102))
    assert store.get_job("j").last_sequence == 101
    assert [e.sequence for e in store.events("j", after=99)] == [100, 101]


def test_a_failed_change_leaves_everything_as_it_was(store):
    store.create_job(_job("j"), [])

    def change(job, ckpts):
        job.state = JobState.RUNNING
        raise RuntimeError("half way")

    with pytest.raises(RuntimeError):
        store.update("j", change)
    assert store.get_job("j").state == JobState.QUEUED and store.events("j") == []


def test_jobs_list_newest_first_by_page_state_and_label(store):
    for i in range(5):
        store.create_job(_job(f"j{i}", labels={"team": "a" if i % 2 else "b"},
                              state=JobState.SUCCEEDED if i < 3 else JobState.RUNNING), [])
    assert [j.id for j in store.list_jobs()] == ["j4", "j3", "j2", "j1", "j0"]
    first = store.list_jobs(limit=2)
    assert [j.id for j in store.list_jobs(limit=2, before=first[-1].ordinal)] == ["j2", "j1"]
    assert [j.id for j in store.list_jobs(states=(JobState.RUNNING,))] == ["j4", "j3"]
    assert [j.id for j in store.list_jobs(labels={"team": "a"})] == ["j3", "j1"]
    assert [j.id for j in store.list_jobs(labels={"team": "a"}, states=(JobState.SUCCEEDED,))] == ["j1"]
    assert store.active_job_ids() == ["j3", "j4"]


def test_everything_survives_reopening_and_delete_removes_it(db_url):
    url = db_url
    first = Store(url)
    first.create_job(_job("j", request_id="r", labels={"k": "v"}), [NewEvent("info", "state_changed", "queued", {"to": "QUEUED"})], "h")
    first.update("j", lambda job, ckpts: [NewEvent("info", "metrics", "step 1", {"step": 1})])
    first.close()
    second = Store(url)
    job = second.get_job("j")
    assert (job.labels, job.request_id, job.last_sequence) == ({"k": "v"}, "r", 2)
    assert [(e.sequence, e.type, e.data) for e in second.events("j")] == [(1, "state_changed", {"to": "QUEUED"}),
                                                                         (2, "metrics", {"step": 1})]
    assert second.replay_request("r", "h").id == "j"
    second.delete_job("j", lambda job: None)
    with pytest.raises(NotFound):
        second.get_job("j")
    assert second.events("j") == [] and second.find_request("r") is None
    second.close()


def test_two_stores_on_one_postgresql_keep_one_gapless_sequence_and_one_job_per_request(postgres):
    """Two servers sharing a database: their writes to one job interleave without a gap or a duplicate."""
    url = postgres.create_database()
    stores = [Store(url), Store(url)]  # two engines, as two processes have: no shared lock between them
    try:
        stores[0].create_job(_job("j"), [NewEvent("info", "state_changed", "queued")])
        created = []

        def write(store, n):
            for i in range(n):
                store.update("j", lambda job, ckpts: [NewEvent("info", "metrics", f"m{i}"), NewEvent("info", "metrics", "x")])
            created.append(store.create_job(_job(f"k-{id(store)}", request_id="same"), [], "h")[1])

        threads = [threading.Thread(target=write, args=(s, 20)) for s in stores for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [e.sequence for e in stores[1].events("j")] == list(range(1, 162))
        assert stores[0].get_job("j").last_sequence == 161
        assert sorted(created) == [False, False, False, True]
        assert [j.request_id for j in stores[1].list_jobs()].count("same") == 1
    finally:
        for s in stores:
            s.close()
