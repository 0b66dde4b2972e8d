"""The ``poc-twin`` command line (contract: ../shared/design/CLI.md).

Exit codes: 0 success/Complete; 1 failure (journal broken, device error); 2 invalid
input, nothing started; 3 batch ended Stopped/Aborted; 4 command refused or batch
left Held; 5 some devices did not answer.
"""

from twin.cli import batch, benches, control, forecast, records, recovery, station, whatif
from twin.cli.common import app

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


def main() -> None:
    app()
