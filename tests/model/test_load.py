"""Loading base models for lora / qlora / full, continuing adapters, and the errors users see."""

import json
import math
import shutil

import bitsandbytes as bnb
import huggingface_hub.constants
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from raysft.config import JobSpec, ModelSpec, spec_to_yaml
from raysft.model.load import (
    ModelError,
    find_adapter,
    load_for_inference,
    load_model,
    load_tokenizer,
    resolve_model_path,
    trainable_parameters,
)
from raysft.model.tokenizer import train_tokenizer


def _spec(tiny_model, **kw) -> ModelSpec:
    return ModelSpec(name_or_path=str(tiny_model), **kw)


def _batch(vocab: int = 200):
    ids = torch.randint(4, vocab, (2, 12), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "labels": ids}


def _perturb_lora_b(model, seed: int = 0) -> None:
    # LoRA B starts at zero (the adapter is the identity); random B makes it change the outputs.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


def _bytes(t: torch.Tensor) -> torch.Tensor:
    # 4-bit weights are packed nibbles in a float tensor: some bit patterns are NaN, so compare bytes
    return t.detach().clone().view(torch.uint8)


def _lora_weights(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


# ------------------------------------------------------------------------------------------ paths


def test_resolve_model_path(tiny_model, tmp_path, monkeypatch):
    assert resolve_model_path(str(tiny_model)) == str(tiny_model)
    assert resolve_model_path("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"  # hub id, untouched

    with pytest.raises(ModelError, match=r"model.name_or_path: \./nowhere/model not found"):
        resolve_model_path("./nowhere/model")
    with pytest.raises(ModelError, match="has no config.json"):
        resolve_model_path(str(tmp_path))
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelError, match="is a PEFT adapter, not a base model; .* model.init_adapter"):
        resolve_model_path(str(tmp_path))
    # "runs/tiny" with runs/ present locally is a path the user mistyped, not a hub id
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(ModelError, match="runs/tiny not found"):
        resolve_model_path("runs/tiny")


def test_uncached_hub_id_names_the_fix(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never touch the network in tests
    with pytest.raises(ModelError, match=r"cannot load no-such-org/no-such-model; .*`hf download no-such-org/no-such-model`"):
        load_model(ModelSpec(name_or_path="no-such-org/no-such-model"))
    with pytest.raises(ModelError, match="cannot load a tokenizer from no-such-org/no-such-model"):
        load_tokenizer("no-such-org/no-such-model")


def test_load_tokenizer_fills_pad_and_chat_template(tiny_model, tmp_path):
    tokenizer = load_tokenizer(str(tiny_model))
    assert tokenizer.pad_token == "<|pad|>"
    bare_dir = tmp_path / "bare"
    shutil.copytree(tiny_model, bare_dir)
    (bare_dir / "chat_template.jinja").unlink()
    bare = train_tokenizer(["hello world"] * 5, vocab_size=300)
    bare.pad_token, bare.chat_template = None, None
    bare.save_pretrained(bare_dir)

    tokenizer = load_tokenizer(str(bare_dir))
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert text == "<|im_start|>user\nhi<|im_end|>\n"


# ------------------------------------------------------------------------------------------- lora


def test_lora_trains_only_adapters_with_expected_count(tiny_model):
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    linears = [m for name, m in base.named_modules() if isinstance(m, torch.nn.Linear) and name != "lm_head"]
    assert len(linears) == 7 * 2  # q k v o gate up down, 2 layers
    expected = sum(8 * (m.in_features + m.out_features) for m in linears)

    model = load_model(_spec(tiny_model, lora={"rank": 8}))
    trainable, total = trainable_parameters(model)
    assert trainable == expected
    assert total == sum(p.numel() for p in base.parameters()) + expected
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    assert model.training


def test_lora_target_module_list(tiny_model):
    model = load_model(_spec(tiny_model, lora={"rank": 4, "target_modules": ["q_proj", "v_proj"]}))
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.requires_grad}
    assert adapted == {"q_proj", "v_proj"}
    assert trainable_parameters(model)[0] == 2 * (4 * (64 + 64) + 4 * (64 + 64))


def test_rslora_and_dora_reach_peft(tiny_model):
    model = load_model(_spec(tiny_model, lora={"rank": 16, "alpha": 32, "use_rslora": True, "use_dora": True}))
    config = model.peft_config["default"]
    assert config.use_rslora and config.use_dora
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    assert q_proj.scaling["default"] == pytest.approx(32 / math.sqrt(16))  # rsLoRA: alpha / sqrt(r)
    assert any("lora_magnitude_vector" in n for n, p in model.named_parameters() if p.requires_grad)

    plain = load_model(_spec(tiny_model, lora={"rank": 16, "alpha": 32}))
    assert plain.base_model.model.model.layers[0].self_attn.q_proj.scaling["default"] == 2.0


def test_gradient_checkpointing_gives_same_gradients(tiny_model):
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = load_model(_spec(tiny_model, lora={"dropout": 0.0}), gradient_checkpointing=checkpointing)
        _perturb_lora_b(model)
        model(**_batch()).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
        assert model.base_model.model.is_activation_checkpointing == checkpointing
        assert model.config.use_cache is not checkpointing
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-6) for n in grads[0])


