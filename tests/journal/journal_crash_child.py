"""A batch in a child process for the kill tests: prints each acknowledged event after its commit.

An acknowledged event is one the engine acts on (transition, command, setpoint,
sample, alarm, ...: everything but a reading or a device's confirmation, which are
committed with the next such event). The journal commits it before
``append`` returns and tells subscribers only afterwards, so a line on stdout
means "this event is durable"; a SIGKILL at any point must not lose it.

usage: python journal_crash_child.py RECIPE BENCH JOURNAL
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from twin.bench import load_bench
from twin.journal import Event, Journal
from twin.recipe import load_recipe
from twin.runner import run_batch

#: Checkpoint often so that most kills land after a signed checkpoint (production: 1000).
CHECKPOINT_EVERY = 100


def main() -> None:
    recipe, bench, journal = sys.argv[1:4]
    assert Journal.__init__.__kwdefaults__ is not None
    Journal.__init__.__kwdefaults__["checkpoint_every"] = CHECKPOINT_EVERY
    out = sys.stdout

    def acknowledge(event: Event) -> None:
        if event.kind not in ("reading", "confirmed"):
            out.write(f"{event.seq} {event.kind} {event.hash}\n")
            out.flush()

    run_batch(
        load_recipe(recipe),
        load_bench(bench),
        Path(journal),
        batch_id=Path(journal).stem,
        operator="crash-test",
        site_key=Path(os.environ["POC_TWIN_SITE_KEY"]),
        subscribers=[acknowledge],
    )


if __name__ == "__main__":
    main()
