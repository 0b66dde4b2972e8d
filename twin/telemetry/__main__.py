"""``python -m twin.telemetry forward JOURNAL``: deliver a batch journal to the broker.

Started by ``poc-twin run --broker``; run it by hand to deliver a journal whose
forwarder gave up or never ran (it resumes from ``<journal>.telemetry.json``).
``fleet-worker`` runs a share of a simulated fleet (see twin.telemetry.fleet);
its sites arrive on stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from twin.telemetry.forwarder import Forwarder
from twin.telemetry.site import SiteRecord
from twin.telemetry.topics import BrokerURL, TelemetryError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m twin.telemetry")
    sub = parser.add_subparsers(dest="cmd", required=True)
    fwd = sub.add_parser("forward", help="publish a batch journal to the broker")
    fwd.add_argument("journal")
    fwd.add_argument("--broker", default=os.environ.get("POC_TWIN_BROKER"))
    fwd.add_argument("--parent-pid", type=int, default=None, help="stop when it is gone + drained")
    fwd.add_argument("--once", action="store_true", help="deliver what is there, then stop")
    give_up = float(os.environ.get("POC_TWIN_TELEMETRY_GIVE_UP_S", "86400"))
    fwd.add_argument("--give-up-s", type=float, default=give_up, help="max time offline")
    sub.add_parser("fleet-worker", help="simulated sites, given on stdin (twin.telemetry.fleet)")
    args = parser.parse_args(argv)
    if args.cmd == "fleet-worker":
        from twin.telemetry.fleet import worker

        return worker(sys.stdin, sys.stdout)
    if not args.broker:
        print("error: no broker: give --broker or set POC_TWIN_BROKER", file=sys.stderr)
        return 2
    try:
        broker = BrokerURL.parse(args.broker)
    except TelemetryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    record = SiteRecord.beside(args.journal)
    forwarder = Forwarder(args.journal, broker, record=record)
    ok = asyncio.run(
        forwarder.run(
            until_ended=not args.once, parent_pid=args.parent_pid, give_up_s=args.give_up_s
        )
    )
    record.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
