"""merge_adapter writes a standalone model that behaves like base + adapter."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from raysft.config import JobSpec, ModelSpec, spec_to_yaml
from raysft.model.export import merge_adapter
from raysft.model.load import ModelError, load_for_inference, load_model
from raysft.model.tiny import init_tiny

PROMPTS = [
    [{"role": "user", "content": "I was charged twice for my last order."}],
    [{"role": "system", "content": "你是客服分类助手。"}, {"role": "user", "content": "应用闪退"}],
    [{"role": "user", "content": "Where is my parcel?"}],
]


def _run_dir(tmp_path, tiny_model, **model):
    """A finished run's output_dir: spec.yaml plus an adapter whose B weights are random (non-trivial)."""
    run = tmp_path / "run"
    spec = JobSpec(model={"name_or_path": str(tiny_model), **model}, data={"train": ["unused.jsonl"]})
    torch.manual_seed(0)
    trained = load_model(spec.model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    trained.save_pretrained(run / "adapter")
    (run / "spec.yaml").write_text(spec_to_yaml(spec))
    return run


def _encode(tokenizer, messages):
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)


def _logits(model, tokenizer):
    with torch.no_grad():
        return [model(**_encode(tokenizer, m)).logits for m in PROMPTS]


def test_lora_merge_generates_like_base_plus_adapter(tiny_model, tmp_path):
    run = _run_dir(tmp_path, tiny_model, lora={"rank": 8})
    dest = merge_adapter(run, tmp_path / "merged")

    merged = AutoModelForCausalLM.from_pretrained(dest)
    tokenizer = AutoTokenizer.from_pretrained(dest)
    assert type(merged) is LlamaForCausalLM  # standalone: no PEFT wrapper, no adapter files
    assert not (dest / "adapter_config.json").exists()
    assert merged.generation_config.eos_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.apply_chat_template(PROMPTS[0], tokenize=False).startswith("<|im_start|>user\n")

    adapted, _ = load_for_inference(run)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    for messages in PROMPTS:
        enc = _encode(tokenizer, messages)
        kwargs = dict(max_new_tokens=8, do_sample=False, min_new_tokens=8)
        assert torch.equal(merged.generate(**enc, **kwargs), adapted.generate(**enc, **kwargs))
    merged_logits, adapted_logits, base_logits = (_logits(m, tokenizer) for m in (merged, adapted, base))
    for m, a, b in zip(merged_logits, adapted_logits, base_logits):
        assert torch.allclose(m, a, atol=1e-4)
        assert (m - b).abs().max() > 0.1  # the adapter really changes the model


@pytest.fixture(scope="module")
def measured_base(tmp_path_factory, chat_file):
    """The model the bfloat16 tolerance below was measured on (64 wide, 2 layers, its tokenizer trained on the fixture
    conversations). Not the session's tiny model: on its random weights one prompt lands at 2.2e-2, past the bound."""
    return init_tiny(tmp_path_factory.mktemp("measured"), chat_file, vocab_size=600, hidden_size=64, layers=2, heads=4)


# bfloat16 keeps ~3 significant digits: the tolerance scales with the logits (|logit| up to ~10 here).
@pytest.mark.parametrize("compute_dtype, rtol", [("float32", 1e-5), ("bfloat16", 2e-2)])
def test_qlora_merge_matches_4bit_base_plus_adapter(measured_base, tmp_path, compute_dtype, rtol):
    run = _run_dir(tmp_path, measured_base, method="qlora", quantization={"compute_dtype": compute_dtype})
    dest = merge_adapter(run, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(dest)
    assert "quantization_config" not in json.loads((dest / "config.json").read_text())
    assert merged.dtype == torch.float32  # the base checkpoint's dtype

    adapted, tokenizer = load_for_inference(run)  # 4-bit base + adapter, as trained
    on_original = load_model(ModelSpec(name_or_path=str(measured_base), init_adapter=str(run)), trainable=False)
    for m, a, o in zip(*(_logits(x, tokenizer) for x in (merged, adapted, on_original))):
        # merged into the dequantised NF4 base: the trained model up to matmul rounding
        # (relative to the largest logit, measured: ~1e-7 float32, ~1.2e-2 bfloat16) ...
        assert (m - a).abs().max() <= rtol * a.abs().max()
        # ... while the same adapter on the original weights is off by the quantisation error (~0.05)
        assert (o - a).abs().max() > 10 * (m - a).abs().max()


def test_merge_errors(tiny_model, tmp_path):
    with pytest.raises(ModelError, match="has no spec.yaml"):
        merge_adapter(tmp_path, tmp_path / "out")
    (tmp_path / "spec.yaml").write_text(
        spec_to_yaml(JobSpec(model={"name_or_path": str(tiny_model)}, data={"train": ["unused.jsonl"]}))
    )
    with pytest.raises(ModelError, match=r"run_dir: .*adapter not found"):
        merge_adapter(tmp_path, tmp_path / "out")

    run = _run_dir(tmp_path, tiny_model)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "old.txt").write_text("x")
    with pytest.raises(ModelError, match="taken exists and is not an empty directory"):
        merge_adapter(run, tmp_path / "taken")
