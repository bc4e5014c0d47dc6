"""Training throughput against Hugging Face Trainer, Ray's per-step overhead, and 1 → 2 worker scaling.

Run: python benchmarks/bench_train.py [--quick]   (prints one JSON object; benchmarks/run.py runs it too)

Every run trains one epoch of the same encoded examples (benchmarks.common.chat_mix through
`raysft.data.pipeline.prepare_data`) with LoRA on the same random-weight model from `init_tiny`, with the same
micro batch, gradient accumulation, learning rate and schedule, each training process on one core (one
thread; Ray's default of one CPU per worker). The variants of one figure are run interleaved (A B C, A B C,
...) and each figure is the median over repeats, because other processes share the machine; next to it,
`best_of_repeats` takes each step's fastest repeat, and `*_cpu_s` / `*_cpu_time` figures use the training
process's CPU time (user + system), which waiting for a busy core does not inflate.

What is counted, per optimizer step, in every variant:
- processed tokens: positions the model computes, padding included (rows × padded width of each micro batch);
- useful tokens: positions holding a real token of an example (prompt and answer; not padding);
- trained tokens: positions with a loss target (assistant tokens after the first of each example), the
  figure `tokens_per_s` in a run's metrics.jsonl counts.
Throughput is taken in steady state: from the end of the first optimizer step to the end of the last (the
first step carries one-off costs: allocator warm-up, lazy imports), so tokens of steps 2..N over that time.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `raysft` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import StepCpuClock, chat_mix, length_summary, median, write_jsonl
from raysft.config import JobSpec, load_spec
from raysft.data.pipeline import prepare_data
from raysft.model.load import load_tokenizer
from raysft.model.tiny import init_tiny
from raysft.train.runlog import read_jsonl
from raysft.train.rowplan import StepPlan, count_targets, make_rows

__all__ = ["Workload", "make_workload", "workload_spec", "plan_tokens", "raysft_local", "variant_figures", "train_throughput",
           "scaling", "run"]

_SETTINGS = {"max_seq_len": 1024, "micro_batch_size": 4, "global_batch_size": 8, "learning_rate": 2e-4,
             "warmup_ratio": 0.03, "lora": {"rank": 16, "alpha": 32, "dropout": 0.05}, "seed": 42}


@dataclass
class Workload:
    """The data, model and settings every training benchmark shares."""

    data_path: Path
    model_path: Path
    examples: list[dict]
    """Encoded train examples ({input_ids, labels}), exactly what raysft trains on."""
    model_config: dict

    def describe(self) -> dict:
        """Model, data and settings, for the results file."""
        return {"model": self.model_config, "data": length_summary([len(e["input_ids"]) for e in self.examples]),
                "trained_fraction": round(sum(map(count_targets, self.examples)) /
                                          sum(len(e["input_ids"]) for e in self.examples), 3),
                **{k: v for k, v in _SETTINGS.items() if k != "seed"}, "epochs": 1}


def make_workload(workdir: str | Path, examples: int = 600, *, hidden_size: int = 128, layers: int = 2) -> Workload:
    """Write the chat mix and a tiny Llama (tokenizer trained on it) under `workdir`; encode the examples."""
    workdir = Path(workdir)
    data = write_jsonl(workdir / "chat_mix.jsonl", chat_mix(examples))
    model = init_tiny(workdir / "model", data, hidden_size=hidden_size, layers=layers)
    spec = workload_spec(model, data, workdir / "unused")
    encoded = prepare_data(spec.data, load_tokenizer(str(model)), spec.train.seed)
    config = json.loads((model / "config.json").read_text())
    return Workload(data, model, encoded.train,
                    {"architecture": "llama", "hidden_size": hidden_size, "layers": layers,
                     "vocab_size": config["vocab_size"], "lora_rank": _SETTINGS["lora"]["rank"]})


def workload_spec(model: Path, data: Path, out: Path, *, packing: bool = True, workers: int = 1, cpus: int = 1) -> JobSpec:
    s = _SETTINGS
    return load_spec({
        "model": {"name_or_path": str(model), "lora": s["lora"]},
        "data": {"train": [str(data)], "validation_split": 0.0, "max_seq_len": s["max_seq_len"], "packing": packing},
        "train": {"epochs": 1, "learning_rate": s["learning_rate"], "micro_batch_size": s["micro_batch_size"],
                  "global_batch_size": s["global_batch_size"], "warmup_ratio": s["warmup_ratio"], "seed": s["seed"],
                  "log_every_steps": 1},
        "checkpoint": {"keep_last": 1},
        "scaling": {"num_workers": workers, "use_gpu": False, "resources_per_worker": {"CPU": cpus}},
        "output_dir": str(out),
    })


# ------------------------------------------------------------------------------------ accounting


def plan_tokens(w: Workload, spec: JobSpec) -> list[dict]:
    """Processed / useful / trained tokens of every optimizer step raysft takes for `spec` (all workers)."""
    t, d, world = spec.train, spec.data, spec.scaling.num_workers
    plan = StepPlan(make_rows(w.examples, d.max_seq_len, d.packing), t.global_batch_size, t.micro_batch_size, world, t.seed)
    lengths = [len(e["input_ids"]) for e in w.examples]
    out = []
    for step in range(plan.total_steps(t.epochs, t.max_steps)):
        processed = 0
        for rank in range(world):
            for micro in plan.micro_batches(step, rank):
                processed += len(micro) * max(sum(lengths[i] for i in row) for row in micro)  # collate's width
        rows = plan.step_rows(step)
        out.append({"processed": processed, "useful": sum(lengths[i] for row in rows for i in row),
                    "trained": sum(count_targets(w.examples[i]) for row in rows for i in row)})
    return out


def _record(step_tokens: list[dict], step_ends: list[float], started: float, clock: StepCpuClock) -> dict:
    """One run: token counts of the steps it took, the wall and CPU time of steps 2..N, and the time before the
    first step and after the last (the final checkpoint, shutting down, writing outputs) up to now."""
    if len(step_ends) < 2:
        raise RuntimeError(f"a throughput run needs at least 2 optimizer steps, got {len(step_ends)}; use more examples")
    record = {"tokens": step_tokens[:len(step_ends)], "step_dts": [b - a for a, b in zip(step_ends, step_ends[1:])],
              "time_to_first_step_s": step_ends[0] - started, "time_after_last_step_s": time.time() - step_ends[-1]}
    cpu, others = clock.training_cpu, clock.others_cpu
    if len(cpu) == len(step_ends) and not math.isnan(cpu[0]):  # else the training process was out of reach
        record["cpu_s"], record["others_cpu_s"] = cpu[-1] - cpu[0], others[-1] - others[0]
    return record


def _rates(tokens: list[dict], step_dts: list[float], cpu_s: float | None = None, others_cpu_s: float | None = None) -> dict:
    """Steady-state rates: tokens of steps 2..N over their summed wall (and CPU) time."""
    seconds, steps = sum(step_dts), len(step_dts)
    out = {f"{k}_tokens_per_s": sum(t[k] for t in tokens[1:]) / seconds for k in ("useful", "trained", "processed")}
    out["step_s"] = seconds / steps
    if cpu_s is not None:
        out["useful_tokens_per_cpu_s"] = sum(t["useful"] for t in tokens[1:]) / cpu_s
        out["cpu_s_per_step"] = cpu_s / steps
        out["other_processes_cpu_s_per_step"] = others_cpu_s / steps
    return out


def _train_worker(since: float) -> psutil.Process | None:
    """The Ray Train worker process (rank 0 of one) this process's local Ray started after `since`, if any."""
    for child in psutil.Process().children(recursive=True):
        try:
            if child.cmdline()[:1] and child.cmdline()[0].startswith("ray::RayTrainWorker") and child.create_time() >= since - 1:
                return child
        except psutil.Error:
            continue
    return None


