"""The ``landsight`` command line (Typer): :func:`main` is the console-script entry point."""

from landsight.cli.main import app, main

__all__ = ["app", "main"]
