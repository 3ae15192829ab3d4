"""`python -m anyfast_cli` behaves exactly like the `anyfast` console script."""

from anyfast_cli.cli import main

main()
