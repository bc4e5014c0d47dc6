"""The tune section: how each searched key is drawn, the campaign settings, and the search space checked against the
spec it varies (every key a training key, every listed value one the spec accepts)."""

from __future__ import annotations

import copy
import difflib
import types
from typing import TYPE_CHECKING, Any, Literal, Optional, Union, get_args, get_origin

from pydantic import BaseModel, Field, ValidationError, model_validator

from raysft.config.errors import CrossFieldError, Violation, violations
from raysft.config.overrides import set_values
from raysft.config.sections import Metric, Section, score_order

if TYPE_CHECKING:
    from raysft.config.spec import JobSpec

__all__ = ["SearchDistribution", "TuneSpec", "tune_problems"]

_DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice", "grid")


class SearchDistribution(Section):
    """How one searched key is drawn; exactly one field is set."""

    loguniform: Optional[tuple[float, float]] = None
    """[low, high]: real numbers spread evenly on a log scale (learning rates); 0 < low < high."""
    uniform: Optional[tuple[float, float]] = None
    """[low, high]: real numbers spread evenly."""
    randint: Optional[tuple[int, int]] = None
    """[low, high]: integers, both ends included."""
    choice: Optional[list[Any]] = Field(None, min_length=1)
    """Values drawn at random (random, optuna), or each tried once (grid, one_at_a_time)."""
    grid: Optional[list[Any]] = Field(None, min_length=1)
    """Every value tried, crossed with the other grid keys (Ray Tune's grid_search)."""

    @property
    def kind(self) -> str:
        """The name of the distribution that is set."""
        return next(n for n in _DISTRIBUTIONS if getattr(self, n) is not None)

    @model_validator(mode="after")
    def _exactly_one(self) -> "SearchDistribution":
        named = [n for n in _DISTRIBUTIONS if getattr(self, n) is not None]
        if len(named) != 1:
            raise CrossFieldError([Violation("", f"set exactly one of {', '.join(_DISTRIBUTIONS)}; got {', '.join(named) or 'none'}")])
        bounds = self.loguniform or self.uniform or self.randint
        if bounds and not bounds[0] < bounds[1]:
            raise CrossFieldError([Violation(named[0], f"[low, high] needs low < high; got {list(bounds)}")])
        if self.loguniform and self.loguniform[0] <= 0:
            raise CrossFieldError([Violation("loguniform", f"a log scale needs low > 0; got {self.loguniform[0]:g}")])
        return self


class TuneSpec(Section):
    search_space: dict[str, SearchDistribution] = Field(default_factory=dict)
    """Dotted training keys to search, each with one distribution, e.g. train.learning_rate: {loguniform: [1.0e-5, 5.0e-4]}."""
    search: Literal["random", "grid", "optuna", "one_at_a_time"] = "random"
    """random / grid: Ray Tune's sampling and grid search; optuna: Bayesian (TPE) search; one_at_a_time: vary each
    key alone around the base spec and report each factor's effect."""
    scheduler: Literal["asha", "none"] = "asha"
    """asha: stop weak trials early at their evaluations (asynchronous successive halving); none: every trial runs to its end."""
    num_samples: int = Field(8, gt=0)
    """Trials drawn by random and optuna search (each grid key multiplies them, as in Ray Tune); grid and
    one_at_a_time run each combination once."""
    max_concurrent_trials: Optional[int] = Field(None, gt=0)
    """At most this many trials at once, and never more than the cluster fits (each trial needs scaling.num_workers
    × resources_per_worker); the others wait as pending. Default: as many as fit."""
    metric: Metric = "eval_loss"
    """Ranks trials (each by its best evaluation) and is what ASHA and optuna optimise; equals checkpoint.keep_best_by."""
    mode: Optional[Literal["min", "max"]] = None
    """min for eval_loss, max for exact_match; filled in when unset."""
    time_budget_s: Optional[float] = Field(None, gt=0)
    """Stop the campaign (running trials included) after this many seconds."""
    grace_period_steps: int = Field(2, gt=0)
    """ASHA: optimizer steps every trial runs before it can be stopped; later rungs at grace × reduction_factor^k steps."""
    reduction_factor: float = Field(3, gt=1)
    """ASHA: the best 1 / reduction_factor of the trials at a rung go on to the next."""

    @model_validator(mode="after")
    def _checks(self) -> "TuneSpec":
        problems: list[Violation] = []
        best = score_order(self.metric)
        if self.mode is None:
            self.mode = best
        elif self.mode != best:
            problems.append(Violation("mode", f"{self.metric} is better when {'higher' if best == 'max' else 'lower'}; "
                                              f"set mode: {best} or leave it out"))
        if not self.search_space:
            problems.append(Violation("search_space", "is empty; add at least one dotted training key, e.g. "
                                                      "train.learning_rate: {loguniform: [1.0e-5, 5.0e-4]}"))
        if problems:
            raise CrossFieldError(problems)
        return self


