"""A shift at the operator station, in a real headless Chromium against a real batch process.

The batch (`poc-twin run` on the simulated bench) waits at the bedside for the
identity scan, with an alarm raised. An operator signs in, holds it with a
signature, acknowledges the alarm, restarts it and scans wristband and bag with
a scanner that types and presses Enter; the batch completes; QA signs in and
approves the record. The journal must hold every one of those acts, signed by
the person who did it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import Chromium, Page
from site_users import PEOPLE, Site
from station_harness import RunningStation, wait_for_event

from twin.access.esign import check_signatures
from twin.journal import read_events, verify

ROOT = Path(__file__).resolve().parents[2]
EXE = str(Path(sys.executable).with_name("poc-twin"))
PATIENT, BAG = "P-0001", "BAG-0001"


def bedside_recipe(folder: Path) -> Path:
    """The smoke recipe with an identity scan before the culture and a monitor that trips
    once the bag is warm (an alarm for the operator to acknowledge)."""
    text = (ROOT / "recipes" / "smoke.yaml").read_text()
    text = text.replace(
        "\nprocedure:",
        "\nmonitors:\n  - {name: warm bag, pv: temperature_c, high: 30, reaction: none}\n"
        "\nprocedure:",
    )
    text = text.replace(
        "          - {phase: add, material: activator",
        "          - {phase: confirm_identity, on_failure: abort}\n"
        "          - {phase: add, material: activator",
    )
    path = folder / "bedside.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def batch(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    runs = tmp_path / "runs"
    runs.mkdir()
    journal = runs / "bedside1.sqlite"
    proc = subprocess.Popen(
        [
            *(EXE, "run", str(bedside_recipe(tmp_path)), "--bench", str(ROOT / "benches/sim.yaml")),
            *("-q", "--journal", str(journal), "--operator", "eve", "--pace", "60"),
            *("--patient-id", PATIENT, "--bag-id", BAG),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        wait_for_event(journal, "identity_requested", proc)
        wait_for_event(journal, "alarm", proc)
        yield journal, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


async def fill(page: Page, selector: str, value: str) -> None:
    await page.evaluate(
        f"document.querySelector({json.dumps(selector)}).value = {json.dumps(value)}"
    )


async def submit(page: Page, form: str) -> None:
    """Submit a form and wait for the page it leads to."""
    await page.evaluate("window.beforeSubmit = true")
    await page.evaluate(f"document.querySelector({json.dumps(form)}).requestSubmit()")
    await page.wait_for("!window.beforeSubmit && document.readyState === 'complete'")


async def sign_in(page: Page, user: str) -> None:
    await page.wait_for("location.pathname === '/login'")
    await fill(page, "input[name=user]", user)
    await fill(page, "input[name=password]", PEOPLE[user][2])
    await submit(page, "form[action='/login']")


async def signed_act(page: Page, button: str, reason: str, user: str) -> str:
    """Press a signed button, sign the dialog, and return the outcome the page shows."""
    await page.wait_for(f"document.querySelector({json.dumps(button)}) !== null")
    await page.evaluate(f"document.querySelector({json.dumps(button)}).click()")
    assert await page.evaluate("document.getElementById('sign').open")
    await fill(page, "#sign input[name=reason]", reason)
    await fill(page, "#sign input[name=password]", PEOPLE[user][2])
    await submit(page, "#sign form")
    return str(await page.evaluate("document.querySelector('[role=status]').textContent"))


def test_an_operator_holds_acknowledges_restarts_scans_and_qa_approves(
    batch: tuple[Path, subprocess.Popen[str]], site: Site
) -> None:
    journal, proc = batch
    state = "document.getElementById('state').textContent"

    async def shift() -> dict[str, str]:
        seen: dict[str, str] = {}
        async with RunningStation(journal.parent, site.users) as station, Chromium() as browser:
            page = await browser.open(f"{station.base}/batch/bedside1")
            await sign_in(page, "kim")
            assert await page.evaluate("location.pathname") == "/batch/bedside1"
            await page.wait_for(f"{state}.includes('waiting for the identity scan')")
            seen["hold"] = await signed_act(
                page, "button[data-command=hold]", "check the bag before the scan", "kim"
            )
            await page.wait_for(f"{state} === 'Held'")  # the live part follows the batch
            seen["ack"] = await signed_act(
                page, "button[data-alarm]", "bag is at 37 °C as intended", "kim"
            )
            seen["restart"] = await signed_act(
                page, "button[data-command=restart]", "bag checked", "kim"
            )
            await page.wait_for(f"{state}.includes('waiting for the identity scan')")
            # the scanner types the wristband code and Enter, then the bag code and Enter
            await page.evaluate("document.getElementById('scan-patient').focus()")
            await page.type(PATIENT)
            await page.press_enter()
            assert await page.evaluate("document.activeElement.id") == "scan-bag"
            await page.type(BAG)
            await page.press_enter()
            assert await page.evaluate("document.activeElement.id") == "scan-password"
            await page.type(PEOPLE["kim"][2])
            await submit(page, "form[action$='/identity']")
            seen["scan"] = str(
                await page.evaluate("document.querySelector('[role=status]').textContent")
            )
            await page.wait_for(f"{state} === 'Complete'", timeout=60)
            await submit(page, "form[action='/logout']")
            await page.evaluate("location.href = '/batch/bedside1'")
            await page.wait_for("location.pathname === '/login'")
            await sign_in(page, "quinn")
            await page.wait_for("document.querySelector(\"form[action$='/review']\") !== null")
            await fill(page, "form[action$='/review'] input[name=comment]", "record complete")
            await page.evaluate("document.querySelector('input[name=approve]').checked = true")
            await fill(page, "form[action$='/review'] input[name=password]", PEOPLE["quinn"][2])
            await submit(page, "form[action$='/review']")
            seen["approve"] = str(
                await page.evaluate("document.querySelector('[role=status]').textContent")
            )
        return seen

    seen = asyncio.run(shift())
    assert proc.wait(60) == 0, proc.communicate()[1]
    assert seen["hold"].startswith("hold: accepted")
    assert "acknowledgement: accepted" in seen["ack"]
    assert seen["restart"].startswith("restart: accepted")
    assert seen["scan"].startswith("identity scan matches this batch")
    assert seen["approve"] == "record approved by Quinn Ash (quinn)"
    events = list(read_events(journal))
    commands = [(e.data["command"], e.data["operator"]) for e in events if e.kind == "command"]
    assert ("hold", "kim") in commands and ("restart", "kim") in commands
    assert [e.data["user"] for e in events if e.kind == "alarm_ack"] == ["kim"]
    scans = [e.data for e in events if e.kind == "identity_confirmation"]
    assert [(s["operator"], s["match"]) for s in scans] == [("kim", True)]
    approvals = [e.data for e in events if e.kind == "record_signature"]
    assert [(a["user"], a["meaning"]) for a in approvals] == [("quinn", "approved")]
    signers = {e.data["user"] for e in events if e.kind == "signature"}
    assert signers == {"eve", "kim", "quinn"}  # eve signed the run on the development bench
    assert verify(journal).ok and check_signatures(events).ok
