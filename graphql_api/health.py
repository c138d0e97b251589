"""Health checks: JSON, 200 when healthy, 503 naming the failing part."""

from __future__ import annotations

import asyncio
import json

import aiosmtplib
from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import JSONResponse

from penguinmails.settings import TIERS
from services import provisioning

TIMEOUT_SECONDS = 2.0


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def health_db(request: Request) -> JSONResponse:
    db = request.app.state.db

    async def check(tier: str) -> str:
        await asyncio.wait_for(db.ping(tier), TIMEOUT_SECONDS)
        return "ok"

    return await _report({tier: check(tier) for tier in TIERS})


async def health_queue(request: Request) -> JSONResponse:
    redis, db = request.app.state.redis, request.app.state.db

    async def ping() -> str:
        await asyncio.wait_for(redis.ping(), TIMEOUT_SECONDS)
        return "ok"

    async def depth() -> int:
        async def count() -> int:
            async with db.system_session("queue") as session:  # platform-wide depth
                return await session.scalar(
                    text(
                        "SELECT count(*) FROM queue.jobs WHERE status IN ('queued', 'failed') AND run_at <= now()"
                    )
                )

        return await asyncio.wait_for(count(), TIMEOUT_SECONDS)

    async def redis_depth() -> dict[str, int]:
        namespace = request.app.state.settings.redis_namespace
        lengths = [redis.llen(f"{namespace}:{tier}") for tier in ("high", "normal", "low")]
        high, normal, low = await asyncio.wait_for(asyncio.gather(*lengths), TIMEOUT_SECONDS)
        return {"high": high, "normal": normal, "low": low}

    return await _report({"redis": ping(), "ready_jobs": depth(), "redis_messages": redis_depth()})


async def health_email(request: Request) -> JSONResponse:
    settings = request.app.state.settings

    async def relay() -> str:
        smtp = aiosmtplib.SMTP(
            hostname=settings.smtp_relay_host,
            port=settings.smtp_relay_port,
            timeout=TIMEOUT_SECONDS,
            start_tls=False,
        )
        await smtp.connect()
        await smtp.quit()
        return "ok"

    response = await _report(
        {f"relay {settings.smtp_relay_host}:{settings.smtp_relay_port}": relay()}
    )
    body = json.loads(response.body)
    body["vps"] = await _tenant_servers(request)
    return JSONResponse(body, status_code=response.status_code)


async def _tenant_servers(request: Request) -> dict[str, int | str]:
    """How many tenants' servers serve mail and how many of them do not answer SMTP: counted,
    not named (this endpoint is public), and not the platform failing (one tenant's server
    down pauses that tenant's accounts, with an alert naming it: services/provisioning.py)."""
    try:
        serving = await asyncio.wait_for(
            provisioning.serving_vps(request.app.state.db), TIMEOUT_SECONDS
        )
    except Exception as error:
        return {"error": f"{type(error).__name__}: {error}".rstrip(": ")}

    async def answers(host: str, port: int) -> bool:
        try:
            await provisioning.smtp_reachable(host, port, TIMEOUT_SECONDS)
        except (OSError, TimeoutError, ConnectionError):
            return False
        return True

    up = await asyncio.gather(*(answers(host, port) for _, _, _, host, port in serving))
    return {"serving": len(up), "unreachable": up.count(False)}


async def _report(checks: dict) -> JSONResponse:
    names = list(checks)
    results = await asyncio.gather(*checks.values(), return_exceptions=True)
    body, failing = {}, []
    for name, result in zip(names, results, strict=True):
        if isinstance(result, BaseException):
            body[name] = f"error: {type(result).__name__}: {result}".strip()
            failing.append(name)
        else:
            body[name] = result
    return JSONResponse(
        {"status": "fail" if failing else "ok", "failing": failing, "checks": body},
        status_code=503 if failing else 200,
    )
