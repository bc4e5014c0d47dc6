"""`raysft estimate`: parameter counts against real models, the published 7B figures, FSDP sharding,
suggestions that fit when applied, activation bytes against what autograd actually saves, the CLI."""

import contextlib
import json
import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from raysft.cli import main
from raysft.config import load_spec
from raysft.estimate import EstimateError, estimate_for_spec, format_estimate, memory_breakdown, read_model_shape

LLAMA_7B = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 32, "intermediate_size": 11008, "vocab_size": 32000, "tie_word_embeddings": False}
QWEN_7B = {"model_type": "qwen2", "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
           "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064, "tie_word_embeddings": False}
QWEN_72B = {**QWEN_7B, "hidden_size": 8192, "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
            "intermediate_size": 29568}


def model_dir(tmp_path, config: dict, name: str = "model"):
    path = tmp_path / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    return path


def spec_for(path, method="lora", micro_batch=1, seq=2048, checkpointing=True, **sections):
    """A spec for the published-figure setup: micro batch 1 × 2048 tokens, bf16, one GPU."""
    raw = {"model": {"name_or_path": str(path), "method": method, **sections.pop("model", {})},
           "data": {"train": ["train.jsonl"], "max_seq_len": seq},
           "train": {"micro_batch_size": micro_batch, "global_batch_size": 16, "gradient_checkpointing": checkpointing,
                     "learning_rate": 1e-5 if method == "full" else 2e-4, **sections.pop("train", {})},
           "scaling": sections.pop("scaling", {})}
    return load_spec(raw)


# ------------------------------------------------------------------------------ parameter counts


@pytest.mark.parametrize("config, cls", [
    (LLAMA_7B, LlamaForCausalLM),
    ({**LLAMA_7B, "num_key_value_heads": 8, "tie_word_embeddings": True, "attention_bias": True, "mlp_bias": True}, LlamaForCausalLM),
    (QWEN_7B, Qwen2ForCausalLM),
])
def test_parameter_count_equals_the_transformers_model(tmp_path, config, cls):
    shape = read_model_shape(str(model_dir(tmp_path, config)))
    hf_config = (LlamaConfig if cls is LlamaForCausalLM else Qwen2Config)(**config)
    with torch.device("meta"):  # the real module tree, no memory
        model = cls(hf_config)
    assert shape.total_params() == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("lora", [
    {"target_modules": "all-linear"},
    {"target_modules": ["q_proj", "v_proj"], "rank": 8},
    {"target_modules": "all-linear", "use_dora": True},
])
def test_lora_trainable_parameters_equal_peft(tmp_path, lora):
    config = {**LLAMA_7B, "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "intermediate_size": 344, "vocab_size": 500}
    spec = spec_for(model_dir(tmp_path, config), model={"lora": lora})
    model = LlamaForCausalLM(LlamaConfig(**config)).requires_grad_(False)
    peft = get_peft_model(model, LoraConfig(r=spec.model.lora.rank, target_modules=spec.model.lora.target_modules,
                                            use_dora=spec.model.lora.use_dora))
    expected = sum(p.numel() for p in peft.parameters() if p.requires_grad)
    assert estimate_for_spec(spec)["trainable_params"] == expected


# ----------------------------------------------------------------------- published 7B figures


def test_7b_llama_lands_in_the_published_ranges(tmp_path):
    """Published (LLaMA-Factory's hardware table, Llama-2-7B): QLoRA ≈ 6 GB, 16-bit LoRA ≈ 16 GB, full ≈ 60
    (pure bf16) – 120 GB (AMP). Setup: micro batch 1 × 2048 tokens, bf16, LoRA r=16 on all linear layers,
    gradient checkpointing on except where noted."""
    path = model_dir(tmp_path, LLAMA_7B)
    qlora = estimate_for_spec(spec_for(path, "qlora"))
    lora = estimate_for_spec(spec_for(path, "lora"))
    full_bf16 = estimate_for_spec(spec_for(path, "full", checkpointing=False))
    full_amp = estimate_for_spec(spec_for(path, "full", train={"precision": "fp16"}))
    assert qlora["total_params"] == 6_738_415_616 and lora["trainable_params"] == 39_976_960
    assert 5 <= qlora["total_gb"] <= 8
    assert 14 <= lora["total_gb"] <= 20
    assert 60 <= full_bf16["total_gb"] <= 120
    # fp16 GPUs (V100, T4) train fp32 weights under fp16 autocast: the classic 18 bytes per parameter
    # (fp32 weights + fp16 copies, fp32 gradients, 2 fp32 AdamW states), ~120 GB before activations.
    states = sum(full_amp["breakdown_gb"][k] for k in ("base_weights", "gradients", "optimizer_states"))
    assert states * 2**30 == pytest.approx(18 * 6_738_415_616, rel=0.03)
    # Where the memory goes: 2 bytes per weight in bf16, ~0.52 in NF4 with double quant; AdamW 2 states.
    assert lora["breakdown_gb"]["base_weights"] == pytest.approx(6_738_415_616 * 2 / 2**30, rel=0.01)
    assert qlora["breakdown_gb"]["base_weights"] < 0.3 * lora["breakdown_gb"]["base_weights"]
    assert full_bf16["breakdown_gb"]["optimizer_states"] == pytest.approx(2 * full_bf16["breakdown_gb"]["gradients"], abs=0.02)
    assert full_amp["breakdown_gb"]["optimizer_states"] == pytest.approx(4 * full_bf16["breakdown_gb"]["gradients"], abs=0.05)


def test_gradient_checkpointing_and_micro_batch_scale_activations(tmp_path):
    path = model_dir(tmp_path, LLAMA_7B)
    plain = estimate_for_spec(spec_for(path, checkpointing=False))["breakdown_gb"]
    ckpt = estimate_for_spec(spec_for(path))["breakdown_gb"]
    quad = estimate_for_spec(spec_for(path, micro_batch=4, checkpointing=False))["breakdown_gb"]
    assert ckpt["activations"] < plain["activations"] / 10
    assert quad["activations"] == pytest.approx(4 * plain["activations"], rel=0.01)
    # Logits: one cross-entropy chunk whatever the batch, plus the gathered hidden states (per token).
    shape = read_model_shape(str(path))
    one, four = (memory_breakdown(spec_for(path, micro_batch=m, checkpointing=False), shape)["bytes"]["logits"] for m in (1, 4))
    assert four - one == 3 * 2048 * 4096 * 3 * 2  # 3 more rows of 2048 tokens × hidden × 3 bf16 copies
    assert one < 0.15 * 2**30  # the full-logits loss held 2048 × 32000 × 12 bytes = 0.73 GB here


def test_a_cpu_workers_loss_chunk_follows_its_allocator(tmp_path, monkeypatch):
    """On jemalloc a CPU worker's chunks hold 16 MiB of float32 logits, on glibc and on a GPU 32 MiB."""
    shape = read_model_shape(str(model_dir(tmp_path, QWEN_7B)))
    cpu = spec_for("m", seq=4096, scaling={"use_gpu": False})
    hidden = 4096 * 3584 * 3 * 4  # the gathered hidden states, their gradient and its scatter, fp32

    def chunk(spec, allocator):
        monkeypatch.setenv("RAYSFT_CPU_ALLOCATOR", allocator)
        return memory_breakdown(spec, shape)["bytes"]["logits"] - hidden

    assert chunk(cpu, "jemalloc") == math.ceil(2**24 / (4 * 152064)) * 152064 * 8  # fp32 logits + log-sum-exp temp
    assert chunk(cpu, "system") == math.ceil(2**25 / (4 * 152064)) * 152064 * 8
    gpu = memory_breakdown(spec_for("m", seq=4096), shape)["bytes"]["logits"] - 4096 * 3584 * 3 * 2
    assert gpu == math.ceil(2**25 / (4 * 152064)) * 152064 * 10  # plus the bf16 head output


def test_double_quant_saves_about_0_37_bits_per_weight(tmp_path):
    shape = read_model_shape(str(model_dir(tmp_path, LLAMA_7B)))
    dq = memory_breakdown(spec_for("m", "qlora"), shape)["bytes"]["base_weights"]
    no_dq = memory_breakdown(spec_for("m", "qlora", model={"quantization": {"double_quant": False}}), shape)["bytes"]["base_weights"]
    linear = 32 * (4 * 4096 * 4096 + 3 * 4096 * 11008)
    assert no_dq - dq == pytest.approx(linear * (0.5 - 0.127) / 8, rel=1e-6)


@pytest.mark.parametrize("double_quant", [True, False])
def test_qlora_base_weights_equal_what_bitsandbytes_stores(tmp_path, double_quant):
    """A real NF4 load (bitsandbytes runs on the CPU): packed 4-bit data, absmax constants (8-bit plus
    their own fp32 constants with double quant) and the 16-bit embeddings, head and norms."""
    from raysft.config import QuantizationSpec
    from raysft.model.load import load_base

    config = {**LLAMA_7B, "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 4,
              "intermediate_size": 768, "vocab_size": 1000}
    LlamaForCausalLM(LlamaConfig(**config)).save_pretrained(tmp_path / "m")
    model = load_base(str(tmp_path / "m"), dtype=torch.bfloat16, quantization=QuantizationSpec(double_quant=double_quant))
    stored = 0
    for p in model.parameters():
        stored += p.numel() * p.element_size()
        state = getattr(p, "quant_state", None)
        if state is not None:
            stored += state.absmax.numel() * state.absmax.element_size()
            if state.nested:
                stored += sum(t.numel() * t.element_size() for t in (state.state2.absmax, state.state2.code)) + 4
    spec = spec_for(tmp_path / "m", "qlora", model={"quantization": {"double_quant": double_quant}})
    predicted = memory_breakdown(spec, read_model_shape(str(tmp_path / "m")))["bytes"]["base_weights"]
    predicted -= 768 * 256 * 2  # the dequantised-weight workspace of backward, not storage
    assert predicted == pytest.approx(stored, rel=0.02)


def test_fsdp_shards_weights_gradients_and_optimizer_but_not_activations(tmp_path):
    path = model_dir(tmp_path, LLAMA_7B)
    one = estimate_for_spec(spec_for(path, "full"))["breakdown_gb"]
    eight = estimate_for_spec(spec_for(path, "full", scaling={"strategy": "fsdp", "num_workers": 8}))["breakdown_gb"]
    assert eight["optimizer_states"] == pytest.approx(one["optimizer_states"] / 8, abs=0.01)
    assert one["base_weights"] / 8 < eight["base_weights"] < one["base_weights"] / 4  # + gathered units
    assert eight["gradients"] < one["gradients"] / 6
    assert eight["activations"] == one["activations"] and eight["logits"] == one["logits"]
    ddp = estimate_for_spec(spec_for(path, "full", scaling={"num_workers": 2}))["breakdown_gb"]
    assert ddp["gradients"] == pytest.approx(2 * one["gradients"], abs=0.01)  # DDP's bucket copy


# ---------------------------------------------------------------------------------- fit and suggestions


@pytest.mark.parametrize("config, method, micro_batch, checkpointing, gpu", [
    (LLAMA_7B, "lora", 4, False, 24),   # single changes suffice
    (LLAMA_7B, "full", 1, False, 24),
    (QWEN_72B, "qlora", 1, True, 48),  # only sharding helps
    (QWEN_72B, "full", 2, False, 80),  # needs a combination
])
def test_suggestions_fit_when_applied(tmp_path, config, method, micro_batch, checkpointing, gpu):
    spec = spec_for(model_dir(tmp_path, config), method, micro_batch=micro_batch, checkpointing=checkpointing)
    est = estimate_for_spec(spec, gpu)
    assert est["fits"] is False and est["total_gb"] > gpu
    assert est["suggestions"]
    for suggestion in est["suggestions"]:
        applied = load_spec(spec.model_dump(mode="json"), suggestion["overrides"])
        again = estimate_for_spec(applied, gpu)
        assert again["fits"] is True and again["total_gb"] == suggestion["total_gb"] <= gpu, suggestion


def test_suggestion_kinds(tmp_path):
    spec = spec_for(model_dir(tmp_path, LLAMA_7B), "lora", micro_batch=4, checkpointing=False)
    overrides = [s["overrides"] for s in estimate_for_spec(spec, 24)["suggestions"]]
    assert ["train.gradient_checkpointing=true"] in overrides
    full = spec_for(model_dir(tmp_path, LLAMA_7B, "full"), "full", checkpointing=False)
    overrides = [s["overrides"] for s in estimate_for_spec(full, 24)["suggestions"]]
    assert ["model.method=qlora"] in overrides
    assert ["scaling.strategy=fsdp", "scaling.num_workers=8"] in overrides
    roomy = estimate_for_spec(full, 200)
    assert roomy["fits"] is True and roomy["suggestions"] == []


# ------------------------------------------------------------------------ activations vs autograd


@pytest.mark.parametrize("method, bf16, dropout", [("lora", True, 0.0), ("lora", False, 0.05), ("full", True, 0.0),
                                                   ("full", False, 0.0)])
def test_activations_match_what_autograd_saves(tmp_path, method, bf16, dropout):
    """The tensors autograd keeps for backward, measured on a small Llama under the loop's precision
    (bf16 weights + bf16 autocast, or fp32 as on CPU workers), against the activation estimate."""
    config = {**LLAMA_7B, "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 8,
              "intermediate_size": 688, "vocab_size": 1000}
    spec = spec_for(model_dir(tmp_path, config), method, micro_batch=1, seq=256, checkpointing=False,
                    model={"lora": {"dropout": dropout}},
                    train={"precision": "bf16" if bf16 else "fp32"}, scaling={"use_gpu": "auto" if bf16 else False})
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**config, attn_implementation="sdpa")).to(torch.bfloat16 if bf16 else torch.float32)
    if method == "lora":
        model = get_peft_model(model.requires_grad_(False), LoraConfig(r=16, lora_dropout=dropout, target_modules="all-linear"))
    params = {p.data_ptr() for p in model.train().parameters()}
    saved = {}

    def pack(t):
        if t.data_ptr() not in params:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with autocast, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=torch.randint(0, 1000, (1, 256)), use_cache=False)
    mem = memory_breakdown(spec, read_model_shape(spec.model.name_or_path))
    predicted = mem["bytes"]["activations"]
    if method == "lora" and bf16:
        predicted += mem["trainable_params"] * 2  # autocast's bf16 copies of the adapters (in adapter_weights)
    assert predicted == pytest.approx(sum(saved.values()), rel=0.08)


