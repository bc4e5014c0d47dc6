"""Where server-side jobs may read and write: every path and URI of a spec is confined, and each job owns its directory.

A client names files on the server's (or cluster's) disks, so each path field is resolved once (symlinks and `..`
included), must land under one of the roots the operator configured (`raysft serve --allowed-root`, default: the
server's working directory), and is passed on resolved. Relative paths resolve against the first root. `file://`
URIs and strings that merely contain `://` are local paths like any other. A remote URI (`s3://...`) must lie
under a prefix the operator allows (`--allowed-storage s3://bucket/prefix`) and carry no query, fragment, user
info or `.`/`..` segments (pyarrow reads options such as `endpoint_override` from a query string). A model
`name_or_path` shaped like a hub id (`org/model`) that is not a directory under the first root is a hub id.

Jobs are kept apart:
- `output_dir` defaults to `<jobs root>/<job id>`; one the client names must not exist yet (a root, another job's
  directory or any existing directory is refused), must not lie inside another job's directory, and lies under the
  jobs root only as `<jobs root>/<this job id>`. CreateJob creates it (`claim`) with a `.raysft-job` marker.
- `checkpoint.storage_path` gets the job id appended (`<storage_path>/<job id>`), so two jobs never share a Ray run;
  a local one may not lie inside another job's directory, and CreateJob creates and marks it like output_dir.
- Inputs (model, adapter, data) may not lie inside another job's directory; `job:<id>` names another job's
  output (its `adapter/` as `model.init_adapter`, its `model/` as `model.name_or_path`), resolved server-side.

Tune search spaces: a key that holds a whole section with paths (`model`, `data`, `checkpoint`) is refused, as is
`checkpoint.storage_path` (each trial's checkpoints live under the campaign's); every listed value of the other path
keys goes through the same checks as the field itself, so every trial spec the space produces is confined.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable, Optional

from raysft.config import JobSpec, Violation, is_hub_id
from raysft.config.paths import PATH_FIELDS, SOURCE_FIELDS
from raysft.rundir import ADAPTER_DIR, MODEL_DIR
from raysft.service.jobs.errors import InvalidArgument
from raysft.service.jobs.storedspec import StoredSpec

__all__ = ["PathPolicy", "JOB_REF", "MARKER"]

JOB_REF = "job:"
MARKER = ".raysft-job"  # in each job's output_dir: the job id that owns it
_UNSEARCHABLE = ("model", "data", "checkpoint", "checkpoint.storage_path")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
_JOB_OUTPUT = {"adapter": ADAPTER_DIR, "model": MODEL_DIR}  # role -> what job:<id> names in that job's output_dir

JobOutput = Callable[[str], str]  # job id -> that job's output_dir; raises LookupError(why not) when unusable


class PathPolicy:
    """Confines spec paths to `roots` and remote URIs to `allowed_storage`; jobs write under `jobs_root`.

    Args:
        reserved: the server's whole jobs directory (default: `jobs_root`); a tenant's policy has its own
            `<jobs root>/<tenant>` as jobs_root, and no path of it may lie elsewhere under `reserved`.
    """

    def __init__(self, roots: list[str | Path], jobs_root: str | Path, allowed_storage: tuple[str, ...] = (), *,
                 reserved: Optional[str | Path] = None):
        if not roots:
            raise ValueError("give at least one allowed root")
        self.roots = [Path(r).expanduser().resolve() for r in roots]
        self.jobs_root = Path(jobs_root).expanduser().resolve()
        self.reserved = Path(reserved).expanduser().resolve() if reserved is not None else self.jobs_root
        for prefix in allowed_storage:
            if not _SCHEME.match(prefix) or _uri_problem(prefix) or prefix.startswith("file:"):
                raise ValueError(f"--allowed-storage {prefix!r}: give a remote URI prefix such as s3://bucket/prefix "
                                 "(no query string; local directories are --allowed-root)")
        self.allowed_storage = tuple(p.rstrip("/") for p in allowed_storage)

    def for_tenant(self, tenant: str, roots: Optional[tuple[str, ...]] = None) -> "PathPolicy":
        """The policy of a tenant's jobs: its roots (default: these), and `<jobs root>/<tenant>` for its jobs'
        directories, which its `job:<id>` outputs may lie in; the rest of the jobs root is off limits to it."""
        own = self.jobs_root / tenant
        return PathPolicy([*(roots or self.roots), own], own, self.allowed_storage, reserved=self.reserved)

    def apply(self, spec: JobSpec, job_id: Optional[str], job_output: Optional[JobOutput] = None) -> StoredSpec:
        """The spec as the job stores it: what was set, with paths resolved and output_dir filled in.

        Args:
            spec: a validated spec.
            job_id: the id the job will get; None for validate-only (output_dir stays unset when not given).
            job_output: resolves `job:<id>` references; None refuses them.

        Raises:
            InvalidArgument: a path or URI the policy refuses (each such field named).
        """
        check = _Check(self, job_id, job_output or _no_jobs)
        raw = spec.model_dump(mode="json", exclude_unset=True)
        for key, role in PATH_FIELDS.items():
            _edit(raw, key, lambda v, k=key, role=role: check.value(k, v, role))
        for key in SOURCE_FIELDS:
            section, name = key.split(".")
            for i, source in enumerate(raw.get(section, {}).get(name) or []):
                source["path"] = check.value(f"{key}.{i}.path", source["path"], "read")
        self._confine_search_space(raw, check)
        _confine_tracking(raw.get("tracking") or {}, check)
        if "output_dir" not in raw and job_id is not None:
            raw["output_dir"] = str(self.jobs_root / job_id)
        if check.problems:
            raise InvalidArgument(check.problems, "paths the server does not allow")
        return StoredSpec.parsed(raw)  # resolved paths keep a valid spec valid; this parse guards that promise

    def claim(self, raw: dict, job_id: str) -> list[Path]:
        """Create the job's output_dir and local storage directory (neither may exist: two jobs racing for one
        directory get one each), each marked as the job's; returns them for `release`.

        Raises:
            InvalidArgument: one exists already (the field named); nothing stays claimed.
        """
        wanted = [("output_dir", Path(raw["output_dir"]))]
        storage = (raw.get("checkpoint") or {}).get("storage_path")
        if storage and not _SCHEME.match(storage) and Path(storage) != wanted[0][1]:  # == with storage: <jobs root>
            wanted.append(("checkpoint.storage_path", Path(storage)))
        made: list[Path] = []
        for field, folder in wanted:
            folder.parent.mkdir(parents=True, exist_ok=True)
            try:
                folder.mkdir(mode=0o750)
            except FileExistsError:
                self.release(made)
                raise InvalidArgument([Violation(field, f"{folder} exists; name a new directory, or leave {field} unset "
                                                        "for one of the job's own")]) from None
            (folder / MARKER).write_text(job_id + "\n", encoding="utf-8")
            made.append(folder)
        return made

    @staticmethod
    def release(folders: list[Path]) -> None:
        """Remove claimed directories no stored job came to own (they hold only the marker)."""
        for folder in reversed(folders):
            (folder / MARKER).unlink(missing_ok=True)
            try:
                folder.rmdir()
            except OSError:
                pass

    def owner(self, path: Path, root: Path) -> Optional[str]:
        """The job whose directory holds `path` (a resolved path under `root`): a marker on the way up, or the
        first directory under the jobs root (jobs from before markers)."""
        if path.is_relative_to(self.jobs_root) and path != self.jobs_root:
            return path.relative_to(self.jobs_root).parts[0]
        for folder in (path, *path.parents):
            if (folder / MARKER).is_file():
                return (folder / MARKER).read_text(encoding="utf-8").strip() or folder.name
            if folder == root:
                break
        return None

    def _confine_search_space(self, raw: dict, check: "_Check") -> None:
        for key, dist in ((raw.get("tune") or {}).get("search_space") or {}).items():
            where = f"tune.search_space.{key}"
            if key in _UNSEARCHABLE:
                check.problems.append(Violation(where, "cannot be searched on this server: search the keys inside it "
                                                       "(e.g. data.train, model.name_or_path); trial checkpoints live "
                                                       "under the campaign's checkpoint.storage_path"))
                continue
            role = PATH_FIELDS.get(key, "read" if key in SOURCE_FIELDS else None)
            for listed in ("choice", "grid"):
                for i, value in enumerate(dist.get(listed) or []):
                    dist[listed][i] = check.nested(f"{where}.{listed}.{i}", value, role)


def _confine_tracking(tracking: dict, check: "_Check") -> None:
    """Trackers write only inside the job's output_dir or to a server: no client-chosen local path or file store."""
    if (tracking.get("tensorboard") or {}).get("log_dir") is not None:
        check.problems.append(Violation("tracking.tensorboard.log_dir", "cannot be set on this server; leave it null "
                                                                         "(event files go to <output_dir>/tensorboard)"))
    uri = (tracking.get("mlflow") or {}).get("tracking_uri")
    if uri is not None and not uri.startswith(("http://", "https://", "databricks")):
        check.problems.append(Violation("tracking.mlflow.tracking_uri", f"{uri!r}: only http(s):// or databricks "
                                                                          "tracking servers on this server"))


