"""The per-worker training loop, run by Ray Train on every worker. Reads top to bottom.

Loss normalisation: every worker knows every step's rows (the plan is deterministic), so each knows the
number N of trained tokens in the whole global batch. Each micro batch backpropagates
sum(token CE) / N × world_size; DDP averages gradients over the W workers, so the update is exactly the
token-mean over the global batch — 2 workers × b and 1 worker × 2b make the same step.

`setup()` builds a `Trainer` (model, optimizer, the step plan, the `TrainerState` a checkpoint restores); `fit()`
runs it from `state.step` to the end. Lines marked "sync point" are collectives: every rank must reach them, in
the same order, or the others wait forever. They sit behind conditions that depend only on the step number and
on all-reduced values, which are the same on every rank.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import ray.train
import torch
from transformers import PreTrainedTokenizerBase, get_scheduler

from raysft.config import JobSpec, spec_to_yaml
from raysft.data.shards import ExampleStore
from raysft.model.load import load_model, load_tokenizer
from raysft.train.allocator import allocator_in_use
from raysft.train.counters import EarlyStopping, Throughput
from raysft.train.evaluate import evaluate_loss, generate_answers
from raysft.train.loss import token_loss, unwrap
from raysft.train.retention import Retention
from raysft.train.runlog import RunLog
from raysft.train.rundata import WorkerInput, open_run_data
from raysft.train.rowplan import StepPlan, collate_rows, rows_of, step_advice
from raysft.train.session import RaySession, Session
from raysft.train.checkpoint import TrainerState, load_state, save_state, spec_differences
from raysft.train.tracking import Tracker

__all__ = ["train_loop_per_worker", "setup", "fit", "Trainer", "RunData", "resolve_precision", "checkpoint_name", "resume_point"]


def checkpoint_name(step: int) -> str:
    """The directory name of the checkpoint at `step` under `<storage>/checkpoints/` (events name its URI by it)."""
    return f"checkpoint_{step:06d}"


def resume_point(recorded: ray.train.Checkpoint | None, given: str | None) -> ray.train.Checkpoint | None:
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


@dataclass
class RunData:
    """This worker's view of the run's data: examples are read as batches need them, the plan from the manifest."""

    train: ExampleStore
    val: ExampleStore
    val_rows: list[list[int]]
    val_conversations: list
    lengths: list[int]
    """Tokens per train example (padding excluded)."""
    targets: list[int]
    """Trained tokens per train example."""
    plan: StepPlan


@dataclass
class Trainer:
    """Everything `fit()` uses, built by `setup()`."""

    spec: JobSpec
    run: WorkerInput
    session: Session
    log: RunLog
    retention: Retention
    tokenizer: PreTrainedTokenizerBase
    model: torch.nn.Module
    params: list
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    autocast: Callable
    data: RunData
    total_steps: int
    stopping: EarlyStopping
    state: TrainerState = field(default_factory=TrainerState)
    throughput: Throughput = field(default_factory=Throughput)


def train_loop_per_worker(config: dict, session: Session | None = None) -> dict:
    """Train one worker's share of the run `config` describes; returns the final step and best metric.

    Args:
        config: {"run": a `raysft.train.rundata.WorkerInput`}, as `raysft.train.launcher.run_training` builds it
            (Ray Train hands the loop a dict).
        session: the runtime (rank, device, checkpoints, reports); None means Ray Train's, which is how
            `TorchTrainer` calls it. `raysft.train.session.LocalSession` runs it in-process without Ray.
    """
    return fit(setup(config["run"], session or RaySession()))


def setup(run: WorkerInput, session: Session) -> Trainer:
    """Seed, load the model, plan the steps and restore the latest checkpoint: a `Trainer` ready for `fit()`."""
    spec = JobSpec.model_validate(run.spec)
    t = spec.train
    device = session.device
    random.seed(t.seed + session.world_rank)
    torch.manual_seed(t.seed)  # same adapter initialisation on every rank
    weight_dtype, amp_dtype = resolve_precision(t.precision, device)
    out = Path(run.output_dir)
    rank0 = session.world_rank == 0
    log = RunLog(out, enabled=rank0, tracker=Tracker(run.tracking, spec, out) if rank0 else None)

    tokenizer = load_tokenizer(spec.model.name_or_path, trust_remote_code=spec.model.trust_remote_code)
    model = load_model(spec.model, device=device, dtype=weight_dtype, gradient_checkpointing=t.gradient_checkpointing)
    model = session.prepare_model(
        model, parallel_strategy=spec.scaling.strategy, move_to_device=spec.model.method != "qlora",
        parallel_strategy_kwargs=_fsdp_kwargs(model) if spec.scaling.strategy == "fsdp" else None)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay)

    data = _open_data(spec, run, session.world_size)
    total_steps = data.plan.total_steps(t.epochs, t.max_steps)
    warmup = t.warmup_steps if t.warmup_steps is not None else math.ceil(t.warmup_ratio * total_steps)
    if advice := step_advice(data.plan, t.epochs, t.max_steps):
        log.warning(advice.field, advice.message, {"total_steps": total_steps})
    scheduler = get_scheduler(
        "constant_with_warmup" if t.lr_scheduler == "constant" else t.lr_scheduler,
        optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext
    trainer = Trainer(spec=spec, run=run, session=session, log=log, retention=Retention(log, spec.checkpoint.keep_last),
                      tokenizer=tokenizer, model=model, params=params, optimizer=optimizer, scheduler=scheduler,
                      autocast=autocast, data=data, total_steps=total_steps, stopping=EarlyStopping.of(spec))
    trainer.state = _restore(trainer)
    log.event("info", "started", f"training {total_steps} steps on {session.world_size} worker(s), "
              f"{data.plan.accumulation_steps} accumulation step(s)",
              {"total_steps": total_steps, "rows": len(data.plan.rows), "steps_per_epoch": data.plan.steps_per_epoch,
               "allocator": allocator_in_use()})
    return trainer


def _open_data(spec: JobSpec, run: WorkerInput, world_size: int) -> RunData:
    """The cache entry's examples and this run's step plan (rows, steps, accumulation) from its manifest."""
    t, d = spec.train, spec.data
    data = open_run_data(run.cache_dir, run.data_key)
    lengths, targets = data.split("train")["lengths"], data.split("train")["targets"]
    plan = StepPlan(rows_of(lengths, d.max_seq_len, d.packing), t.global_batch_size, t.micro_batch_size, world_size, t.seed)
    gen = spec.eval.generate
    return RunData(train=data.examples("train"), val=data.examples("validation"),
                   val_rows=rows_of(data.split("validation")["lengths"], d.max_seq_len, d.packing),
                   val_conversations=data.validation_conversations(gen.limit) if gen else [],
                   lengths=lengths, targets=targets, plan=plan)


def _restore(tr: Trainer) -> TrainerState:
    """The state of the latest checkpoint (worker restart or `raysft train --resume`), weights and optimizer
    restored into `tr`; a fresh state when there is none. Names every field the checkpoint's spec differs in."""
    checkpoint = resume_point(tr.session.get_checkpoint(), tr.run.resume_from)
    if not checkpoint:
        return TrainerState()
    with checkpoint.as_directory() as ckpt_dir:
        raw = load_state(Path(ckpt_dir), rank=tr.session.world_rank, model=tr.model, optimizer=tr.optimizer,
                         scheduler=tr.scheduler)
        state = TrainerState.from_json(raw, source=checkpoint.path, steps_per_epoch=tr.data.plan.steps_per_epoch,
                                       rows_per_step=tr.data.plan.global_batch_size)
        changed = spec_differences(Path(ckpt_dir), spec_to_yaml(tr.spec))
    tr.log.resumed(state.step)
    for name, saved, now in changed:  # as torchtune does: the run goes on with its own values, but says so
        tr.log.warning(name, f"differs from the checkpoint at step {state.step} ({_shown(saved)} there, "
                             f"{_shown(now)} in this run); training continues with this run's value",
                       {"step": state.step})
    return state


