"""The ``poc-twin`` command line (contract: ../shared/design/CLI.md).

Exit codes: 0 success/Complete; 1 failure (journal broken, device error); 2 invalid
input, nothing started; 3 batch ended Stopped/Aborted; 4 command refused or batch
left Held; 5 some devices did not answer.
"""

import contextlib
import errno
import os
import sys

from twin.cli import batch, benches, control, forecast, records, recovery, station, whatif
from twin.cli.common import EXIT_FAIL, app

__all__ = [
    "app",
    "batch",
    "benches",
    "control",
    "forecast",
    "main",
    "records",
    "recovery",
    "station",
    "whatif",
]


#: Why a write to standard output can fail: the disk or quota is full, the file too large,
#: the device broken, the reader gone.
_OUTPUT_FAILURES = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EPIPE})


def main() -> None:
    """``poc-twin``: the app; output that cannot be written (``> /dev/full``, a full disk, a
    reader gone) ends it with one sentence and exit 1, not a traceback (``--debug`` keeps it).

    Failures a command expects (its journal, a report file) are its own sentences already;
    what reaches here is a write nobody guarded, nearly always the command's output."""
    try:
        app()
    except OSError as exc:
        if exc.errno not in _OUTPUT_FAILURES or "--debug" in sys.argv:
            raise
        with contextlib.suppress(OSError, ValueError):  # no more output, nor at exit's flush
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        if exc.errno != errno.EPIPE:  # a reader that left needs no message
            what = exc.filename or "the output"
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(f"error: cannot write {what}: {exc.strerror}\n")
                sys.stderr.flush()
        sys.exit(EXIT_FAIL)
