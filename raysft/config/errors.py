"""Spec problems as (dotted field, what to do) pairs: pydantic's errors translated, and the exception that lists them."""

from __future__ import annotations

import difflib
from typing import Any, Optional, get_origin

from pydantic import BaseModel, ValidationError

__all__ = ["CrossFieldError", "SpecError", "Violation", "violations"]


class Violation(tuple):
    """One problem with a spec: the dotted field path and what to do about it."""

    __slots__ = ()

    def __new__(cls, field: str, message: str):
        return super().__new__(cls, (field, message))

    field = property(lambda self: self[0])
    message = property(lambda self: self[1])

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class SpecError(ValueError):
    """A spec failed validation; `violations` lists every problem found, each with its field path."""

    def __init__(self, violations: list[Violation]):
        self.violations = list(violations)
        super().__init__("\n".join(str(v) for v in self.violations))


class CrossFieldError(ValueError):
    """Raised inside validators: pydantic wraps it, and `violations` turns its problems back into Violations."""

    def __init__(self, problems: list[Violation]):
        self.problems = problems
        super().__init__("; ".join(map(str, problems)))


def _section_at(root: type[BaseModel], loc: tuple) -> Optional[type[BaseModel]]:
    """The model class under `root` that owns location `loc` (used to suggest key names)."""
    cls: Any = root
    skip = False
    for part in loc:
        if isinstance(part, int) or skip:  # a list index, or a mapping key (tune.search_space.<key>)
            skip = False
            continue
        field = cls.model_fields.get(part) if isinstance(cls, type) and issubclass(cls, BaseModel) else None
        if field is None:
            return None
        skip = get_origin(field.annotation) is dict
        cls = _model_in(field.annotation)
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _model_in(annotation: Any) -> Any:
    """First BaseModel subclass inside an annotation (Optional[X], list[X], X)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _translate(root: type[BaseModel], error: dict) -> list[Violation]:
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith(("function-", "literal[", "list[", "str", "bool"))))
    path = ".".join(str(p) for p in loc)
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "value_error" and isinstance(ctx.get("error"), CrossFieldError):
        return [Violation(".".join(filter(None, [path, v.field])), v.message) for v in ctx["error"].problems]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        owner = _section_at(root, loc[:-1])
        names = list(owner.model_fields) if owner else []
        close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(names)}"
        return [Violation(path, f"unknown key; {hint}")]
    if kind == "missing":
        return [Violation(path, "required; add it to the spec")]
    if kind == "literal_error":
        return [Violation(path, f"got {error.get('input')!r}; must be one of {ctx.get('expected')}")]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        return [Violation(path, f"must be {op} {bound} (got {error.get('input')!r})")]
    return [Violation(path, f"{error['msg']} (got {error.get('input')!r})")]


def _dedupe(violations: list[Violation]) -> list[Violation]:
    # A union (e.g. use_gpu: bool | "auto") reports one error per branch: keep one line per field.
    seen: dict[str, Violation] = {}
    for v in violations:
        seen.setdefault(v.field, v)
    return list(seen.values())


def violations(exc: ValidationError, root: type[BaseModel]) -> list[Violation]:
    """The problems pydantic found validating `root`, one line per field, with dotted paths and fixes."""
    return _dedupe([v for error in exc.errors() for v in _translate(root, error)])