class _Check:
    """One spec's checks: the problems found so far, and the job they are for."""

    def __init__(self, policy: PathPolicy, job_id: Optional[str], job_output: JobOutput):
        self.policy, self.job_id, self.job_output = policy, job_id, job_output
        self.problems: list[Violation] = []

    def nested(self, field: str, value: Any, role: Optional[str]) -> Any:
        """A search-space value: a path, a {path, ...} source, or a list of them; anything else for other keys."""
        if role is None:
            return value
        if isinstance(value, list):
            return [self.nested(f"{field}.{j}", v, role) for j, v in enumerate(value)]
        if isinstance(value, dict) and "path" in value:
            return {**value, "path": self.value(f"{field}.path", value["path"], role)}
        return self.value(field, value, role)

    def value(self, field: str, value: Any, role: str) -> Any:
        if not isinstance(value, str) or not value:
            return value
        if value.startswith(JOB_REF) and role in _JOB_OUTPUT:
            return self._job_ref(field, value[len(JOB_REF):], role)
        scheme = _SCHEME.match(value)
        if scheme and scheme.group(1).lower() != "file":
            return self._remote(field, value, role)
        if scheme:
            value = value[len(scheme.group(0)):]
            if not value.startswith("/"):
                return self._refuse(field, f"file URIs name an absolute path (file:///dir/...); got {scheme.group(0)}{value}")
        if role == "model" and is_hub_id(value) and not (self.policy.roots[0] / value).exists():
            return value  # a hub id such as org/model
        return self._local(field, value, role)

    def _refuse(self, field: str, message: str) -> Any:
        self.problems.append(Violation(field, message))
        return None

    def _remote(self, field: str, uri: str, role: str) -> Any:
        problem = _uri_problem(uri)
        if problem:
            return self._refuse(field, f"{uri!r}: {problem}")
        if not any(uri.rstrip("/") == p or uri.startswith(p + "/") for p in self.policy.allowed_storage):
            allowed = ", ".join(self.policy.allowed_storage) or "none"
            return self._refuse(field, f"{uri!r} is not under a storage prefix this server allows ({allowed}); use one "
                                       "of them, a path under the allowed roots, or ask the operator for "
                                       "`raysft serve --allowed-storage PREFIX`")
        if role == "output":
            return self._refuse(field, "output_dir is a local directory; put remote checkpoints in checkpoint.storage_path")
        if role == "storage" and self.job_id:
            return f"{uri.rstrip('/')}/{self.job_id}"
        return uri

    def _local(self, field: str, value: str, role: str) -> Any:
        policy = self.policy
        try:
            path = Path(os.path.expanduser(value))
            resolved = (path if path.is_absolute() else policy.roots[0] / path).resolve()
        except (ValueError, OSError) as exc:  # a NUL byte, a name too long for the file system, ...
            return self._refuse(field, f"{value[:80]!r} is not a usable path ({exc})")
        root = next((r for r in policy.roots if resolved.is_relative_to(r)), None)
        if root is None:
            roots = ", ".join(str(r) for r in policy.roots)
            return self._refuse(field, f"{value!r} resolves to {resolved}, outside the server's allowed roots ({roots}); "
                                       "use a path under one of them")
        if resolved.is_relative_to(policy.reserved) and not resolved.is_relative_to(policy.jobs_root):
            return self._refuse(field, f"{resolved} is in the server's jobs directory {policy.reserved} outside "
                                       f"{policy.jobs_root}, your tenant's; leave it unset, or use a path of your own")
        if role == "output":
            return self._output(field, resolved, root)
        owner = policy.owner(resolved, root)
        if role == "storage":
            if owner not in (None, self.job_id):
                return self._refuse(field, f"{resolved} lies in the directory of job {owner}; choose a directory of "
                                           "your own (each job gets <storage_path>/<job id>)")
            return str(resolved / self.job_id) if self.job_id else str(resolved)
        if owner is not None:
            hint = f"; name it as {JOB_REF}{owner}" if role in _JOB_OUTPUT else ""
            return self._refuse(field, f"{resolved} lies in the directory of job {owner}, which this job may not read"
                                       f"{hint}")
        return str(resolved)

    def _output(self, field: str, resolved: Path, root: Path) -> Any:
        policy = self.policy
        own = policy.jobs_root / self.job_id if self.job_id else None
        if resolved.is_relative_to(policy.jobs_root) and resolved != own:
            return self._refuse(field, f"{resolved} is under the jobs root {policy.jobs_root}, where each job writes "
                                       "only <jobs root>/<its id>; leave output_dir unset for that, or use another "
                                       "directory")
        if resolved.exists() or resolved.is_symlink():
            return self._refuse(field, f"{resolved} exists (a root, another job's directory or other files); name a "
                                       "new directory, or leave output_dir unset")
        owner = policy.owner(resolved.parent, root)
        if owner is not None:
            return self._refuse(field, f"{resolved} lies in the directory of job {owner}; name a directory of your own")
        return str(resolved)

    def _job_ref(self, field: str, job_id: str, role: str) -> Any:
        try:
            out = self.job_output(job_id)
        except LookupError as exc:
            return self._refuse(field, str(exc).strip("'\""))
        target = Path(out) / _JOB_OUTPUT[role]
        if not target.is_dir():
            return self._refuse(field, f"job {job_id} has no {_JOB_OUTPUT[role]}/ in its output_dir {out}")
        resolved = target.resolve()
        if not any(resolved.is_relative_to(r) for r in self.policy.roots):
            return self._refuse(field, f"job {job_id}'s {_JOB_OUTPUT[role]}/ resolves to {resolved}, outside the roots")
        return str(resolved)


def _uri_problem(uri: str) -> Optional[str]:
    rest = uri.split("://", 1)[1]
    if any(c in rest for c in "?#;"):
        return "no query strings, fragments or options in storage URIs (they can redirect the client, e.g. endpoint_override)"
    authority, _, path = rest.partition("/")
    if "@" in authority or not authority:
        return "name a bucket (scheme://bucket/prefix), without user info"
    if any(part in ("", ".", "..") for part in path.rstrip("/").split("/")[: None if path else 0]):
        return "no empty, '.' or '..' segments"
    return None


def _no_jobs(job_id: str) -> str:
    raise LookupError(f"{JOB_REF}{job_id}: this request cannot name other jobs")


def _edit(raw: dict, dotted: str, change: Callable[[Any], Any]) -> None:
    *parents, last = dotted.split(".")
    node = raw
    for part in parents:
        node = node.get(part)
        if not isinstance(node, dict):
            return
    if last in node:
        node[last] = change(node[last])
