"""Local mode's checkout (no Stripe key): the link `startCheckout` returns opens a confirmation
page on the API, and confirming it activates the plan — no payment is taken, which the page
says. For development and the offline demo."""

from __future__ import annotations

import html

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from graphql_api.tracking import PAGE
from models.billing import Plan
from services import billing, deliverability_events
from services.errors import DomainError

_NO_STORE = {"Cache-Control": "no-store, private", "X-Robots-Tag": "noindex"}
_NOTICE = "<p><strong>Billing is in local mode</strong>: no payment is taken.</p>"


def _page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(PAGE.format(title=title, body=body), status_code, headers=_NO_STORE)


async def local_checkout(request: Request) -> HTMLResponse:
    state = request.app.state
    if not billing.local_mode(state.settings):
        return _page("Not available", "<p>Checkout goes through the payment provider.</p>", 404)
    # The form posts back to this URL, token and all.
    token = request.query_params.get("token", "")
    try:
        tenant_id, plan_id = billing.read_local_checkout(state.settings, token)
        if request.method == "GET":
            async with state.db.anonymous_session() as session:
                plan = await session.get(Plan, plan_id)
            if plan is None:
                raise DomainError("NOT_FOUND", "This plan is no longer offered.", "token")
            return _page(f"Confirm {plan.name}", _confirmation(plan))
        async with state.db.system_session() as session:
            plan = await billing.activate_local(session, tenant_id, plan_id)
            events = billing.take_events(session)
    except DomainError as e:
        return _page("Checkout", f"<p>{html.escape(e.message)}</p>", 400)
    await deliverability_events.publish(state.redis, events)
    return _page(f"{plan.name} is active", f"{_NOTICE}<p>You can close this page.</p>")


def _confirmation(plan: Plan) -> str:
    price = f"{plan.price_cents / 100:.2f} {plan.currency.upper()} a {plan.interval}"
    return (
        f"{_NOTICE}<p>{html.escape(plan.name)}: {price}.</p>"
        '<form method="post"><button type="submit">Activate</button></form>'
    )


routes: list[Route] = [
    Route(billing.LOCAL_CHECKOUT_PATH, local_checkout, methods=["GET", "POST"]),
]
