"""`python -m diffatr.cli` (the form torchrun uses) runs the command line."""

from . import main

main()
