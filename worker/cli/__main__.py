"""`python -m worker.cli`: the same as `balancectl`."""

from worker.cli import main

main()
