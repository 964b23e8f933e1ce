"""``python -m aiforge.cli`` — the same as the ``aiforge`` command."""

from aiforge.cli import main

main()
