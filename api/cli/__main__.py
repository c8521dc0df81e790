"""`python -m api.cli`: the same command line as the `longform` script."""
from api.cli import main

main()
