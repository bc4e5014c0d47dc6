"""The one map from errors to exit codes, for `raysft` and its standalone entries (`python -m raysft.tune`,
`python -m raysft.service`).

    0    success
    1    the work ran and failed: a RuntimeError (training or a campaign failed), or a command's own verdict
         (the data check found invalid lines, the estimate does not fit, the job ended FAILED or CANCELLED)
    2    bad input: a ValueError (SpecError, DataError, ModelError, EstimateError, UsageError) or a missing file;
         for `serve` and `jobs` any OSError; for `jobs` a JobServiceError (the server refused or failed the call)
    130  `jobs` interrupted (Ctrl-C while watching)

Errors are printed as `error: <message>` on stderr; `jobs` first shows the control characters in a message (a server
or a job wrote it) as escapes. Error classes are named by their ValueError base, and JobServiceError by its module,
so that importing this map imports neither torch nor grpc: `raysft config show` stays light.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Callable, Optional

from raysft.cli.terminal import safe

__all__ = ["Exits", "LOCAL", "SERVER", "CLIENT", "UsageError", "run"]

FAILED, BAD_INPUT = 1, 2


class UsageError(ValueError):
    """Arguments that are missing or contradict each other; the message says what to pass instead."""


@dataclass(frozen=True)
class Exits:
    """How one command group's errors end the process; a parser sets it as the `exits` default of its commands.

    Attributes:
        bad_input: errors that exit 2.
        bad_input_named: more errors that exit 2, as "module:Class", matched only once their module is loaded (naming
            one imports nothing; an error of a module never loaded cannot have been raised).
        message: what the message goes through before it is printed.
        interrupted: the exit code of Ctrl-C; None lets KeyboardInterrupt through.
    """

    bad_input: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)
    bad_input_named: tuple[str, ...] = ()
    message: Callable[[str], str] = str
    interrupted: Optional[int] = None

    def is_bad_input(self, exc: BaseException) -> bool:
        if isinstance(exc, self.bad_input):
            return True
        for name in self.bad_input_named:
            module, _, cls = name.partition(":")
            loaded = sys.modules.get(module)
            if loaded is not None and isinstance(exc, getattr(loaded, cls)):
                return True
        return False


LOCAL = Exits()  # commands on this machine's files: a permission error is a bug worth its traceback
SERVER = Exits(bad_input=(ValueError, OSError))  # `serve`: unreadable token, TLS or tenants files, a port in use
CLIENT = Exits(bad_input=(ValueError, OSError), bad_input_named=("raysft.service.client:JobServiceError",),
               message=lambda text: safe(text, keep_lines=True), interrupted=130)  # `jobs`


def run(args: argparse.Namespace) -> int:
    """Run the command parsed into `args` (`args.func`, under `args.exits`, LOCAL by default); the exit code."""
    exits: Exits = getattr(args, "exits", LOCAL)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if exits.interrupted is None:
            raise
        return exits.interrupted
    except Exception as exc:
        if exits.is_bad_input(exc):
            code = BAD_INPUT
        elif isinstance(exc, RuntimeError):
            code = FAILED
        else:
            raise
        print(f"error: {exits.message(str(exc))}", file=sys.stderr)
        return code
