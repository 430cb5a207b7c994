"""The ``edgeship`` command line: options -> config -> library call -> render.

``app`` holds the typer app and ``main`` (exit codes); ``options`` the option groups shared by
commands; one module per command; ``render`` prints tables with rich. Commands orchestrate
nothing: each builds a config from its options, calls one library function and renders the result.
"""

from edgeship.cli import check, compare, export, inspect, profile, quantize, run, tune, web  # noqa: F401 - register commands
from edgeship.cli.app import app, main

__all__ = ["app", "main"]
