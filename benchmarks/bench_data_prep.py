"""Preprocessing on Ray Data: memory flat in dataset size, CPU scaling, datasets.map, and the warm-cache start.

Run: python benchmarks/bench_data_prep.py [--tokens 50M,10M] [--workdir DIR]   (prints one JSON object)

On generated chat sets (`benchmarks.common.chat_mix`, templated by a tokenizer trained on the same mix) of the
two sizes `--tokens` names, side by side in one run:
- `driver_rss_growth_mb`, `worker_rss_growth_mb`: peak RSS of `raysft train` (2 workers, 3 steps, cold cache)
  on the large set minus on the small one; the driver is the `raysft train` process, a worker the largest
  `ray::RayTrainWorker` process under it (psutil, sampled every 0.2 s). Goal <= 200 MB each.
- `prep_tokens_per_s` on 1 and 2 CPUs (a local Ray of that many CPUs, already started, the large set, cold
  cache; the actors' start is counted) and `scaling`; `ratio_vs_datasets_map`: 2-CPU raysft against
  `datasets.map(num_proc=2)` running the same encoding (`raysft.data.template.encode_dataset`, same tokenizer,
  batched) on the same file, from `load_dataset("json")` to the encoded rows.
- `cache_hit_start_s`: `raysft train` start to its first logged step with the large set's cache warm, and its
  share of the 2-CPU cold preprocessing seconds of that set (`cache_hit_over_cold`, goal <= 0.1).
- `padding_efficiency` of the large set's packed train rows (goal >= 0.95).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import psutil
import yaml

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import chat_mix, write_jsonl

__all__ = ["run"]

_REPO = Path(__file__).resolve().parents[1]
_MAX_SEQ_LEN = 1024


def _parse_tokens(text: str) -> list[int]:
    scale = {"K": 10**3, "M": 10**6}
    return [int(float(t[:-1]) * scale[t[-1].upper()]) if t[-1].upper() in scale else int(t)
            for t in text.split(",")]


def _write_set(path: Path, tokens: int, tokens_per_record: float) -> Path:
    n = int(tokens / tokens_per_record) + 1
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, n, 10_000):  # generated in chunks: the generator's memory stays small
            for record in chat_mix(min(10_000, n - start), seed=start):
                f.write(json.dumps(record) + "\n")
    return path


def _spec(model: Path, data: Path, out: Path, cache: Path) -> dict:
    return {"model": {"name_or_path": str(model), "lora": {"rank": 8, "alpha": 16, "dropout": 0.0}},
            "data": {"train": [str(data)], "validation_split": 0.0, "max_seq_len": _MAX_SEQ_LEN,
                     "cache_dir": str(cache), "template_date": "2026-01-01"},
            "train": {"max_steps": 3, "micro_batch_size": 2, "global_batch_size": 4, "warmup_ratio": 0.0,
                      "log_every_steps": 1},
            "checkpoint": {"keep_last": 1}, "scaling": {"num_workers": 2, "use_gpu": False},
            "output_dir": str(out)}


def _train(spec: dict, workdir: Path, name: str) -> dict:
    """`raysft train` in a child: peak RSS of it and of its largest train worker, seconds to the first step."""
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    metrics = Path(spec["output_dir"]) / "metrics.jsonl"
    log = open(workdir / f"{name}.log", "w", encoding="utf-8")  # a file, not a pipe: Ray's logs would fill it
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "raysft.cli", "train", str(path)], cwd=_REPO,
                             env={**os.environ, "PYTHONPATH": str(_REPO)}, stdout=log, stderr=subprocess.STDOUT)
    proc = psutil.Process(child.pid)
    driver = worker = 0
    first_step = None
    while child.poll() is None:
        try:
            driver = max(driver, proc.memory_info().rss)
            for p in proc.children(recursive=True):
                try:
                    if "RayTrainWorker" in " ".join(p.cmdline()):
                        worker = max(worker, p.memory_info().rss)
                except psutil.Error:
                    continue
        except psutil.Error:
            pass
        if first_step is None and metrics.exists() and "train_loss" in metrics.read_text():
            first_step = time.perf_counter() - start
        time.sleep(0.2)
    log.close()
    if child.returncode:
        raise RuntimeError(f"raysft train {name} failed: {(workdir / f'{name}.log').read_text()[-2000:]}")
    return {"driver_peak_rss_mb": round(driver / 2**20), "worker_peak_rss_mb": round(worker / 2**20),
            "first_step_s": round(first_step, 1) if first_step else None, "seconds": round(time.perf_counter() - start, 1)}


def _prep(spec: dict, cpus: int, cache: Path) -> dict:
    """Cold preprocessing of `spec`'s data on a local Ray of `cpus` CPUs: seconds and tokens per second."""
    import ray
    import ray.data

    from raysft.config import load_spec
    from raysft.local_ray.connect import connect_ray
    from raysft.train.rundata import prepare_run_data

    job = load_spec({**spec, "data": {**spec["data"], "cache_dir": str(cache)}})
    connect_ray(num_cpus=cpus, configure_logging=False)
    try:
        ray.data.range(cpus, override_num_blocks=cpus).materialize()  # Ray Data's first-use start, not timed
        start = time.perf_counter()
        entry, _ = prepare_run_data(job, announce=False)
        seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
    tokens = entry.split("train")["tokens"]
    return {"seconds": round(seconds, 1), "tokens": tokens, "tokens_per_s": round(tokens / seconds),
            "padding_efficiency": round(entry.manifest["padding_efficiency"], 4)}


