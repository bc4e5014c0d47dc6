"""The form a job's spec takes inside the service once it is accepted."""

from __future__ import annotations

from functools import cached_property

from raysft.config import JobSpec, parse_spec

__all__ = ["StoredSpec"]


class StoredSpec(dict):
    """A job's spec as stored: the mapping of the fields the client set, with paths resolved (what GetJob returns
    and what runs on Ray), and `model`, the JobSpec it parses to, parsed once per record on first use.

    The mapping stays the record's form because a spec an older server stored may break this server's rules:
    such a job must still list, show and be failed by name (`model` then raises SpecError), not break its reader.
    """

    @cached_property
    def model(self) -> JobSpec:
        return parse_spec(dict(self))

    @classmethod
    def parsed(cls, raw: dict) -> "StoredSpec":
        """`raw` as a StoredSpec whose model is parsed now. Raises SpecError when it is not a valid spec."""
        stored = cls(raw)
        stored.model  # noqa: B018 (parsing is the point: it raises here, not at a later reader)
        return stored
