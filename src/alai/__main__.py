"""`python -m alai` runs the CLI (useful where the console script is not on PATH)."""

from alai.cli.main import cli

cli()
