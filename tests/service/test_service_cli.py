"""`raysft jobs ...` / `raysft serve` (through `python -m raysft.service`'s parser) against a real server."""

import json

import pytest
import yaml

from raysft.cli import service_main as main
from raysft.service.jobs.auth import OPERATOR
from raysft.service.jobs.events import take_training_events, transition
from raysft.service.jobs.states import JobState
from service_helpers import TOKEN, put_job


@pytest.fixture
def env(offline_server, monkeypatch):
    monkeypatch.setenv("RAYSFT_SERVER", offline_server.address)
    monkeypatch.setenv("RAYSFT_TOKEN", TOKEN)
    return offline_server


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"model": {"name_or_path": "model"}, "data": {"train": ["data.jsonl"]},
                                    "train": {"learning_rate": 1.0}}))
    return str(path)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_submit_validate_only_prints_the_resolved_spec_as_json(env, spec_file, capsys, workdir):
    code, out, err = run(capsys, "jobs", "submit", spec_file, "train.epochs=2", "--validate-only", "--json")
    assert code == 0, err
    job = json.loads(out)
    assert job["spec"]["data"]["train"][0]["path"] == str(workdir / "data.jsonl")
    assert job["spec"]["train"]["epochs"] == 2
    assert job["warnings"][0]["field"] == "train.learning_rate"


def test_bad_input_exits_2_with_the_field_and_the_status_code(env, spec_file, capsys, tmp_path):
    code, _, err = run(capsys, "jobs", "submit", spec_file, "model.lora.rank=0", "--validate-only")
    assert code == 2 and "model.lora.rank: must be > 0 (got 0)" in err  # checked before sending, as `raysft train` does
    code, _, err = run(capsys, "jobs", "submit", spec_file, "data.train=../../escape.jsonl", "--validate-only")
    assert code == 2 and "INVALID_ARGUMENT" in err and "data.train.0.path: '../../escape.jsonl' resolves to" in err
    code, _, err = run(capsys, "jobs", "submit", spec_file)
    assert code == 2 and err.startswith("error: UNAVAILABLE: cannot reach the Ray cluster")
    code, _, err = run(capsys, "jobs", "get", "no-such-job")
    assert code == 2 and "NOT_FOUND" in err
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token\n")
    code, _, err = run(capsys, "jobs", "get", "no-such-job", "--server", env.address, "--token-file", str(wrong))
    assert code == 2 and "UNAUTHENTICATED" in err  # --token-file wins over RAYSFT_TOKEN
    code, _, err = run(capsys, "jobs", "get", "no-such-job", "--token-file", spec_file)
    assert code == 2 and "a token file holds one line" in err


def test_get_list_and_cancel(env, capsys):
    put_job(env, "cli-done", JobState.SUCCEEDED, labels={"team": "search"})
    put_job(env, "cli-queued", JobState.QUEUED, labels={"team": "search"})
    code, out, _ = run(capsys, "jobs", "get", "cli-done", "--json")
    assert code == 0 and json.loads(out)["state"] == "SUCCEEDED" and json.loads(out)["id"] == "cli-done"
    code, out, _ = run(capsys, "jobs", "list", "--label", "team=search", "--json")
    assert [j["id"] for j in json.loads(out)] == ["cli-queued", "cli-done"]
    code, out, _ = run(capsys, "jobs", "list", "--state", "SUCCEEDED", "--label", "team=search")
    assert code == 0 and "cli-done" in out and "cli-queued" not in out and out.startswith("ID ")
    position = env.jobs.get("cli-queued", who=OPERATOR).queue_position
    code, out, _ = run(capsys, "jobs", "list", "--state", "QUEUED", "--label", "team=search")
    assert position >= 1 and out.split("\n")[1].split()[:3] == ["cli-queued", "QUEUED", str(position)]
    code, out, _ = run(capsys, "jobs", "get", "cli-queued")
    assert out.startswith(f"cli-queued  QUEUED (queue position {position})") and "priority: 5" in out
    code, out, _ = run(capsys, "jobs", "cancel", "cli-queued")
    assert code == 0 and out.startswith("cli-queued  CANCELLED")
    code, out, _ = run(capsys, "jobs", "logs", "cli-queued")
    assert code == 0 and out == ""  # it never reached Ray: no log


def test_watch_exits_1_for_a_failed_job_and_0_for_a_successful_one(env, capsys):
    put_job(env, "cli-failed", JobState.RUNNING)

    def fail(job, ckpts):
        job.error_code, job.error_message = "INVALID_ARGUMENT", "data.train.0.path: no such file"
        return [transition(job, JobState.FAILED, job.error_message)]

    env.store.update("cli-failed", fail)
    code, out, _ = run(capsys, "jobs", "watch", "cli-failed")
    assert code == 1 and "RUNNING → FAILED" in out and "error: data.train.0.path: no such file" in out
    put_job(env, "cli-ok", JobState.RUNNING)
    save = {"seq": 1, "time": "2026-01-01T00:00:00+00:00", "type": "checkpoint_saved", "message": "checkpoint at step 3",
            "data": {"step": 3, "uri": "/runs/cli-ok/checkpoints/checkpoint_000003", "eval_loss": 1.25}}
    env.store.update("cli-ok", lambda j, c: take_training_events(j, c, [save]))
    env.store.update("cli-ok", lambda j, c: [transition(j, JobState.SUCCEEDED, "the job finished")])
    code, out, _ = run(capsys, "jobs", "watch", "cli-ok", "--json")
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{") and "sequence" in line]
    assert code == 0 and [e["type"] for e in lines] == ["state_changed", "checkpoint_saved", "state_changed"]
    code, out, _ = run(capsys, "jobs", "checkpoints", "cli-ok")
    assert code == 0 and "eval_loss 1.25" in out and "*" in out and "checkpoint_000003" in out


def test_serve_refuses_to_expose_itself_without_a_token(tmp_path, capsys):
    code, _, err = run(capsys, "serve", "--host", "0.0.0.0", "--port", "0", "--db", f"sqlite:///{tmp_path}/j.db",
                       "--ray-address", "http://127.0.0.1:1")
    assert code == 2 and "pass --token-file" in err
    code, _, err = run(capsys, "serve", "--token-file", str(tmp_path / "missing"), "--ray-address", "http://127.0.0.1:1")
    assert code == 2 and "missing or empty" in err
