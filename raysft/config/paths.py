"""Local paths of a spec made absolute, so that every process of a run reads and writes the same files.

Ray Train workers and Tune trials run in other working directories (and on other machines of a cluster), and a
later `--resume` may start anywhere. Inputs (model, adapter, data) are resolved when they exist: anything else
is a hub id ("org/model") or a name the loader reports. Outputs (output_dir, a local checkpoint.storage_path)
are resolved whether or not they exist yet. URIs (`s3://...`) are left as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raysft.config.loading import parse_spec
from raysft.config.spec import JobSpec

__all__ = ["absolute_paths", "with_absolute_paths"]


def with_absolute_paths(spec: JobSpec, cwd: Path) -> JobSpec:
    """`spec` with its relative local paths made absolute against `cwd`."""
    raw = spec.model_dump(mode="json", exclude_unset=True)
    absolute_paths(raw, cwd)
    return parse_spec(raw)


def absolute_paths(raw: dict, cwd: Path) -> None:
    """Make the relative local paths of a spec mapping absolute against `cwd`, in place."""
    def absolute(path: Any, *, existing_only: bool) -> Any:
        if not isinstance(path, str) or "://" in path:
            return path
        full = Path(path).expanduser()
        full = full if full.is_absolute() else cwd / full
        return str(full.resolve()) if full.exists() or not existing_only else path

    def read(path: Any) -> Any:
        return absolute(path, existing_only=True)

    model, data = raw.setdefault("model", {}), raw.setdefault("data", {})
    for key in ("name_or_path", "init_adapter"):
        model[key] = read(model.get(key))
    train = data.get("train", [])
    train = [train] if isinstance(train, (str, dict)) else train
    data["train"] = [read(x) if isinstance(x, str) else {**x, "path": read(x.get("path"))} for x in train]
    data["validation"] = read(data.get("validation"))
    data["mix"] = [{**x, "path": read(x.get("path"))} for x in data.get("mix", [])]
    if raw.get("output_dir"):
        raw["output_dir"] = absolute(raw["output_dir"], existing_only=False)
    checkpoint = raw.get("checkpoint") or {}
    if checkpoint.get("storage_path"):
        checkpoint["storage_path"] = absolute(checkpoint["storage_path"], existing_only=False)
