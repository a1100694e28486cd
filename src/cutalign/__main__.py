"""`python -m cutalign` is the `cutalign` command."""

from cutalign.cli import main

main()
