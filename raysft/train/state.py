"""Worker training state in a checkpoint directory, and back.

Layout of one checkpoint (Ray merges the directories every worker reports into one):
    adapter/            PEFT adapter (lora, qlora) — what a user loads; the frozen base is never saved
    model/              the whole model (method full) in Hugging Face layout
    trainable.pt        trainable parameters by name, to resume exactly (adapter or full weights)
    optimizer.pt        AdamW state of rank 0 (identical on every rank under DDP)
    scheduler.pt        learning-rate scheduler state
    rng_rank{R}.pt      Python / torch RNG of rank R (dropout differs per rank)
    trainer_state.json  step, epoch, best metric so far, early-stopping counter, metrics history
    spec.yaml           the spec that produced it
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

__all__ = ["unwrap", "save_state", "load_state"]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP/FSDP wrapper (the PEFT model for lora / qlora)."""
    return getattr(model, "module", model)


def save_state(directory: Path, *, rank: int, model, optimizer, scheduler, trainer_state: dict, spec_yaml: str) -> None:
    """Write this worker's part of a checkpoint into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({"python": random.getstate(), "torch": torch.get_rng_state()}, directory / f"rng_rank{rank}.pt")
    if rank != 0:
        return
    inner = unwrap(model)
    if hasattr(inner, "peft_config"):
        inner.save_pretrained(directory / "adapter")
    else:
        inner.save_pretrained(directory / "model", safe_serialization=True)
    trainable = {n: p.detach().cpu() for n, p in inner.named_parameters() if p.requires_grad}
    torch.save(trainable, directory / "trainable.pt")
    torch.save(optimizer.state_dict(), directory / "optimizer.pt")
    torch.save(scheduler.state_dict(), directory / "scheduler.pt")
    (directory / "trainer_state.json").write_text(json.dumps(trainer_state))
    (directory / "spec.yaml").write_text(spec_yaml, encoding="utf-8")


def load_state(directory: Path, *, rank: int, model, optimizer, scheduler) -> dict:
    """Restore weights, optimizer, scheduler and RNG from a checkpoint; returns its trainer_state."""
    inner = unwrap(model)
    trainable = torch.load(directory / "trainable.pt", map_location="cpu")
    missing = [n for n, p in inner.named_parameters() if p.requires_grad and n not in trainable]
    if missing:
        raise RuntimeError(f"checkpoint {directory} does not match the model: {len(missing)} trainable tensors missing, e.g. {missing[0]}")
    with torch.no_grad():
        for name, param in inner.named_parameters():
            if name in trainable:
                param.copy_(trainable[name].to(param.device, param.dtype))
    optimizer.load_state_dict(torch.load(directory / "optimizer.pt", map_location="cpu"))
    scheduler.load_state_dict(torch.load(directory / "scheduler.pt", map_location="cpu"))
    rng_file = directory / f"rng_rank{rank}.pt"
    if rng_file.exists():  # absent when the run resumes on more workers than it saved
        rng = torch.load(rng_file, weights_only=False)
        random.setstate(rng["python"])
        torch.set_rng_state(rng["torch"])
    return json.loads((directory / "trainer_state.json").read_text())
