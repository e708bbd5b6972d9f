"""The transfers page in real headless Chromium: it lists a running transfer and plots its
throughput from a fake buffer ``/stats``; a screenshot goes to ``tests/artifacts/``.

Needs Debian ``chromium`` + ``chromium-driver`` and ``pip install selenium``.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from airflow_provider_lclstream.api.app import Principal, build_app
from airflow_provider_lclstream.api.models import parse_submission
from tests.conftest import service_unavailable
from tests.unit.api.fakes import SYNTHETIC, FakeBuffer, MemoryTransferStore

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROME_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1200,900",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def site() -> Iterator[dict[str, Any]]:
    """The API mounted at /lclstream (as the plugin is) over a store with a running transfer."""
    import uvicorn

    store = MemoryTransferStore()
    with FakeBuffer(msg_rate=25.0, msg_bytes=4_000_000, wobble=0.5) as buffer:
        done = store.create(parse_submission({**SYNTHETIC, "events": 10}), "alice")
        store.advance(done.id, buffer={"output_url": "tcp://b:1", "metrics_url": None})
        done.dag_run_state = "success"
        running = store.create(parse_submission(SYNTHETIC), "alice")
        store.advance(
            running.id,
            buffer={"output_url": "tcp://b:2", "metrics_url": buffer.url},
            start_consumers="success",
            run_streamer="running",
        )
        root = FastAPI()
        root.mount("/lclstream", build_app(store, lambda: Principal("alice")))
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(root, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        yield {"url": f"http://127.0.0.1:{port}/lclstream/ui", "running": running.id}
        server.should_exit = True
        thread.join(5)


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        service_unavailable("chromium", "selenium is not installed (pip install selenium)")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        service_unavailable("chromium", "apt-get install -y chromium chromium-driver")
    profile = tempfile.mkdtemp(prefix="lclstream-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in [*CHROME_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_page_shows_running_transfer_progress(site: dict[str, Any], browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(site["url"] + "?interval=300")
    from selenium.common.exceptions import StaleElementReferenceException

    wait = WebDriverWait(browser, 15, ignored_exceptions=(StaleElementReferenceException,))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#transfers tbody tr")) == 2)
    # Read the table in one script call: it is re-rendered on every poll, so element handles
    # found in one call can be stale in the next.
    rows = browser.execute_script(
        "const out = {};"
        "for (const r of document.querySelectorAll('#transfers tbody tr'))"
        "  out[r.dataset.id] = r.querySelectorAll('td')[3].textContent.trim();"
        "return out;"
    )
    assert rows[site["running"]] == "ready" and "completed" in rows.values()
    # the running transfer is selected by default and its numbers come from the buffer
    wait.until(lambda d: d.find_element(By.ID, "selected-id").text == site["running"])
    wait.until(lambda d: d.find_element(By.ID, "mbps").text not in ("", "–"))
    assert 50.0 <= float(browser.find_element(By.ID, "mbps").text) <= 150.0  # 100 MB/s +- 50%
    assert 125.0 <= float(browser.find_element(By.ID, "events-rate").text) <= 375.0
    assert browser.find_element(By.ID, "selected-state").text == "ready"
    assert browser.find_element(By.ID, "producers").text == "0/2"
    assert "run_streamer=running" in browser.find_element(By.ID, "tasks").text
    first = int(browser.find_element(By.ID, "events").text)
    wait.until(lambda d: int(d.find_element(By.ID, "events").text) > first)  # live, not static
    time.sleep(2.5)  # enough points for a visible curve
    plotted = browser.execute_script(
        "const c=document.getElementById('plot');"
        "const d=c.getContext('2d').getImageData(0,0,c.width,c.height).data;"
        "let n=0; for (let i=0;i<d.length;i+=4) if (d[i]>200 && d[i+1]<150) n++; return n;"
    )
    assert plotted > 50, "the MB/s line (orange) was not drawn"
    assert "error" not in browser.find_element(By.ID, "status").text
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "lclstream_transfers_ui.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
