"""The benchmarks: token accounting, the in-process training session, run.py's results contract, and (integration)
the training figures on a real local Ray with a very small workload."""

import json
import random
import sys
import time
from pathlib import Path

import pytest
import ray

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import bench_train, common, run as bench_run  # noqa: E402
from raysft.train.runlog import read_jsonl  # noqa: E402
from raysft.train.rowplan import StepPlan, collate_rows, make_rows  # noqa: E402

TICKETS = ROOT / "examples/data/tickets_train.jsonl"


def _examples(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt, answer = rng.randint(5, 300), rng.randint(1, 200)
        out.append({"input_ids": [7] * (prompt + answer), "labels": [-100] * prompt + [7] * answer})
    return out


@pytest.mark.parametrize("packing", [True, False])
def test_step_accounting_matches_the_batches_the_loop_collates(packing, tmp_path):
    w = bench_train.Workload(tmp_path / "d.jsonl", tmp_path / "m", _examples(90), {})
    spec = bench_train.workload_spec(w.model_path, w.data_path, tmp_path / "out", packing=packing)
    t = spec.train
    plan = StepPlan(make_rows(w.examples, spec.data.max_seq_len, packing), t.global_batch_size, t.micro_batch_size, 1, t.seed)
    accounted = bench_train.plan_tokens(w, spec)
    assert len(accounted) == plan.total_steps(1, None)
    for step, counts in enumerate(accounted):
        batches = [collate_rows(w.examples, m, pad_id=0, packed=packing) for m in plan.micro_batches(step, 0)]
        assert counts["processed"] == sum(b["input_ids"].numel() for b in batches)
        assert counts["trained"] == sum(int(b["num_trained_tokens"]) for b in batches)
        real = sum(len(w.examples[i]["input_ids"]) for row in plan.step_rows(step) for i in row)
        assert counts["useful"] == real <= counts["processed"]


def test_cpu_clock_ticks_once_per_metrics_event(tmp_path):
    import psutil

    events = tmp_path / "events.jsonl"
    with common.StepCpuClock(psutil.Process, events) as clock:
        for step in range(3):
            with open(events, "a") as f:
                f.write(json.dumps({"type": "metrics", "data": {"step": step}}) + "\n")
                f.write(json.dumps({"type": "checkpoint_saved"}) + "\n")
            sum(i * i for i in range(300_000))  # CPU work between steps
            time.sleep(0.05)
    assert len(clock.training_cpu) == 3
    assert clock.training_cpu == sorted(clock.training_cpu) and clock.training_cpu[-1] > clock.training_cpu[0]


def test_training_loop_runs_in_process_without_ray(tmp_path):
    w = bench_train.make_workload(tmp_path, examples=80, hidden_size=32, layers=1)
    result = bench_train.variant_figures([bench_train.raysft_local(w, tmp_path / "local", threads=1)])
    assert not ray.is_initialized()
    metrics = [m for m in read_jsonl(tmp_path / "local/metrics.jsonl") if "train_loss" in m]
    planned = bench_train.plan_tokens(w, bench_train.workload_spec(w.model_path, w.data_path, tmp_path / "x"))
    assert [m["trained_tokens"] for m in metrics] == [p["trained"] for p in planned]
    assert result["steps"] == len(planned) and result["useful_tokens_per_s"] > 0
    assert result["padding_efficiency"] > 0.9  # packed rows of the chat mix are nearly full
    # The checkpoint at the end of the epoch is persisted the way Ray persists it.
    last = tmp_path / f"local/checkpoints/checkpoint_{len(planned):06d}"
    assert (last / "adapter/adapter_model.safetensors").is_file() and (last / "trainer_state.json").is_file()


def test_run_py_writes_every_contract_key_even_for_skipped_sections(tmp_path, capsys):
    assert bench_run.main(["--out", str(tmp_path), "--only", "gpu"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    for key in bench_run.SECTIONS:
        assert key in results
    assert results["train_throughput"] == {"skipped": "not selected (--only)"}
    assert "skipped" in results["gpu"]
    assert results["machine"]["cores"] >= 1
    page = (tmp_path / "results.md").read_text()
    assert "| train_throughput.ratio_vs_hf | — | | | >= 1.9 | not selected (--only) |" in page
    assert results["loss_memory"] == results["trained_positions_speedup"] == {"skipped": "not selected (--only)"}
    with pytest.raises(SystemExit):
        bench_run.main(["--out", str(tmp_path), "--only", "trian"])
    assert "unknown section(s) trian" in capsys.readouterr().err


@pytest.mark.integration
def test_training_figures_on_ray_compare_packing_padding_and_in_process(ray_address, tmp_path):
    w = bench_train.make_workload(tmp_path, examples=80, hidden_size=32, layers=1)
    throughput, overhead = bench_train.train_throughput(w, 1, threads=1, workdir=tmp_path)
    packed, unpacked, hf = throughput["raysft_packed"], throughput["raysft_unpacked"], throughput["hf_trainer"]
    # Same examples, one epoch each: packing takes fewer, fuller steps; padding wastes about half of a batch.
    assert packed["steps"] < unpacked["steps"] == hf["steps"]
    assert throughput["padding_efficiency"] == packed["padding_efficiency"] > 0.9 > unpacked["padding_efficiency"]
    assert abs(unpacked["padding_efficiency"] - hf["padding_efficiency"]) < 0.15
    assert throughput["ratio_vs_hf"] > 0 and overhead["step_overhead_ratio"] > 0
    assert overhead["time_to_first_step_s"]["ray"] > 0 and overhead["time_to_first_step_s"]["in_process"] > 0


@pytest.mark.integration
def test_gpu_benchmark_is_skipped_without_cuda_and_its_figures_come_from_real_runs(ray_address, tmp_path):
    from benchmarks import bench_gpu

    assert bench_gpu.run() == {"skipped": "no CUDA device on this machine"}
    assert bench_gpu.peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert bench_gpu.peak_bf16_flops("NVIDIA H100 PCIe") == 756e12 and bench_gpu.peak_bf16_flops("cpu") is None
    # The same code on a tiny shape on the CPU, on the session's Ray: both methods train, and the estimate covers
    # the same spec.
    result = bench_gpu.run(quick=True, shape={"hidden_size": 64, "layers": 1, "heads": 2}, use_gpu=False,
                           workdir=tmp_path)
    for method in ("lora", "qlora"):
        figures = result[method]
        assert figures["steps"] == 12 and figures["tokens_per_s"] > 0
        assert figures["params"] > 0 and figures["estimate_gb"] > 0
        assert figures["peak_memory_gb"] is None and figures["mfu"] is None  # no CUDA memory, no known peak
        assert json.loads((tmp_path / method / "summary.json").read_text())["method"] == method
