"""`ray job submit -- raysft train spec.yaml` against a running head succeeds with the same outputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raysft.model.tiny import init_tiny
from raysft.local_ray.cluster import LocalRayCluster

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture
def ray_head(tmp_path, monkeypatch):
    """A Ray head started the way a user starts one (`ray start --head`, raysft's environment on PATH)."""
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    # Ray 2.60 heads use token auth whenever ~/.ray/auth_token exists, but the job CLI only sends the token
    # in token mode: state it for both (the token itself comes from tests/conftest.py, as on a user's machine).
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cluster = LocalRayCluster(tmp_path / "cluster.json", num_cpus=2)
    yield cluster.start(timeout_s=120), dict(os.environ)
    cluster.stop(grace_s=5)  # a test cluster: no need to let it drain (up to 30 s)


def test_ray_job_submit_runs_raysft_train(ray_head, tmp_path):
    address, env = ray_head
    base = init_tiny(tmp_path / "base", ROOT / "examples/data/tickets_train.jsonl", vocab_size=400, hidden_size=32, layers=1)
    out = tmp_path / "run"
    spec = {
        "model": {"name_or_path": str(base), "lora": {"rank": 4, "alpha": 8}},
        "data": {"train": [str(ROOT / "examples/data/tickets_train.jsonl")], "max_seq_len": 128},
        "train": {"max_steps": 3, "micro_batch_size": 2, "global_batch_size": 2},
        "output_dir": str(out),
    }
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text("# ray job submit -- raysft train spec.yaml\n" + yaml.safe_dump(spec))
    job = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", address, "--", "raysft", "train", str(spec_path)],
        env=env, capture_output=True, text=True, timeout=480)
    assert job.returncode == 0, f"rc={job.returncode}\n{job.stdout[-3000:]}\n{job.stderr[-3000:]}"
    assert "[raysft] done" in job.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