def test_full_and_not_trainable(tiny_model):
    full = load_model(_spec(tiny_model, method="full"))
    trainable, total = trainable_parameters(full)
    assert trainable == total == sum(p.numel() for p in full.parameters())

    frozen = load_model(_spec(tiny_model), trainable=False)
    assert trainable_parameters(frozen)[0] == 0
    assert not frozen.training


# ------------------------------------------------------------------------------------------ qlora


@pytest.mark.parametrize("compute_dtype", ["float32", "bfloat16"])
def test_qlora_uses_real_4bit_layers_and_updates_only_adapters(tiny_model, compute_dtype):
    model = load_model(_spec(tiny_model, method="qlora", quantization={"compute_dtype": compute_dtype}, lora={"rank": 4}))
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 14
    assert all(m.weight.quant_state.quant_type == "nf4" and m.weight.dtype == getattr(torch, compute_dtype) for m in layers)
    assert not isinstance(model.base_model.model.lm_head, bnb.nn.Linear4bit)  # the head stays full precision
    # trainable count is the same as LoRA on the unquantised model: 4-bit weights count unpacked
    assert trainable_parameters(model) == trainable_parameters(load_model(_spec(tiny_model, lora={"rank": 4})))

    before = {n: _bytes(p) for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(**_batch()).loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(_bytes(p), before[n])}
    # B moves; A has zero gradient while B is still zero (dL/dA = B^T ...)
    assert changed == {n for n in before if "lora_B" in n}


def test_qlora_with_dora_trains_magnitudes(tiny_model):
    model = load_model(_spec(tiny_model, method="qlora", lora={"use_dora": True}))
    model(**_batch()).loss.backward()
    magnitudes = [p for n, p in model.named_parameters() if "lora_magnitude_vector" in n]
    assert len(magnitudes) == 14 and all(p.grad is not None and p.grad.abs().sum() > 0 for p in magnitudes)


def test_qlora_float16_on_cpu_warns(tiny_model):
    with pytest.warns(UserWarning, match="compute_dtype: float16 .* slower than bfloat16 on CPU"):
        load_model(_spec(tiny_model, method="qlora", quantization={"compute_dtype": "float16"}))


def test_qlora_gradients_unaffected_by_an_eval_pass(tiny_model):
    """On AVX512-BF16 CPUs bitsandbytes would switch to a kernel without backward after eval; not here."""
    grads = []
    for evaluate_first in (False, True):
        torch.manual_seed(0)  # same LoRA A init
        model = load_model(_spec(tiny_model, method="qlora", quantization={"compute_dtype": "float32"}, lora={"dropout": 0.0}))
        _perturb_lora_b(model)
        if evaluate_first:
            model.eval()
            with torch.no_grad():
                model(**_batch())
            model.train()
        model(**_batch()).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert all(torch.allclose(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-7) for n in grads[0])


def _dequantised(layer) -> torch.Tensor:
    return bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()


