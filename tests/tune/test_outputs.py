"""Campaign bookkeeping without Ray: ranking, factor table, live table, checkpoint pruning, trial outcomes, CLI."""

import argparse
import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from raysft.cli.tune import main, register
from raysft.train.launcher import RunError
from raysft.tune.campaign import write_campaign_outputs, run_campaign
from raysft.tune.console import render_table
from raysft.tune.report import export_best, factor_effects, format_factor_table, rank_trials, write_results_csv
from raysft.tune.trials import prune_checkpoints, trial_outcome


def _trial(id_, loss, **config):
    return {"id": id_, "eval_loss": loss, "config": config, "status": "completed", "stopped_by": None, "steps": 6,
            "best_step": 6, "checkpoints_kept": 1, "exact_match": None}


def test_trials_rank_best_first_with_unscored_last():
    trials = [_trial("a", 2.0), _trial("b", None), _trial("c", 1.0), _trial("d", 3.0)]
    assert [(t["id"], t["rank"]) for t in rank_trials(trials, "eval_loss", "min")] == [("c", 1), ("a", 2), ("d", 3), ("b", None)]
    assert [t["id"] for t in rank_trials(trials, "eval_loss", "max")] == ["d", "a", "c", "b"]


def test_factor_effects_compare_each_value_with_the_base_trial():
    base = {"lr": 2e-4, "rank": 16}
    trials = [_trial("base", 1.0, **base), _trial("lr-", 1.5, lr=1e-4, rank=16), _trial("lr+", 0.8, lr=5e-4, rank=16),
              _trial("r8", 1.1, lr=2e-4, rank=8)]
    factors = factor_effects(trials, base, "eval_loss")
    assert [f["key"] for f in factors] == ["lr", "rank"]  # largest effect first
    lr = factors[0]
    assert lr["effect"] == pytest.approx(0.7)
    assert [(r["value"], r["trial"], r["delta"], r["base"]) for r in lr["rows"]] == [
        (2e-4, "base", 0.0, True), (1e-4, "lr-", pytest.approx(0.5), False), (5e-4, "lr+", pytest.approx(-0.2), False)]
    table = format_factor_table(factors, "eval_loss").splitlines()
    assert table[0].split() == ["factor", "value", "eval_loss", "vs", "base", "trial"]
    assert table[1].split() == ["lr", "0.0002", "1", "(base)", "base"]
    assert table[2].split() == ["lr", "0.0001", "1.5", "+0.5", "lr-"]
    assert table[4].split() == ["effect", "0.7"]


def test_live_table_shows_state_config_and_metrics():
    trials = [SimpleNamespace(trial_id="t1", status="RUNNING", config={"train.learning_rate": 3e-4, "model.lora.rank": 8},
                              last_result={"step": 4, "eval_loss": 1.23456}),
              SimpleNamespace(trial_id="t2", status="PENDING", config={"train.learning_rate": 1e-5, "model.lora.rank": 16},
                              last_result={})]
    lines = render_table(trials, ["train.learning_rate", "model.lora.rank"], "eval_loss", {"t1": 1.2}).splitlines()
    assert lines[0] == "[raysft] trials: 1 pending, 1 running"
    assert render_table(trials, ["model.lora.rank"], "eval_loss", {}, waiting=2).splitlines()[0] == "[raysft] trials: 3 pending, 1 running"
    assert lines[1].split() == ["trial", "state", "learning_rate", "rank", "step", "eval_loss", "best"]
    assert lines[2].split() == ["t1", "RUNNING", "0.0003", "8", "4", "1.23", "1.2"]
    assert lines[3].split() == ["t2", "PENDING", "1e-05", "16", "-", "-", "-"]


