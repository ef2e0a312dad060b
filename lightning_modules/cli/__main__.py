"""``python -m lightning_modules.cli``: the ``convnn`` command."""

from . import main

main()
