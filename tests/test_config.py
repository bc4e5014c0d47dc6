"""The job spec: field-path errors, did-you-mean, cross-field checks, overrides, advisories, shipped YAMLs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raysft.config import (JobSpec, SpecError, advisories, is_hub_id, load_spec, parse_spec, spec_to_yaml,
                           with_absolute_paths)

ROOT = Path(__file__).resolve().parents[1]
BASE = {"model": {"name_or_path": "./models/base"}, "data": {"train": ["data/train.jsonl"]}}


def errors_of(raw, overrides=()):
    with pytest.raises(SpecError) as info:
        load_spec(raw, list(overrides))
    return {v.field: v.message for v in info.value.violations}


def test_defaults_match_the_public_contract():
    spec = load_spec(BASE)
    assert spec.model.method == "lora" and spec.model.lora.rank == 16 and spec.model.lora.alpha == 32
    assert spec.model.lora.target_modules == "all-linear"
    assert spec.data.train[0].path == "data/train.jsonl" and spec.data.train[0].weight == 1.0
    assert (spec.data.validation_split, spec.data.max_seq_len, spec.data.packing) == (0.05, 2048, True)
    assert (spec.data.loss_on, spec.data.on_too_long) == ("assistant", "drop")
    t = spec.train
    assert (t.epochs, t.learning_rate, t.micro_batch_size, t.global_batch_size) == (3, 2e-4, 4, 16)
    assert (t.lr_scheduler, t.warmup_ratio, t.max_grad_norm, t.precision, t.seed) == ("cosine", 0.03, 1.0, "auto", 42)
    assert (spec.checkpoint.keep_last, spec.checkpoint.keep_best_by) == (3, "eval_loss")
    assert (spec.scaling.num_workers, spec.scaling.use_gpu, spec.scaling.strategy) == (1, "auto", "ddp")
    assert spec.output_dir == "runs/my-run"


def test_unknown_keys_suggest_the_closest_name_at_every_level():
    errs = errors_of({**BASE, "trian": {}}, ["model.lora.rnk=8", "data.max_seq_length=5"])
    assert errs["trian"] == "unknown key; did you mean 'train'?"
    assert errs["model.lora.rnk"] == "unknown key; did you mean 'rank'?"
    assert "did you mean 'max_seq_len'" in errs["data.max_seq_length"]


def test_all_field_errors_are_reported_at_once_with_their_paths():
    errs = errors_of(BASE, ["train.learning_rate=0", "model.method=qlorra", "scaling.use_gpu=maybe", "data.loss_on=everything"])
    assert set(errs) == {"train.learning_rate", "model.method", "scaling.use_gpu", "data.loss_on"}
    assert errs["train.learning_rate"].startswith("must be > 0")
    assert "'lora', 'qlora' or 'full'" in errs["model.method"] or "qlora" in errs["model.method"]


def test_missing_required_fields_name_the_path():
    errs = errors_of({"data": {"train": ["a.jsonl"]}})
    assert errs == {"model": "required; add it to the spec"}
    assert "model.name_or_path" in errors_of({"model": {}, "data": {"train": ["a"]}})


@pytest.mark.parametrize("overrides, field, fragment", [
    (["train.micro_batch_size=3"], "train.global_batch_size", "use 15 or 18"),
    (["train.global_batch_size=8", "scaling.num_workers=3", "train.micro_batch_size=2"], "train.global_batch_size", "multiple of"),
    (["model.quantization.bits=4"], "model.quantization", "only used with method qlora"),
    (["data.validation=v.jsonl", "data.validation_split=0.1"], "data.validation_split", "not both"),
    (["data.stratify_by=assistant", "data.validation_split=0"], "data.stratify_by", "validation_split > 0"),
    (["data.mix=[{path: g.jsonl, ratio: 0.6}, {path: h.jsonl, ratio: 0.5}]"], "data.mix", "sum below 1"),
    (["eval.generate={max_new_tokens: 4}"], "eval.generate", "metric: exact_match"),
    (["checkpoint.keep_best_by=exact_match"], "checkpoint.keep_best_by", "eval.generate.metric"),
    (["model.method=full", "model.init_adapter=runs/a"], "model.init_adapter", "lora or qlora"),
])
def test_cross_field_checks(overrides, field, fragment):
    errs = errors_of(BASE, overrides)
    assert fragment in errs[field], errs


def test_qlora_fills_quantization_defaults():
    spec = load_spec(BASE, ["model.method=qlora"])
    q = spec.model.quantization
    assert (q.bits, q.quant_type, q.double_quant, q.compute_dtype) == (4, "nf4", True, "bfloat16")


def test_overrides_parse_yaml_values_and_leave_the_source_untouched():
    raw = json.loads(json.dumps(BASE))
    spec = load_spec(raw, ["train.epochs=2", "model.lora.target_modules=[q_proj, v_proj]", "data.packing=false",
                           "data.train=[{path: a.jsonl, weight: 2}, b.jsonl]"])
    assert spec.train.epochs == 2 and spec.model.lora.target_modules == ["q_proj", "v_proj"] and not spec.data.packing
    assert [(s.path, s.weight) for s in spec.data.train] == [("a.jsonl", 2.0), ("b.jsonl", 1.0)]
    assert raw == BASE
    assert "key.path=value" in str(errors_of(BASE, ["train.epochs"]))


def test_practice_ranges_are_warnings_not_errors():
    spec = load_spec(BASE, ["train.learning_rate=1e-3", "train.epochs=20"])
    fields = {w.field for w in advisories(spec)}
    assert fields == {"train.learning_rate", "train.epochs"}
    assert advisories(load_spec(BASE)) == []
    rs = load_spec(BASE, ["model.lora.use_rslora=true"])  # 2e-4 is too high for rsLoRA
    assert "1e-5 – 5e-5" in advisories(rs)[0].message
    full = load_spec(BASE, ["model.method=full", "train.learning_rate=1.5e-5"])
    assert advisories(full) == []


def test_resolved_yaml_round_trips():
    spec = load_spec(BASE, ["model.method=qlora", "train.epochs=2"])
    again = load_spec(yaml.safe_load(spec_to_yaml(spec)))
    assert again == spec


def test_bad_files_are_spec_errors(tmp_path):
    assert "not found" in str(errors_of(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    assert "not valid YAML" in str(errors_of(bad))
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    assert "mapping" in str(errors_of(listy))


def test_every_shipped_yaml_loads_and_starts_with_its_command():
    shipped = sorted(ROOT.glob("examples/**/*.yaml")) + sorted(ROOT.glob("clusters/**/*.spec.yaml"))
    assert shipped, "no shipped specs found"
    for path in shipped:
        assert path.read_text().startswith("# "), f"{path} must start with the command that runs it"
        assert isinstance(load_spec(path), JobSpec)


def test_cli_config_show_and_schema(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(BASE))
    run = lambda *a: subprocess.run([sys.executable, "-m", "raysft.cli", *a], capture_output=True, text=True)
    shown = run("config", "show", str(spec), "train.epochs=4")
    assert shown.returncode == 0 and yaml.safe_load(shown.stdout)["train"]["epochs"] == 4
    bad = run("config", "show", str(spec), "trian.epochs=4")
    assert bad.returncode == 2 and "trian: unknown key; did you mean 'train'?" in bad.stderr
    schema = json.loads(run("config", "schema").stdout)
    assert "model" in schema["required"] and "TrainSpec" in schema["$defs"]


def test_a_validation_file_spec_reloads_from_its_resolved_yaml():
    spec = load_spec(BASE, ["data.validation=v.jsonl"])
    assert spec.data.validation_split == 0
    assert load_spec(yaml.safe_load(spec_to_yaml(spec))) == spec


def test_local_paths_become_absolute_and_hub_ids_and_uris_stay(tmp_path, monkeypatch):
    (tmp_path / "data.jsonl").write_text("{}\n")
    (tmp_path / "adapter").mkdir()
    monkeypatch.chdir(tmp_path)  # a cwd other than the one given: nothing resolves against the process's own
    spec = parse_spec({"model": {"name_or_path": "org/model", "init_adapter": "adapter"},
                       "data": {"train": ["data.jsonl", "s3://bucket/more.jsonl"]}, "output_dir": "runs/new",
                       "checkpoint": {"storage_path": "gs://bucket/ckpt"}})
    moved = with_absolute_paths(spec, tmp_path)
    assert (moved.model.name_or_path, moved.model.init_adapter) == ("org/model", str(tmp_path / "adapter"))
    assert [s.path for s in moved.data.train] == [str(tmp_path / "data.jsonl"), "s3://bucket/more.jsonl"]
    assert moved.output_dir == str(tmp_path / "runs/new")  # an output: absolute before it exists
    assert moved.checkpoint.storage_path == "gs://bucket/ckpt"
    local = with_absolute_paths(parse_spec({**spec.model_dump(mode="json", exclude_unset=True),
                                            "checkpoint": {"storage_path": "ckpt"}}), tmp_path)
    assert local.checkpoint.storage_path == str(tmp_path / "ckpt")


@pytest.mark.parametrize("name, hub", [("Qwen/Qwen2.5-0.5B-Instruct", True), ("gpt2", True), ("./model", False),
                                       ("/models/llama", False), ("~/m", False), ("a/b/c", False), ("org/ name", False)])
def test_one_rule_tells_a_hub_id_from_a_path(name, hub):
    assert is_hub_id(name) is hub
