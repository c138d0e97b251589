"""A local stand-in for Cloudflare's v4 API (zones and their DNS records), for the platform's
real HTTP client (`PENGUINMAILS_CLOUDFLARE_API_BASE`).

It speaks the documented shapes: a bearer API token; every answer the envelope `{"success",
"errors": [{"code", "message"}], "messages", "result"}`, lists with `result_info` (page,
per_page, count, total_count, total_pages); `GET /zones?name=`, `GET /zones/{id}/dns_records?
type=&name=&page=&per_page=`, `POST` (create), `PUT` (overwrite), `PATCH` (update) and `DELETE`
of `/zones/{id}/dns_records/{record_id}`; MX with `priority`, TXT content kept as it was sent.
Refusals as Cloudflare answers them: a bad token 403 code 10000 "Authentication error", an
unknown zone id 400 code 7003, an unknown record 404 code 81044, an identical record 400 code
81058, a bad body 400 code 9005; `fail_next` makes the next request answer a given status (a
5xx, a 429). Every request is recorded.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, NamedTuple

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.graphql_api.conftest import running

API_TOKEN = "cloudflare-test-token"
TYPES = {"A", "AAAA", "CNAME", "MX", "TXT", "PTR", "NS", "SRV", "CAA"}


class Received(NamedTuple):
    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorization: str | None


class FakeCloudflare:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.zones: dict[str, dict[str, Any]] = {}  # by id
        self.records: dict[str, dict[str, Any]] = {}  # by id
        self.failures: deque[tuple[int, int, str]] = deque()
        self._ids = itertools.count(1)

    def app(self) -> Starlette:
        records = "/zones/{zone_id}/dns_records"
        return Starlette(routes=[
            Route("/zones", self.list_zones, methods=["GET"]),
            Route(records, self.list_records, methods=["GET"]),
            Route(records, self.create_record, methods=["POST"]),
            Route(records + "/{record_id}", self.overwrite_record, methods=["PUT"]),
            Route(records + "/{record_id}", self.update_record, methods=["PATCH"]),
            Route(records + "/{record_id}", self.delete_record, methods=["DELETE"]),
        ])  # fmt: skip

    # --- what a test arranges and reads -----------------------------------------------------

    def add_zone(self, name: str) -> str:
        zone_id = uuid.uuid4().hex
        self.zones[zone_id] = {"id": zone_id, "name": name, "status": "active"}
        return zone_id

    def add_record(self, zone_id: str, name: str, type_: str, content: str, **extra: Any) -> str:
        """A record someone else made (the dashboard, another tool)."""
        record = self._record(zone_id, {"name": name, "type": type_, "content": content, **extra})
        self.records[record["id"]] = record
        return record["id"]

    def zone_records(self, zone_id: str) -> list[tuple[str, str, str, int | None]]:
        """(name, type, content, priority) of the zone's records, sorted."""
        return sorted(
            (r["name"], r["type"], r["content"], r.get("priority"))
            for r in self.records.values()
            if r["zone_id"] == zone_id
        )

    def fail_next(self, status: int, code: int = 10001, message: str = "Service unavailable"):
        self.failures.append((status, code, message))

    def writes(self) -> list[Received]:
        return [r for r in self.requests if r.method != "GET"]

    # --- the API -----------------------------------------------------------------------------

    async def _receive(self, request: Request) -> JSONResponse | None:
        """Records the request; the refusal it gets before any route looks at it, if any."""
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = {"unparsed": raw.decode(errors="replace")}
        authorization = request.headers.get("authorization")
        self.requests.append(
            Received(request.method, request.url.path, dict(request.query_params), body,
                     authorization)
        )  # fmt: skip
        if self.failures:
            return _error(*self.failures.popleft())
        if authorization != f"Bearer {API_TOKEN}":
            return _error(403, 10000, "Authentication error")
        zone_id = request.path_params.get("zone_id")
        if zone_id is not None and zone_id not in self.zones:
            return _error(
                400, 7003,
                f"Could not route to {request.url.path}, perhaps your object identifier is invalid?",
            )  # fmt: skip
        return None

    async def list_zones(self, request: Request) -> JSONResponse:
        if refused := await self._receive(request):
            return refused
        name = request.query_params.get("name")
        zones = [z for z in self.zones.values() if name in (None, z["name"])]
        return _page(request, zones)

    async def list_records(self, request: Request) -> JSONResponse:
        if refused := await self._receive(request):
            return refused
        zone_id, query = request.path_params["zone_id"], request.query_params
        found = [
            r
            for r in self.records.values()
            if r["zone_id"] == zone_id
            and query.get("type") in (None, r["type"])
            and query.get("name", "").lower() in ("", r["name"])
        ]
        return _page(request, sorted(found, key=lambda r: r["created_on"]))

    async def create_record(self, request: Request) -> JSONResponse:
        if refused := await self._receive(request):
            return refused
        body = self.requests[-1].body
        if invalid := self._invalid(request.path_params["zone_id"], body, None):
            return invalid
        record = self._record(request.path_params["zone_id"], body)
        self.records[record["id"]] = record
        return _ok(record)

    async def overwrite_record(self, request: Request) -> JSONResponse:
        return await self._change(request, replace=True)

    async def update_record(self, request: Request) -> JSONResponse:
        return await self._change(request, replace=False)

    async def _change(self, request: Request, *, replace: bool) -> JSONResponse:
        if refused := await self._receive(request):
            return refused
        zone_id, record_id = request.path_params["zone_id"], request.path_params["record_id"]
        existing = self.records.get(record_id)
        if existing is None or existing["zone_id"] != zone_id:
            return _error(404, 81044, "Record does not exist.")
        body = self.requests[-1].body
        if not isinstance(body, dict):
            return _error(400, 9207, "Request body is invalid.")
        fields = ("name", "type", "content", "ttl", "proxied", "priority", "comment")
        merged = {k: existing[k] for k in fields if k in existing and not replace}
        merged.update(body)
        if invalid := self._invalid(zone_id, merged, record_id):
            return invalid
        record = self._record(zone_id, merged)
        record.update(id=record_id, created_on=existing["created_on"])
        self.records[record_id] = record
        return _ok(record)

    async def delete_record(self, request: Request) -> JSONResponse:
        if refused := await self._receive(request):
            return refused
        zone_id, record_id = request.path_params["zone_id"], request.path_params["record_id"]
        existing = self.records.get(record_id)
        if existing is None or existing["zone_id"] != zone_id:
            return _error(404, 81044, "Record does not exist.")
        del self.records[record_id]
        return _ok({"id": record_id})

    def _invalid(self, zone_id: str, body: Any, record_id: str | None) -> JSONResponse | None:
        if not isinstance(body, dict):
            return _error(400, 9207, "Request body is invalid.")
        zone = self.zones[zone_id]["name"]
        name, type_ = str(body.get("name", "")).lower(), body.get("type")
        if type_ not in TYPES:
            return _error(400, 9004, "This record type is not supported.")
        if not body.get("content"):
            return _error(400, 9005, f"Content for {type_} record is invalid.")
        if name != zone and not name.endswith("." + zone):
            return _error(400, 9000, "DNS name is invalid.")
        if type_ == "MX" and not isinstance(body.get("priority"), int):
            return _error(400, 9100, "MX priority is invalid or missing.")
        for other in self.records.values():
            if (
                other["id"] != record_id
                and other["zone_id"] == zone_id
                and (other["name"], other["type"], other["content"])
                == (name, type_, body["content"])
            ):
                return _error(400, 81058, "An identical record already exists.")
        return None

    def _record(self, zone_id: str, body: dict[str, Any]) -> dict[str, Any]:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        record = {
            "id": f"{next(self._ids):032x}",
            "zone_id": zone_id,
            "zone_name": self.zones[zone_id]["name"],
            "name": str(body["name"]).lower(),
            "type": body["type"],
            "content": body["content"],
            "proxiable": body["type"] in ("A", "AAAA", "CNAME"),
            "proxied": bool(body.get("proxied", False)),
            "ttl": body.get("ttl", 1),
            "comment": body.get("comment"),
            "tags": [],
            "meta": {},
            "settings": {},
            "created_on": now,
            "modified_on": now,
        }
        if body["type"] == "MX":
            record["priority"] = body["priority"]
        return record


def _ok(result: Any) -> JSONResponse:
    return JSONResponse({"success": True, "errors": [], "messages": [], "result": result})


def _page(request: Request, items: list[dict[str, Any]]) -> JSONResponse:
    page = int(request.query_params.get("page", 1))
    per_page = int(request.query_params.get("per_page", 100))
    chunk = items[(page - 1) * per_page : page * per_page]
    info = {
        "page": page,
        "per_page": per_page,
        "count": len(chunk),
        "total_count": len(items),
        "total_pages": max(1, -(-len(items) // per_page)),
    }
    return JSONResponse(
        {"success": True, "errors": [], "messages": [], "result": chunk, "result_info": info}
    )


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse(
        {
            "success": False,
            "errors": [{"code": code, "message": message}],
            "messages": [],
            "result": None,
        },
        status,
    )


@asynccontextmanager
async def running_cloudflare() -> AsyncIterator[tuple[str, FakeCloudflare]]:
    """The fake served on a free loopback port: (its base URL, the fake)."""
    fake = FakeCloudflare()
    async with running(fake.app()) as url:
        yield url, fake
