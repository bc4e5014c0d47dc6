"""`ray job submit -- raysft train spec.yaml` against a running head succeeds with the same outputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture
def ray_head(ray_cluster, ray_address, monkeypatch):
    """The session's Ray head, started the way a user starts one (`ray start --head`, raysft's commands on its PATH),
    and the environment the job CLI runs in. Ray 2.60 heads use token auth whenever ~/.ray/auth_token exists, but the
    job CLI only sends the token in token mode, which tests/conftest.py states for the session. `ray_address`: the
    module leaves the cluster idle."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return ray_cluster.address, dict(os.environ)


def test_ray_job_submit_runs_raysft_train(ray_head, tiny_model, tmp_path):
    address, env = ray_head
    out = tmp_path / "run"
    spec = {
        "model": {"name_or_path": str(tiny_model), "lora": {"rank": 4, "alpha": 8}},
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
