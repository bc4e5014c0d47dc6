"""A run refuses to start on a storage location that already holds a run (Ray Train would restore its snapshot)."""

import pytest

from raysft.config import parse_spec
from raysft.train.launcher import RunError, holds_run, run_training


def _spec(tmp_path, storage):
    return parse_spec({"model": {"name_or_path": "org/model"}, "data": {"train": ["x.jsonl"]},
                       "output_dir": str(tmp_path / "out"), "checkpoint": {"storage_path": storage}})


@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "file-uri"])
def test_a_storage_path_holding_a_run_is_refused_before_anything_runs(tmp_path, as_uri):
    (tmp_path / "store" / "checkpoints").mkdir(parents=True)
    storage = f"file://{tmp_path}/store" if as_uri else str(tmp_path / "store")
    with pytest.raises(RunError, match=r"checkpoint.storage_path .*store already holds a run"):
        run_training(_spec(tmp_path, storage))
    assert not (tmp_path / "out").exists()


def test_a_fresh_storage_location_holds_no_run(tmp_path):
    assert not holds_run(str(tmp_path / "new")) and not holds_run(f"file://{tmp_path}/new")
    (tmp_path / "new" / "checkpoints").mkdir(parents=True)
    assert holds_run(str(tmp_path / "new")) and holds_run(f"file://{tmp_path}/new/")
