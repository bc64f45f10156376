"""`python -m streams` runs the `segstream` command line."""

from streams.cli import main

main()
