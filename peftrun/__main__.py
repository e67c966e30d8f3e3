"""`python -m peftrun` is the `peftrun` command."""

from peftrun.cli import app

app()
