"""`python -m blendspec …` is the `blend` command: for launchers that take a module rather than an
executable (``torchrun -m blendspec policy train …``) and for environments without the script."""

from blendspec.cli import main

if __name__ == "__main__":
    main()