def _checkpoints(trial: Path, steps, events=()) -> Path:
    """Checkpoint directories of `steps` under trial/checkpoints, and the trial's events: ("saved" | "pruned", step)."""
    run = trial / "checkpoints"
    for s in steps:
        (run / f"checkpoint_{s:06d}" / "adapter").mkdir(parents=True)
    trial.mkdir(parents=True, exist_ok=True)
    lines = [{"type": f"checkpoint_{kind}", "data": {"step": s, "uri": str(run / f"checkpoint_{s:06d}")}}
             for kind, s in events]
    (trial / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    return run


def test_pruning_keeps_exactly_the_checkpoints_the_trials_events_name_as_kept(tmp_path):
    # 2: Ray Train deleted it (the run recorded so) but the trial was killed mid-delete; 6: uploaded, then killed.
    run = _checkpoints(tmp_path / "a", [2, 4, 6], [("saved", 2), ("saved", 4), ("pruned", 2)])
    assert prune_checkpoints(tmp_path / "a", str(run)) == ["checkpoint_000004"]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint_000004"]
    run = _checkpoints(tmp_path / "b", [2])  # killed before the first checkpoint was registered
    assert prune_checkpoints(tmp_path / "b", str(run)) == [] and not (run / "checkpoint_000002").exists()
    run = _checkpoints(tmp_path / "c", [4], [("saved", 2), ("saved", 4)])  # 2 deleted before its pruned event
    assert prune_checkpoints(tmp_path / "c", str(run)) == ["checkpoint_000004"]
    assert prune_checkpoints(tmp_path / "missing", str(tmp_path / "missing" / "checkpoints")) == []


def test_a_trial_is_scored_by_its_best_kept_checkpoint(tmp_path):
    trial = tmp_path / "trial"
    run = _checkpoints(trial, [4, 6])
    evals = {2: 1.0, 4: 1.5, 6: 1.2}  # step 2 was best but its checkpoint was pruned
    events = [{"type": "checkpoint_saved", "data": {"step": s, "uri": str(run / f"checkpoint_{s:06d}"), "eval_loss": v}}
              for s, v in evals.items()]
    (trial / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    metrics = [{"step": s, "train_loss": 2.0} for s in range(1, 8)] + [{"step": s, "eval_loss": v} for s, v in evals.items()]
    (trial / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    outcome = trial_outcome(trial, str(run), "eval_loss")
    assert outcome["best"]["step"] == 6 and outcome["best"]["eval_loss"] == 1.2
    assert outcome["steps"] == 7 and outcome["checkpoints_kept"] == 2 and outcome["summary"] is None
    assert [m["step"] for m in outcome["evals"]] == [2, 4, 6]


def test_results_csv_has_one_row_per_trial_in_rank_order(tmp_path):
    trials = rank_trials([_trial("a", 2.0, **{"train.learning_rate": 1e-4}), _trial("b", 1.0, **{"train.learning_rate": 3e-4})],
                         "eval_loss", "min")
    write_results_csv(trials, ["train.learning_rate"], "eval_loss", tmp_path / "r.csv")
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert [(r["rank"], r["trial"], r["eval_loss"], r["train.learning_rate"]) for r in rows] == [
        ("1", "b", "1.0", "0.0003"), ("2", "a", "2.0", "0.0001")]


def test_cli_registers_tune_and_maps_bad_input_to_exit_2(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="raysft")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["tune", "spec.yaml", "tune.num_samples=4"])
    assert (args.spec, args.overrides, args.resume, args.func.__name__) == ("spec.yaml", ["tune.num_samples=4"], None, "cmd_tune")
    assert parser.parse_args(["tune", "--resume", "runs/x"]).resume == "runs/x"
    assert main([]) == 2 and "pass a spec file" in capsys.readouterr().err
    assert main(["s.yaml", "--resume", "runs/x"]) == 2 and "not both" in capsys.readouterr().err
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"model": {"name_or_path": "m"}, "data": {"train": ["t.jsonl"]},
                                    "tune": {"search_space": {"train.learnig_rate": {"choice": [1e-4]}}}}))
    assert main([str(spec)]) == 2
    assert "tune.search_space.train.learnig_rate: unknown key; did you mean 'train.learning_rate'?" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path / "nothing")]) == 1 and "not a raysft tune output_dir" in capsys.readouterr().err


