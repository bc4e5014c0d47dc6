"""Worker training state in a checkpoint directory, and back.

Layout of one checkpoint (Ray merges the directories every worker reports into one):
    adapter/            PEFT adapter (lora, qlora) — what a user loads; the frozen base is never saved
    model/              the whole model (method full) in Hugging Face layout
    trainable.pt        trainable parameters by name, to resume exactly (adapter or full weights)
    optimizer.pt        AdamW state of rank 0 (identical on every rank under DDP)
    scheduler.pt        learning-rate scheduler state
    rng_rank{R}.json    Python / torch RNG of rank R (dropout differs per rank), as JSON numbers
    trainer_state.json  `TrainerState` as JSON: version, step, epoch, rows consumed, trained tokens, best so far,
                        early-stopping counter
    spec.yaml           the spec that produced it (a resume names the fields in which the run's spec differs)

Nothing is unpickled on the way back: the .pt files hold tensors and plain containers only and are read with
`torch.load(..., weights_only=True)`, which refuses any other object (a crafted file cannot run code); the rest is
JSON. A checkpoint of an older raysft (pickled RNG state in rng_rank{R}.pt) is refused with a message, not read.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import random
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from raysft.rundir import ADAPTER_DIR, MODEL_DIR, SPEC_FILE
from raysft.train.tracking import flatten

__all__ = ["unwrap", "save_state", "load_state", "CheckpointFormatError", "TrainerState", "TRAINER_STATE_VERSION",
           "spec_differences"]

TRAINER_STATE_VERSION = 1
"""The layout of trainer_state.json this raysft writes. Version 0 (raysft before the typed state: no `version`
key, no epoch or rows consumed) is migrated on load; any other version is refused."""


class CheckpointFormatError(RuntimeError):
    """A checkpoint holds something raysft will not load (an older pickled format, or objects that are not tensors)."""


@dataclass
class TrainerState:
    """Where a run stands, saved in every checkpoint and restored on resume. Equal on every rank (each knows the
    whole plan, and the scores it compares are all-reduced)."""

    step: int = 0
    """Optimizer steps done; the next step to run (0-based) is this one."""
    epoch: float = 0.0
    """step / steps per epoch."""
    rows_consumed: int = 0
    """Training rows all ranks have trained on so far (global_batch_size per step)."""
    trained_tokens: int = 0
    """Tokens with a loss target so far, all ranks."""
    best: float | None = None
    """The best `checkpoint.keep_best_by` score so far."""
    best_step: int | None = None
    """The step that scored `best`."""
    bad_evals: int = 0
    """Evaluations in a row that did not beat `best` (early stopping's patience counter)."""

    def to_json(self) -> dict:
        return {"version": TRAINER_STATE_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: dict, *, source: str, steps_per_epoch: int, rows_per_step: int) -> "TrainerState":
        """The state saved at `source`, migrated from version 0 when older (its epoch and rows consumed are
        derived from its step with this run's `steps_per_epoch` and `rows_per_step`, as the plan of that
        raysft took them).

        Raises:
            CheckpointFormatError: a version other than 0 and `TRAINER_STATE_VERSION`, or fields it does not have.
        """
        fields = dict(data)
        version = fields.pop("version", 0)
        if version == 0:
            fields.setdefault("epoch", fields.get("step", 0) / steps_per_epoch)
            fields.setdefault("rows_consumed", fields.get("step", 0) * rows_per_step)
        elif version != TRAINER_STATE_VERSION:
            raise CheckpointFormatError(
                f"{source}: trainer_state.json has version {version!r}; this raysft reads versions 0 to "
                f"{TRAINER_STATE_VERSION}. Resume it with the raysft that wrote it, or start a new run (a new output_dir)")
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise CheckpointFormatError(f"{source}: trainer_state.json (version {version}) has fields this raysft does "
                                        f"not know: {', '.join(unknown)}; use a checkpoint this raysft wrote")
        return cls(**fields)


def spec_differences(directory: Path, spec_yaml: str) -> list[tuple[str, str, str]]:
    """(dotted field, value in the checkpoint, value in `spec_yaml`) for every field in which the spec saved in
    checkpoint `directory` differs from the run's; [] when it saved none."""
    saved_file = directory / SPEC_FILE
    if not saved_file.is_file():
        return []
    saved, current = (flatten(yaml.safe_load(text) or {}) for text in (saved_file.read_text(encoding="utf-8"), spec_yaml))
    return [(k, saved.get(k, "(unset)"), current.get(k, "(unset)")) for k in sorted(saved.keys() | current.keys())
            if saved.get(k) != current.get(k)]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP/FSDP wrapper (the PEFT model for lora / qlora)."""
    return getattr(model, "module", model)


def save_state(directory: Path, *, rank: int, model, optimizer, scheduler, trainer_state: dict, spec_yaml: str) -> None:
    """Write this worker's part of a checkpoint into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    version, words, gauss = random.getstate()  # (3, 625 ints, float or None)
    rng = {"python": [version, list(words), gauss], "torch": torch.get_rng_state().tolist()}  # torch: 5,056 bytes
    (directory / f"rng_rank{rank}.json").write_text(json.dumps(rng))
    if rank != 0:
        return
    inner = unwrap(model)
    if hasattr(inner, "peft_config"):
        inner.save_pretrained(directory / ADAPTER_DIR)
    else:
        inner.save_pretrained(directory / MODEL_DIR, safe_serialization=True)
    trainable = {n: p.detach().cpu() for n, p in inner.named_parameters() if p.requires_grad}
    torch.save(trainable, directory / "trainable.pt")
    torch.save(optimizer.state_dict(), directory / "optimizer.pt")
    torch.save(scheduler.state_dict(), directory / "scheduler.pt")
    (directory / "trainer_state.json").write_text(json.dumps(trainer_state))
    (directory / SPEC_FILE).write_text(spec_yaml, encoding="utf-8")


def load_state(directory: Path, *, rank: int, model, optimizer, scheduler) -> dict:
    """Restore weights, optimizer, scheduler and RNG from a checkpoint; returns its trainer_state."""
    if not (directory / f"rng_rank{rank}.json").exists() and list(directory.glob("rng_rank*.pt")):
        raise CheckpointFormatError(f"checkpoint {directory} was written by an older raysft (pickled RNG state in "
                                    "rng_rank*.pt), which this version does not unpickle; start a new run (a new "
                                    "output_dir), or finish this one with the raysft version that wrote it")
    inner = unwrap(model)
    trainable = _tensors(directory / "trainable.pt")
    missing = [n for n, p in inner.named_parameters() if p.requires_grad and n not in trainable]
    if missing:
        raise RuntimeError(f"checkpoint {directory} does not match the model: {len(missing)} trainable tensors missing, e.g. {missing[0]}")
    with torch.no_grad():
        for name, param in inner.named_parameters():
            if name in trainable:
                param.copy_(trainable[name].to(param.device, param.dtype))
    optimizer.load_state_dict(_tensors(directory / "optimizer.pt"))
    scheduler.load_state_dict(_tensors(directory / "scheduler.pt"))
    rng_file = directory / f"rng_rank{rank}.json"
    if rng_file.exists():  # absent when the run resumes on more workers than it saved
        rng = json.loads(rng_file.read_text())
        version, words, gauss = rng["python"]
        random.setstate((version, tuple(words), gauss))
        torch.set_rng_state(torch.tensor(rng["torch"], dtype=torch.uint8))
    return json.loads((directory / "trainer_state.json").read_text())


def _tensors(path: Path):
    """A .pt file of tensors and plain containers; anything else is refused before it is built."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointFormatError(f"{path} holds objects other than tensors and plain containers, which raysft does "
                                    f"not load (it could run code): {str(exc).splitlines()[0]}; use a checkpoint "
                                    "this raysft wrote") from None
