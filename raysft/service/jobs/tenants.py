"""Tenants and their tokens, from the operator's tenants file (`raysft serve --tenants tenants.yaml`).

```yaml
tenants:
  support:
    tokens:
      - {sha256: "<hex sha256 of the token>", role: submitter}   # submitter | viewer
    roots: [/data/support]            # optional: where this tenant's paths may lie (default: the server's roots)
    quota: {max_running_jobs: 2, max_queued_jobs: 50, max_workers: 8}   # each optional
admins:
  - {sha256: "<hex>"}                 # see and act on every tenant's jobs
```

The file holds only SHA-256 digests, so a leaked copy lets nobody in. A presented token's digest is compared
with every digest in the file in constant time (hmac.compare_digest, no early exit), so the time an answer
takes says nothing about which tenant, if any, a token is close to. The file is read again on SIGHUP
(`Tenants.reload`) and when its modification time changes (checked at most once a second, on authentication);
a file that no longer parses keeps the tenants in force and logs why.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from raysft.service.jobs.auth import DEFAULT_TENANT, Principal
from raysft.service.jobs.quota import Quota

__all__ = ["Tenants", "Tenant", "TenantsError", "DEFAULT_TENANT", "hash_token"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")  # no "/" or ":": names are parts of paths and idempotency keys
_CHECK_EVERY_S = 1.0
_MAX_FILE_BYTES = 4 << 20


class TenantsError(ValueError):
    """The tenants file cannot be used; the message names the file and the bad field."""


def hash_token(token: str) -> str:
    """The hex SHA-256 digest of a token, as the tenants file holds it."""
    return hashlib.sha256(token.strip().encode()).hexdigest()


# ------------------------------------------------------------------------------------ file schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Digest(_Strict):
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="hex SHA-256 of the token (`raysft tenants hash-token`)")


class _TokenEntry(_Digest):
    role: Literal["submitter", "viewer"]


class _QuotaEntry(_Strict):
    max_running_jobs: Optional[int] = Field(None, ge=1)
    max_queued_jobs: Optional[int] = Field(None, ge=1)
    max_workers: Optional[int] = Field(None, ge=1)


class _TenantEntry(_Strict):
    tokens: list[_TokenEntry] = Field(min_length=1)
    roots: Optional[list[str]] = Field(None, min_length=1)
    quota: _QuotaEntry = _QuotaEntry()

    @field_validator("roots")
    @classmethod
    def _absolute(cls, roots: Optional[list[str]]) -> Optional[list[str]]:
        for root in roots or ():
            if not Path(root).expanduser().is_absolute():
                raise ValueError(f"{root!r}: roots are absolute directories (relative to what would be a guess)")
        return roots


class _File(_Strict):
    tenants: dict[str, _TenantEntry] = {}
    admins: list[_Digest] = []


# ----------------------------------------------------------------------------------------- tenants


@dataclass(frozen=True)
class Tenant:
    """One tenant of the file: its name, its roots (None: the server's) and its quota."""

    name: str
    roots: Optional[tuple[str, ...]]
    quota: Quota


@dataclass(frozen=True)
class _Config:
    tenants: dict[str, Tenant]
    tokens: tuple[tuple[bytes, Principal], ...]  # (digest, who holds it), every token of the file


class Tenants:
    """The tenants file in force, reloaded when it changes.

    Args:
        path: the YAML file.

    Raises:
        TenantsError: the file is missing or invalid (at start there is no earlier one to keep).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        self._stamp = _stamp(self.path)
        self._config = _load(self.path)
        self._checked = time.monotonic()

    @property
    def names(self) -> list[str]:
        """The tenants' names."""
        return sorted(self._config.tenants)

    def principal(self, token: bytes) -> Optional[Principal]:
        """Who holds `token` (the raw bearer token), or None; every digest is compared, in constant time."""
        self._reload_if_changed()
        digest = hashlib.sha256(token).digest()
        found = None
        for known, who in self._config.tokens:
            if hmac.compare_digest(known, digest):  # no break: the loop takes as long whichever matches
                found = who
        return found

    def tenant(self, name: str) -> Optional[Tenant]:
        """The tenant `name` as the file now says, or None (the default tenant, or one removed since)."""
        return self._config.tenants.get(name)

    def quota(self, tenant: str) -> Quota:
        """The caps of `tenant` (no caps for the default tenant or one the file no longer lists)."""
        found = self.tenant(tenant)
        return found.quota if found else Quota()

    def reload(self) -> bool:
        """Read the file again (SIGHUP); returns whether the new one is in force. A bad file keeps the old
        tenants and logs why, so a typo never locks every client out."""
        with self._lock:
            stamp = _stamp(self.path)
            try:
                config = _load(self.path)
            except TenantsError as exc:
                self._stamp = stamp  # logged once per change, not once a second
                log.error("tenants file not reloaded, the tenants in force stay: %s", exc)
                return False
            self._config, self._stamp = config, stamp
        log.info("tenants file %s reloaded: %d tenant(s), %d token(s)", self.path, len(config.tenants), len(config.tokens))
        return True

    def _reload_if_changed(self) -> None:
        now = time.monotonic()
        if now - self._checked < _CHECK_EVERY_S:
            return
        self._checked = now
        if _stamp(self.path) != self._stamp:
            self.reload()


def _stamp(path: Path) -> Optional[tuple[int, int, int]]:
    """What changes when the file does (an editor's rename gives a new inode); None while it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _load(path: Path) -> _Config:
    try:
        info = path.stat()
        if info.st_mode & 0o022 or info.st_uid not in (os.getuid(), 0):  # whoever may write it may add an admin
            raise TenantsError(f"tenants file {path} can be changed by other users, who could make themselves admins; "
                               f"`chmod go-w {path}`, and keep it the server user's (or root's)")
        if info.st_size > _MAX_FILE_BYTES:
            raise TenantsError(f"tenants file {path} is over {_MAX_FILE_BYTES >> 20} MiB; it holds names and digests")
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TenantsError(f"tenants file {path} cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        raise TenantsError(f"tenants file {path} is not YAML: {exc}") from None
    if raw is None:  # also what a reload sees mid-save; `tenants: {}` is how to say "none"
        raise TenantsError(f"tenants file {path} is empty; list tenants: and admins: (README: Tenants and roles)")
    try:
        parsed = _File.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise TenantsError(f"tenants file {path}: {where}: {first['msg']}{more}") from None
    return _config(path, parsed)


def _config(path: Path, parsed: _File) -> _Config:
    tenants, tokens, seen = {}, [], {}
    for name, entry in parsed.tenants.items():
        if not _NAME.fullmatch(name) or name == DEFAULT_TENANT:
            raise TenantsError(f"tenants file {path}: tenants.{name}: a tenant name is 1 – 63 lowercase letters, digits, "
                               f"_ and - starting with a letter, and not {DEFAULT_TENANT!r} (the admins' jobs' tenant)")
        roots = tuple(str(Path(r).expanduser().resolve()) for r in entry.roots) if entry.roots else None
        tenants[name] = Tenant(name, roots, Quota(**entry.quota.model_dump()))
        for i, token in enumerate(entry.tokens):
            tokens.append((f"tenants.{name}.tokens.{i}", token.sha256, Principal(f"{name}/{token.role}", name, token.role)))
    for i, admin in enumerate(parsed.admins):
        tokens.append((f"admins.{i}", admin.sha256, Principal("admin", DEFAULT_TENANT, "admin")))
    out = []
    for where, digest, who in tokens:
        digest = digest.lower()
        if digest in seen:  # one token in two places: which tenant it acts for would be a guess
            raise TenantsError(f"tenants file {path}: {where}: the same sha256 as {seen[digest]}; give each its own token")
        seen[digest] = where
        out.append((bytes.fromhex(digest), who))
    return _Config(tenants, tuple(out))
