"""The one error type of `raysft.data`: training data a user must fix before it can be used."""

__all__ = ["DataError"]


class DataError(ValueError):
    """Training data cannot be used as given; the message names the file (and line) and the fix."""
