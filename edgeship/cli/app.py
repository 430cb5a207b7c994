"""The typer app, the console, logging, and ``main``: EdgeshipError -> message and exit code.

Exit codes: 0 done and every gate passed, 1 a gate failed (parity, latency regression), 2 bad
usage or bad input, 3 a bug in edgeship (an unexpected exception, printed with its traceback).
"""

from __future__ import annotations

import logging
import sys
import traceback
from typing import Any

import typer

from edgeship.errors import EXIT_BAD_INPUT, EXIT_BUG, EdgeshipError

app = typer.Typer(
    name="edgeship", no_args_is_help=True, add_completion=False, rich_markup_mode=None,
    help="Ship trained PyTorch models to the edge: export, quantize, check, compare, inspect, run and profile bundles.",
)


def console(stderr: bool = False):
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal:
        out.width = 120  # logs and CI: wide enough for the parity table
    return out


def setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console(True), show_path=False, show_time=False)],
                        force=True)


def main() -> None:
    """Entry point: EdgeshipError -> message and its exit code, without a traceback; any other
    exception is a bug: its traceback, a line saying so, exit 3."""
    import edgeship.cli  # noqa: F401 - registers every command on ``app``

    try:
        rc = app(standalone_mode=False)  # returns typer.Exit's code in this mode
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except EdgeshipError as e:
        from rich.text import Text

        console(True).print(Text.assemble(("error: ", "bold red"), str(e)))
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:
        # typer ships its own copy of click's exceptions: recognise them by shape
        usage: Any = e
        if hasattr(usage, "show") and isinstance(getattr(usage, "exit_code", None), int):
            usage.show()
            sys.exit(EXIT_BAD_INPUT if usage.exit_code == 2 else usage.exit_code)
        traceback.print_exc()
        print("edgeship: this is a bug (an unexpected error, not a problem with your input); "
              "please report it with the traceback above.", file=sys.stderr)
        sys.exit(EXIT_BUG)
