"""``python -m cliplens.cli``: the same as the ``cliplens`` command."""

from cliplens.cli import run

run()
