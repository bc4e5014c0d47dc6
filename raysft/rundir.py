"""The layout of a run's output directory: the one place its file names are spelled.

`raysft train` writes it, `raysft tune` writes one per trial (and its own files beside them), and model
loading, export, eval, the job service and its console read it. A checkpoint holds the same weights
directories and spec file as the run that saved it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from raysft.config import JobSpec, load_spec

__all__ = ["RunDir", "SPEC_FILE", "ADAPTER_DIR", "MODEL_DIR", "WEIGHT_DIRS"]

SPEC_FILE = "spec.yaml"  # the resolved spec the run trained with
ADAPTER_DIR = "adapter"  # the PEFT adapter (lora / qlora)
MODEL_DIR = "model"  # the full model (full fine-tunes, and `--merge` exports)
WEIGHT_DIRS = (ADAPTER_DIR, MODEL_DIR)


class RunDir:
    """A run's output directory (`output_dir`): where each of its files lives, and readers of the ones read back."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        self.spec_file = self.root / SPEC_FILE
        self.adapter, self.model = self.root / ADAPTER_DIR, self.root / MODEL_DIR
        self.summary_file = self.root / "summary.json"  # written when the run finished
        self.metrics_file = self.root / "metrics.jsonl"  # a line per logged step and evaluation
        self.events_file = self.root / "events.jsonl"  # what watchers saw, numbered by `seq`
        self.samples_file = self.root / "samples.jsonl"  # generations of the last evaluation
        self.loss_curve = self.root / "loss_curve.png"
        self.best_checkpoint_file = self.root / "best_checkpoint.json"  # which checkpoint adapter/ came from
        self.tune_summary_file = self.root / "tune_summary.json"  # a campaign's output_dir
        self.trials = self.root / "trials"  # a campaign's: a run directory per trial

    @property
    def records(self) -> tuple[Path, ...]:
        """The run's record files (spec, metrics, events, loss curve, samples): what a copy of it keeps beside its weights."""
        return self.spec_file, self.metrics_file, self.events_file, self.loss_curve, self.samples_file

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def is_run(self) -> bool:
        """Whether a run got as far as saving its spec here."""
        return self.spec_file.is_file()

    def saved_spec(self) -> Optional[JobSpec]:
        """The spec the run saved (None when it saved none). Raises SpecError when the file is no valid spec."""
        return load_spec(self.spec_file) if self.is_run() else None

    def summary(self) -> Optional[dict]:
        """summary.json, written when the run finished (None before)."""
        return json.loads(self.summary_file.read_text(encoding="utf-8")) if self.summary_file.exists() else None
