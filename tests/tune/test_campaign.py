"""Campaigns on a real 2-CPU Ray: ASHA over learning rate, rank and epochs with keep_last 1; one_at_a_time
with trials that wait for resources; and a driver killed mid-campaign, then resumed."""

import contextlib
import csv
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from raysft.cli import main as raysft_main
from raysft.config import load_spec
from raysft.train.runlog import read_jsonl
from raysft.tune.campaign import run_campaign

pytestmark = pytest.mark.integration


def _events(trial_dir: Path, kind: str) -> list[dict]:
    return [e for e in read_jsonl(trial_dir / "events.jsonl") if e["type"] == kind]


@pytest.fixture(scope="module")
def asha(ray_address, tiny_model, campaign_raw, tmp_path_factory):
    """4 trials, 2 at a time: learning rate × (rank, epochs), ASHA with grace 2 and reduction factor 2."""
    out = tmp_path_factory.mktemp("asha") / "campaign"
    tune = {"search_space": {"train.learning_rate": {"grid": [3.0e-3, 1.0e-5]}, "model.lora.rank": {"choice": [4, 8]},
                             "train.epochs": {"choice": [0.1, 0.15]}},
            "search": "random", "num_samples": 2, "max_concurrent_trials": 2, "grace_period_steps": 2, "reduction_factor": 2}
    raw = campaign_raw(tiny_model, out, tune, train={"max_steps": None})
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        summary = run_campaign(load_spec(raw))
    return out, summary, console.getvalue()


def test_asha_campaign_ranks_trials_by_their_best_kept_evaluation(asha):
    out, summary, _ = asha
    trials = summary["trials"]
    assert len(trials) == 4 and {t["status"] for t in trials} <= {"completed", "stopped"}
    losses = [t["eval_loss"] for t in trials]
    assert losses == sorted(losses) and [t["rank"] for t in trials] == [1, 2, 3, 4]
    for t in trials:  # each score is the trial's best evaluation among the checkpoints it kept
        kept = {p.name for p in (Path(t["dir"]) / "checkpoints").glob("checkpoint_*")}
        evals = {e["data"]["step"]: e["data"]["eval_loss"] for e in _events(Path(t["dir"]), "checkpoint_saved")}
        assert t["eval_loss"] == min(v for s, v in evals.items() if f"checkpoint_{s:06d}" in kept)
    best = summary["best"]
    assert best["trial"] == trials[0]["id"] and best["eval_loss"] == trials[0]["eval_loss"]
    assert best["config"] == trials[0]["config"] and set(best["config"]) == {"train.learning_rate", "model.lora.rank", "train.epochs"}
    assert json.loads((out / "tune_summary.json").read_text()) == summary


def test_asha_stops_weak_trials_and_records_the_steps_each_ran(asha):
    out, summary, _ = asha
    stopped = [t for t in summary["trials"] if t["stopped_by"] == "asha"]
    assert stopped, "ASHA stopped no trial"
    for t in summary["trials"]:
        planned = _events(Path(t["dir"]), "started")[0]["data"]["total_steps"]
        ran = max(m["step"] for m in read_jsonl(Path(t["dir"]) / "metrics.jsonl") if "train_loss" in m)
        assert t["steps"] == ran
        assert (ran < planned) == (t["status"] == "stopped") and t["early_stopped"] == (t["stopped_by"] is not None)
    assert all(t["config"]["train.learning_rate"] == 1.0e-5 for t in stopped)  # the weak learning rate is cut
    assert summary["steps_total"] == sum(t["steps"] for t in summary["trials"])


def test_every_trial_keeps_at_most_keep_last_checkpoints(asha):
    out, summary, _ = asha
    for t in summary["trials"]:
        on_disk = [p for p in (Path(t["dir"]) / "checkpoints").glob("checkpoint_*") if p.is_dir()]
        assert len(on_disk) == t["checkpoints_kept"] == 1, t["id"]


