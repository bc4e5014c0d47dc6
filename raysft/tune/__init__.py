"""Hyperparameter campaigns on Ray Tune (`raysft tune`): search spaces, ASHA, one training run per trial,
resume, and the campaign's summary, results table, curves and best adapter."""

__all__ = ["run_campaign", "load_campaign_spec"]


def __getattr__(name: str):
    # Imported on first use: the CLI (`raysft.cli.tune`) must not pay for importing Ray and torch.
    if name in __all__:
        from raysft.tune import campaign

        return getattr(campaign, name)
    raise AttributeError(f"module 'raysft.tune' has no attribute {name!r}")