def _step_ends(output_dir: Path) -> list[float]:
    """Wall-clock end of every optimizer step, from the `metrics` events rank 0 wrote."""
    return [_dt.datetime.fromisoformat(e["time"]).timestamp()
            for e in read_jsonl(output_dir / "events.jsonl") if e["type"] == "metrics"]


# ------------------------------------------------------------------------------------------ runs


def _raysft_ray(w: Workload, out: Path, **kw) -> dict:
    """raysft as users run it: `run_training` on Ray (already connected)."""
    from raysft.train.launcher import run_training

    spec = workload_spec(w.model_path, w.data_path, out, **kw)
    started = time.time()
    # Per-step progress lines go to the void.
    with contextlib.redirect_stdout(io.StringIO()), StepCpuClock(lambda: _train_worker(started), out / "events.jsonl") as clock:
        run_training(spec)
    ends = _step_ends(out)
    tokens = plan_tokens(w, spec)
    logged = [m["trained_tokens"] for m in read_jsonl(out / "metrics.jsonl") if "train_loss" in m]
    if logged != [s["trained"] for s in tokens[:len(logged)]]:  # the accounting must describe the steps the run took
        raise RuntimeError(f"{out}: trained tokens per step in metrics.jsonl differ from the benchmark's plan")
    return _record(tokens, ends, started, clock)


