"""The .proto and its generated code: fresh, complete (every JobSpec field has a proto field), lossless."""

import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
from pydantic import BaseModel

from raysft.config import JobSpec, SpecError, parse_spec
from raysft.service.api.specproto import spec_from_proto, spec_to_proto
from raysft.service.v1 import jobs_pb2

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ["jobs_pb2.py", "jobs_pb2.pyi", "jobs_pb2_grpc.py"]

FULL = {
    "model": {"name_or_path": "m", "method": "qlora",
              "lora": {"rank": 4, "alpha": 8.5, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"], "use_rslora": True,
                       "use_dora": True},
              "quantization": {"bits": 4, "quant_type": "fp4", "double_quant": False, "compute_dtype": "float32"},
              "init_adapter": "a", "trust_remote_code": True, "attn_implementation": "flash_attention_2"},
    "data": {"train": ["x.jsonl", {"path": "y.jsonl", "weight": 2}], "validation_split": 0.2, "stratify_by": "assistant",
             "mix": [{"path": "g.jsonl", "ratio": 0.2}], "max_seq_len": 64, "packing": False, "loss_on": "last_assistant",
             "on_too_long": "truncate", "template_date": "2026-03-01"},
    "train": {"epochs": 2.5, "max_steps": 7, "learning_rate": 1e-4, "micro_batch_size": 2, "global_batch_size": 4,
              "lr_scheduler": "linear", "warmup_ratio": 0.1, "warmup_steps": 3, "weight_decay": 0.01, "max_grad_norm": None,
              "precision": "fp32", "gradient_checkpointing": True, "seed": 7, "log_every_steps": 2},
    "eval": {"every_steps": 5, "generate": {"metric": "exact_match", "max_new_tokens": 8, "limit": 3, "samples": 2},
             "early_stopping": {"patience": 2, "min_delta": 0.01}},
    "checkpoint": {"every_steps": 5, "keep_last": 2, "keep_best_by": "exact_match", "storage_path": "s3://bucket/x"},
    "scaling": {"num_workers": 2, "use_gpu": False, "resources_per_worker": {"CPU": 2}, "strategy": "fsdp", "max_failures": -1},
    "output_dir": "out",
    "tune": {"search_space": {"train.learning_rate": {"loguniform": [1e-5, 1e-3]}, "model.lora.rank": {"choice": [4, 8]},
                              "train.seed": {"randint": [1, 5]},
                              "model.lora.target_modules": {"choice": [["q_proj"], "all-linear"]}},
             "search": "random", "scheduler": "none", "num_samples": 3, "max_concurrent_trials": 1, "metric": "exact_match",
             "mode": "max", "time_budget_s": 60.5, "grace_period_steps": 1, "reduction_factor": 2.5},
}


def test_generated_code_is_fresh(tmp_path):
    out = subprocess.run(["bash", str(ROOT / "scripts/gen_proto.sh"), str(tmp_path)], env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    for name in GENERATED:
        fresh = (tmp_path / "raysft/service/v1" / name).read_text()
        committed = (ROOT / "raysft/service/v1" / name).read_text()
        assert fresh == committed, f"raysft/service/v1/{name} is stale: run `bash scripts/gen_proto.sh` and commit the result"


def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _spec_paths(model: type[BaseModel], message, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted path, proto descriptor field or None) for every field under `model`, descending into sections,
    list items and mapping values."""
    out = []
    for name, field in model.model_fields.items():
        proto = message.fields_by_name.get(name) if message is not None else None
        out.append((prefix + name, proto))
        for sub in _models_in(field.annotation):
            target = None
            if proto is not None and proto.message_type is not None:
                target = proto.message_type
                if target.GetOptions().map_entry:  # dict[str, Model]: the map's value message
                    target = target.fields_by_name["value"].message_type
            out += _spec_paths(sub, target, f"{prefix}{name}.")
    return out


def test_every_spec_field_is_reachable_in_the_proto():
    paths = _spec_paths(JobSpec, jobs_pb2.JobSpec.DESCRIPTOR)
    missing = [path for path, proto in paths if proto is None]
    assert not missing, f"JobSpec fields without a proto field (add them to jobs.proto): {missing}"
    assert len(paths) > 70  # the walk really descended (model.lora.rank, tune.search_space.*.choice, ...)
    assert ("model.lora.rank", jobs_pb2.LoraSpec.DESCRIPTOR.fields_by_name["rank"]) in paths


def test_a_spec_with_every_field_set_survives_the_round_trip():
    spec = parse_spec(FULL)
    message = spec_to_proto(spec.model_dump(mode="json"))
    assert message.train.WhichOneof("grad_clipping") == "no_max_grad_norm"
    assert message.model.method == jobs_pb2.ModelSpec.METHOD_QLORA
    assert list(message.tune.search_space["train.seed"].randint) == [1, 5]
    assert parse_spec(spec_from_proto(message)) == spec
    # Bytes too: what a non-Python client would send.
    again = jobs_pb2.JobSpec.FromString(message.SerializeToString())
    assert parse_spec(spec_from_proto(again)) == spec


def test_only_set_fields_travel_so_the_server_fills_the_defaults():
    spec = parse_spec({"model": {"name_or_path": "m"}, "data": {"train": "x.jsonl"}, "train": {"max_grad_norm": 0.5}})
    message = spec_to_proto(spec.model_dump(mode="json", exclude_unset=True))
    assert not message.train.HasField("learning_rate") and message.model.method == 0
    assert spec_from_proto(message) == {"model": {"name_or_path": "m"}, "data": {"train": [{"path": "x.jsonl"}]},
                                        "train": {"max_grad_norm": 0.5}}
    assert spec_from_proto(spec_to_proto({"model": {"lora": {"target_modules": "all-linear"}}}))["model"]["lora"] == \
        {"target_modules": "all-linear"}


def test_conversion_errors_name_the_field():
    with pytest.raises(SpecError) as err:
        spec_to_proto({"model": {"nme_or_path": "m", "lora": {"rank": "x"}}, "data": {"train": [3]}, "scaling": {"use_gpu": "maybe"}})
    assert {v.field for v in err.value.violations} == {"model.nme_or_path", "model.lora.rank", "data.train.0", "scaling.use_gpu"}
    assert "did you mean 'name_or_path'" in str(err.value)
    message = jobs_pb2.JobSpec()
    message.data.loss_on = 42  # proto3 enums accept unknown numbers
    with pytest.raises(SpecError, match=r"data.loss_on: unknown value 42; must be one of \['assistant', 'last_assistant', 'all'\]"):
        spec_from_proto(message)


def test_proto_job_states_are_the_state_machine_states():
    from raysft.service.jobs.states import JobState

    assert [jobs_pb2.JobState.Name(n) for n in jobs_pb2.JobState.values() if n] == [s.value for s in JobState]
