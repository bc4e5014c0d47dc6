"""Experiment tracking: the run's params, metric histories and outputs also go to MLflow, TensorBoard and W&B.

Who does what:
- the driver (`start_tracking`) creates or reopens each backend's run before any worker starts, so the run id
  is known up front and saved in `<output_dir>/tracking.json`: `--resume`, a worker restart and a resumed job
  continue that run instead of opening a new one. It also gathers the tracking credentials and URIs of its
  environment (MLFLOW_*, WANDB_*, ...) for the workers: Ray starts workers with the cluster's environment, not
  the driver's (axolotl#3908, ray#31221), so they travel explicitly in the workers' config.
- rank 0 (`Tracker`, fed by `RunLog`) logs each logged step's and each evaluation's metrics, skipping steps it
  logged before a restart (tracking.json keeps the last step per kind), so no step appears twice.
- the driver (`finish_tracking`) logs the adapter, loss_curve.png and summary.json as artifacts once
  `write_outputs` made them, and closes the runs.

A backend that is unreachable or refuses a call is one warning and is dropped for the rest of the run:
training never fails because of tracking.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
import urllib.parse
from pathlib import Path

from raysft.config import JobSpec
from raysft.rundir import RunDir

__all__ = ["TRACKING_FILE", "start_tracking", "Tracker", "finish_tracking", "flatten", "service_tags"]

TRACKING_FILE = "tracking.json"
_ENV_PREFIXES = ("MLFLOW_", "WANDB_", "DATABRICKS_", "AWS_", "AZURE_STORAGE_", "GOOGLE_APPLICATION_CREDENTIALS")
_JOB_ID_ENV, _LABELS_ENV = "RAYSFT_JOB_ID", "RAYSFT_JOB_LABELS"  # set by the job service (raysft.service.ray.runner)


def _warn(backend: str, message: str) -> None:
    print(f"[raysft] warning: tracking.{backend}: {message}; training goes on without it", flush=True)


def flatten(data: dict, prefix: str = "") -> dict[str, str]:
    """A nested mapping as dotted keys (`train.learning_rate`), values as strings (what trackers store)."""
    out: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return out


def service_tags() -> dict[str, str]:
    """The job id and labels a job from the service carries (empty for runs started by hand)."""
    tags = {}
    if job_id := os.environ.get(_JOB_ID_ENV):
        tags["raysft.job_id"] = job_id
    try:
        tags.update({str(k): str(v) for k, v in json.loads(os.environ.get(_LABELS_ENV) or "{}").items()})
    except (ValueError, AttributeError):
        pass  # the service writes this variable; anything else in it is not a label
    return tags


def _read_state(out: Path) -> dict:
    path = out / TRACKING_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _write_state(out: Path, state: dict) -> None:
    tmp = out / f".{TRACKING_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
    tmp.replace(out / TRACKING_FILE)  # atomic: a worker killed mid-write leaves the previous state


def _reachable(uri: str) -> str | None:
    """Why an http(s) tracking URI cannot be reached, or None. A connect probe with a short timeout: MLflow's
    own client retries a dead server for minutes before it gives up."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return None
    try:
        socket.create_connection((parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)), timeout=5).close()
    except OSError as exc:
        return f"cannot reach {uri} ({exc})"
    return None


