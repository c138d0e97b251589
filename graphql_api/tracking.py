"""The tracking routes recipients reach from a message: the open pixel, tracked links and the
unsubscribe page (with RFC 8058 one-click POST). Each checks its token and calls the service."""

from __future__ import annotations

import base64

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from services import tracking

# A 1×1 GIF89a whose one pixel is the transparent colour (43 bytes).
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")
_NO_STORE = {"Cache-Control": "no-store, private", "X-Robots-Tag": "noindex"}

# A small page of our own (no CDN, no script): a title and its body.
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="robots" content="noindex"><title>{title}</title></head>
<body style="font-family:sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem">
<h1>{title}</h1>{body}</body></html>"""
_CONFIRM = PAGE.format(
    title="Unsubscribe",
    body=(
        "<p>Stop receiving these emails?</p>"
        '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    ),
)
_DONE = PAGE.format(title="Unsubscribed", body="<p>You will not receive these emails again.</p>")


def _not_found() -> Response:
    return Response("Not Found", status_code=404, media_type="text/plain", headers=_NO_STORE)


async def open_pixel(request: Request) -> Response:
    state = request.app.state
    token = tracking.verify(state.settings, request.path_params["token"], tracking.OPEN)
    if token is None:
        return _not_found()
    message = await tracking.find_message(state.db, token.message_id)
    if message is not None and request.method == "GET":  # HEAD is never a reader
        await tracking.record_open(
            state.db, state.redis, message, user_agent=request.headers.get("user-agent")
        )
    return Response(PIXEL, media_type="image/gif", headers=_NO_STORE)


async def click(request: Request) -> Response:
    state = request.app.state
    token = tracking.verify(state.settings, request.path_params["token"], tracking.CLICK)
    if token is None or token.url is None:
        return _not_found()
    message = await tracking.find_message(state.db, token.message_id)
    # The link was signed by us, so it is followed even when its message is gone.
    if message is not None and request.method == "GET":
        await tracking.record_click(
            state.db, state.redis, message, token.url, user_agent=request.headers.get("user-agent")
        )
    return RedirectResponse(token.url, status_code=302, headers=_NO_STORE)


async def unsubscribe(request: Request) -> Response:
    """GET shows a confirmation form and changes nothing (mail scanners prefetch links); POST,
    from that form or a mail client's one-click (`List-Unsubscribe=One-Click`), unsubscribes."""
    state = request.app.state
    token = tracking.verify(state.settings, request.path_params["token"], tracking.UNSUBSCRIBE)
    if token is None:
        return _not_found()
    message = await tracking.find_message(state.db, token.message_id)
    if message is None:
        return _not_found()
    if request.method != "POST":
        return HTMLResponse(_CONFIRM, headers=_NO_STORE)
    await tracking.unsubscribe(state.db, state.redis, message)
    return HTMLResponse(_DONE, headers=_NO_STORE)


routes: list[Route] = [
    Route("/t/o/{token}", open_pixel, methods=["GET"]),
    Route("/t/c/{token}", click, methods=["GET"]),
    Route("/u/{token}", unsubscribe, methods=["GET", "POST"]),
]
