"""`python -m bench.fps`: see bench/fps/__init__.py for what it measures."""

from bench.fps.cli import main

main()
