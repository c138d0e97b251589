"""The bounce table: enhanced status codes first, the providers' words where the code says
nothing specific."""

import pytest

from services.bounces import BounceClass, classify


@pytest.mark.parametrize(
    ("status", "text", "expected"),
    [
        ("5.1.1", "user unknown", BounceClass.HARD),
        ("5.1.10", "recipient address has a null MX", BounceClass.HARD),
        ("5.2.1", "mailbox disabled", BounceClass.HARD),
        ("5.2.2", "", BounceClass.MAILBOX_FULL),
        ("4.2.2", "", BounceClass.MAILBOX_FULL),
        ("5.7.1", "message rejected", BounceClass.POLICY),
        ("5.7.26", "unauthenticated email from example.com is not accepted", BounceClass.POLICY),
        ("5.7.515", "Access denied, sending domain does not meet the required level",
         BounceClass.POLICY),
        ("4.7.0", "try again later", BounceClass.SOFT),
        ("4.4.1", "connection timed out", BounceClass.SOFT),
        ("5.0.0", "552 Mailbox full", BounceClass.MAILBOX_FULL),
        ("5.0.0", "550 Blocked by Spamhaus", BounceClass.POLICY),
        ("5.0.0", "550 No such user here", BounceClass.HARD),
        ("550", "550 Requested action not taken: mailbox unavailable", BounceClass.HARD),
        ("550", "550 5.7.1 Service unavailable; client host blocked", BounceClass.POLICY),
        ("421", "421 Too many connections, try again", BounceClass.SOFT),
        ("554", "554 transaction failed", BounceClass.HARD),
        (None, "", BounceClass.HARD),
    ],
)  # fmt: skip
def test_a_bounce_is_classified_by_its_code_then_its_words(status, text, expected) -> None:
    assert classify(status, text) == expected