# ---------------------------------------------------------------------------------- search space

def _section_model(annotation: Any) -> Optional[type[BaseModel]]:
    """The section model a key can descend into: X or Optional[X] (not a list of X)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, types.UnionType) and len(args) == 1:
        return _section_model(args[0])
    return None


def _dotted_keys(cls: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in cls.model_fields.items():
        keys.append(prefix + name)
        sub = _section_model(field.annotation)
        if sub is not None and sub is not TuneSpec:
            keys.extend(_dotted_keys(sub, f"{prefix}{name}."))
    return keys


def _leaf_types(annotation: Any) -> set:
    """Python types a field accepts: Union[int, float] -> {int, float}; Literal["a", True] -> {str, bool}."""
    if get_origin(annotation) is Literal:
        return {type(a) for a in get_args(annotation)}
    if get_origin(annotation) in (Union, types.UnionType):
        return set().union(*(_leaf_types(a) for a in get_args(annotation)))
    return {get_origin(annotation) or annotation}


def _search_key_problem(key: str, dist: SearchDistribution, search: str, base: dict, spec: JobSpec) -> Optional[str]:
    """Why `key: dist` cannot be searched from the base spec (`base`: its unset-free dump), or None."""
    if key == "output_dir" or key.split(".")[0] == "tune":
        return "cannot be searched: trials write under the campaign's output_dir and share its tune section"
    cls, parts, node = type(spec), key.split("."), spec  # node: the base spec's section along the key
    for i, part in enumerate(parts):
        field = cls.model_fields.get(part)
        if field is None:
            close = difflib.get_close_matches(key, [k for k in _dotted_keys(type(spec)) if k != "output_dir"], n=1, cutoff=0.6)
            return f"unknown key; did you mean '{close[0]}'?" if close else "unknown key; give a dotted training key such as train.learning_rate"
        if i < len(parts) - 1:
            cls = _section_model(field.annotation)
            if cls is None:
                return f"{'.'.join(parts[:i + 1])} is a value, not a section"
            node = getattr(node, part, None)
            if node is None and search == "one_at_a_time":
                return f"one_at_a_time varies a key around its base value, but {'.'.join(parts[:i + 1])} is not set; add it to the spec"
    kind = dist.kind
    listed = kind in ("choice", "grid")
    if search in ("grid", "one_at_a_time") and not listed:
        return f"search: {search} tries listed values; use {{choice: [...]}} or {{grid: [...]}} instead of {kind}"
    if search == "optuna" and kind == "grid":
        return "optuna draws values; use {choice: [...]}, or search: grid"
    if not listed:
        accepted = _leaf_types(field.annotation)
        wanted = int if kind == "randint" else float
        if wanted not in accepted:
            names = " or ".join(sorted(t.__name__ for t in accepted if t is not type(None)))
            alt = " or {randint: [low, high]}" if int in accepted else ""
            return f"{kind} draws {'integers' if kind == 'randint' else 'real numbers'} but {key} takes {names}; use {{choice: [...]}}{alt}"
    for value in getattr(dist, kind):
        raw = set_values(copy.deepcopy(base), {key: value})
        try:
            type(spec).model_validate(raw)
        except ValidationError as exc:
            found = violations(exc, type(spec))
            return f"{value!r} does not fit: " + "; ".join(map(str, found))
    return None


def tune_problems(spec: JobSpec) -> list[Violation]:
    """The tune section checked against the rest of the spec: metric, and every key and value of the search space."""
    tune, out = spec.tune, []
    if tune.metric == "exact_match" and (spec.eval.generate is None or spec.eval.generate.metric != "exact_match"):
        out.append(Violation("tune.metric", "exact_match needs eval.generate.metric: exact_match"))
    if tune.metric == "eval_loss" and not (spec.data.validation or spec.data.validation_split > 0):
        out.append(Violation("tune.metric", "eval_loss needs validation data; set data.validation or data.validation_split > 0"))
    if spec.checkpoint.keep_best_by != tune.metric:
        out.append(Violation("checkpoint.keep_best_by", f"is {spec.checkpoint.keep_best_by} but tune.metric is {tune.metric}; "
                                                        "set both to the same metric (it ranks checkpoints and trials alike)"))
    base = spec.model_dump(mode="json", exclude_unset=True, exclude={"tune"})
    for key, dist in tune.search_space.items():
        problem = _search_key_problem(key, dist, tune.search, base, spec)
        if problem:
            out.append(Violation(f"tune.search_space.{key}", problem))
    return out
