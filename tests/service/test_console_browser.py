"""The console in headless Chromium (Debian's, driven by Playwright): log in, see a job appear and advance, see the
loss chart gain points, cancel the job from its page. Screenshots go to test-artifacts/ (printed).

The server is real (gRPC + HTTP, SQLite); Ray is unreachable, so the job's training events are taken into the
store as the supervisor takes them from a running job's log (take_training_events)."""

import datetime as dt
import os
from pathlib import Path

import pytest

from raysft.service.events import take_training_events
from raysft.service.server import create_server
from raysft.service.states import JobState
from service_helpers import NO_RAY, TOKEN, put_job

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"), reason="needs Debian's chromium")]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]


def _metrics(server, job_id, steps):
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    records = [{"seq": s, "time": now, "level": "info", "type": "metrics", "message": f"step {s}",
                "data": {"step": s, "epoch": s / 10, "train_loss": 3.0 - 0.2 * s, "lr": 1e-4, "tokens_per_s": 500.0 + s,
                         "trained_tokens": 100 * s}} for s in steps]
    server.store.update(job_id, lambda j, c: take_training_events(j, c, records, 3, "eval_loss"))


def test_console_login_live_job_chart_and_cancel(workdir):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    print(f"screenshots in {ARTIFACTS}")
    server = create_server("127.0.0.1:0", db_url=f"sqlite:///{workdir}/console.db", token=TOKEN, ray_address=NO_RAY,
                           allowed_roots=[str(workdir)], jobs_root=str(workdir / "runs"), http_port=0)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{server.http_port}/")
            page.fill("#token", "wrong")
            page.click("#login button")
            expect(page.locator("#login-error")).to_have_text("that token was refused")
            page.fill("#token", TOKEN)
            page.click("#login button")
            expect(page.locator("#list")).to_be_visible()
            put_job(server, "raysft-c1", JobState.RUNNING, labels={"team": "support"}, progress={"total_steps": 10})
            row = page.locator("tr[data-job='raysft-c1']")
            expect(row).to_contain_text("RUNNING", timeout=10_000)
            expect(row).to_contain_text("team=support")
            _metrics(server, "raysft-c1", [1, 2, 3])
            expect(row).to_contain_text("3/10", timeout=10_000)
            page.screenshot(path=str(ARTIFACTS / "console-list.png"))
            page.click("a[href='#job=raysft-c1']")
            line = page.locator("#loss-chart polyline").first
            expect(line).to_have_attribute("data-points", "3", timeout=10_000)
            _metrics(server, "raysft-c1", [4, 5, 6])
            expect(line).to_have_attribute("data-points", "6", timeout=10_000)
            page.screenshot(path=str(ARTIFACTS / "console-job.png"), full_page=True)
            page.click("#cancel")
            expect(page.locator("#job-state")).to_have_text("CANCELLING", timeout=10_000)
            assert server.store.get_job("raysft-c1").state == JobState.CANCELLING
            page.screenshot(path=str(ARTIFACTS / "console-cancelled.png"), full_page=True)
            browser.close()
    finally:
        server.stop(grace_s=1)
