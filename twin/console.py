"""The ``poc-twin`` console script: no traceback for a Ctrl-C at either edge of a command.

Loading the command line (typer, rich, pydantic) takes about half a second; a Ctrl-C in
it would otherwise print a traceback from some import. And once a batch has ended and its
exit code is settled, a Ctrl-C pressed while the process closes down only gets a note
(``twin.cli.ctrl_c``), and once the command has returned it is ignored: it must not turn
exit 3 into death by SIGINT. So this module is the smallest thing the script imports,
and it holds both edges.
"""

from __future__ import annotations

import contextlib
import signal
import sys

__all__ = ["EXIT_INTERRUPTED", "main"]

#: A Ctrl-C before any command began (128 + SIGINT, as a shell reports it).
EXIT_INTERRUPTED = 130


def main() -> None:
    try:
        from twin.cli import main as cli_main
        from twin.cli.ctrl_c import CtrlC
    except KeyboardInterrupt:
        sys.stderr.write("poc-twin: interrupted while starting; nothing was started\n")
        sys.exit(EXIT_INTERRUPTED)
    CtrlC.process_exits_after = True  # a batch's end note stays until the process exits
    try:
        cli_main()
    except KeyboardInterrupt:  # before the command began: typer building its command tree
        sys.stderr.write("poc-twin: interrupted while starting; nothing was started\n")
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit as exc:
        if exc.code == EXIT_INTERRUPTED:  # typer's silent answer to a Ctrl-C in a command
            sys.stderr.write("poc-twin: interrupted (Ctrl-C)\n")
        raise
    finally:
        # The exit code is settled. Python puts SIGINT back to the kernel's default while it
        # shuts down, where a late press would kill the process (exit -2); an ignored one
        # it leaves ignored. (Not from another thread: nothing to guard there.)
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGINT, signal.SIG_IGN)