def test_a_campaign_refuses_a_spec_without_tune_and_an_occupied_output_dir(tmp_path):
    from raysft.config import load_spec

    raw = {"model": {"name_or_path": "m"}, "data": {"train": ["t.jsonl"]}, "output_dir": str(tmp_path / "out")}
    with pytest.raises(RunError, match="no tune section"):
        run_campaign(load_spec(raw))
    (tmp_path / "out" / "tune").mkdir(parents=True)
    raw["tune"] = {"search_space": {"train.learning_rate": {"choice": [1e-4]}}}
    with pytest.raises(RunError, match="already holds a campaign; continue it with `raysft tune --resume"):
        run_campaign(load_spec(raw))
    with pytest.raises(RunError, match="no campaign state to resume"):
        run_campaign(load_spec(raw), resume=True)


def test_best_from_a_trial_asha_stopped_is_still_a_run_output_dir(tmp_path):
    trial_dir = tmp_path / "trials" / "t1"
    run = _checkpoints(trial_dir, [4], [("saved", 4)])
    (run / "checkpoint_000004" / "adapter" / "adapter_config.json").write_text("{}")
    (trial_dir / "spec.yaml").write_text(yaml.safe_dump({"model": {"name_or_path": "m", "method": "qlora"},
                                                         "data": {"train": ["t.jsonl"]}}))
    metrics = [{"step": s, "train_loss": 2.0 - s / 10, "trained_tokens": 10} for s in range(1, 6)] + [{"step": 4, "eval_loss": 1.5}]
    (trial_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    best = {"step": 4, "uri": str(run / "checkpoint_000004"), "eval_loss": 1.5, "eval_tokens": 99}
    trial = {"id": "t1", "dir": str(trial_dir), "config": {"train.learning_rate": 1e-5}, "stopped_by": "asha"}
    dest = export_best(trial, {"best": best, "summary": None, "steps": 5}, tmp_path / "best")
    summary = json.loads((dest / "summary.json").read_text())
    assert (dest / "adapter" / "adapter_config.json").is_file() and (dest / "spec.yaml").is_file()
    assert (dest / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert summary["best"] == {"step": 4, "eval_loss": 1.5} and summary["method"] == "qlora"
    assert (summary["steps"], summary["early_stopped"], summary["stopped_by"], summary["trained_tokens"]) == (5, True, "asha", 50)
    assert summary["output_dir"] == str(dest) and summary["adapter"] == str(dest / "adapter") and summary["trial"] == "t1"


def test_trials_that_died_before_starting_are_reported_not_a_crash(tmp_path):
    from raysft.config import load_spec

    out = tmp_path / "campaign"
    out.mkdir()
    spec = load_spec({"model": {"name_or_path": "m"}, "data": {"train": ["t.jsonl"]}, "output_dir": str(out),
                      "tune": {"search_space": {"train.learning_rate": {"grid": [1e-4, 1e-3]}}}})
    # What Ray Tune returns for a trial whose actor was cancelled before it ran: no config, no metrics.
    results = [SimpleNamespace(path=str(out / "tune" / f"t{i}"), config=None, error=RuntimeError("ActorDiedError\nmore"))
               for i in range(2)]
    with pytest.raises(RunError, match="no trial produced a checkpoint scored by eval_loss"):
        write_campaign_outputs(spec, out, results, 1.0, False)
    summary = json.loads((out / "tune_summary.json").read_text())
    assert summary["statuses"] == {"error": 2} and summary["best"] is None
    assert [(t["id"], t["config"], t["error"]) for t in summary["trials"]] == [("t0", {}, "ActorDiedError"),
                                                                              ("t1", {}, "ActorDiedError")]
