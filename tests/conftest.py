"""Shared fixtures: a tokenizer trained on local text (nothing downloads), chat conversations, the session's one tiny
model, and the session's one Ray cluster.

Every Ray cluster the tests start, and this process, use token authentication, stated here before anything
imports ray. Left unset, Ray 2.60 switches a process to token mode for good the first time it starts a local
cluster (as `raysft train` does), after which that process refuses the calls of any cluster started later
without tokens: the mode must be the same for the whole session.
"""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from raysft.local_ray import free_port, use_token_auth

use_token_auth()  # before anything imports ray

import ray  # noqa: E402

from raysft.model.tiny import init_tiny  # noqa: E402
from raysft.model.tokenizer import train_tokenizer  # noqa: E402
from raysft.local_ray.cluster import LocalRayCluster  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TICKETS = ROOT / "examples/data/tickets_train.jsonl"
BIN = Path(sys.executable).parent

CONVERSATIONS = [
    [
        {"role": "system", "content": "Route each support ticket to one team: billing, shipping, technical or account."},
        {"role": "user", "content": "I was charged twice for my last order."},
        {"role": "assistant", "content": "billing"},
    ],
    [
        {"role": "user", "content": "Where is my parcel? The tracking page has not changed for a week."},
        {"role": "assistant", "content": "Which order number?"},
        {"role": "user", "content": "Order 4412."},
        {"role": "assistant", "content": "shipping"},
    ],
    [
        {"role": "system", "content": "你是客服分类助手。"},
        {"role": "user", "content": "应用一打开就闪退，怎么办？"},
        {"role": "assistant", "content": "technical"},
    ],
    [
        {"role": "user", "content": "Thought: I need the weather.\nAction: search[weather Paris]"},
        {"role": "assistant", "content": "Observation: 18°C and sunny.\nFinal Answer: It is 18°C and sunny in Paris."},
    ],
]


@pytest.fixture(scope="session")
def conversations():
    return [list(map(dict, c)) for c in CONVERSATIONS]


@pytest.fixture(scope="session")
def chat_tokenizer():
    """A byte-level BPE tokenizer with ChatML tokens, trained on the fixture conversations."""
    texts = [m["content"] for c in CONVERSATIONS for m in c] * 20
    return train_tokenizer(texts, vocab_size=600)


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory):
    """A real MLflow tracking server (SQLite store, local artifacts) on a free 127.0.0.1 port."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--artifacts-destination", str(root / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=open(root / "server.log", "wb"))
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield uri
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The tests' tiny random Llama: 2 layers of 64 (4 heads), a 512-token tokenizer trained on the ticket data.

    64 wide is the narrowest whose linear layers hold whole 64-element 4-bit blocks (bitsandbytes' CPU kernels misread
    partial ones), so QLoRA tests run on it too. Built once (~1 s) in a directory of its own, which a server can be given
    as an allowed root; tests only read it (copy it to change it).
    """
    return init_tiny(tmp_path_factory.mktemp("tiny") / "model", TICKETS, vocab_size=512, hidden_size=64, layers=2, heads=4)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """The session's 2-CPU Ray cluster, started by the first test that asks for it (through `ray_address`).

    It is `raysft serve`'s embedded one (`ray start --head --block` with a dashboard, its processes given RAY_ADDRESS)
    rather than `ray.init()`'s: Ray Train frees a run's (or an ASHA-stopped trial's) worker placement group through its
    PlacementGroupCleaner, which asks the State API of the cluster RAY_ADDRESS names whether the run's controller is
    alive, and other Ray clusters run on this machine. Subprocess drivers (`python -m raysft.tune`, `ray job submit`)
    reach it the same way. Its processes inherit RAY_TRAIN_ENABLE_PRINT_PATCH=0 (each worker line would be echoed
    twice) and raysft's bin directory on PATH (a Ray job's entrypoint is `raysft train ...`); this process keeps its own
    environment.
    """
    with pytest.MonkeyPatch.context() as env:  # read once, by `ray start`
        env.setenv("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
        env.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
        cluster = LocalRayCluster(tmp_path_factory.mktemp("ray") / "cluster.json", num_cpus=2, num_gpus=0)
        cluster.start(timeout_s=120)
    yield cluster
    cluster.stop(grace_s=5)  # a test cluster: no need to let it drain (up to 30 s)


@pytest.fixture(scope="module")
def ray_address(ray_cluster):
    """The session cluster's GCS address, with this process connected to it for the module.

    The module hands the cluster back as it found it: every CPU free and no placement group left (tests that count on
    2 free CPUs follow it), and this process disconnected (a module that starts a Ray of its own finds none connected).
    """
    if ray.is_initialized():  # an earlier module's own Ray, left connected
        ray.shutdown()
    ray.init(address=ray_cluster.gcs_address, configure_logging=False)
    try:
        yield ray_cluster.gcs_address
        _until_idle(timeout_s=60)
    finally:
        ray.shutdown()


def _until_idle(timeout_s: float) -> None:
    """Wait for the connected cluster to free every CPU and placement group (Ray frees them asynchronously)."""
    deadline = time.time() + timeout_s
    while True:
        groups = [g for g in ray.util.placement_group_table().values() if g["state"] != "REMOVED"]
        free, total = ray.available_resources().get("CPU", 0.0), ray.cluster_resources().get("CPU", 0.0)
        if not groups and free == total:
            return
        if time.time() > deadline:
            pytest.fail(f"this module left the session's Ray cluster busy after {timeout_s:g} s: {free:g} of {total:g} "
                        f"CPUs free, placement groups {[(g['name'], g['state']) for g in groups]}; stop what it started")
        time.sleep(0.5)