def start_tracking(spec: JobSpec, out: Path, *, parent: dict | None = None, run_name: str | None = None) -> dict | None:
    """Create or reopen the run in each configured backend (driver side); returns the workers' tracking config.

    Args:
        spec: the resolved spec; its `tracking` section says which backends, its dump is the run's params.
        out: the run's output_dir, where tracking.json keeps the run ids across resumes.
        parent: a tune campaign's run ids ({"mlflow": id}); the run becomes its child.
        run_name: the run's name when the spec gives none (a tune trial passes its trial id).

    Returns:
        None without a tracking section, else {"env": the tracking variables of this environment, "runs":
        {backend: run id} (a backend that failed is left out), "name", "tags", "parent"}.
    """
    tr = spec.tracking
    if tr.mlflow is None and tr.tensorboard is None and tr.wandb is None:
        return None
    state = _read_state(out)
    runs = dict(state.get("runs", {}))
    name = run_name or out.name
    tags = {"raysft.output_dir": str(out), **service_tags()}
    params = flatten(spec.model_dump(mode="json", exclude={"tracking"}))
    if tr.mlflow is not None:
        runs.pop("mlflow", None)
        try:
            runs["mlflow"] = _mlflow_start(spec, state.get("runs", {}).get("mlflow"), name, tags, params, parent or {})
        except Exception as exc:  # any client or server failure: a warning, never a failed run
            _warn("mlflow", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    if tr.wandb is not None and "wandb" not in runs:
        runs["wandb"] = secrets.token_hex(8)  # W&B run ids: lowercase letters and digits
    _write_state(out, {**state, "runs": runs})
    env = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}
    return {"env": env, "runs": runs, "name": name, "tags": tags, "parent": parent or {}}


def _mlflow_uri(spec: JobSpec) -> str | None:
    return spec.tracking.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")


