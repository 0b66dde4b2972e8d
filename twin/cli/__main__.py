"""``python -m twin.cli``: the same as the ``poc-twin`` command."""

from twin.console import main

main()
