"""A tune campaign in MLflow: one parent run, one child run per trial carrying that trial's parameters."""

import contextlib
import io

import pytest

from raysft.config import load_spec
from raysft.tune.campaign import run_campaign

pytestmark = pytest.mark.integration


def test_a_campaign_is_one_parent_run_with_a_child_run_per_trial(ray_address, tiny_model, campaign_raw, mlflow_uri, tmp_path):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "campaign"
    tune = {"search_space": {"train.learning_rate": {"grid": [3.0e-3, 1.0e-4]}}, "search": "grid", "scheduler": "none",
            "max_concurrent_trials": 2}
    raw = campaign_raw(tiny_model, out, tune, train={"max_steps": 2},
                       tracking={"mlflow": {"tracking_uri": mlflow_uri, "experiment": "campaign-test"}})
    with contextlib.redirect_stdout(io.StringIO()):
        summary = run_campaign(load_spec(raw))

    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("campaign-test")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.run_name == "campaign" and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.info.run_name for r in children) == sorted(t["id"] for t in summary["trials"])
    assert sorted(float(r.data.params["train.learning_rate"]) for r in children) == [1.0e-4, 3.0e-3]
    for child in children:
        assert [m.step for m in client.get_metric_history(child.info.run_id, "eval_loss")] == [2]
        assert "adapter" in {a.path for a in client.list_artifacts(child.info.run_id)}
