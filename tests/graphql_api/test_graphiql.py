"""GraphiQL (development) works offline: its page names the API's own copies of its scripts and
styles, which the API serves, unchanged from the npm packages the page's integrity hashes name."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from html.parser import HTMLParser

import pytest
from playwright.async_api import Browser, Route, expect

from penguinmails.settings import Settings
from tests.graphql_api.conftest import Api, serve


@pytest.fixture
async def development(settings: Settings) -> AsyncIterator[Api]:
    async for api in serve(settings.model_copy(update={"environment": "development"})):
        yield api


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str | None]] = []  # (url, integrity)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        url = named.get("src") or (named.get("href") if tag == "link" else None)
        if url and not url.startswith("data:"):
            self.found.append((url, named.get("integrity")))


async def test_graphiql_names_only_the_apis_own_assets_and_they_are_served(
    development: Api,
) -> None:
    page = await development.http.get(f"{development.url}/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "graphiql" in page.text
    parser = _Assets()
    parser.feed(page.text)
    assert len(parser.found) == 7
    for url, integrity in parser.found:
        assert url.startswith("/static/graphiql/"), url
        asset = await development.http.get(f"{development.url}{url}")
        digest = base64.b64encode(hashlib.sha384(asset.content).digest()).decode()
        assert asset.status_code == 200 and integrity == f"sha384-{digest}", url


@pytest.mark.slow
async def test_graphiql_renders_in_a_browser_with_every_other_host_unreachable(
    development: Api, browser: Browser
) -> None:
    context = await browser.new_context()
    elsewhere: list[str] = []

    async def only_the_api(route: Route) -> None:
        if route.request.url.startswith(development.url):
            await route.continue_()
        else:
            elsewhere.append(route.request.url)
            await route.abort()

    await context.route("**/*", only_the_api)
    page = await context.new_page()
    await page.goto(f"{development.url}/graphql")
    await expect(page.locator(".graphiql-query-editor")).to_be_visible(timeout=15000)
    await context.close()
    assert elsewhere == []