def _mlflow_start(spec: JobSpec, run_id: str | None, name: str, tags: dict, params: dict, parent: dict) -> str:
    from mlflow.tracking import MlflowClient

    m = spec.tracking.mlflow
    uri = _mlflow_uri(spec)
    if uri and (problem := _reachable(uri)):
        raise RuntimeError(problem)
    client = MlflowClient(tracking_uri=uri)
    if run_id:  # a resumed run: reopen it (its params are already there and cannot change)
        client.update_run(run_id, status="RUNNING")
        return run_id
    experiment = client.get_experiment_by_name(m.experiment)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(m.experiment)
    run_tags = {**tags, **m.tags}
    if parent.get("mlflow"):
        run_tags["mlflow.parentRunId"] = parent["mlflow"]
    run = client.create_run(experiment_id, run_name=m.run_name or name, tags=run_tags)
    from mlflow.entities import Param

    items = [Param(k[:250], v[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):  # the REST API takes at most 100 params per batch
        client.log_batch(run.info.run_id, params=items[i:i + 100])
    return run.info.run_id


class Tracker:
    """Rank 0's side: sends each logged step's and evaluation's metrics to every backend that started.

    Args:
        config: what `start_tracking` returned (None: no tracking).
        spec: the run's spec.
        out: the output_dir (tracking.json, the default TensorBoard and W&B directories).
    """

    def __init__(self, config: dict | None, spec: JobSpec, out: Path):
        self.spec, self.out = spec, out
        self._backends: dict[str, object] = {}
        self._logged = _read_state(out).get("logged", {}) if config else {}
        if not config:
            return
        os.environ.update(config["env"])  # before any client reads them
        # MLflow's defaults retry a dead server for minutes per call, and each call blocks a training step.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        tr, runs = spec.tracking, config["runs"]
        opened = []
        if tr.mlflow is not None and "mlflow" in runs:
            opened.append(("mlflow", lambda: self._open_mlflow(runs["mlflow"])))
        if tr.tensorboard is not None:
            opened.append(("tensorboard", self._open_tensorboard))
        if tr.wandb is not None and "wandb" in runs:
            opened.append(("wandb", lambda: self._open_wandb(runs["wandb"], config)))
        for backend, open_ in opened:
            try:
                self._backends[backend] = open_()
            except Exception as exc:
                _warn(backend, f"cannot start: {exc}")

    def _open_mlflow(self, run_id: str):
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=_mlflow_uri(self.spec))
        # A worker killed after MLflow took a step but before tracking.json said so would log that step again.
        for kind, key in (("train", "train_loss"), ("eval", "eval_loss")):
            last = max((m.step for m in client.get_metric_history(run_id, key)), default=0)
            self._logged[kind] = max(self._logged.get(kind, 0), last)
        return client, run_id

    def _open_tensorboard(self):
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=self.spec.tracking.tensorboard.log_dir or str(self.out / "tensorboard"))

    def _open_wandb(self, run_id: str, config: dict):
        import wandb

        w = self.spec.tracking.wandb
        tags = list(w.tags) + [f"{k}={v}" for k, v in config["tags"].items() if k != "raysft.output_dir"]
        return wandb.init(project=w.project, entity=w.entity, name=w.name or config["name"], id=run_id, resume="allow",
                          mode=w.mode, dir=str(self.out), tags=tags[:64], reinit="create_new",
                          group=config["parent"].get("wandb"),
                          config=flatten(self.spec.model_dump(mode="json", exclude={"tracking"})))

    def log(self, kind: str, metrics: dict) -> None:
        """Log one `kind` ("train" or "eval") record at its step, unless that step was logged before a restart."""
        step = metrics["step"]
        if not self._backends or step <= self._logged.get(kind, 0):
            return
        values = {k: float(v) for k, v in metrics.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        for backend, handle in list(self._backends.items()):
            try:
                if backend == "mlflow":
                    from mlflow.entities import Metric

                    client, run_id = handle
                    ms = int(time.time() * 1000)
                    client.log_batch(run_id, metrics=[Metric(k, v, ms, step) for k, v in values.items()])
                elif backend == "tensorboard":
                    for k, v in values.items():
                        handle.add_scalar(f"{kind}/{k}", v, step)
                    handle.flush()
                else:
                    handle.log(values, step=step)
            except Exception as exc:
                _warn(backend, f"logging step {step} failed: {exc}")
                del self._backends[backend]
        self._logged[kind] = step
        _write_state(self.out, {**_read_state(self.out), "logged": self._logged})

    def close(self) -> None:
        """Flush and close the worker's handles (the driver closes the runs after logging the outputs)."""
        for backend, handle in self._backends.items():
            try:
                if backend == "tensorboard":
                    handle.close()
                elif backend == "wandb":
                    handle.finish()
            except Exception as exc:
                _warn(backend, f"closing failed: {exc}")
        self._backends = {}


def finish_tracking(spec: JobSpec, out: Path, config: dict | None, summary: dict | None) -> None:
    """Log the run's outputs (adapter/, loss_curve.png, summary.json) as artifacts and close each run (driver side).

    Args:
        summary: the run summary, or None when training failed (the runs are marked failed, nothing is uploaded).
    """
    runs = (config or {}).get("runs", {})
    run = RunDir(out)
    files = [p for p in (run.adapter, run.loss_curve, run.summary_file) if p.exists()] if summary else []
    if spec.tracking.mlflow is not None and "mlflow" in runs:
        try:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=_mlflow_uri(spec))
            for path in files:
                if path.is_dir():
                    client.log_artifacts(runs["mlflow"], str(path), artifact_path=path.name)
                else:
                    client.log_artifact(runs["mlflow"], str(path))
            client.set_terminated(runs["mlflow"], status="FINISHED" if summary else "FAILED")
        except Exception as exc:
            _warn("mlflow", f"logging the outputs failed: {exc}")
    if spec.tracking.wandb is not None and "wandb" in runs and summary:
        try:
            import wandb

            w = spec.tracking.wandb
            run = wandb.init(project=w.project, entity=w.entity, id=runs["wandb"], resume="allow", mode=w.mode,
                             dir=str(out), reinit="create_new")
            if files:  # a campaign's parent run has no adapter of its own
                artifact = wandb.Artifact(f"{out.name}-outputs", type="model")
                for path in files:
                    (artifact.add_dir if path.is_dir() else artifact.add_file)(str(path), name=path.name)
                run.log_artifact(artifact)
            run.summary.update({k: v for k, v in flatten({"best": summary.get("best") or {}}).items()})
            run.finish()
        except Exception as exc:
            _warn("wandb", f"logging the outputs failed: {exc}")
