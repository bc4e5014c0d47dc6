"""Dotted keys set in a nested spec mapping: `a.b.c=value` overrides from the command line and a tune trial's values."""

from __future__ import annotations

from typing import Any

import yaml

from raysft.config.errors import SpecError, Violation

__all__ = ["apply_overrides", "set_values"]


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides (values parsed as YAML) to a nested mapping, in place.

    Raises:
        SpecError: an override without `=` or that descends into a non-mapping.
    """
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecError([Violation(item, "an override looks like key.path=value, e.g. train.epochs=3")])
        parts = key.strip().split(".")
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise SpecError([Violation(".".join(parts[: i + 1]), f"is a value, not a section; cannot set {key}")])
            node = child
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
    return raw


def set_values(raw: dict, values: dict[str, Any]) -> dict:
    """Set dotted keys of a nested spec mapping to already-typed values, in place.

    Unlike `apply_overrides`, values are not parsed as YAML (a tune trial's 1e-05 stays a float).
    """
    for key, value in values.items():
        *parents, last = key.split(".")
        node = raw
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    return raw
