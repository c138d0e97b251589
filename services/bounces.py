"""What a bounce means, from its enhanced status code (RFC 3463) and, where the code is missing
or generic, the receiving server's words. One table, used by the SMTP path (a refusal during
the transaction) and by DSN parsing (services/inbound.py) alike.

- HARD: the address does not exist or never will (5.1.1 no such user, 5.1.2 no such domain):
  suppressed at once.
- MAILBOX_FULL: the address exists but cannot take mail now (x.2.2).
- SOFT: anything temporary (4.x.x).
- POLICY: the receiver refused the sender, not the address: authentication, reputation, spam
  (5.7.x, Microsoft's 5.7.515 for unauthenticated bulk mail). The address is not suppressed;
  the sender's rates count it.

A SOFT or MAILBOX_FULL bounce repeated SOFT_LIMIT times within SOFT_WINDOW for one address
suppresses it (services/inbound.py)."""

from __future__ import annotations

import enum
import re
from datetime import timedelta

SOFT_LIMIT = 3
SOFT_WINDOW = timedelta(days=7)


class BounceClass(enum.StrEnum):
    HARD = "hard"
    SOFT = "soft"
    POLICY = "policy"
    MAILBOX_FULL = "mailbox_full"


# (class, subject, detail) → meaning, most specific first; None matches any.
CODES: list[tuple[tuple[str, str | None, str | None], BounceClass]] = [
    (("5", "7", "515"), BounceClass.POLICY),  # Microsoft: sender not authenticated (SPF/DKIM/DMARC)
    (("5", "7", None), BounceClass.POLICY),  # security or policy: spam, reputation, auth
    (("5", "2", "2"), BounceClass.MAILBOX_FULL),
    (("4", "2", "2"), BounceClass.MAILBOX_FULL),
    (("5", "1", None), BounceClass.HARD),  # bad mailbox, bad domain, moved
    (("5", "2", "1"), BounceClass.HARD),  # mailbox disabled
    (("5", "4", "4"), BounceClass.HARD),  # no route to the domain
    (("4", None, None), BounceClass.SOFT),
    (("5", "3", None), BounceClass.SOFT),  # the receiving system's trouble
]
# The providers' common texts, for replies without a specific code (or with only 5.0.0).
TEXTS: list[tuple[re.Pattern[str], BounceClass]] = [
    (re.compile(p, re.I), c)
    for p, c in [
        (r"mailbox (is )?full|over ?quota|quota exceeded|insufficient (system )?storage",
         BounceClass.MAILBOX_FULL),
        (r"spam|blocked|block ?list|blacklist|reputation|policy|dmarc|not authenticated|"
         r"authentication|junk|rejected for abuse|bulk", BounceClass.POLICY),
        (r"user unknown|unknown user|no such (user|recipient|mailbox)|does not exist|"
         r"doesn't exist|invalid (recipient|mailbox|address)|recipient (address )?rejected|"
         r"address not found|mailbox (not found|unavailable)|account (is )?disabled",
         BounceClass.HARD),
        (r"try again|temporar|deferred|greylist|rate limit|too many", BounceClass.SOFT),
    ]
]  # fmt: skip
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")


def classify(status: str | None, text: str | None = None) -> BounceClass:
    """The class of a bounce from its enhanced status (e.g. "5.1.1"; taken from `text` when
    missing) and the server's text. A specific code decides; a generic one (x.0.0) or none
    leaves it to the text; failing both, 5 is HARD and 4 SOFT."""
    text = text or ""
    found = _STATUS.search(status or "") or _STATUS.search(text)
    parts = found.groups() if found else None
    if parts and parts[1:] != ("0", "0"):
        for (klass, subject, detail), meaning in CODES:
            if parts[0] == klass and subject in (None, parts[1]) and detail in (None, parts[2]):
                return meaning
    for pattern, meaning in TEXTS:
        if pattern.search(text):
            return meaning
    first = parts[0] if parts else (status or text.strip()[:1] or "5")[0]
    return BounceClass.SOFT if first == "4" else BounceClass.HARD
