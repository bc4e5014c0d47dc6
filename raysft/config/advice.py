"""Practice warnings: settings outside what usually works. Never errors."""

from __future__ import annotations

from raysft.config.errors import Violation
from raysft.config.spec import JobSpec

__all__ = ["advisories"]

# (low, high) learning-rate bands from SFT practice; outside them is a warning, never an error.
_LR_BANDS = {
    "lora": ((5e-5, 5e-4), "LoRA usually trains well at 1e-4 – 2e-4"),
    "rslora": ((1e-5, 5e-5), "rsLoRA scales updates by alpha/sqrt(r) and wants 1e-5 – 5e-5"),
    "full": ((1e-5, 2e-5), "a full fine-tune usually wants 1e-5 – 2e-5"),
}


def advisories(spec: JobSpec) -> list[Violation]:
    """Warnings for settings outside what usually works (never errors)."""
    out: list[Violation] = []
    m, t = spec.model, spec.train
    band = "full" if m.method == "full" else ("rslora" if m.lora.use_rslora else "lora")
    (lo, hi), why = _LR_BANDS[band]
    if not lo <= t.learning_rate <= hi:
        out.append(Violation("train.learning_rate", f"{t.learning_rate:g} is outside {lo:g} – {hi:g}; {why}"))
    if not 1 <= t.epochs <= 10:
        out.append(Violation("train.epochs", f"{t.epochs:g} is outside 1 – 10; 2 – 5 suit most tasks (5 – 10 for generative ones)"))
    if spec.scaling.strategy == "fsdp" and spec.scaling.num_workers == 1:
        out.append(Violation("scaling.strategy", "fsdp with one worker shards nothing; use ddp or more workers"))
    if spec.data.mix and not 0.15 <= sum(x.ratio for x in spec.data.mix) <= 0.3:
        out.append(Violation("data.mix", "15% – 30% general data is what usually limits forgetting"))
    if spec.tune and spec.tune.scheduler == "asha" and not spec.eval.every_steps:
        out.append(Violation("eval.every_steps", "ASHA judges trials at evaluations; unset, it sees only epoch ends and weak trials run whole epochs"))
    return out
