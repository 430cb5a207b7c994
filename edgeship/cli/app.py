"""The typer app, the console, logging, and ``main``: EdgeshipError -> message and exit code.

Exit codes: 0 done and every gate passed, 1 a gate failed (parity, latency regression), 2 bad
usage or bad input, 3 a bug in edgeship (an unexpected exception, printed with its traceback).

Conventions every command follows: ``-q/--quiet`` prints only the result line and errors;
``-v/--verbose`` adds debug logging; a file option given ``-`` writes to stdout (the tables then go
to stderr); every file written is named on the console; colours are off when the output is not a
terminal or ``NO_COLOR`` is set (rich honours both); ``edgeship --version``; shell completion
through ``--install-completion`` / ``--show-completion``.

Everything printed is text, never interpreted: a bundle or model can name its variants, candidates
and inputs anything, so the console reads no rich markup (``[/]``) or emoji codes in what it is
given, and control characters (terminal escape sequences, bidirectional overrides) are shown as
escapes such as ``\x1b`` (:func:`visible`).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from edgeship.errors import EXIT_BAD_INPUT, EXIT_BUG, EdgeshipError, SpecError

app = typer.Typer(
    name="edgeship", no_args_is_help=True, add_completion=True, rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Ship trained PyTorch models to the edge: export, quantize, check, compare, inspect, run and profile bundles.",
)


def _version(value: bool) -> None:
    if value:
        import edgeship

        print(f"edgeship {edgeship.__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                          help="Print edgeship's version and exit.")] = None) -> None:
    """Ship trained PyTorch models to the edge: export, quantize, check, compare, inspect, run and profile bundles."""


# C0 and C1 controls but newline and tab, DEL, zero-width and bidirectional formatting characters
_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_INVISIBLE_OR_LINE = re.compile(_INVISIBLE.pattern[:-1] + "\n\t]")


def visible(text: object, lines: bool = False) -> str:
    """``text`` with its control characters written as escapes (``\x1b``, ``\u202e``), so printing
    it cannot move the cursor, retitle the terminal or reorder what follows; ``lines`` keeps
    newlines and tabs (edgeship's own multi-line messages)."""
    pattern = _INVISIBLE if lines else _INVISIBLE_OR_LINE
    return pattern.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}",
                       str(text))


@functools.lru_cache(maxsize=1)
def _console_class() -> type:
    from rich.console import Console

    class TextConsole(Console):
        """A rich console whose strings are text: no markup or emoji codes, controls escaped."""

        def render_str(self, text: str, **kwargs: Any):
            kwargs["markup"] = kwargs["emoji"] = False
            return super().render_str(visible(text, lines=True), **kwargs)

    return TextConsole


def console(stderr: bool = False, quiet: bool = False):
    """The console for tables and progress: stderr when ``stderr`` (a report goes to stdout);
    ``quiet`` prints nothing through it. Strings given to it are printed as text (see the
    module's docstring); ``rich.text.Text`` objects made from data go through :func:`visible`."""
    out = _console_class()(stderr=stderr, highlight=False, quiet=quiet, markup=False, emoji=False)
    if not out.is_terminal:  # logs and CI: COLUMNS where set, else wide enough for the parity table
        columns = os.environ.get("COLUMNS", "")
        out.width = int(columns) if columns.isdigit() and 40 <= int(columns) <= 1000 else 120
    return out


def to_stdout(*paths: object) -> bool:
    """Whether any file option was given as ``-`` (stdout)."""
    return any(str(p) == "-" for p in paths if p is not None)


def one_stdout(**flags: object) -> None:
    """Refuse two reports on stdout (``--json - --junit -`` would write them back to back, which
    neither a JSON nor an XML parser reads); ``flags``: option name (``json``) -> its value.

    Raises:
        SpecError: more than one of them is ``-``.
    """
    dash = [f"--{k.replace('_', '-')}" for k, v in flags.items() if v is not None and str(v) == "-"]
    if len(dash) > 1:
        raise SpecError(f"{', '.join(dash[:-1])} and {dash[-1]} are {'both' if len(dash) == 2 else 'all'} - (stdout), "
                        "where they would run together; "
                        "give all but one of them a file name.")


def write_file(path: Path, write: Callable[[Path], Any], out: Any, flag: str, binary: bool = False) -> None:
    """``write(path)``, or with ``path`` ``-`` the same content on stdout (written to a temporary
    file first, so every writer keeps one signature); then names the file on ``out``. A file that
    cannot be written (a missing folder, a full disk) is a usage error naming ``flag``."""
    if str(path) != "-":
        try:
            write(path)
        except OSError as e:
            raise SpecError(f"{flag} {path}: cannot write it ({e.strerror or e}); check that its folder exists "
                            "and is writable, and that the disk has room.") from e
        out.print(f"wrote {Path(path).resolve()}", markup=False)
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgeship-stdout-") as tmp:
        tmp_path = Path(tmp) / "out"
        write(tmp_path)
        sys.stdout.flush()
        if binary:
            sys.stdout.buffer.write(tmp_path.read_bytes())
            sys.stdout.buffer.flush()
        else:
            sys.stdout.write(tmp_path.read_text(encoding="utf-8"))
            sys.stdout.flush()


class _VisibleFormatter(logging.Formatter):
    """Log lines as text: control characters in them (a candidate id from a bundle) escaped."""

    def format(self, record: logging.LogRecord) -> str:
        return visible(super().format(record), lines=True)


def setup_logging(verbose: bool, quiet: bool = False) -> None:
    from rich.logging import RichHandler

    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
    handler = RichHandler(console=console(True), show_path=False, show_time=False, markup=False)
    handler.setFormatter(_VisibleFormatter("%(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def main() -> None:
    """Entry point: EdgeshipError -> message and its exit code, without a traceback; a full disk
    (ENOSPC, EDQUOT) that no command turned into one is exit 2 too, naming the file; any other
    exception is a bug: its traceback, a line saying so, exit 3."""
    import edgeship.cli  # noqa: F401 - registers every command on ``app``

    try:
        rc = app(standalone_mode=False)  # returns typer.Exit's code in this mode
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except EdgeshipError as e:
        from rich.text import Text

        console(True).print(Text.assemble(("error: ", "bold red"), visible(e, lines=True)))
        if getattr(e, "stuck", False):  # an inference the runtime could not stop (OpenVINO) would hold the exit
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(e.exit_code)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            _bug()
        import tempfile

        console(True).print(f"error: {e}; free space there (TMPDIR is {tempfile.gettempdir()}) and run again.",
                            style="bold red")
        sys.exit(EXIT_BAD_INPUT)
    except Exception as e:
        # typer ships its own copy of click's exceptions: recognise them by shape
        usage: Any = e
        if hasattr(usage, "show") and isinstance(getattr(usage, "exit_code", None), int):
            usage.show()
            sys.exit(EXIT_BAD_INPUT if usage.exit_code == 2 else usage.exit_code)
        _bug()


def _bug() -> None:
    """Exit 3 with the traceback of the exception being handled, and a line saying it is a bug."""
    traceback.print_exc()
    print("edgeship: this is a bug (an unexpected error, not a problem with your input); "
          "please report it with the traceback above.", file=sys.stderr)
    sys.exit(EXIT_BUG)
