"""The transfers page's subscriptions section in real headless Chromium: the caller's
subscriptions and the count of run starts that no subscription matched."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from airflow_provider_lclstream.api import subscriptions as service
from airflow_provider_lclstream.api.app import Principal, build_app
from airflow_provider_lclstream.api.subscriptions import MemorySubscriptionStore
from airflow_provider_lclstream.config.consumers import ConsumerTemplates
from airflow_provider_lclstream.config.subscriptions import SubscriptionPatch, SubscriptionSpec
from tests.integration.test_ui_transfers_page import browser, free_port  # noqa: F401
from tests.unit.api.fakes import MemoryTransferStore


@pytest.fixture
def site() -> Iterator[str]:
    import uvicorn

    subs = MemorySubscriptionStore()
    for experiment, detector in (("mfxl1023", "jungfrau4M"), ("mfxl1024", "epix10k2M")):
        spec = SubscriptionSpec.model_validate(
            {"match": {"experiment": experiment}, "template": {"detector_name": detector}}
        )
        service.create(subs, spec, "alice", True, ConsumerTemplates(), {})
    service.update(
        subs,
        "sub2",
        SubscriptionPatch(enabled=False),
        "alice",
        True,
        ConsumerTemplates(),
        {},
    )
    subs.unmatched_events = [
        {"kind": "run_start", "experiment": "cxil0001", "run": 5},
        {"kind": "run_start", "experiment": "cxil0001", "run": 6},
    ]
    root = FastAPI()
    app = build_app(MemoryTransferStore(), lambda: Principal("alice"), subscriptions=subs)
    root.mount("/lclstream", app)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(root, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/lclstream/ui"
    server.should_exit = True
    thread.join(5)


def test_page_lists_subscriptions_and_unmatched_run_starts(
    site: str,
    browser: Any,  # noqa: F811
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(site)
    wait = WebDriverWait(browser, 15, ignored_exceptions=(StaleElementReferenceException,))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#subscriptions tbody tr")) == 2)
    rows = browser.execute_script(
        "return [...document.querySelectorAll('#subscriptions tbody tr')].map("
        "  r => [...r.querySelectorAll('td')].map(td => td.textContent.trim()));"
    )
    assert rows == [
        ["sub1", "alice", "mfxl1023", "jungfrau4M", "lclstream-receive", "yes"],
        ["sub2", "alice", "mfxl1024", "epix10k2M", "lclstream-receive", "no"],
    ]
    wait.until(lambda d: d.find_element(By.ID, "unmatched-count").text == "2")
    assert "cxil0001 r6" in browser.find_element(By.ID, "unmatched-latest").text
