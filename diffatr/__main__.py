"""`python -m diffatr ...` runs the command line, like the `diffatr` script."""

from .cli import main

main()