def _shown(value: str) -> str:
    return value if len(value) <= 80 else value[:77] + "..."


def fit(tr: Trainer) -> dict:
    """Train from `tr.state.step` to the plan's last step, evaluating and checkpointing on schedule; stops early
    when `tr.stopping` says so. Returns the final step, the best score and its step, and the trained tokens."""
    spec, state, plan = tr.spec, tr.state, tr.data.plan
    tr.model.train()
    tr.throughput.reset()
    while state.step < tr.total_steps:
        step_loss, n_global = _train_step(tr, state.step)
        state.rows_consumed += plan.global_batch_size  # every step takes exactly that many rows (the plan wraps)
        state.step += 1
        state.epoch = state.step / plan.steps_per_epoch
        state.trained_tokens += n_global

        # ---- log, evaluate, checkpoint (every condition depends on the step only: the same on every rank)
        step = state.step
        end_of_epoch = step % plan.steps_per_epoch == 0 or step == tr.total_steps
        if step % spec.train.log_every_steps == 0 or end_of_epoch:
            _log_step(tr, step_loss, n_global)
        every_eval = spec.eval.every_steps and step % spec.eval.every_steps == 0
        every_ckpt = spec.checkpoint.every_steps and step % spec.checkpoint.every_steps == 0
        if end_of_epoch or every_eval or every_ckpt:
            with tr.throughput.paused():  # tokens/s measures training, not evaluation
                stop = _evaluate_and_checkpoint(tr)
            if stop:  # decided from all-reduced scores, so every rank leaves the loop at the same step
                break
    tr.log.event("info", "finished", f"training finished at step {state.step}",
                 {"step": state.step, "best": state.best, "best_step": state.best_step})
    if tr.log.tracker:
        tr.log.tracker.close()
    return {"step": state.step, "best": state.best, "best_step": state.best_step,
            "early_stopped": state.step < tr.total_steps, "trained_tokens": state.trained_tokens}


