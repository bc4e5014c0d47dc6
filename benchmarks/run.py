"""Run every raysft benchmark and write DIR/results.json and DIR/results.md.

    python benchmarks/run.py [--quick] --out DIR [--only train,data_check,...]

Sections (keys of results.json): train_throughput, ray_overhead and scaling (benchmarks/bench_train.py), grpc
(bench_grpc.py), data_check (bench_data_check.py), data_prep (bench_data_prep.py), tune (bench_tune.py), loss_memory and
trained_positions_speedup (bench_loss.py) and gpu. Every key is always
written: a section that cannot run here holds {"skipped": reason}, one that failed {"error": message} (and
the exit status is 1). `machine` records where the figures were taken, including the load average before
and after: other processes sharing the machine slow every figure down.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import inspect
import json
import os
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `raysft` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine
from raysft.local_ray import use_token_auth

__all__ = ["SECTIONS", "main", "to_markdown"]

SECTIONS = ("train_throughput", "ray_overhead", "scaling", "grpc", "data_check", "data_prep", "tune", "loss_memory",
            "trained_positions_speedup", "gpu")
_TRAIN_KEYS = ("train_throughput", "ray_overhead", "scaling")
_LOSS_KEYS = ("loss_memory", "trained_positions_speedup")
_CHOICES = ("train", "grpc", "data_check", "data_prep", "tune", "loss", "gpu")

# (section, key, goal as text, test of the value): the figures the issue sets goals for. `<key>_best_of_repeats`
# and `<key>_cpu_time`, where a section reports them, are the same figure from each step's fastest repeat and
# from CPU time instead of wall-clock time (see benchmarks/bench_train.py).
_GOALS = [
    ("train_throughput", "ratio_vs_hf", ">= 1.9", lambda v: v >= 1.9),
    ("train_throughput", "padding_efficiency", ">= 0.95", lambda v: v >= 0.95),
    ("ray_overhead", "step_overhead_ratio", "<= 1.05", lambda v: v <= 1.05),
    ("grpc", "create_job_p99_ms", "<= 50", lambda v: v <= 50),
    ("data_prep", "driver_rss_growth_mb", "<= 200", lambda v: v <= 200),
    ("data_prep", "worker_rss_growth_mb", "<= 200", lambda v: v <= 200),
    ("data_prep", "scaling", ">= 1.7", lambda v: v >= 1.7),
    ("data_prep", "ratio_vs_datasets_map", ">= 1.0", lambda v: v >= 1.0),
    ("data_prep", "cache_hit_over_cold", "<= 0.1", lambda v: v <= 0.1),
    ("data_prep", "padding_efficiency", ">= 0.95", lambda v: v >= 0.95),
    ("tune", "best_eval_loss_gap_pct", "<= 2", lambda v: v <= 2),
    ("tune", "asha_steps_share", "<= 0.5", lambda v: v <= 0.5),
    ("loss_memory", "new_over_old_151936", "<= 0.1", lambda v: v <= 0.1),
    ("loss_memory", "new_over_old_32000", "<= 0.1", lambda v: v <= 0.1),
    ("trained_positions_speedup", "speedup", ">= 1.5", lambda v: v >= 1.5),
]


def _error(exc: BaseException) -> dict:
    return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=-4)}


def _module_run(name: str, **kwargs) -> dict:
    """`benchmarks.<name>.run(**kwargs)`, imported only now (others maintain those modules); arguments its
    `run` does not take are left out."""
    try:
        module = importlib.import_module(f"benchmarks.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"benchmarks.{name}":
            raise
        return {"skipped": f"benchmarks/{name}.py is not present"}
    accepted = inspect.signature(module.run).parameters
    return module.run(**{k: v for k, v in kwargs.items() if k in accepted})


def _tune_summary(result: dict) -> dict:
    """Add the two numbers the tune goal is stated in (ASHA's share of the grid's steps, loss gap in %)."""
    try:
        grid, asha = result["grid"], result["asha"]
        result["asha_steps_share"] = round(asha["steps_total"] / grid["steps_total"], 3)
        result["best_eval_loss_gap_pct"] = round(100 * (asha["best_eval_loss"] - grid["best_eval_loss"]) / grid["best_eval_loss"], 2)
    except (KeyError, TypeError, ZeroDivisionError):
        pass  # a skipped or failed section, or a module that reports other keys: left as it is
    return result


def _run_sections(only: set[str], quick: bool, workdir: Path | None) -> dict:
    results: dict = {}
    timings: dict = {}

    def timed(name: str, keys: tuple[str, ...], fn) -> None:
        if name not in only:
            for key in keys:
                results[key] = {"skipped": "not selected (--only)"}
            return
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        started = time.time()
        try:
            out = fn()
        except Exception as exc:  # one broken section must not lose the others' figures
            out = {key: _error(exc) for key in keys} if len(keys) > 1 else _error(exc)
        timings[name] = round(time.time() - started, 1)
        if len(keys) > 1:
            results.update(out)
        else:
            results[keys[0]] = out
        print(f"[bench] {name} done in {timings[name]} s", file=sys.stderr, flush=True)

    # data_check first: it measures a child's peak RSS, which Linux carries over from this process at exec,
    # so it must run while this process is still small.
    timed("data_check", ("data_check",), lambda: _module_run("bench_data_check", lines=200_000))
    # --quick: 10M and 2M tokens instead of the 50M and 10M (the growth figure then spans 8M tokens).
    timed("data_prep", ("data_prep",), lambda: _module_run("bench_data_prep", tokens="10M,2M" if quick else "50M,10M",
                                                           workdir=workdir / "data_prep" if workdir else None))
    timed("train", _TRAIN_KEYS, lambda: _module_run("bench_train", quick=quick, workdir=workdir))
    timed("grpc", ("grpc",), lambda: _module_run("bench_grpc", quick=quick, events=True))
    timed("tune", ("tune",), lambda: _tune_summary(_module_run("bench_tune", quick=quick)))
    timed("loss", _LOSS_KEYS, lambda: _module_run("bench_loss", quick=quick))
    timed("gpu", ("gpu",), lambda: _module_run("bench_gpu", quick=quick))
    results["seconds"] = timings
    return results


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def to_markdown(results: dict) -> str:
    """The results as a markdown page: goals first, then each section's figures."""
    m = results.get("machine", {})
    lines = [f"# raysft benchmarks ({'quick' if results.get('quick') else 'full'} run, {results.get('finished', '')})", "",
             f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('memory_gb', '?')} GB, "
             f"load average {m.get('load_avg_1m', '?')} before, "
             f"{results.get('load_avg_1m_after', '?')} after (other processes share this machine). "
             f"torch {m.get('torch', '?')}, transformers {m.get('transformers', '?')}, ray {m.get('ray', '?')}.", "",
             "| figure | value (median) | best of repeats | CPU time | goal | met (median) |", "|---|---|---|---|---|---|"]
    for section, key, goal, ok in _GOALS:
        figures = results.get(section, {})
        value = figures.get(key)
        others = [figures.get(f"{key}_{k}") for k in ("best_of_repeats", "cpu_time")]
        if isinstance(value, (int, float)):
            shown = " | ".join(_fmt(v) if v is not None else "" for v in others)
            met = "yes" if ok(value) else "**no**"
            lines.append(f"| {section}.{key} | {_fmt(value)} | {shown} | {goal} | {met} |")
        else:
            why = figures.get("skipped") or figures.get("error") or "not reported"
            lines.append(f"| {section}.{key} | — | | | {goal} | {why.splitlines()[0]} |")
    t = results.get("train_throughput", {})
    if "hf_trainer" in t:
        lines += ["", "## Training throughput (1 worker, median of interleaved runs)", "",
                  "| variant | useful tok/s | (best of repeats) | useful tok / CPU s | trained tok/s | processed tok/s "
                  "| padding efficiency | s / step | steps |", "|---|---|---|---|---|---|---|---|---|"]
        for name in ("raysft_packed", "raysft_unpacked", "hf_trainer"):
            v = t[name]
            lines.append(f"| {name} | {_fmt(v['useful_tokens_per_s'])} | {_fmt(v['best_of_repeats']['useful_tokens_per_s'])} | "
                         f"{_fmt(v.get('useful_tokens_per_cpu_s', ''))} | {_fmt(v['trained_tokens_per_s'])} | "
                         f"{_fmt(v['processed_tokens_per_s'])} | {_fmt(v['padding_efficiency'])} | {_fmt(v['step_s'])} | {v['steps']} |")
    for section in SECTIONS:
        value = results.get(section)
        if isinstance(value, dict) and "error" not in value:
            shown = {k: v for k, v in value.items() if k not in ("raysft_packed", "raysft_unpacked", "hf_trainer")}
            lines += ["", f"## {section}", "", "```json", json.dumps(shown, indent=1, ensure_ascii=False), "```"]
        elif isinstance(value, dict):
            lines += ["", f"## {section}", "", f"error: {value['error']}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks, write results.json and results.md under --out; 1 when a section failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads and fewer repeats (a few minutes)")
    parser.add_argument("--out", required=True, help="directory for results.json and results.md")
    parser.add_argument("--only", default=",".join(_CHOICES),
                        help=f"comma-separated subset of {','.join(_CHOICES)} (the others are recorded as skipped)")
    parser.add_argument("--workdir", help="keep the training benchmark's models, data and runs here (default: a temp dir)")
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(_CHOICES)
    if unknown:
        parser.error(f"--only: unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(_CHOICES)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    use_token_auth()
    results = {"quick": args.quick, "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "machine": machine()}
    results.update(_run_sections(only, args.quick, Path(args.workdir) if args.workdir else None))
    results["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    results["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "results.md").write_text(to_markdown(results), encoding="utf-8")
    print(f"[bench] wrote {out / 'results.json'} and {out / 'results.md'}", file=sys.stderr)
    failed = [k for k in SECTIONS if isinstance(results.get(k), dict) and "error" in results[k]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
