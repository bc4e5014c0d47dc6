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

__all__ = ["PATH_FIELDS", "SOURCE_FIELDS", "absolute_paths", "with_absolute_paths"]

# The spec's path fields and their role: model (a directory or hub id), adapter and read (inputs), storage
# (written, shared by runs) and output (this run's own). The job service confines each by its role.
PATH_FIELDS: dict[str, str] = {
    "model.name_or_path": "model",
    "model.init_adapter": "adapter",
    "data.validation": "read",
    "data.cache_dir": "storage",
    "checkpoint.storage_path": "storage",
    "output_dir": "output",
}
SOURCE_FIELDS = ("data.train", "data.mix")  # lists of a path or {path, ...}: inputs
_INPUTS = ("model", "adapter", "read")


def with_absolute_paths(spec: JobSpec, cwd: Path) -> JobSpec:
    """`spec` with its relative local paths made absolute against `cwd`."""
    raw = spec.model_dump(mode="json", exclude_unset=True)
    absolute_paths(raw, cwd)
    return parse_spec(raw)


def absolute_paths(raw: dict, cwd: Path) -> None:
    """Make the relative local paths of a spec mapping absolute against `cwd`, in place."""
    def absolute(path: Any, *, existing_only: bool) -> Any:
        if not isinstance(path, str) or not path or "://" in path:
            return path
        full = Path(path).expanduser()
        full = full if full.is_absolute() else cwd / full
        return str(full.resolve()) if full.exists() or not existing_only else path

    for key, role in PATH_FIELDS.items():
        holder, name = _holder(raw, key)
        if name in holder:
            holder[name] = absolute(holder[name], existing_only=role in _INPUTS)
    for key in SOURCE_FIELDS:
        holder, name = _holder(raw, key)
        if name in holder:
            listed = holder[name] if isinstance(holder[name], list) else [holder[name]]
            holder[name] = [absolute(x, existing_only=True) if isinstance(x, str)
                            else {**x, "path": absolute(x.get("path"), existing_only=True)} if isinstance(x, dict) else x
                            for x in listed]


def _holder(raw: dict, key: str) -> tuple[dict, str]:
    """The mapping that holds dotted `key` in `raw` ({} when its section is missing), and the key's last part."""
    section, _, name = key.rpartition(".")
    holder = raw.get(section) if section else raw
    return (holder if isinstance(holder, dict) else {}), name
