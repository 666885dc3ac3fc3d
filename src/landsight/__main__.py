"""``python -m landsight``."""

from landsight.cli import main

main()
