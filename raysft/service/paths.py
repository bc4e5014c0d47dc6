"""Where server-side jobs may read and write: every local path of a spec is confined to allowed roots.

A client names files on the server's (or cluster's) disks, so each path field is resolved (symlinks and
`..` included) and must land under one of the roots the operator configured (`raysft serve
--allowed-root`, default: the server's working directory). Relative paths resolve against the first
root. A model `name_or_path` that does not look like a path and does not exist under the first root is a
hub id and is left alone; `checkpoint.storage_path` with a scheme (s3://, gs://) is a URI and left alone.
Unless the client sets it, `output_dir` is `<jobs root>/<job id>`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional

from raysft.config import JobSpec, Violation, parse_spec
from raysft.service.errors import InvalidArgument

__all__ = ["PathPolicy"]

# Spec keys holding paths, and whether a value is a local path (the rest are hub ids or URIs).
_PATH_KEYS: dict[str, str] = {
    "model.name_or_path": "model",
    "model.init_adapter": "local",
    "data.validation": "local",
    "checkpoint.storage_path": "uri",
    "output_dir": "local",
}
_SOURCE_KEYS = ("data.train", "data.mix")  # lists of {path, ...}


class PathPolicy:
    """Confines spec paths to `roots`; `jobs_root` is where jobs without an output_dir write."""

    def __init__(self, roots: list[str | Path], jobs_root: str | Path):
        if not roots:
            raise ValueError("give at least one allowed root")
        self.roots = [Path(r).expanduser().resolve() for r in roots]
        self.jobs_root = Path(jobs_root).expanduser().resolve()

    def apply(self, spec: JobSpec, job_id: Optional[str]) -> dict:
        """The spec as a mapping of what was set, with local paths absolute and output_dir filled in.

        Args:
            spec: a validated spec.
            job_id: the id the job will get; None for validate-only (output_dir stays unset when not given).

        Raises:
            InvalidArgument: a path resolves outside every allowed root (each such field named).
        """
        raw = spec.model_dump(mode="json", exclude_unset=True)
        problems: list[Violation] = []
        for key, kind in _PATH_KEYS.items():
            _edit(raw, key, lambda v, k=key, kind=kind: self._confine(k, v, kind, problems))
        for key in _SOURCE_KEYS:
            section, name = key.split(".")
            for i, source in enumerate(raw.get(section, {}).get(name) or []):
                source["path"] = self._confine(f"{key}.{i}.path", source["path"], "local", problems)
        self._confine_search_space(raw, problems)
        if "output_dir" not in raw and job_id is not None:
            raw["output_dir"] = str(self.jobs_root / job_id)
        if problems:
            raise InvalidArgument(problems, "paths outside the server's allowed roots")
        parse_spec(raw)  # absolute paths keep a valid spec valid; this guards that promise
        return raw

    def _confine_search_space(self, raw: dict, problems: list[Violation]) -> None:
        # A tune campaign may search over paths (base models, data files): each candidate is confined too.
        for key, dist in ((raw.get("tune") or {}).get("search_space") or {}).items():
            kind = _PATH_KEYS.get(key, "local" if key in _SOURCE_KEYS else None)
            if kind is None:
                continue
            for listed in ("choice", "grid"):
                for i, value in enumerate(dist.get(listed) or []):
                    where = f"tune.search_space.{key}.{listed}.{i}"
                    if isinstance(value, str):
                        dist[listed][i] = self._confine(where, value, kind, problems)
                    elif isinstance(value, list):
                        dist[listed][i] = [self._confine_source(f"{where}.{j}", s, problems) for j, s in enumerate(value)]

    def _confine_source(self, where: str, source: Any, problems: list[Violation]) -> Any:
        if isinstance(source, str):
            return self._confine(where, source, "local", problems)
        if isinstance(source, dict) and isinstance(source.get("path"), str):
            return {**source, "path": self._confine(f"{where}.path", source["path"], "local", problems)}
        return source

    def _confine(self, field: str, value: Any, kind: str, problems: list[Violation]) -> Any:
        if not isinstance(value, str) or not value:
            return value
        if kind == "uri" and "://" in value:
            return value
        try:
            if kind == "model" and not self._looks_local(value):
                return value  # a hub id such as org/model
            path = Path(os.path.expanduser(value))
            resolved = (path if path.is_absolute() else self.roots[0] / path).resolve()
        except (ValueError, OSError) as exc:  # a NUL byte, a name too long for the file system, ...
            problems.append(Violation(field, f"{value[:80]!r} is not a usable path ({exc})"))
            return value
        if not any(resolved.is_relative_to(root) for root in self.roots):
            roots = ", ".join(str(r) for r in self.roots)
            problems.append(Violation(field, f"{value!r} resolves to {resolved}, outside the server's allowed roots "
                                             f"({roots}); use a path under one of them"))
            return value
        return str(resolved)

    def _looks_local(self, value: str) -> bool:
        path = Path(os.path.expanduser(value))
        return (path.is_absolute() or value.startswith((".", "~")) or ".." in path.parts or "\\" in value
                or (self.roots[0] / path).exists())


def _edit(raw: dict, dotted: str, change: Callable[[Any], Any]) -> None:
    *parents, last = dotted.split(".")
    node = raw
    for part in parents:
        node = node.get(part)
        if not isinstance(node, dict):
            return
    if last in node:
        node[last] = change(node[last])
