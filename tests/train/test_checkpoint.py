"""Checkpoint state round-trips without pickles, and a crafted pickle in a checkpoint never runs."""

import json
import pathlib
import pickle
import random

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, get_scheduler

from raysft.train.checkpoint import CheckpointFormatError, load_state, save_state


def _parts():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=1, num_training_steps=10)
    return model, optimizer, scheduler


def _step(model, optimizer, scheduler):
    model(input_ids=torch.tensor([[1, 2, 3, 4]]), labels=torch.tensor([[1, 2, 3, 4]])).loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


@pytest.fixture
def checkpoint(tmp_path):
    model, optimizer, scheduler = _parts()
    _step(model, optimizer, scheduler)
    random.seed(7)
    torch.manual_seed(7)
    save_state(tmp_path, rank=0, model=model, optimizer=optimizer, scheduler=scheduler,
               trainer_state={"step": 1}, spec_yaml="model: {}\n")
    expected = {"python": random.random(), "torch": torch.rand(3),
                "weights": {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}}
    return tmp_path, expected


class _Payload:
    """Unpickling this touches a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_state_round_trips_as_tensors_and_json(checkpoint):
    directory, expected = checkpoint
    assert not list(directory.glob("rng_rank*.pt"))
    rng = json.loads((directory / "rng_rank0.json").read_text())
    assert rng["python"][0] == 3 and len(rng["python"][1]) == 625
    model, optimizer, scheduler = _parts()  # fresh weights, RNG moved on
    random.seed(1)
    state = load_state(directory, rank=0, model=model, optimizer=optimizer, scheduler=scheduler)
    assert state == {"step": 1}
    assert random.random() == expected["python"] and torch.equal(torch.rand(3), expected["torch"])
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert torch.equal(param, expected["weights"][name])
    assert scheduler.last_epoch == 1 and optimizer.state_dict()["state"][0]["step"] == 1


@pytest.mark.parametrize("name", ["trainable.pt", "optimizer.pt", "scheduler.pt"])
def test_a_crafted_pickle_in_a_checkpoint_does_not_run(checkpoint, tmp_path_factory, name):
    directory, _ = checkpoint
    marker = tmp_path_factory.mktemp("m") / "code-ran"
    torch.save({"state": _Payload(marker)}, directory / name)
    with pytest.raises(CheckpointFormatError, match=f"{name} holds objects other than tensors"):
        load_state(directory, rank=0, **dict(zip(("model", "optimizer", "scheduler"), _parts())))
    assert not marker.exists()


def test_an_old_format_checkpoint_is_refused_with_a_message_and_never_unpickled(checkpoint, tmp_path_factory):
    directory, _ = checkpoint
    marker = tmp_path_factory.mktemp("m") / "code-ran"
    (directory / "rng_rank0.json").unlink()
    (directory / "rng_rank0.pt").write_bytes(pickle.dumps({"python": _Payload(marker)}))  # what older raysft wrote
    with pytest.raises(CheckpointFormatError, match="older raysft"):
        load_state(directory, rank=0, **dict(zip(("model", "optimizer", "scheduler"), _parts())))
    assert not marker.exists()