def test_qlora_trains_against_its_dequantised_base_exactly(tiny_model):
    """What QLoRA computes with: NF4's usual error on every 4-bit weight, and the very gradients LoRA gets on a
    float32 base holding those dequantised weights (every adapter reached through the 4-bit layers)."""
    torch.manual_seed(0)
    qlora = load_model(_spec(tiny_model, method="qlora", quantization={"compute_dtype": "float32"}, lora={"dropout": 0.0}))
    torch.manual_seed(0)
    lora = load_model(_spec(tiny_model, lora={"dropout": 0.0}))
    quantised = {n: m for n, m in qlora.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    plain = dict(lora.named_modules())
    with torch.no_grad():
        for name, layer in quantised.items():
            weight = plain[name].weight
            assert 0.07 < ((_dequantised(layer) - weight).norm() / weight.norm()).item() < 0.11, name  # NF4: ~0.09
            weight.copy_(_dequantised(layer))
    _perturb_lora_b(qlora)
    _perturb_lora_b(lora)
    for model in (qlora, lora):
        model(**_batch()).loss.backward()
    grads = [{n: p.grad for n, p in m.named_parameters() if p.requires_grad} for m in (qlora, lora)]
    assert len(grads[0]) == 2 * len(quantised) == 28 and all(g.abs().sum() > 0 for g in grads[0].values())
    assert all(torch.allclose(grads[0][n], grads[1][n], rtol=1e-4, atol=1e-7) for n in grads[1])


def test_cpu_4bit_layers_with_partial_blocks_warn(tmp_path, tiny_model):
    # down_proj's rows of 96 inputs are 1.5 blocks of 64: bitsandbytes' CPU dequantisation misreads them.
    shutil.copytree(tiny_model, tmp_path / "odd")  # the tokenizer files; the model is replaced
    config = AutoConfig.from_pretrained(tiny_model)
    config.intermediate_size = 96
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "odd")
    with pytest.warns(UserWarning, match=r"not a multiple of 64 .*down_proj \(96 inputs\)"):
        model = load_model(_spec(tmp_path / "odd", method="qlora"))
    down = model.base_model.model.model.layers[0].mlp.down_proj.base_layer
    w = AutoModelForCausalLM.from_pretrained(tmp_path / "odd").model.layers[0].mlp.down_proj.weight
    assert ((_dequantised(down) - w).norm() / w.norm()).item() > 0.15  # what the warning is about


# ----------------------------------------------------------------------------------- init_adapter


def _saved_adapter(tiny_model, where):
    model = load_model(_spec(tiny_model, lora={"rank": 4}))
    _perturb_lora_b(model, seed=3)
    model.save_pretrained(where)
    return _lora_weights(model)


def test_init_adapter_continues_from_adapter_or_run_dir(tiny_model, tmp_path):
    saved = _saved_adapter(tiny_model, tmp_path / "run" / "adapter")
    for given in (tmp_path / "run" / "adapter", tmp_path / "run"):
        model = load_model(_spec(tiny_model, lora={"rank": 4}, init_adapter=str(given)))
        loaded = _lora_weights(model)
        assert loaded.keys() == saved.keys()
        assert all(torch.equal(loaded[n], saved[n]) for n in saved)
        assert all(p.requires_grad == ("lora_" in n) for n, p in model.named_parameters())

    with pytest.warns(UserWarning, match=r"saved with rank 4 \(spec: 16\).*model.lora is ignored"):
        model = load_model(_spec(tiny_model, init_adapter=str(tmp_path / "run")))
    assert model.peft_config["default"].r == 4


def test_init_adapter_on_4bit_base(tiny_model, tmp_path):
    saved = _saved_adapter(tiny_model, tmp_path / "adapter")
    model = load_model(_spec(tiny_model, method="qlora", lora={"rank": 4}, init_adapter=str(tmp_path / "adapter")))
    loaded = _lora_weights(model)
    assert all(torch.equal(loaded[n], saved[n]) for n in saved)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


def test_init_adapter_errors(tiny_model, tmp_path):
    with pytest.raises(ModelError, match=r"model.init_adapter: .*gone not found"):
        load_model(_spec(tiny_model, init_adapter=str(tmp_path / "gone")))
    with pytest.raises(ModelError, match="has no adapter_config.json and no adapter/ subdirectory"):
        find_adapter(tmp_path)


# ------------------------------------------------------------------------------- load_for_inference


def test_load_for_inference_run_dir_and_model_dir(tiny_model, tmp_path):
    run = tmp_path / "run"
    saved = _saved_adapter(tiny_model, run / "adapter")
    spec = JobSpec(model=_spec(tiny_model, lora={"rank": 4}), data={"train": ["unused.jsonl"]})
    (run / "spec.yaml").write_text(spec_to_yaml(spec))

    model, tokenizer = load_for_inference(run)
    loaded = _lora_weights(model)
    assert all(torch.equal(loaded[n], saved[n]) for n in saved)
    assert not model.training and trainable_parameters(model)[0] == 0
    assert tokenizer.eos_token == "<|im_end|>"

    plain, _ = load_for_inference(tiny_model)
    assert type(plain).__name__ == "LlamaForCausalLM" and not plain.training

    with pytest.raises(ModelError, match="neither a raysft output_dir"):
        load_for_inference(tmp_path)
    (run / "spec.yaml").write_text(json.dumps({"model": {"name_or_path": str(tiny_model)}}))
    with pytest.raises(ModelError, match="spec.yaml: not a valid spec"):
        load_for_inference(run)
