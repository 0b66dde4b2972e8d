"""``python -m twin.telemetry forward JOURNAL``: deliver a batch journal to the broker.

Started by ``poc-twin run --broker``; run it by hand to deliver a journal whose
forwarder gave up or never ran (it resumes from ``<journal>.telemetry.json``).
``fleet-worker`` runs a share of a simulated fleet (see twin.telemetry.fleet);
its sites arrive on stdin.

The broker URL comes from ``POC_TWIN_BROKER`` (or ``--broker``), its password
from the URL or from the file named by ``POC_TWIN_BROKER_PASSWORD_FILE``
(twin.telemetry.credentials). A password given in ``--broker`` still works but
is warned about: every user of the machine can read a command line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable

from twin.telemetry.credentials import (
    BROKER_ENV,
    PASSWORD_FILE_ENV,
    password_in_url,
    resolve_broker,
)
from twin.telemetry.forwarder import (
    SETTINGS,
    UNCONFIRMED,
    Forwarder,
    seconds_setting,
    settings_from,
)
from twin.telemetry.site import SiteRecord
from twin.telemetry.topics import TelemetryError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m twin.telemetry")
    sub = parser.add_subparsers(dest="cmd", required=True)
    fwd = sub.add_parser("forward", help="publish a batch journal to the broker")
    fwd.add_argument("journal")
    fwd.add_argument("--broker", help=f"broker URL (default ${BROKER_ENV}); no password here")
    fwd.add_argument("--parent-pid", type=int, default=None, help="stop when it is gone + drained")
    fwd.add_argument("--once", action="store_true", help="deliver what is there, then stop")
    try:
        settings = settings_from(os.environ)
    except TelemetryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def seconds(key: str) -> Callable[[str], float]:
        _, _, zero_ok, most = SETTINGS[key]

        def parse(text: str) -> float:
            try:
                return seconds_setting(
                    f"--{key.replace('_', '-')}", text, zero_ok=zero_ok, most=most
                )
            except TelemetryError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None

        return parse

    fwd.add_argument(
        "--give-up-s",
        type=seconds("give_up_s"),
        default=settings["give_up_s"],
        help="max time offline (0: never give up)",
    )
    fwd.add_argument(
        "--resend-after-s",
        type=seconds("resend_after_s"),
        default=settings["resend_after_s"],
        help="resend what the control site's ack lags behind by after this long (doubling)",
    )
    fwd.add_argument(
        "--confirm-s",
        type=seconds("confirm_s"),
        default=settings["confirm_s"],
        help="an ended batch: wait this long for the control site's ack of its last event",
    )
    sub.add_parser("fleet-worker", help="simulated sites, given on stdin (twin.telemetry.fleet)")
    args = parser.parse_args(argv)
    if args.cmd == "fleet-worker":
        from twin.telemetry.fleet import worker

        return worker(sys.stdin, sys.stdout)
    url = args.broker or os.environ.get(BROKER_ENV)
    if not url:
        print(f"error: no broker: set {BROKER_ENV} (or give --broker)", file=sys.stderr)
        return 2
    if args.broker and password_in_url(args.broker):
        print(
            f"warning: a password on the command line is visible to every user (ps): "
            f"put the URL in {BROKER_ENV} or the password in a file named by {PASSWORD_FILE_ENV}",
            file=sys.stderr,
        )
    try:
        broker = resolve_broker(url)
    except TelemetryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    record = SiteRecord.beside(args.journal)
    forwarder = Forwarder(
        args.journal,
        broker,
        record=record,
        resend_after_s=args.resend_after_s,
        confirm_s=args.confirm_s,
    )
    ok = asyncio.run(
        forwarder.run(
            until_ended=not args.once, parent_pid=args.parent_pid, give_up_s=args.give_up_s
        )
    )
    record.close()
    if not ok:
        return 1  # gave up offline
    return UNCONFIRMED if forwarder.confirmed is False else 0


if __name__ == "__main__":
    sys.exit(main())
