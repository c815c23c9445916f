"""`python -m scalekit ...` runs the command line."""

from scalekit.cli import main

main()
