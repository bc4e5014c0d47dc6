"""Text fit for a terminal: data text printed whatever it holds, and text a server sent made harmless."""

from __future__ import annotations

import re

__all__ = ["print_text", "safe"]

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def print_text(text: str) -> None:
    """Print to stdout; lone surrogates (valid in JSON strings) as backslash escapes instead of an error."""
    # Lone surrogates (valid in JSON strings) cannot be encoded; backslashreplace writes them as \udXXX,
    # which is still the same JSON string escape.
    print(text.encode("utf-8", "backslashreplace").decode("utf-8"))


def safe(text: str, keep_lines: bool = False) -> str:
    """Job-controlled text fit for a terminal: control characters (escape sequences, and line breaks unless kept)
    shown as \\xNN instead of acting on the terminal."""
    pattern = _CONTROL_BUT_LINES if keep_lines else _CONTROL
    return pattern.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
