"""The batch record as PDF, printed by headless Chromium from the same HTML.

A QA department files and signs PDFs; printing the self-contained HTML with the
browser that tests it keeps one source of truth (no second layout engine to drift
from the HTML): the page styles are the record's own ``@media print`` rules.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from twin.errors import PocTwinError

__all__ = ["find_chromium", "print_pdf"]

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str:
    """The headless browser's executable, or PocTwinError saying how to get one."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise PocTwinError(
        "printing the record to PDF needs headless Chromium: run 'make system-deps' "
        "(or install chromium); the HTML record is written"
    )


def print_pdf(html: Path, pdf: Path, *, timeout_s: float = 120.0) -> None:
    """Print ``html`` (a file) to ``pdf`` with Chromium's print engine (A4/Letter as the
    browser's locale says; page numbers in the footer)."""
    browser = find_chromium()
    target = pdf.resolve()
    target.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="poc-twin-print-") as profile:
        command = [
            browser,
            "--headless",
            "--no-sandbox",  # as root (CI) Chromium refuses to start sandboxed
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={profile}",
            f"--print-to-pdf={target}",
            html.resolve().as_uri(),
        ]
        try:
            done = subprocess.run(command, capture_output=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise PocTwinError(f"Chromium did not print {html} within {timeout_s:g} s") from None
    if not target.exists() or target.read_bytes()[:5] != b"%PDF-":
        said = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise PocTwinError(f"Chromium did not print {html} to PDF ({said[0][:200]})")
