"""A local stand-in for Stripe's API, for the real stripe client (`PENGUINMAILS_STRIPE_API_BASE`).

It speaks the request and response shapes of the calls the platform makes — form-encoded bodies
in, JSON objects and Stripe's error shape out — keeps the products and prices it was given, and
records every request for the tests to read. `events` is the list `GET /v1/events` serves, which
a test fills, with objects built by `event`, `subscription` and `invoice` (as a webhook gets them).
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple
from urllib.parse import parse_qs

import stripe
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.graphql_api.conftest import running


class Received(NamedTuple):
    method: str
    path: str
    form: dict[str, list[str]]  # the body's fields, or a GET's query, as parse_qs gives them
    authorization: str
    idempotency_key: str | None = None


class FakeStripe:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.products: dict[str, dict[str, Any]] = {}
        self.prices: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.customers: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}  # a test adds the ones it needs
        self._ids = itertools.count(1)

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1/events", self.list_events, methods=["GET"]),
            Route("/v1/checkout/sessions", self.create_checkout_session, methods=["POST"]),
            Route("/v1/customers", self.create_customer, methods=["POST"]),
            Route("/v1/billing_portal/sessions", self.create_portal_session, methods=["POST"]),
            Route("/v1/subscriptions/{id}", self.retrieve_subscription, methods=["GET"]),
            Route("/v1/subscriptions/{id}", self.update_subscription, methods=["POST"]),
            Route("/v1/products", self.create_product, methods=["POST"]),
            Route("/v1/products/{id}", self.retrieve_product, methods=["GET"]),
            Route("/v1/products/{id}", self.update_product, methods=["POST"]),
            Route("/v1/prices", self.list_prices, methods=["GET"]),
            Route("/v1/prices", self.create_price, methods=["POST"]),
            Route("/v1/prices/{id}", self.update_price, methods=["POST"]),
        ])  # fmt: skip

    def writes(self) -> list[Received]:
        """The requests that could change something (all but GETs)."""
        return [r for r in self.requests if r.method != "GET"]

    async def _receive(self, request: Request) -> dict[str, list[str]]:
        raw = request.url.query if request.method == "GET" else (await request.body()).decode()
        form = parse_qs(raw)
        self.requests.append(
            Received(request.method, request.url.path, form, request.headers["authorization"],
                     request.headers.get("idempotency-key"))
        )  # fmt: skip
        return form

    def _id(self, prefix: str) -> str:
        """Unique across fakes too: the tests share one database, where Stripe ids are unique."""
        return f"{prefix}_{next(self._ids)}{uuid.uuid4().hex[:10]}"

    async def create_checkout_session(self, request: Request) -> JSONResponse:
        await self._receive(request)
        return JSONResponse({"id": "cs_test_1", "object": "checkout.session",
                             "url": "https://checkout.stripe.test/pay/cs_test_1"})  # fmt: skip

    async def create_customer(self, request: Request) -> JSONResponse:
        """Stripe answers a repeated idempotency key with the first answer."""
        form = await self._receive(request)
        key = self.requests[-1].idempotency_key
        known = next((c for c in self.customers.values() if key and c["_key"] == key), None)
        if known is None:
            known = {"id": self._id("cus"), "object": "customer", "email": _one(form, "email"),
                     "name": _one(form, "name"), "metadata": _fields(form, "metadata"), "_key": key}  # fmt: skip
            self.customers[known["id"]] = known
        return JSONResponse({k: v for k, v in known.items() if k != "_key"})

    async def create_portal_session(self, request: Request) -> JSONResponse:
        form = await self._receive(request)
        if _one(form, "customer") not in self.customers:
            return _error(400, "resource_missing", f"No such customer: '{_one(form, 'customer')}'")
        return JSONResponse({"id": self._id("bps"), "object": "billing_portal.session",
                             "customer": _one(form, "customer"), "return_url": _one(form, "return_url"),
                             "url": "https://billing.stripe.test/p/session_1"})  # fmt: skip

    async def retrieve_subscription(self, request: Request) -> JSONResponse:
        await self._receive(request)
        found = self.subscriptions.get(request.path_params["id"])
        return JSONResponse(found) if found else _missing("subscription", request)

    async def update_subscription(self, request: Request) -> JSONResponse:
        form = await self._receive(request)
        found = self.subscriptions.get(request.path_params["id"])
        if found is None:
            return _missing("subscription", request)
        if "cancel_at_period_end" in form:
            found["cancel_at_period_end"] = _one(form, "cancel_at_period_end") == "true"
        for item in found["items"]["data"]:
            if item["id"] == _one(form, "items[0][id]"):
                item["price"] = {"id": _one(form, "items[0][price]")}
        return JSONResponse(found)

    async def list_events(self, request: Request) -> JSONResponse:
        """Newest first, as Stripe lists them (the later-added first within a second)."""
        form = await self._receive(request)
        after = _one(form, "created[gt]")
        found = [e for e in reversed(self.events) if after is None or e["created"] > int(after)]
        found.sort(key=lambda e: e["created"], reverse=True)
        start = _one(form, "starting_after")
        if start is not None:
            ids = [e["id"] for e in found]
            if start not in ids:
                return _error(400, "resource_missing", f"No such event: '{start}'")
            found = found[ids.index(start) + 1 :]
        limit = int(_one(form, "limit") or 10)
        return JSONResponse({"object": "list", "url": "/v1/events",
                             "has_more": len(found) > limit, "data": found[:limit]})  # fmt: skip

    async def create_product(self, request: Request) -> JSONResponse:
        form = await self._receive(request)
        return JSONResponse(self._new_product(_one(form, "name"), _fields(form, "metadata")))

    def _new_product(self, name: str | None, metadata: dict[str, str]) -> dict[str, Any]:
        product = {"id": self._id("prod"), "object": "product", "name": name, "active": True,
                   "metadata": metadata}  # fmt: skip
        self.products[product["id"]] = product
        return product

    async def retrieve_product(self, request: Request) -> JSONResponse:
        await self._receive(request)
        product = self.products.get(request.path_params["id"])
        return JSONResponse(product) if product else _missing("product", request)

    async def update_product(self, request: Request) -> JSONResponse:
        form = await self._receive(request)
        product = self.products.get(request.path_params["id"])
        if product is None:
            return _missing("product", request)
        if "name" in form:
            product["name"] = _one(form, "name")
        if "active" in form:
            product["active"] = _one(form, "active") == "true"
        return JSONResponse(product)

    async def list_prices(self, request: Request) -> JSONResponse:
        form = await self._receive(request)
        keys = _listed(form, "lookup_keys")
        expand = "data.product" in _listed(form, "expand")
        found = [p for p in self.prices.values() if not keys or p["lookup_key"] in keys]
        data = [{**p, "product": self.products[p["product"]]} if expand else p for p in found]
        return JSONResponse({"object": "list", "url": "/v1/prices", "has_more": False,
                             "data": data[: int(_one(form, "limit") or 10)]})  # fmt: skip

    async def create_price(self, request: Request) -> JSONResponse:
        form = await self._receive(request)
        if "product_data[name]" in form:
            product_id = self._new_product(
                _one(form, "product_data[name]"), _fields(form, "product_data[metadata]")
            )["id"]
        else:
            product_id = _one(form, "product")
            if product_id not in self.products:
                return _error(400, "resource_missing", f"No such product: '{product_id}'")
        key = _one(form, "lookup_key")
        holder = next((p for p in self.prices.values() if key and p["lookup_key"] == key), None)
        if holder is not None:
            if _one(form, "transfer_lookup_key") != "true":
                return _error(400, "lookup_key_in_use",
                              f"A price ({holder['id']}) already uses that lookup key.")  # fmt: skip
            holder["lookup_key"] = None
        price = {
            "id": self._id("price"), "object": "price", "active": True,
            "currency": _one(form, "currency"), "unit_amount": int(_one(form, "unit_amount")),
            "recurring": {"interval": _one(form, "recurring[interval]"), "interval_count": 1,
                          "usage_type": "licensed"},
            "lookup_key": key, "product": product_id, "metadata": _fields(form, "metadata"),
            "type": "recurring",
        }  # fmt: skip
        self.prices[price["id"]] = price
        return JSONResponse(price)

    async def update_price(self, request: Request) -> JSONResponse:
        form = await self._receive(request)
        price = self.prices.get(request.path_params["id"])
        if price is None:
            return _missing("price", request)
        if "active" in form:
            price["active"] = _one(form, "active") == "true"
        return JSONResponse(price)


def _one(form: dict[str, list[str]], key: str) -> str | None:
    values = form.get(key)
    return values[0] if values else None


def _listed(form: dict[str, list[str]], name: str) -> list[str]:
    """A list parameter, which the client sends as `name[0]=…&name[1]=…`."""
    return [v for key, values in form.items() if key.startswith(f"{name}[") for v in values]


def _fields(form: dict[str, list[str]], name: str) -> dict[str, str]:
    """A hash parameter, which the client sends as `name[key]=…`."""
    start = f"{name}["
    return {
        key[len(start) : -1]: values[0] for key, values in form.items() if key.startswith(start)
    }


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"type": "invalid_request_error", "code": code, "message": message}}, status
    )


def _missing(kind: str, request: Request) -> JSONResponse:
    return _error(404, "resource_missing", f"No such {kind}: '{request.path_params['id']}'")


@asynccontextmanager
async def running_stripe() -> AsyncIterator[tuple[str, FakeStripe]]:
    """The fake served on a free loopback port: (its base URL, the fake)."""
    fake = FakeStripe()
    async with running(fake.app()) as url:
        yield url, fake


def event(type_: str, obj: dict[str, Any], created: int | None = None) -> dict[str, Any]:
    """A Stripe event about `obj`, created at `created` (now when not given)."""
    return {
        "id": f"evt_{uuid.uuid4().hex}", "object": "event", "api_version": stripe.api_version,
        "type": type_, "created": created or int(time.time()), "data": {"object": obj},
    }  # fmt: skip


def subscription(sub_id: str, customer: str, price: str, status: str, **more: Any) -> dict:
    """A subscription to one price, in its first period (the period sits on the item)."""
    return {
        "id": sub_id, "object": "subscription", "customer": customer, "status": status,
        "cancel_at_period_end": False,
        "items": {"object": "list", "data": [{"id": f"si_{sub_id}", "price": {"id": price},
                                              "current_period_start": 1_800_000_000,
                                              "current_period_end": 1_802_592_000}]},
        **more,
    }  # fmt: skip


def invoice(invoice_id: str, customer: str, amount_due: int, amount_paid: int, **more: Any) -> dict:
    return {
        "id": invoice_id, "object": "invoice", "customer": customer, "currency": "usd",
        "amount_due": amount_due, "amount_paid": amount_paid, **more,
    }  # fmt: skip