# ------------------------------------------------------------------------------------- errors, CLI


def test_model_config_errors_name_the_fix(tmp_path):
    with pytest.raises(EstimateError, match="hf download raysft-test/not-cached-7b config.json"):
        read_model_shape("raysft-test/not-cached-7b")
    with pytest.raises(EstimateError, match="has no config.json"):
        read_model_shape(str(tmp_path))
    with pytest.raises(EstimateError, match="lacks intermediate_size"):
        read_model_shape(str(model_dir(tmp_path, {"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1,
                                                  "vocab_size": 10}, "gpt")))
    with pytest.raises(EstimateError, match="mixture-of-experts"):
        read_model_shape(str(model_dir(tmp_path, {**LLAMA_7B, "num_local_experts": 8}, "moe")))
    spec = spec_for(model_dir(tmp_path, LLAMA_7B, "llama"), model={"lora": {"target_modules": ["c_attn"]}})
    with pytest.raises(EstimateError, match="c_attn not among the decoder's linear layers"):
        estimate_for_spec(spec)


def test_estimate_command_prints_json_text_and_exit_codes(tmp_path, capsys):
    path = model_dir(tmp_path, LLAMA_7B)
    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"model": {"name_or_path": str(path), "method": "qlora"},
                                "data": {"train": ["t.jsonl"], "max_seq_len": 2048},
                                "train": {"micro_batch_size": 1, "global_batch_size": 8, "gradient_checkpointing": True}}))
    assert main(["estimate", str(spec), "--gpu-memory-gb", "24", "--json"]) == 0
    est = json.loads(capsys.readouterr().out)
    assert est["fits"] is True and est["trainable_params"] == 39_976_960
    assert est["total_gb"] == pytest.approx(sum(est["breakdown_gb"].values()), abs=0.05)
    assert set(est["breakdown_gb"]) == {"base_weights", "adapter_weights", "gradients", "optimizer_states",
                                        "activations", "logits", "runtime", "fragmentation"}

    assert main(["estimate", str(spec), "model.method=full", "train.learning_rate=1e-5", "--gpu-memory-gb", "24"]) == 1
    text = capsys.readouterr().out
    assert "does NOT fit a 24 GB GPU; what would:" in text and "[model.method=qlora]" in text
    assert text == format_estimate(estimate_for_spec(load_spec(spec, ["model.method=full", "train.learning_rate=1e-5"]), 24)) + "\n"

    assert main(["estimate", str(spec)]) == 0
    assert "GPU size unknown: pass --gpu-memory-gb N" in capsys.readouterr().out
    assert main(["estimate", str(spec), "trian.epochs=1", "--gpu-memory-gb", "24"]) == 2
    assert "trian: unknown key" in capsys.readouterr().err
    assert main(["estimate", str(spec), "model.name_or_path=" + str(tmp_path / "nope"), "--gpu-memory-gb", "24"]) == 2
    assert "pass a local directory containing config.json" in capsys.readouterr().err
    assert main(["estimate", str(spec), "--gpu-memory-gb", "0"]) == 2


@pytest.mark.integration
def test_gpu_size_comes_from_the_connected_ray_cluster(tmp_path):
    import ray

    spec = spec_for(model_dir(tmp_path, LLAMA_7B), "qlora")
    ray.init(address="local", num_cpus=1, resources={"accelerator_type:L4": 1}, include_dashboard=False)
    try:
        est = estimate_for_spec(spec)
    finally:
        ray.shutdown()
    assert est["gpu_memory_gb"] == 24 and est["fits"] is True
    assert "GPU size from the Ray cluster: L4, 24 GB" in " ".join(est["notes"])