def _train_step(tr: Trainer, step: int) -> tuple[torch.Tensor, int]:
    """One optimizer step (0-based `step`) over this rank's micro batches; (this rank's summed token loss, the
    trained tokens of the whole global batch)."""
    d, device, model = tr.data, tr.session.device, tr.model
    micro = d.plan.micro_batches(step, tr.session.world_rank)
    n_global = sum(d.targets[i] for row in d.plan.step_rows(step) for i in row)  # trained tokens, all ranks
    tr.throughput.add(sum(d.lengths[i] for row in d.plan.step_rows(step) for i in row))  # real tokens, all ranks
    step_loss = torch.zeros((), device=device)
    for k, rows in enumerate(micro):
        batch = collate_rows(d.train, rows, pad_id=tr.tokenizer.pad_token_id, packed=tr.spec.data.packing)
        batch = {key: v.to(device) for key, v in batch.items() if isinstance(v, torch.Tensor)}
        # DDP all-reduces gradients only on the last micro batch of the step: that backward is a sync point
        # (every rank has the same number of micro batches, by the plan).
        sync = contextlib.nullcontext() if k == len(micro) - 1 or not hasattr(model, "no_sync") else model.no_sync()
        with sync, tr.autocast():
            loss_sum, _, _ = token_loss(model, batch)
            (loss_sum / max(n_global, 1) * tr.session.world_size).backward()
        step_loss += loss_sum.detach()
    if tr.spec.train.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(tr.params, tr.spec.train.max_grad_norm)
    tr.optimizer.step()
    tr.scheduler.step()
    tr.optimizer.zero_grad(set_to_none=True)
    return step_loss, n_global