def test_results_csv_and_curves_cover_every_trial(asha):
    out, summary, _ = asha
    rows = list(csv.DictReader((out / "tune_results.csv").open()))
    assert [r["trial"] for r in rows] == [t["id"] for t in summary["trials"]]
    assert float(rows[0]["eval_loss"]) == summary["best"]["eval_loss"] and rows[0]["model.lora.rank"] in ("4", "8")
    assert (out / "tune_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_console_shows_a_live_table_with_pending_trials(asha):
    _, summary, console = asha
    tables = [block for block in console.split("[raysft] trials:")[1:]]
    statuses = [t.splitlines()[0] for t in tables]
    assert "2 at a time" in console and statuses[0].strip() in ("3 pending, 1 running", "4 pending"), statuses
    assert any(s.strip() == "2 pending, 2 running" for s in statuses), statuses  # 2 wait while 2 train
    assert not any("3 running" in s for s in statuses)
    assert statuses[-1].strip() == "4 terminated" and summary["best"]["trial"] in tables[-1]
    assert "learning_rate" in tables[-1] and "eval_loss" in tables[-1]


def test_best_is_an_output_dir_that_eval_and_export_accept(asha, train_file, tmp_path, capsys):
    out, summary, _ = asha
    best, trial = out / "best", summary["trials"][0]
    chosen = json.loads((best / "summary.json").read_text())
    assert chosen["trial"] == trial["id"] and chosen["best"]["eval_loss"] == trial["eval_loss"]
    ckpt = next(p for p in (Path(trial["dir"]) / "checkpoints").glob("checkpoint_*") if p.is_dir())
    exported, kept = load_file(str(best / "adapter/adapter_model.safetensors")), load_file(str(ckpt / "adapter/adapter_model.safetensors"))
    assert exported.keys() == kept.keys() and all((exported[k] == kept[k]).all() for k in kept)
    assert load_spec(best / "spec.yaml").model.lora.rank == trial["config"]["model.lora.rank"]
    assert raysft_main(["eval", "--model", str(best), "--data", train_file, "--limit", "4", "--json"]) == 0
    assert 0.0 <= json.loads(capsys.readouterr().out.strip().splitlines()[-1])["exact_match"] <= 1.0
    assert raysft_main(["export", str(best), "--merged", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "config.json").is_file()


def test_one_at_a_time_waits_for_resources_and_reports_each_factor(ray_address, tiny_model, campaign_raw, tmp_path):
    # Each trial needs both CPUs (2 workers), so trials run one after another: the others wait as PENDING.
    tune = {"search_space": {"train.learning_rate": {"choice": [1.0e-5]}, "model.lora.rank": {"choice": [4]}},
            "search": "one_at_a_time", "scheduler": "none", "max_concurrent_trials": 2}
    raw = campaign_raw(tiny_model, tmp_path / "oat", tune, train={"max_steps": 4}, scaling={"num_workers": 2})
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        summary = run_campaign(load_spec(raw))
    assert [t["status"] for t in summary["trials"]] == ["completed"] * 3
    windows = sorted((e[0]["time"], e[-1]["time"]) for t in summary["trials"] for e in [read_jsonl(Path(t["dir"]) / "events.jsonl")])
    assert all(end <= start for (_, end), (start, _) in zip(windows, windows[1:])), "trials overlapped"
    statuses = [line for line in console.getvalue().splitlines() if line.startswith("[raysft] trials:")]
    assert "1 at a time" in console.getvalue() and any("pending" in s and "1 running" in s for s in statuses)
    assert not any("2 running" in s for s in statuses)
    factors = {f["key"]: f for f in summary["factors"]}
    assert set(factors) == {"train.learning_rate", "model.lora.rank"}
    base = next(t for t in summary["trials"] if t["config"] == {"train.learning_rate": 1.0e-3, "model.lora.rank": 8})
    for f in factors.values():
        assert len(f["rows"]) == 2 and [r["trial"] for r in f["rows"] if r["base"]] == [base["id"]]
        variant = next(r for r in f["rows"] if not r["base"])
        assert variant["delta"] == pytest.approx(variant["eval_loss"] - base["eval_loss"])
        assert f["effect"] == pytest.approx(abs(variant["delta"]))
    assert factors["train.learning_rate"]["rows"][1]["delta"] > 0  # 100× less learning rate: higher loss after 4 steps
    assert "factor effects on eval_loss" in console.getvalue()


def _tune_cli(args: list[str], ray_address: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": ray_address, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen([sys.executable, "-m", "raysft.tune", *args], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def test_a_killed_campaign_resumes_without_rerunning_finished_trials(ray_address, tiny_model, campaign_raw, tmp_path):
    out = tmp_path / "campaign"
    tune = {"search_space": {"train.learning_rate": {"loguniform": [1.0e-4, 3.0e-3]}, "model.lora.rank": {"choice": [4, 8]}},
            "search": "optuna", "scheduler": "none", "num_samples": 2, "max_concurrent_trials": 1}
    spec_file = tmp_path / "spec.yaml"
    # 40 steps (~3 s of training each) leave time to kill the driver in the middle of the second trial.
    raw = campaign_raw(tiny_model, out, tune, train={"max_steps": 40}, eval={"every_steps": 4})
    spec_file.write_text(yaml.safe_dump(raw))
    driver = _tune_cli([str(spec_file)], ray_address, tmp_path / "first.log")
    # Kill the driver once the first trial finished and Tune has a result (a registered checkpoint) of the second.
    deadline, second = time.time() + 400, None
    while time.time() < deadline and driver.poll() is None:
        trials = sorted((out / "trials").glob("*")) if (out / "trials").exists() else []
        done = [t for t in trials if (t / "summary.json").exists()]
        running = [t for t in trials if t not in done and _tune_results(out / "tune" / t.name)]
        if done and running:
            second = running[0]
            break
        time.sleep(0.1)
    assert second is not None, (tmp_path / "first.log").read_text()[-3000:]
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    first = done[0]
    first_summary = (first / "summary.json").read_bytes()

    resumed = _tune_cli(["--resume", str(out)], ray_address, tmp_path / "resume.log")
    assert resumed.wait(timeout=500) == 0, (tmp_path / "resume.log").read_text()[-3000:]
    summary = json.loads((out / "tune_summary.json").read_text())
    assert summary["resumed"] and len(summary["trials"]) == 2 and {t["status"] for t in summary["trials"]} == {"completed"}
    assert len(_events(first, "started")) == 1 and (first / "summary.json").read_bytes() == first_summary
    assert _events(second, "resumed") and _events(second, "resumed")[0]["data"]["step"] > 0
    steps = [m["step"] for m in read_jsonl(second / "metrics.jsonl") if "train_loss" in m]
    assert steps == list(range(1, 41)), "every step of the interrupted trial appears exactly once"
    # Optuna's study survived the kill: the trial told before it is still the study's first, and both are told.
    state = sorted((out / "tune").glob("searcher-state-*.pkl"))[-1]  # named by session start: the resumed one
    study = pickle.loads(state.read_bytes())["_ot_study"]
    first_config = next(t for t in summary["trials"] if t["id"] == first.name)["config"]
    assert study.trials[0].params == first_config
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2


def _tune_results(trial_tune_dir: Path) -> bool:
    result = trial_tune_dir / "result.json"
    return result.exists() and result.stat().st_size > 0
