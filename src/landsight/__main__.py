"""``python -m landsight``."""

from landsight.cli import main

if __name__ == "__main__":  # guarded: DDP worker processes re-import the main module
    main()