def _log_step(tr: Trainer, step_loss: torch.Tensor, n_global: int) -> None:
    """The step's metrics line: train loss over the global batch, learning rate, tokens/s since the last line."""
    device, state = tr.session.device, tr.state
    if tr.session.world_size > 1:
        torch.distributed.all_reduce(step_loss)  # sync point: every rank logs the same steps
    metrics = {"step": state.step, "epoch": state.epoch,
               "train_loss": step_loss.item() / max(n_global, 1),  # host sync on the reduced loss
               "lr": tr.scheduler.get_last_lr()[0], "tokens_per_s": tr.throughput.tokens_per_s(),
               "trained_tokens": n_global}
    if device.type == "cuda":  # what this process has held at most: compare with `raysft estimate`
        metrics["peak_memory_gb"] = torch.cuda.max_memory_reserved(device) / 2**30
    tr.log.step(metrics, tr.total_steps)
    tr.throughput.reset()


def _evaluate_and_checkpoint(tr: Trainer) -> bool:
    """Evaluate, update early stopping, report a checkpoint to Ray. Returns True to stop."""
    spec, state = tr.spec, tr.state
    metrics = _evaluate(tr)
    key = spec.checkpoint.keep_best_by
    stop = tr.stopping.update(state, state.step, metrics.get(key))
    if stop:
        tr.log.early_stop(state.step, key, state, tr.log.last_train_loss)
    tr.log.eval(metrics)
    with tempfile.TemporaryDirectory() as tmp:
        save_state(Path(tmp), rank=tr.session.world_rank, model=tr.model, optimizer=tr.optimizer,
                   scheduler=tr.scheduler, trainer_state=state.to_json(), spec_yaml=spec_to_yaml(spec))
        report = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        name = checkpoint_name(state.step)  # deterministic, so events can name the checkpoint's URI
        # Sync point: under Ray Train every rank reports each checkpoint.
        tr.session.report(report, checkpoint=ray.train.Checkpoint.from_directory(tmp), checkpoint_dir_name=name)
    uri = f"{tr.run.storage_path.rstrip('/')}/checkpoints/{name}"
    tr.retention.reported({"step": state.step, "uri": uri, **report}, tr.session.kept_checkpoints)
    return stop


def _evaluate(tr: Trainer) -> dict:
    """Validation loss and, with `eval.generate`, exact match and samples; the same numbers on every rank."""
    spec, d, session = tr.spec, tr.data, tr.session
    metrics = {"step": tr.state.step, "epoch": tr.state.epoch}
    if d.val:  # sync point inside: the sums are all-reduced
        metrics.update(evaluate_loss(tr.model, d.val, d.val_rows, micro_batch_size=spec.train.micro_batch_size,
                                     rank=session.world_rank, world_size=session.world_size, device=session.device,
                                     pad_id=tr.tokenizer.pad_token_id, packed=spec.data.packing, autocast=tr.autocast))
    gen = spec.eval.generate
    if gen and d.val_conversations:
        # Generation runs on the unwrapped model: DDP's forward hooks expect a backward pass.
        # Sync point inside: the hit counts are all-reduced.
        out = generate_answers(unwrap(tr.model), tr.tokenizer, d.val_conversations, max_new_tokens=gen.max_new_tokens,
                               limit=gen.limit, rank=session.world_rank, world_size=session.world_size,
                               device=session.device, autocast=tr.autocast, samples=gen.samples,
                               date=spec.data.template_date)
        if gen.metric:
            metrics["exact_match"] = out["exact_match"]
        tr.log.samples(tr.state.step, out["samples"])
    return metrics


def _fsdp_kwargs(model) -> dict:
    """One FSDP unit per decoder block; use_orig_params lets frozen base and trainable adapter share a unit."""
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    names = set(getattr(unwrap(model), "_no_split_modules", None) or getattr(getattr(unwrap(model), "base_model", None), "_no_split_modules", None) or [])
    blocks = {type(m) for m in model.modules() if type(m).__name__ in names}
    return {"auto_wrap_policy": functools.partial(transformer_auto_wrap_policy, transformer_layer_cls=blocks),
            "use_orig_params": True}
