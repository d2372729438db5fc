"""The rft_cycle trigger form in a real Airflow UI: `airflow standalone` with the project's dags/, headless
Chromium at 1,400 px opening the Trigger dialog, every section expanded in turn and photographed.

Screenshots go to the test's tmp folder (or RFTFLOW_SCREENSHOT_DIR), one PNG per section; the test prints
their paths.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest
from airflow_ui import CHROMIUM, Browser, _get, admin_token, airflow_standalone

from rftflow.cycle.params import INTERNAL, SECTIONS, build_params

pytestmark = pytest.mark.slow

DIALOG = "Array.from(document.querySelectorAll('[role=dialog]')).find(d => d.innerText.includes('Trigger Dag'))"


def _click(browser: Browser, label: str) -> None:
    """A real mouse click on the dialog's button labelled `label` (the accordion ignores synthetic .click())."""
    box = browser.js(f"(() => {{ const d = {DIALOG}; const el = d && Array.from(d.querySelectorAll('button'))"
                     f".find(b => b.innerText.trim() === {json.dumps(label)}); if (!el) return null; "
                     "el.scrollIntoView({block: 'center'}); const r = el.getBoundingClientRect(); "
                     "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
    assert box, f"no {label!r} button in the trigger dialog"
    for kind in ("mousePressed", "mouseReleased"):
        browser.call("Input.dispatchMouseEvent", session=True, type=kind, x=box[0], y=box[1], button="left",
                     clickCount=1)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (Debian: apt-get install chromium; .ci/run does)")
def test_trigger_form_shows_sections_descriptions_and_no_internal_fields(tmp_path, monkeypatch):
    monkeypatch.setenv("RFTFLOW_TRACKING", "off")
    shots = Path(os.environ.get("RFTFLOW_SCREENSHOT_DIR") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    form = build_params()
    home = tmp_path / "airflow-home"
    browser = None
    try:
        with airflow_standalone(home, (tmp_path / "artifacts").as_uri(), tmp_path / "standalone.log") as base:
            token = admin_token(home, base)
            deadline = time.monotonic() + 90
            while (found := _get(f"{base}/api/v2/dags/rft_cycle", token))[0] != 200:
                assert time.monotonic() < deadline, f"rft_cycle not parsed in time: {found[1][:500]}"
                time.sleep(1)

            browser = Browser(tmp_path / "chromium")
            browser.call("Network.setCookie", session=True, name="_token", value=token, url=base, httpOnly=True)
            browser.call("Emulation.setDeviceMetricsOverride", session=True, width=1400, height=2400,
                         deviceScaleFactor=1, mobile=False)
            browser.open(f"{base}/dags/rft_cycle")
            browser.wait_for("Array.from(document.querySelectorAll('button'))"
                             ".some(b => b.innerText.trim() === 'Trigger')", 60)
            browser.js("Array.from(document.querySelectorAll('button')).find(b => b.innerText.trim() === 'Trigger')"
                       ".click()")
            browser.wait_for(f"!!({DIALOG})", 30)

            buttons = browser.js(f"Array.from({DIALOG}.querySelectorAll('button')).map(b => b.innerText.trim())")
            assert [b for b in buttons if b in SECTIONS] == list(SECTIONS), buttons

            shown: list[str] = []  # the dialog's text with each section open
            for section in SECTIONS:
                _click(browser, section)
                fields = {k: p for k, p in form.items() if p.schema["section"] == section}
                first = next(iter(fields.values())).schema["title"]
                browser.wait_for(f"{DIALOG}.innerText.includes({json.dumps(first)})", 15)
                time.sleep(0.5)  # the accordion's opening animation, for the screenshot only
                text = browser.js(f"{DIALOG}.innerText")
                for name, param in fields.items():
                    assert param.schema["title"] in text, f"{section}: {name} not shown"
                    described = param.description or param.schema["description_md"]
                    # The first words of the description (Markdown renders without its backticks).
                    assert described.replace("`", "")[:25] in text, f"{section}: {name} shown without description"
                shown.append(text)
                shot = browser.call("Page.captureScreenshot", session=True, format="png",
                                    captureBeyondViewport=True)
                path = shots / f"trigger-form-{section.lower()}.png"
                path.write_bytes(base64.b64decode(shot["data"]))
                print(f"screenshot: {path}")
                _click(browser, section)  # close it again, before the next one moves under the pointer
                browser.wait_for(f"!{DIALOG}.innerText.includes({json.dumps(first)})", 15)
                time.sleep(0.5)

            # The internal fields (cycle, parent_run_id) are not in the form: their former labels are nowhere.
            assert set(INTERNAL) == {"cycle", "parent_run_id"}
            for text in shown:
                assert "Cycle number" not in text and "Parent run" not in text
    finally:
        if browser is not None:
            browser.close()
