"""The Loops (loops.so) transactional API: one call, `POST /api/v1/transactional`, which sends a
published transactional email to one address with its data variables.

What its answers mean here: 200 sent; 409 the idempotency key was used in the last 24 hours,
so an earlier attempt of the same job got through (sent); 408, 429 and 5xx, or no answer at
all, are an outage and the job tries again later; any other 4xx (400 a bad request, 401 a bad
key, 404 no such transactional email) is a configuration error that no retry mends.
"""

from __future__ import annotations

from typing import Any

import httpx

from jobs.registry import PermanentJobError
from penguinmails.settings import Settings

PATH = "/api/v1/transactional"
RETRYABLE = {408, 429}


class LoopsUnavailable(Exception):
    """Loops did not take the mail this time (an outage, a rate limit): try again later."""


async def send_transactional(
    settings: Settings,
    transactional_id: str,
    email: str,
    data_variables: dict[str, Any],
    idempotency_key: str,
) -> None:
    """Sends, or raises LoopsUnavailable (retry) or PermanentJobError (configuration)."""
    assert settings.loop_api_key is not None
    headers = {
        "Authorization": f"Bearer {settings.loop_api_key.get_secret_value()}",
        "Idempotency-Key": idempotency_key[:100],  # Loops' limit
    }
    body = {"transactionalId": transactional_id, "email": email, "dataVariables": data_variables}
    url = settings.loop_api_base.rstrip("/") + PATH
    try:
        async with httpx.AsyncClient(timeout=settings.loop_timeout_seconds) as client:
            response = await client.post(url, json=body, headers=headers)
    except httpx.HTTPError as e:
        raise LoopsUnavailable(f"Loops: no answer ({e!r})") from e
    if response.status_code == 409 or response.is_success:
        return
    reason = f"Loops answered {response.status_code}: {_message(response)}"
    if response.status_code in RETRYABLE or response.status_code >= 500:
        raise LoopsUnavailable(reason)
    raise PermanentJobError(reason)


def _message(response: httpx.Response) -> str:
    """The error's `message` (Loops answers `{"success": false, "message": …}`), or the body."""
    try:
        return str(response.json().get("message"))[:300]
    except (ValueError, AttributeError):
        return response.text[:300]
