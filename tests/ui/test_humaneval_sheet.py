"""The human-eval sheet (`trainforge humaneval export`'s sheet.html) driven in headless Chromium from file://:
pick answers, Save CSV, import the downloaded file with `trainforge humaneval import`, and get the win rate that
was clicked. Keeps a screenshot under test-artifacts/ui/."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ui

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]

if not Path(CHROMIUM).is_file():
    pytest.skip("no chromium browser (install Debian's: apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="no Playwright client (pip install 'trainforge[ui]')")

from trainforge.evaluation.humaneval import write_sheet  # noqa: E402


def test_sheet_clicks_round_trip_to_the_win_rate(tmp_path):
    n = 10
    prompts = [f'prompt {i}: "quoted", with a comma <b>and markup</b>' for i in range(n)]
    folder = write_sheet(
        tmp_path / "he",
        prompts,
        {"good": [f"good answer {i}" for i in range(n)], "bad": [f"bad answer {i}\nsecond line" for i in range(n)]},
        seed=3,
    )
    verdicts = ["good"] * 6 + ["bad"] * 2 + ["tie"] * 2  # win rate of `good`: 6 / (6 + 2), ties excluded
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900}, accept_downloads=True)
        errors = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto((folder / "sheet.html").as_uri())
        for i, verdict in enumerate(verdicts, start=1):
            card = page.locator("section", has=page.locator(f'input[name="p{i}"]'))
            if verdict == "tie":
                side = "tie"
            else:
                side = "A" if card.locator("pre").nth(1).inner_text().startswith(verdict) else "B"
            card.locator(f'input[value="{side}"]').check()
        with page.expect_download() as download:
            page.click("#save")
        assert download.value.suggested_filename == "sheet.csv"
        download.value.save_as(folder / "filled.csv")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "test_humaneval_sheet.png"), full_page=True)
        browser.close()
    assert not errors, f"JavaScript errors on the page: {errors}"

    done = subprocess.run(
        [sys.executable, "-m", "trainforge.cli", "humaneval", "import", str(folder / "filled.csv")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((folder / "results.json").read_text())
    assert (result["a"], result["wins"], result["losses"], result["ties"]) == ("good", 6, 2, 2)
    assert result["win_rate"] == 0.75
