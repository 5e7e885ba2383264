"""`python -m fmtransfer`: the `fmtransfer` command."""

from fmtransfer.cli import main

main()
