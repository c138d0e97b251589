"""The ops page (/ops) in headless Chromium against the served API: a customer is refused, staff
log in and watch the platform live: a job enqueued and an alert raised by the test appear."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect
from sqlalchemy import delete, select, update

from graphql_api.ids import parse_id
from jobs import queue
from models.operations import Alert
from models.queue import Job
from models.sessions import Database
from services import alerts, staff
from tests.graphql_api.conftest import Account, Api, sign_up

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[2] / ".penguinmails" / "artifacts"
PASSWORD = "correct horse battery"  # sign_up's


@pytest.fixture
async def page(browser: Browser, api: Api) -> AsyncIterator[Page]:
    """A fresh page that may reach the API only: anything else (a CDN) fails the test."""
    context = await browser.new_context()
    elsewhere: list[str] = []
    context.on("request", lambda r: None if r.url.startswith(api.url) else elsewhere.append(r.url))
    yield await context.new_page()
    await context.close()
    assert elsewhere == []


async def log_in(page: Page, api: Api, account: Account) -> None:
    await page.goto(f"{api.url}/ops")
    await page.fill("input[name=email]", account.email)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")


async def test_a_customer_is_refused_with_a_message(api: Api, page: Page) -> None:
    customer = await sign_up(api, "Customer")
    await log_in(page, api, customer)
    await expect(page.locator("#message")).to_have_text(
        f"{customer.email} is not platform staff: this page is for platform staff only."
    )
    assert await page.locator("#dashboard").is_hidden()
    assert await page.evaluate("sessionStorage.length") == 0


async def test_staff_see_a_new_job_and_a_new_alert_live(api: Api, db: Database, page: Page) -> None:
    operator = await sign_up(api, "Ops")
    async with db.system_session() as session:
        await staff.add(session, operator.email, "test")
    await log_in(page, api, operator)
    await expect(page.locator("#connection")).to_have_text("live")
    await expect(page.locator("#queued")).to_have_text(re.compile(r"^\d+$"))
    before = int(await page.locator("#queued").text_content())
    tenant = parse_id(operator.tenant)[1]
    message = f"ops page test alert {uuid.uuid4().hex[:8]}"
    try:
        async with db.system_session() as session:
            await queue.enqueue(session, "ops_page_test", {}, tenant_id=tenant)
        enqueued_at = time.monotonic()
        await expect(page.locator("#queued")).to_have_text(str(before + 1), timeout=2000)
        shown_after = time.monotonic() - enqueued_at

        async with db.system_session() as session:
            alerts.raise_alert(session, tenant, "ops_page_test", "test", message)
        await expect(page.locator("#alerts")).to_contain_text(message, timeout=3000)

        # Still logged in after a reload: the token is kept in the page's session.
        await page.reload()
        await expect(page.locator("#connection")).to_have_text("live")
        await expect(page.locator("#alerts")).to_contain_text(message)
        await page.wait_for_timeout(3000)  # a few seconds of the depth chart for the picture
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=ARTIFACTS / "ops.png", full_page=True)
        print(f"ops page screenshot: {ARTIFACTS / 'ops.png'}")
    finally:  # the job, the alert, and the webhook jobs the alert's raising and resolving queued
        async with db.system_session() as session:
            raised = (
                await session.scalars(select(Alert.id).where(Alert.tenant_id == tenant))
            ).all()
            await session.execute(
                update(Alert).where(Alert.tenant_id == tenant).values(resolved_at=Alert.created_at)
            )
            await session.execute(
                delete(Job).where(
                    (Job.tenant_id == tenant)
                    | Job.payload["alert_id"].astext.in_([str(a) for a in raised])
                )
            )
    assert shown_after < 2