def raysft_local(w: Workload, out: Path, *, threads: int) -> dict:
    """The same loop and driver-side data preparation, in this process as the only worker, without Ray."""
    from raysft.train.loop import train_loop_per_worker
    from raysft.train.rundata import WorkerInput, prepare_run_data
    from raysft.train.session import LocalSession

    spec = workload_spec(w.model_path, w.data_path, out)
    torch.set_num_threads(threads)
    started = time.time()
    data, _ = prepare_run_data(spec, use_ray=False)
    config = {"run": WorkerInput(spec=spec.model_dump(mode="json"), output_dir=str(out), storage_path=str(out),
                                 cache_dir=data.cache_dir, data_key=data.key)}
    with contextlib.redirect_stdout(io.StringIO()), StepCpuClock(psutil.Process, out / "events.jsonl") as clock:
        train_loop_per_worker(config, LocalSession(out))
    return _record(plan_tokens(w, spec), _step_ends(out), started, clock)


def _hf_trainer(w: Workload, out: Path, *, threads: int) -> dict:
    """The usual alternative: transformers Trainer + PEFT LoRA, a per-batch padding collator, same settings."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments
    from transformers.utils import logging as hf_logging

    s = _SETTINGS
    torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()  # "Loading weights" bars; the benchmark prints JSON
    started = time.time()
    tokenizer = AutoTokenizer.from_pretrained(w.model_path)
    model = AutoModelForCausalLM.from_pretrained(w.model_path, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=s["lora"]["rank"], lora_alpha=s["lora"]["alpha"], lora_dropout=s["lora"]["dropout"],
                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    features = [{"input_ids": e["input_ids"], "attention_mask": [1] * len(e["input_ids"]), "labels": e["labels"]}
                for e in w.examples]
    pad = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100)
    micro_tokens: list[dict] = []

    def collate(batch):
        out_ = pad(batch)
        # Counted where the batch is built; the ordering of micro batches is the order of training.
        micro_tokens.append({"processed": out_["input_ids"].numel(), "useful": int(out_["attention_mask"].sum()),
                             "trained": int((out_["labels"][:, 1:] != -100).sum())})
        return out_

    ends: list[float] = []
    clock = StepCpuClock(psutil.Process)

    class _StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.time())
            clock.tick()

    accumulation = s["global_batch_size"] // s["micro_batch_size"]
    steps = math.ceil(len(features) / s["micro_batch_size"] / accumulation)
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=s["micro_batch_size"], gradient_accumulation_steps=accumulation,
        learning_rate=s["learning_rate"], num_train_epochs=1, lr_scheduler_type="cosine",
        warmup_steps=math.ceil(s["warmup_ratio"] * steps), weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch",
        logging_strategy="no", save_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True, seed=s["seed"],
        dataloader_num_workers=0, remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=features, data_collator=collate, callbacks=[_StepClock()])
    with contextlib.redirect_stdout(io.StringIO()):  # Trainer prints its summary dict
        trainer.train()
    per_step = [{k: sum(m[k] for m in micro_tokens[i:i + accumulation]) for k in ("processed", "useful", "trained")}
                for i in range(0, len(micro_tokens), accumulation)]
    return _record(per_step, ends, started, clock)


# --------------------------------------------------------------------------------------- figures


def variant_figures(runs: list[dict]) -> dict:
    """A variant's figures over its repeats: the median run, and the fastest repeat of each step.

    Every repeat takes the same steps on the same rows (the data order is seeded), so step k of one
    repeat is comparable with step k of another. Other processes only ever slow a step down; each step's
    fastest repeat (timeit-style minimum) is the estimate of its time on an otherwise idle machine.
    """
    if any(r["tokens"] != runs[0]["tokens"] for r in runs):
        raise RuntimeError("repeats of one variant took different steps; the data order must be seeded")
    per_run = [_rates(r["tokens"], r["step_dts"], r.get("cpu_s"), r.get("others_cpu_s")) for r in runs]
    common = set.intersection(*(set(r) for r in per_run))  # CPU figures only when every repeat has them
    best = _rates(runs[0]["tokens"], [min(dts) for dts in zip(*(r["step_dts"] for r in runs))])
    total = {k: sum(t[k] for t in runs[0]["tokens"]) for k in ("useful", "processed")}
    return {**{k: round(median([r[k] for r in per_run]), 4) for k in per_run[0] if k in common},
            "padding_efficiency": round(total["useful"] / total["processed"], 4),
            **{k: round(median([r[k] for r in runs]), 2) for k in ("time_to_first_step_s", "time_after_last_step_s")},
            "steps": len(runs[0]["tokens"]),
            "best_of_repeats": {k: round(v, 4) for k, v in best.items()},
            "runs_useful_tokens_per_s": [round(r["useful_tokens_per_s"]) for r in per_run]}


def train_throughput(w: Workload, repeats: int, *, threads: int, workdir: Path) -> tuple[dict, dict]:
    """raysft packed / unpacked on Ray, raysft's loop in-process, and HF Trainer, interleaved `repeats` times.

    Returns:
        (train_throughput figure, ray_overhead figure): the in-process runs serve the overhead figure.
    """
    runs: dict[str, list[dict]] = {"raysft_packed": [], "hf_trainer": [], "raysft_unpacked": [], "in_process_packed": []}
    for i in range(repeats):
        runs["raysft_packed"].append(_raysft_ray(w, workdir / f"packed_{i}", cpus=threads))
        runs["hf_trainer"].append(_hf_trainer(w, workdir / f"hf_{i}", threads=threads))
        runs["raysft_unpacked"].append(_raysft_ray(w, workdir / f"unpacked_{i}", packing=False, cpus=threads))
        runs["in_process_packed"].append(raysft_local(w, workdir / f"local_{i}", threads=threads))
    f = {k: variant_figures(v) for k, v in runs.items()}
    packed, hf, unpacked, local = f["raysft_packed"], f["hf_trainer"], f["raysft_unpacked"], f["in_process_packed"]

    def ratio(a: dict, b: dict, key: str) -> float | None:
        return round(a[key] / b[key], 3) if key in a and key in b else None

    throughput = {
        "ratio_vs_hf": ratio(packed, hf, "useful_tokens_per_s"),
        "ratio_vs_hf_best_of_repeats": ratio(packed["best_of_repeats"], hf["best_of_repeats"], "useful_tokens_per_s"),
        "ratio_vs_hf_cpu_time": ratio(packed, hf, "useful_tokens_per_cpu_s"),
        "trained_ratio_vs_hf": ratio(packed, hf, "trained_tokens_per_s"),
        "padding_efficiency": packed["padding_efficiency"],
        "packing_speedup": ratio(packed, unpacked, "useful_tokens_per_s"),
        "raysft_packed": packed, "raysft_unpacked": unpacked, "hf_trainer": hf,
        "workload": w.describe(), "threads": threads, "repeats": repeats,
        "goals": {"ratio_vs_hf": ">= 1.5", "padding_efficiency": ">= 0.95"},
    }
    overhead = {
        "step_overhead_ratio": ratio(packed, local, "step_s"),
        "step_overhead_ratio_best_of_repeats": ratio(packed["best_of_repeats"], local["best_of_repeats"], "step_s"),
        "step_overhead_ratio_cpu_time": ratio(packed, local, "cpu_s_per_step"),
        "step_s": {"ray": packed["step_s"], "in_process": local["step_s"]},
        "cpu_s_per_step": {"ray_worker": packed.get("cpu_s_per_step"), "in_process": local.get("cpu_s_per_step")},
        # Ray's own processes (raylet, GCS, controller, idle workers) beside the training process; during the
        # in-process run the local Ray is up but idle.
        "ray_processes_cpu_s_per_step": {"ray_run": packed.get("other_processes_cpu_s_per_step"),
                                         "in_process_run": local.get("other_processes_cpu_s_per_step")},
        "per_repeat_ratio": [round(sum(r["step_dts"]) / sum(l_["step_dts"]), 3)
                             for r, l_ in zip(runs["raysft_packed"], runs["in_process_packed"])],
        "time_to_first_step_s": {"ray": packed["time_to_first_step_s"], "in_process": local["time_to_first_step_s"]},
        "time_after_last_step_s": {"ray": packed["time_after_last_step_s"], "in_process": local["time_after_last_step_s"]},
        "threads": threads, "repeats": repeats, "goals": {"step_overhead_ratio": "<= 1.05"},
    }
    return throughput, overhead


def scaling(w: Workload, repeats: int, *, workdir: Path) -> dict:
    """Useful tokens/s of 1 and 2 Ray Train workers (DDP on gloo), one CPU each, interleaved."""
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for i in range(repeats):
        for workers in (1, 2):
            runs[workers].append(_raysft_ray(w, workdir / f"scale{workers}_{i}", workers=workers, cpus=1))
    f = {n: variant_figures(v) for n, v in runs.items()}
    return {"cores": len(os.sched_getaffinity(0)), "cpus_per_worker": 1, "repeats": repeats,
            "useful_tokens_per_s": {str(n): round(v["useful_tokens_per_s"]) for n, v in f.items()},
            "useful_tokens_per_s_best_of_repeats": {str(n): round(v["best_of_repeats"]["useful_tokens_per_s"]) for n, v in f.items()},
            "speedup": round(f[2]["useful_tokens_per_s"] / f[1]["useful_tokens_per_s"], 3),
            "speedup_best_of_repeats": round(f[2]["best_of_repeats"]["useful_tokens_per_s"] / f[1]["best_of_repeats"]["useful_tokens_per_s"], 3)}


def run(quick: bool = True, workdir: str | Path | None = None) -> dict:
    """Every training figure: {"train_throughput", "ray_overhead", "scaling"}; starts a local Ray if needed.

    Args:
        quick: fewer examples and repeats (a few minutes on 2 cores) instead of the full run.
        workdir: where models, data and run directories go; a temporary directory when None.
    """
    import ray

    from raysft.local_ray.connect import connect_ray

    # One core per training process (Ray's default of one CPU per worker): a single-threaded process's CPU
    # time is not inflated by OpenMP threads spinning at barriers when other jobs take the cores, so the
    # CPU-time figures stay comparable on a shared machine; `scaling` shows what the second core adds.
    threads = 1
    owns_ray = not ray.is_initialized()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(workdir or tmp)
        w = make_workload(root, examples=240 if quick else 1000)
        started = time.time()
        connect_ray(log_to_driver=False)  # worker progress lines would bury the results
        ray_init_s = time.time() - started
        try:
            throughput, overhead = train_throughput(w, 2 if quick else 5, threads=threads, workdir=root)
            overhead["ray_init_s"] = round(ray_init_s, 2)
            scale = scaling(w, 1 if quick else 3, workdir=root)
        finally:
            if owns_ray:  # later benchmarks start Ray their own way
                ray.shutdown()
    return {"train_throughput": throughput, "ray_overhead": overhead, "scaling": scale}


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
