"""`python -m tools.bench`: see tools/bench/__init__.py for what it measures."""

from tools.bench.cli import main

main()
