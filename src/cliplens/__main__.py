"""``python -m cliplens``: the same as the ``cliplens`` command."""

from cliplens.cli import run

run()
