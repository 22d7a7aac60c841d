"""`python -m blendspec.cli …` is the `blend` command (as `python -m blendspec` is)."""

from blendspec.cli import main

if __name__ == "__main__":
    main()