def _datasets_map(data: Path, model: Path) -> dict:
    """The same encoding through HF `datasets.map(num_proc=2)`, what LLaMA-Factory and TRL run."""
    import datasets

    from raysft.data.template import encode_dataset
    from raysft.model.load import load_tokenizer

    tokenizer = load_tokenizer(str(model))

    def encode(batch):
        kept, _ = encode_dataset(tokenizer, batch["messages"], max_seq_len=_MAX_SEQ_LEN)
        return {"input_ids": [e["input_ids"] for e in kept], "labels": [e["labels"] for e in kept]}

    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        ds = datasets.load_dataset("json", data_files=str(data), split="train", cache_dir=cache)
        out = ds.map(encode, batched=True, num_proc=2, remove_columns=ds.column_names)
        tokens = sum(len(x) for batch in out.iter(batch_size=4096) for x in batch["input_ids"])
        seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 1), "tokens": tokens, "tokens_per_s": round(tokens / seconds)}


def run(tokens: str = "50M,10M", workdir: Optional[str | Path] = None) -> dict:
    """Every figure of the module docstring; `tokens` is "large,small"."""
    from raysft.data.template import encode_dataset
    from raysft.model.load import load_tokenizer
    from raysft.model.tiny import init_tiny

    large, small = _parse_tokens(tokens)
    work = Path(workdir or tempfile.mkdtemp(prefix="raysft-bench-prep-"))
    work.mkdir(parents=True, exist_ok=True)
    sample = write_jsonl(work / "sample.jsonl", chat_mix(2000, seed=10**9))
    model = init_tiny(work / "model", sample, hidden_size=64, layers=2)
    kept, counts = encode_dataset(load_tokenizer(str(model)), [r["messages"] for r in chat_mix(500, seed=10**9)],
                                  max_seq_len=_MAX_SEQ_LEN)
    per_record = counts["tokens"] / counts["examples"]
    sets = {size: _write_set(work / f"chat_{size}.jsonl", size, per_record) for size in (small, large)}

    prep = {f"{cpus}_cpu": _prep(_spec(model, sets[large], work / "unused", work / "c"), cpus, work / f"prep-{cpus}cpu")
            for cpus in (1, 2)}
    hf = _datasets_map(sets[large], model)
    runs = {}
    for size in (small, large):
        runs[size] = _train(_spec(model, sets[size], work / f"run-{size}", work / f"cache-{size}"), work, f"cold-{size}")
    warm = _train(_spec(model, sets[large], work / "run-warm", work / f"cache-{large}"), work, "warm")
    cold_prep = prep["2_cpu"]
    return {
        "tokens": {"large": large, "small": small, "tokens_per_record": round(per_record, 1)},
        "driver_rss_growth_mb": runs[large]["driver_peak_rss_mb"] - runs[small]["driver_peak_rss_mb"],
        "worker_rss_growth_mb": runs[large]["worker_peak_rss_mb"] - runs[small]["worker_peak_rss_mb"],
        "train_runs": {"small": runs[small], "large": runs[large], "warm_large": warm},
        "prep_tokens_per_s": {k: v["tokens_per_s"] for k, v in prep.items()},
        "prep": prep,
        "scaling": round(prep["2_cpu"]["tokens_per_s"] / prep["1_cpu"]["tokens_per_s"], 2),
        "datasets_map": hf,
        "ratio_vs_datasets_map": round(prep["2_cpu"]["tokens_per_s"] / hf["tokens_per_s"], 2),
        "cache_hit_start_s": warm["first_step_s"],
        "cache_hit_over_cold": round(warm["first_step_s"] / cold_prep["seconds"], 3) if warm["first_step_s"] else None,
        "padding_efficiency": cold_prep["padding_efficiency"],
        "goals": {"driver_rss_growth_mb": "<= 200", "worker_rss_growth_mb": "<= 200", "scaling": ">= 1.7",
                  "ratio_vs_datasets_map": ">= 1.0", "cache_hit_over_cold": "<= 0.1", "padding_efficiency": ">= 0.95"},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="50M,10M", help="the large and the small set's tokens, e.g. 10M,2M")
    parser.add_argument("--workdir", help="keep data, model, caches and runs here (default: a temp dir)")
    args = parser.parse_args(argv)
    from raysft.local_ray import use_token_auth

    use_token_auth()
    print(json.dumps(run(args.tokens, args.workdir), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
