"""`POST /webhooks/stripe`: at most 1 MB of raw body, its Stripe signature checked before anything
else is read from it, then the event applied once (services/stripe_events.py)."""

from __future__ import annotations

import json

import stripe
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services import billing, deliverability_events, stripe_events

MAX_BODY_BYTES = 1024 * 1024


class _TooLarge(Exception):
    pass


async def _body(request: Request) -> bytes:
    """The raw body, refused once it passes the limit (the rest is never read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _TooLarge
    return bytes(body)


def _is_event(event: object) -> bool:
    return (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and isinstance(event.get("type"), str)
        and isinstance(event.get("created"), int)
        and isinstance(event.get("data"), dict)
        and isinstance(event["data"].get("object"), dict)
    )


def _answer(message: str, status_code: int) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status_code)


async def stripe_webhook(request: Request) -> JSONResponse:
    state = request.app.state
    secret = state.settings.stripe_webhook_secret
    if secret is None:
        return _answer("Stripe webhooks are not configured", 503)  # Stripe retries later
    try:
        raw = await _body(request)
    except _TooLarge:
        return _answer("request body too large", 413)
    try:
        payload = raw.decode()
        stripe.WebhookSignature.verify_header(
            payload,
            request.headers.get("stripe-signature"),
            secret.get_secret_value(),
            stripe.Webhook.DEFAULT_TOLERANCE,
        )
    except (UnicodeDecodeError, stripe.SignatureVerificationError):
        return _answer("bad signature", 400)
    try:
        event = json.loads(payload)
    except (ValueError, RecursionError):
        return _answer("the body is not JSON", 400)
    if not _is_event(event):
        return _answer("not a Stripe event", 400)
    async with state.db.system_session() as session:
        applied = await stripe_events.apply_event(
            session, event, grace_days=state.settings.billing_grace_days
        )
        events = billing.take_events(session)
    # Answered after the commit: a failure above is a 500 and Stripe delivers again.
    await deliverability_events.publish(state.redis, events)
    return _answer("applied" if applied else "already applied", 200)


routes: list[Route] = [Route("/webhooks/stripe", stripe_webhook, methods=["POST"])]
