"""DKIM signing: what it signs verifies with stock dkimpy against the published key."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from dkim.canonicalization import Relaxed

from models.infrastructure import Domain
from penguinmails.settings import Settings
from services import domains, secrets
from services.dkim_signing import DkimSigner, canonicalize_body, parse, signer_for
from services.mime import OutgoingMessage, build

DOMAIN = "example.com"
SELECTOR = "pm"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # PKCS#1, as services.domains stores
        serialization.NoEncryption(),
    )


def _published(record: str, name: str = f"{SELECTOR}._domainkey.{DOMAIN}.") -> Callable:
    """A resolver that answers the one DKIM TXT record."""

    def dnsfunc(qname: bytes, timeout: int = 5) -> bytes | None:
        return record.encode() if qname.decode() == name else None

    return dnsfunc


def _record(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def _message(**changes: object) -> bytes:
    fields: dict = dict(
        from_address=f"ana@{DOMAIN}",
        from_name="Ana Müller",
        to_address="jordan@acme.example",
        subject="Grüße — a quick question",
        html='<html><body><p>Hi  Jordan,\t<a href="https://acme.example/x">x</a></p></body></html>',
        text="Hi Jordan,   \n\tsee https://acme.example/x\n\n\n",
        message_id=f"<0193a1b2@{DOMAIN}>",
        return_path="b+tok@bounces.example",
        list_unsubscribe_url="https://t.example/u/" + "x" * 120,
        list_unsubscribe_mailto=f"mailto:unsubscribe+tok@{DOMAIN}",
        in_reply_to=f"<prev@{DOMAIN}>",
        references=[f"<first@{DOMAIN}>", f"<prev@{DOMAIN}>"],
        open_url="https://t.example/o/1",
        click_url=lambda url: "https://t.example/c?u=" + url,
    )
    fields.update(changes)
    return build(OutgoingMessage(**fields))


def test_a_built_and_signed_message_verifies_with_stock_dkimpy(key: rsa.RSAPrivateKey):
    signed = DkimSigner(DOMAIN, SELECTOR, _pem(key)).sign(_message())

    assert dkim.verify(signed, dnsfunc=_published(_record(key)))


def test_a_single_part_message_verifies_too(key: rsa.RSAPrivateKey):
    signed = DkimSigner(DOMAIN, SELECTOR, _pem(key)).sign(_message(html=None, in_reply_to=None))

    assert dkim.verify(signed, dnsfunc=_published(_record(key)))


def test_a_key_made_by_services_domains_verifies_against_the_record_it_publishes(
    settings: Settings,
):
    private_pem, public_key = domains._generate_dkim_key()
    records = domains.dns_records(settings, DOMAIN, SELECTOR, public_key)
    (record,) = [r for r in records if r["kind"] == "dkim"]

    signed = DkimSigner(DOMAIN, SELECTOR, private_pem).sign(_message())

    assert dkim.verify(signed, dnsfunc=_published(record["value"], record["host"] + "."))


@pytest.mark.parametrize(
    ("original", "tampered"),
    [
        (b"Hi Jordan,", b"Hi Jordon,"),  # the text body
        (b"Subject: =?utf-8?b?", b"Subject: Re: =?utf-8?b?"),
        (b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: x"),
        (b"From: ", b"From: mallory@evil.example\r\nFrom: "),  # From is oversigned
    ],
)
def test_a_message_changed_after_signing_fails_verification(
    key: rsa.RSAPrivateKey, original: bytes, tampered: bytes
):
    signed = DkimSigner(DOMAIN, SELECTOR, _pem(key)).sign(_message())
    assert original in signed

    assert not dkim.verify(signed.replace(original, tampered, 1), dnsfunc=_published(_record(key)))


def test_whitespace_changes_relaxed_canonicalization_ignores_still_verify(key: rsa.RSAPrivateKey):
    signed = DkimSigner(DOMAIN, SELECTOR, _pem(key)).sign(_message())
    head, body = signed.split(b"\r\n\r\n", 1)
    refolded = head.replace(b"Message-ID: ", b"Message-ID:\r\n\t ") + b"\r\n\r\n" + body + b"\r\n"

    assert dkim.verify(refolded, dnsfunc=_published(_record(key)))


def test_the_signature_names_the_domain_selector_and_the_headers_present(key: rsa.RSAPrivateKey):
    signed = DkimSigner(DOMAIN, SELECTOR, _pem(key)).sign(_message(), timestamp=1700000000)
    header = signed.split(b"\r\n\r\n", 1)[0].decode()
    value = header.split("\r\nFrom:", 1)[0].removeprefix("DKIM-Signature:").replace("\r\n", "")
    tags = dict(t.strip().split("=", 1) for t in value.split(";"))

    assert header.startswith("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
    assert (tags["d"], tags["s"], tags["t"]) == (DOMAIN, SELECTOR, "1700000000")
    assert tags["h"].replace(" ", "").split(":") == [
        "from", "to", "subject", "date", "message-id", "mime-version", "content-type",
        "list-unsubscribe", "list-unsubscribe-post", "in-reply-to", "references", "from",
    ]  # fmt: skip
    assert all(len(line) <= 78 for line in header.split("\r\nFrom:")[0].split("\r\n"))


def test_a_message_without_from_cannot_be_signed(key: rsa.RSAPrivateKey):
    with pytest.raises(ValueError):
        DkimSigner(DOMAIN, SELECTOR, _pem(key)).sign(b"To: a@b.example\r\n\r\nhi\r\n")


def test_a_key_that_is_not_rsa_is_refused():
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError):
        DkimSigner(DOMAIN, SELECTOR, ec_pem)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\r\n",
        b"\r\n\r\n\r\n",
        b"a  b\t\tc \t d\r\n",
        b"trailing \t \r\nx\r\n\r\n",
        b"no final newline  ",
        b" \t\r\n \r\n",
        b"\tlead\r\n  lead\r\nend\t",
    ],
)
def test_body_canonicalization_is_dkimpys(body: bytes):
    assert canonicalize_body(body) == Relaxed.canonicalize_body(body)


@pytest.mark.parametrize(
    "message",
    [
        b"From: a@b.example\r\nSubject: x\r\n y\r\n\r\nbody\r\nmore\r\n",
        b"From: a@b.example\r\n\r\nbare\nLF\r\n",
        b"From: a@b.example\n\nall LF\n",
        b"From: a@b.example\r\n\r\n",
    ],
)
def test_parsing_is_dkimpys(message: bytes):
    assert parse(message) == dkim.rfc822_parse(message)


def test_a_stored_domain_gets_a_cached_signer_that_verifies(settings: Settings):
    private_pem, public_key = domains._generate_dkim_key()
    key_id, blob = secrets.encrypt(settings, private_pem)
    domain = Domain(
        id=uuid.uuid4(),
        name=DOMAIN,
        dkim_selector=SELECTOR,
        dkim_private_key_encrypted=blob,
        encryption_key_id=key_id,
    )

    signer = signer_for(settings, domain)

    assert signer is not None
    assert signer_for(settings, domain) is signer
    record = f"v=DKIM1; k=rsa; p={public_key}"
    assert dkim.verify(signer.sign(_message()), dnsfunc=_published(record))
    # A rotated key is another signer.
    _, domain.dkim_private_key_encrypted = secrets.encrypt(
        settings, _pem(rsa.generate_private_key(65537, 2048))
    )
    assert signer_for(settings, domain) is not signer


def test_a_domain_without_a_key_has_no_signer(settings: Settings):
    domain = Domain(id=uuid.uuid4(), name=DOMAIN, dkim_selector=SELECTOR)

    assert signer_for(settings, domain) is None
