"""A spec from YAML (or a mapping) plus dotted overrides, validated with every problem listed; and back to YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import yaml
from pydantic import ValidationError

from raysft.config.errors import SpecError, Violation, violations
from raysft.config.overrides import apply_overrides
from raysft.config.spec import JobSpec

__all__ = ["load_spec", "parse_spec", "spec_to_yaml"]


def parse_spec(raw: Any) -> JobSpec:
    """Validate a plain mapping into a JobSpec.

    Raises:
        SpecError: listing every problem, each with its dotted field path.
    """
    if not isinstance(raw, dict):
        raise SpecError([Violation("", f"a spec is a mapping with keys model, data, ...; got {type(raw).__name__}")])
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(violations(exc, JobSpec)) from None


def load_spec(source: Union[str, Path, dict], overrides: Optional[list[str]] = None) -> JobSpec:
    """Load a spec from a YAML file (or a mapping) and apply dotted overrides.

    Raises:
        SpecError: the file is missing or not YAML, or the spec is invalid (every problem listed).
    """
    if isinstance(source, dict):
        raw = yaml.safe_load(yaml.safe_dump(source))  # deep copy; overrides must not touch the caller's dict
    else:
        path = Path(source)
        if not path.is_file():
            raise SpecError([Violation("", f"spec file {str(path)!r} not found; pass the path of a YAML spec")])
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
        except yaml.YAMLError as exc:
            raise SpecError([Violation("", f"{path} is not valid YAML: {exc}")]) from None
        raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise SpecError([Violation("", f"a spec is a mapping with keys model, data, ...; got {type(raw).__name__}")])
    return parse_spec(apply_overrides(raw, list(overrides or [])))


def spec_to_yaml(spec: JobSpec) -> str:
    """The fully resolved spec as YAML (every default written out)."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
