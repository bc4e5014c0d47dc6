"""Worker training state in a checkpoint directory, and back.

Layout of one checkpoint (Ray merges the directories every worker reports into one):
    adapter/            PEFT adapter (lora, qlora) — what a user loads; the frozen base is never saved
    model/              the whole model (method full) in Hugging Face layout
    trainable.pt        trainable parameters by name, to resume exactly (adapter or full weights)
    optimizer.pt        AdamW state of rank 0 (identical on every rank under DDP)
    scheduler.pt        learning-rate scheduler state
    rng_rank{R}.json    Python / torch RNG of rank R (dropout differs per rank), as JSON numbers
    trainer_state.json  step, epoch, best metric so far, early-stopping counter, metrics history
    spec.yaml           the spec that produced it

Nothing is unpickled on the way back: the .pt files hold tensors and plain containers only and are read with
`torch.load(..., weights_only=True)`, which refuses any other object (a crafted file cannot run code); the rest is
JSON. A checkpoint of an older raysft (pickled RNG state in rng_rank{R}.pt) is refused with a message, not read.
"""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import torch

__all__ = ["unwrap", "save_state", "load_state", "CheckpointFormatError"]


class CheckpointFormatError(RuntimeError):
    """A checkpoint holds something raysft will not load (an older pickled format, or objects that are not tensors)."""


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
