"""Run the `blend` command line from a checkout: `python cli.py validate specs/*`.

The installed wheel provides the same command as the `blend` console script; this file is not part
of the wheel (there is no top-level `cli` module once installed).
"""

from blendspec.cli import main

if __name__ == "__main__":
    main()
