"""The loss path: logits only where a token has a target, chunked, give the loss, counts and gradients of the
full-logits cross-entropy (`benchmarks.bench_loss.full_logits_loss`, raysft's loss before), packed and unpacked;
and `model.attn_implementation` picks the kernel the model loads with."""

import sys
import time
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import (AutoModelForCausalLM, Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_loss import full_logits_loss  # noqa: E402
from raysft.config import ModelSpec  # noqa: E402
from raysft.data.packing import collate  # noqa: E402
from raysft.data.template import encode_dataset  # noqa: E402
from raysft.model.attention import packed_sdpa_forward  # noqa: E402
from raysft.model.load import ModelError, load_model, resolve_attn_implementation  # noqa: E402
from raysft.train import loss as loss_module  # noqa: E402
from raysft.train.loss import token_loss  # noqa: E402
from raysft.train.rowplan import collate_rows, make_rows  # noqa: E402

SHAPE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 512}


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Chunks of 5 positions, so every batch here spans many chunks and a ragged last one."""
    monkeypatch.setattr(loss_module, "chunk_rows", lambda vocab, jemalloc=False: 5)


@pytest.fixture(scope="module")
def examples(chat_tokenizer, conversations):
    encoded, _ = encode_dataset(chat_tokenizer, conversations * 3, max_seq_len=128, loss_on="assistant")
    return encoded


def _batch(examples, packed):
    rows = make_rows(examples, 128, packed)
    assert not packed or max(len(r) for r in rows) > 1
    batch = collate_rows(examples, rows, pad_id=0, packed=packed)
    return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}


def _llama(vocab, method):
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, tie_word_embeddings=False, attn_implementation="sdpa", **SHAPE))
    if method == "lora":
        model = get_peft_model(model.requires_grad_(False), LoraConfig(r=4, target_modules="all-linear"))
    return model.train()


def _loss_and_grads(model, batch, fn):
    model.zero_grad(set_to_none=True)
    loss_sum, count, correct = fn(model, batch)
    loss_sum.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss_sum.item(), int(count), int(correct), grads


def _assert_same(model, batch):
    new_loss, new_count, new_correct, new_grads = _loss_and_grads(model, batch, token_loss)
    old_loss, old_count, old_correct, old_grads = _loss_and_grads(model, batch, full_logits_loss)
    assert new_count == old_count == int(batch["num_trained_tokens"]) > 20
    assert new_correct == old_correct
    assert new_loss == pytest.approx(old_loss, rel=1e-5)
    assert new_grads.keys() == old_grads.keys() and new_grads
    for name in old_grads:
        # fp32 summation order differs between the paths: an element near zero may differ by ~1e-6 of nothing, so
        # the absolute slack is relative to the tensor's own scale (it still catches a wrong or missing term).
        atol = 1e-5 * float(old_grads[name].abs().max()) + 1e-9
        torch.testing.assert_close(new_grads[name], old_grads[name], rtol=1e-4, atol=atol, msg=lambda m, n=name: f"{n}: {m}")
    return new_grads


@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("method", ["lora", "full"])
def test_loss_counts_and_gradients_equal_the_full_logits_path(chat_tokenizer, examples, packed, method):
    model = _llama(len(chat_tokenizer), method)
    grads = _assert_same(model, _batch(examples, packed))
    if method == "full":  # the head trains too, and its gradient comes through the chunks
        assert grads["lm_head.weight"].abs().sum() > 0
    else:
        assert any("lora_A" in n for n in grads)


def test_evaluation_without_gradients_gives_the_same_figures(chat_tokenizer, examples):
    model = _llama(len(chat_tokenizer), "lora").eval()
    batch = _batch(examples, True)
    with torch.no_grad():
        new, old = token_loss(model, batch), full_logits_loss(model, batch)
    assert [int(new[1]), int(new[2])] == [int(old[1]), int(old[2])]
    assert new[0].item() == pytest.approx(old[0].item(), rel=1e-5)


def test_a_micro_batch_without_targets_backpropagates_zero(chat_tokenizer, examples):
    model = _llama(len(chat_tokenizer), "lora")
    batch = _batch(examples, False)
    batch["labels"] = torch.full_like(batch["labels"], -100)
    loss_sum, count, correct = token_loss(model, batch)
    loss_sum.backward()
    assert loss_sum.item() == 0 and int(count) == int(correct) == 0
    assert all(p.grad is not None and p.grad.abs().sum() == 0 for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("model_type, extra", [("gemma2", {"final_logit_softcapping": 3.0, "head_dim": 16}),
                                               ("granite", {"logits_scaling": 4.0}),
                                               ("cohere", {"logit_scale": 0.25})])
def test_heads_that_scale_or_cap_their_logits_keep_doing_so(chat_tokenizer, examples, model_type, extra):
    from transformers import AutoConfig

    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, vocab_size=len(chat_tokenizer), attn_implementation="eager",
                                  **{**SHAPE, **extra})
    model = AutoModelForCausalLM.from_config(config).train()
    _assert_same(model, _batch(examples, True))


def test_qlora_on_real_4bit_layers_gives_the_same_loss_and_gradients(chat_tokenizer, examples, tmp_path):
    pytest.importorskip("bitsandbytes")
    _llama(len(chat_tokenizer), "full").save_pretrained(tmp_path / "base")
    model = load_model(ModelSpec(name_or_path=str(tmp_path / "base"), method="qlora", lora={"dropout": 0.0},
                                 quantization={"compute_dtype": "float32"}))
    assert type(model.base_model.model.model.layers[0].self_attn.q_proj.base_layer).__name__ == "Linear4bit"
    _assert_same(model, _batch(examples, True))


def test_attn_implementation_resolves_per_device_and_reaches_the_model(chat_tokenizer, tmp_path):
    cpu = torch.device("cpu")
    assert resolve_attn_implementation("auto", cpu, torch.float32) == "packed_sdpa"  # sdpa's result, faster on the CPU
    assert resolve_attn_implementation("auto", torch.device("cuda"), torch.float32) == "sdpa"
    assert resolve_attn_implementation("packed_sdpa", cpu, torch.float32) == "packed_sdpa"
    assert resolve_attn_implementation("eager", cpu, torch.float32) == "eager"
    assert resolve_attn_implementation("flex_attention", cpu, torch.float32, trainable=False) == "flex_attention"
    with pytest.raises(ModelError, match="flash_attention_2 needs a CUDA device and the flash-attn package"):
        resolve_attn_implementation("flash_attention_2", cpu, torch.bfloat16)
    with pytest.raises(ModelError, match="flex_attention has no backward on the CPU"):
        resolve_attn_implementation("flex_attention", cpu, torch.float32)
    _llama(len(chat_tokenizer), "full").save_pretrained(tmp_path / "base")
    model = load_model(ModelSpec(name_or_path=str(tmp_path / "base"), attn_implementation="eager"))
    assert model.config._attn_implementation == "eager"


@pytest.mark.parametrize("arch", ["llama", "mistral-window-16"])
def test_packed_sdpa_gives_the_loss_and_gradients_of_sdpa_on_packed_and_padded_batches(chat_tokenizer, arch):
    """Per-segment SDPA skips the masked blocks of a packed row; every query must still see exactly the same keys,
    also in a sliding-window layer whose window (16) is shorter than the examples (its mask is sdpa's)."""
    resolve_attn_implementation("packed_sdpa", torch.device("cpu"), torch.float32)
    torch.manual_seed(0)
    model = _llama(len(chat_tokenizer), "full") if arch == "llama" else MistralForCausalLM(MistralConfig(
        vocab_size=len(chat_tokenizer), sliding_window=16, attn_implementation="sdpa", **SHAPE)).train()
    gen = torch.Generator().manual_seed(1)
    examples = [{"input_ids": ids, "labels": ids} for ids in
                (torch.randint(0, len(chat_tokenizer), (n,), generator=gen).tolist() for n in (40, 7, 90, 33, 61, 1, 25))]
    same_length = torch.randint(0, len(chat_tokenizer), (2, 30), generator=gen)  # no position ids: (1, T) inside
    for batch in (collate([examples[:3], examples[3:]], pad_id=0, packed=True), collate(examples, pad_id=0, packed=False),
                  {"input_ids": same_length, "labels": same_length, "num_trained_tokens": None}):
        batch.pop("num_trained_tokens")
        results = []
        for impl in ("sdpa", "packed_sdpa"):
            model.set_attn_implementation(impl)
            model.zero_grad()
            loss = model(**batch, use_cache=False).loss
            loss.backward()
            results.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
        (loss_sdpa, grads_sdpa), (loss_packed, grads_packed) = results
        assert loss_packed == pytest.approx(loss_sdpa, rel=1e-6)
        for a, b in zip(grads_sdpa, grads_packed):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_a_model_sdpa_cannot_run_refuses_packed_sdpa_too():
    """Gemma 2 caps its attention logits, which SDPA cannot: transformers refuses packed_sdpa for it as it refuses
    sdpa, naming eager, so the cap is never silently dropped (packed_sdpa also hands any `softcap` to sdpa, which
    raises, for remote-code models that do not declare it)."""
    config = Gemma2Config(vocab_size=100, head_dim=16, attn_implementation="eager", **SHAPE)
    assert config.attn_logit_softcapping
    model = Gemma2ForCausalLM(config)
    for impl in ("sdpa", resolve_attn_implementation("packed_sdpa", torch.device("cpu"), torch.float32)):
        with pytest.raises(ValueError, match='does not support an attention implementation through .*"eager"'):
            model.set_attn_implementation(impl)
    q = torch.zeros(1, 4, 9, 16)
    with pytest.raises(ValueError, match="does not support `softcap`"):
        packed_sdpa_forward(model.model.layers[0].self_attn, q, q, q, None, position_ids=torch.arange(9)[None],
                            softcap=50.0)


def _ddp_worker(rank, world, out_dir):
    import datetime
    import os
    import socket

    import torch.distributed as dist

    if "lo" in {name for _, name in socket.if_nameindex()}:
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # not whatever the hostname resolves to (a CI box's may be unreachable)
    # A file rendezvous: no port to pick and hand over (a free port found, closed, then taken by another test).
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    torch.set_num_threads(1)
    from benchmarks.bench_loss import packed_batch

    loss_module.chunk_rows = lambda vocab, jemalloc=False: 7
    batch = packed_batch([[(60, 20), (40, 5)], [(90, 30)]], 500, seed=rank)  # each rank its own rows
    grads = {}
    for name, fn in (("new", token_loss), ("old", full_logits_loss)):
        model = torch.nn.parallel.DistributedDataParallel(_llama(500, "full"))  # the head trains too
        fn(model, batch)[0].backward()
        grads[name] = {k: p.grad for k, p in model.named_parameters()}
    torch.save(grads, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.integration
def test_ddp_syncs_the_same_gradients_as_the_full_logits_path(tmp_path):
    """2 gloo workers, a full fine-tune: the forward goes through DDP's wrapper, so each rank ends with the
    all-reduced gradient, and it is the full-logits path's (lm_head included)."""
    import torch.multiprocessing as mp

    # Daemon workers, stopped here whatever happens: a worker left hanging would keep pytest from exiting.
    workers = mp.spawn(_ddp_worker, args=(2, str(tmp_path)), nprocs=2, join=False, daemon=True)
    try:
        deadline = time.monotonic() + 180  # about 8 s alone
        while not workers.join(timeout=1):
            assert time.monotonic() < deadline, "the 2 gloo workers did not finish in 180 s"
    finally:
        for process in workers.processes:
            process.kill()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for name, old in ranks[0]["old"].items():
        torch.testing.assert_close(ranks[0]["new"][name], old, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(ranks[1]["new"][name], ranks[0]["new"][name], rtol=0, atol=0)  # synced
    assert ranks[0]["new"]["module.lm_head.weight"].abs().sum() > 0
