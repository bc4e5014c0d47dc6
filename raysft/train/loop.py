"""The per-worker training loop, run by Ray Train on every worker. Reads top to bottom.

Loss normalisation: every worker knows every step's rows (the plan is deterministic), so each knows the
number N of trained tokens in the whole global batch. Each micro batch backpropagates
sum(token CE) / N × world_size; DDP averages gradients over the W workers, so the update is exactly the
token-mean over the global batch — 2 workers × b and 1 worker × 2b make the same step.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import tempfile
import time
from pathlib import Path

import ray.train
import torch
from transformers import get_scheduler

from raysft.config import JobSpec, spec_to_yaml
from raysft.model.load import load_model, load_tokenizer
from raysft.train.evaluate import evaluate_loss, generate_answers
from raysft.train.loss import token_loss, unwrap
from raysft.train.records import RunLog
from raysft.train.rundata import WorkerInput, open_run_data
from raysft.train.schedule import StepPlan, collate_rows, rows_of, step_advice
from raysft.train.session import LocalSession, RaySession
from raysft.train.state import load_state, save_state
from raysft.train.tracking import Tracker

__all__ = ["train_loop_per_worker", "resolve_precision", "checkpoint_name"]


def checkpoint_name(step: int) -> str:
    """The directory name of the checkpoint at `step` under `<storage>/checkpoints/` (events name its URI by it)."""
    return f"checkpoint_{step:06d}"


def _resume_point(recorded: ray.train.Checkpoint | None, given: str | None) -> ray.train.Checkpoint | None:
    """The checkpoint to resume from: Ray Train's latest of this run, or `given` (a checkpoint URI that
    `raysft train --from-step` names) when that one is later. Ray records a checkpoint a moment after it is
    saved, so a driver killed in between leaves Ray's record one save behind the run's checkpoint_saved events."""
    if not given:
        return recorded

    def step(c: ray.train.Checkpoint) -> int:
        name = Path(c.path).name
        return int(name.rsplit("_", 1)[1]) if name.startswith("checkpoint_") and name[11:].isdigit() else -1

    named = ray.train.Checkpoint(given)
    return named if recorded is None or step(recorded) < step(named) else recorded


def resolve_precision(precision: str, device: torch.device) -> tuple[torch.dtype, torch.dtype | None]:
    """(weight dtype, autocast dtype or None) for a `train.precision` setting on `device`."""
    if device.type != "cuda" or precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return torch.float32, None
    if precision == "fp16" or (precision == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float32, torch.float16  # fp16 weights underflow in AdamW: keep fp32 masters, autocast
    return torch.bfloat16, torch.bfloat16


def train_loop_per_worker(config: dict, session: RaySession | LocalSession | None = None) -> dict:
    """Train one worker's share of the run `config` describes; returns the final step and best metric.

    Args:
        config: {"run": a `raysft.train.rundata.WorkerInput`}, as `raysft.train.launcher.run_training` builds it
            (Ray Train hands the loop a dict).
        session: the runtime (rank, device, checkpoints, reports); None means Ray Train's, which is how
            `TorchTrainer` calls it. `raysft.train.session.LocalSession` runs it in-process without Ray.
    """
    # ---- setup: spec, rank, device, seeds
    session = session or RaySession()
    run: WorkerInput = config["run"]
    spec = JobSpec.model_validate(run.spec)
    t, d = spec.train, spec.data
    rank, world = session.world_rank, session.world_size
    device = session.device
    random.seed(t.seed + rank)
    torch.manual_seed(t.seed)  # same adapter initialisation on every rank
    weight_dtype, amp_dtype = resolve_precision(t.precision, device)
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext
    out = Path(run.output_dir)
    log = RunLog(out, enabled=rank == 0, tracker=Tracker(run.tracking, spec, out) if rank == 0 else None)

    # ---- model, optimizer, scheduler
    tokenizer = load_tokenizer(spec.model.name_or_path)
    model = load_model(spec.model, device=device, dtype=weight_dtype, gradient_checkpointing=t.gradient_checkpointing)
    model = session.prepare_model(
        model, parallel_strategy=spec.scaling.strategy, move_to_device=spec.model.method != "qlora",
        parallel_strategy_kwargs=_fsdp_kwargs(model) if spec.scaling.strategy == "fsdp" else None)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay)

    # ---- data plan: rows, steps, accumulation (from the cache manifest; examples are read as batches need them)
    data = open_run_data(run.data_dir)
    train, val = data.examples("train"), data.examples("validation")
    lengths, targets = data.split("train")["lengths"], data.split("train")["targets"]
    plan = StepPlan(rows_of(lengths, d.max_seq_len, d.packing), t.global_batch_size, t.micro_batch_size, world, t.seed)
    val_rows = rows_of(data.split("validation")["lengths"], d.max_seq_len, d.packing)
    gen = spec.eval.generate
    val_conversations = data.validation_conversations(gen.limit) if gen else []
    total_steps = plan.total_steps(t.epochs, t.max_steps)
    warmup = t.warmup_steps if t.warmup_steps is not None else math.ceil(t.warmup_ratio * total_steps)
    if advice := step_advice(plan, t.epochs, t.max_steps):
        log.warning(advice.field, advice.message, {"total_steps": total_steps})
    scheduler = get_scheduler(
        "constant_with_warmup" if t.lr_scheduler == "constant" else t.lr_scheduler,
        optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)

    # ---- resume from the latest checkpoint (worker restart or `raysft train --resume`)
    state = {"step": 0, "best": None, "best_step": None, "bad_evals": 0, "trained_tokens": 0}
    checkpoint = _resume_point(session.get_checkpoint(), run.resume_from)
    if checkpoint:
        with checkpoint.as_directory() as ckpt_dir:
            state = {**state, **load_state(Path(ckpt_dir), rank=rank, model=model, optimizer=optimizer, scheduler=scheduler)}
        log.resumed(state["step"])
    log.event("info", "started", f"training {total_steps} steps on {world} worker(s), {plan.accumulation_steps} accumulation step(s)",
              {"total_steps": total_steps, "rows": len(plan.rows), "steps_per_epoch": plan.steps_per_epoch})

    def evaluate_and_checkpoint(step: int, train_loss: float | None) -> bool:
        """Evaluate, report a checkpoint to Ray, update early stopping. Returns True to stop."""
        metrics = {"step": step, "epoch": step / plan.steps_per_epoch}
        if val:
            metrics.update(evaluate_loss(model, val, val_rows, micro_batch_size=t.micro_batch_size, rank=rank,
                                         world_size=world, device=device, pad_id=tokenizer.pad_token_id,
                                         packed=d.packing, autocast=autocast))
        if gen and val_conversations:
            # Generation runs on the unwrapped model: DDP's forward hooks expect a backward pass.
            out = generate_answers(unwrap(model), tokenizer, val_conversations,
                                   max_new_tokens=gen.max_new_tokens, limit=gen.limit, rank=rank, world_size=world,
                                   device=device, autocast=autocast, samples=gen.samples, date=d.template_date)
            if gen.metric:
                metrics["exact_match"] = out["exact_match"]
            log.samples(step, out["samples"])
        key, higher = spec.checkpoint.keep_best_by, spec.checkpoint.keep_best_by == "exact_match"
        score = metrics.get(key)
        stop = False
        if score is not None:
            es = spec.eval.early_stopping
            delta = es.min_delta if es else 0.0
            improved = state["best"] is None or (score > state["best"] + delta if higher else score < state["best"] - delta)
            if improved:
                state.update(best=score, best_step=step, bad_evals=0)
            else:
                state["bad_evals"] += 1
            if es and state["bad_evals"] >= es.patience:
                stop = True
                log.early_stop(step, key, state, train_loss)
        log.eval(metrics)
        state["step"] = step
        with tempfile.TemporaryDirectory() as tmp:
            save_state(Path(tmp), rank=rank, model=model, optimizer=optimizer, scheduler=scheduler,
                       trainer_state=dict(state), spec_yaml=spec_to_yaml(spec))
            report = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            name = checkpoint_name(step)  # deterministic, so events can name the checkpoint's URI
            session.report(report, checkpoint=ray.train.Checkpoint.from_directory(tmp), checkpoint_dir_name=name)
        uri = f"{run.storage_path.rstrip('/')}/checkpoints/{name}"
        log.event("info", "checkpoint_saved", f"checkpoint at step {step}", {"step": step, "uri": uri, **report})
        return stop

    # ---- train
    model.train()
    step = state["step"]
    tokens_since, time_since = 0, time.perf_counter()
    while step < total_steps:
        micro = plan.micro_batches(step, rank)
        n_global = sum(targets[i] for row in plan.step_rows(step) for i in row)  # trained tokens, all ranks
        tokens_since += sum(lengths[i] for row in plan.step_rows(step) for i in row)  # real (non-pad) tokens, all ranks
        step_loss = torch.zeros((), device=device)
        for k, rows in enumerate(micro):
            batch = collate_rows(train, rows, pad_id=tokenizer.pad_token_id, packed=d.packing)
            batch = {key: v.to(device) for key, v in batch.items() if isinstance(v, torch.Tensor)}
            # DDP all-reduces gradients only on the last micro batch of the step.
            sync = contextlib.nullcontext() if k == len(micro) - 1 or not hasattr(model, "no_sync") else model.no_sync()
            with sync, autocast():
                loss_sum, _, _ = token_loss(model, batch)
                (loss_sum / max(n_global, 1) * world).backward()
            step_loss += loss_sum.detach()
        if t.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        state["trained_tokens"] += n_global

        # ---- log, evaluate, checkpoint
        end_of_epoch = step % plan.steps_per_epoch == 0 or step == total_steps
        if step % t.log_every_steps == 0 or end_of_epoch:
            if world > 1:
                torch.distributed.all_reduce(step_loss)
            elapsed = time.perf_counter() - time_since
            metrics = {"step": step, "epoch": step / plan.steps_per_epoch, "train_loss": step_loss.item() / max(n_global, 1),
                       "lr": scheduler.get_last_lr()[0], "tokens_per_s": tokens_since / max(elapsed, 1e-9),
                       "trained_tokens": n_global}
            if device.type == "cuda":  # what this process has held at most: compare with `raysft estimate`
                metrics["peak_memory_gb"] = torch.cuda.max_memory_reserved(device) / 2**30
            log.step(metrics, total_steps)
            tokens_since, time_since = 0, time.perf_counter()
        every_eval = spec.eval.every_steps and step % spec.eval.every_steps == 0
        every_ckpt = spec.checkpoint.every_steps and step % spec.checkpoint.every_steps == 0
        if end_of_epoch or every_eval or every_ckpt:
            paused = time.perf_counter()
            if evaluate_and_checkpoint(step, log.last_train_loss):
                break
            time_since += time.perf_counter() - paused  # tokens/s measures training, not evaluation
    log.event("info", "finished", f"training finished at step {step}", {"step": step, "best": state["best"], "best_step": state["best_step"]})
    if log.tracker:
        log.tracker.close()
    return {"step": step, "best": state["best"], "best_step": state["best_step"], "early_stopped": step < total_steps,
            "trained_tokens": state["trained_tokens"]}


def _fsdp_kwargs(model) -> dict:
    """One FSDP unit per decoder block; use_orig_params lets frozen base and trainable adapter share a unit."""
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    names = set(getattr(unwrap(model), "_no_split_modules", None) or getattr(getattr(unwrap(model), "base_model", None), "_no_split_modules", None) or [])
    blocks = {type(m) for m in model.modules() if type(m).__name__ in names}
    return {"auto_wrap_policy": functools.partial(transformer_auto_wrap_policy, transformer_layer_cls=blocks),
            "use_orig_params": True}
