"""DKIM signatures (RFC 6376: rsa-sha256, relaxed/relaxed) for outgoing messages.

dkimpy's own `sign` re-parses the key and does RSA in pure Python on every call (~165/s per
core). Here the key is parsed once and RSA runs in OpenSSL through `cryptography`, while the
message parsing, canonicalization and header hashing are dkimpy's, the same code its `verify`
runs, so what is signed here is what a dkimpy verifier recomputes.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import time
import uuid
from collections import OrderedDict

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import (
    CanonicalizationPolicy,
    correct_empty_body,
    strip_trailing_lines,
    strip_trailing_whitespace,
)

from models.infrastructure import Domain
from penguinmails.settings import Settings
from services.domains import dkim_private_key

# Signed when present, in this order. From is signed once more than it occurs ("oversigned"),
# as dkimpy does by default, so nobody en route can add a second From that a reader would see.
SIGNED_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"in-reply-to",
    b"references",
)
OVERSIGNED_HEADERS = (b"from",)
SIGNERS_CACHED = 256

_RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_HEADER_NAME = b"DKIM-Signature"
_LINE = 78  # RFC 5322's recommended line length; folds go at FWS the DKIM grammar allows
# Only the runs relaxed canonicalization changes: dkimpy's "[\t ]+" also rewrites every single
# space to itself, which is most of its cost on a 4 KB body.
_WSP_TO_COMPRESS = re.compile(rb"\t[\t ]*| [\t ]+")


class DkimSigner:
    """Signs messages for one domain and selector with one RSA key, parsed once."""

    def __init__(self, domain: str, selector: str, private_key_pem: bytes) -> None:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"the DKIM key of {domain} is not an RSA key")
        self.domain = domain
        self.selector = selector
        self._key = key
        self._tags = [b"v=1;", b"a=rsa-sha256;", b"c=relaxed/relaxed;"]
        self._tags += [
            b"d=" + domain.encode("ascii") + b";",
            b"s=" + selector.encode("ascii") + b";",
        ]

    def sign(self, message: bytes, *, timestamp: int | None = None) -> bytes:
        """The message (CRLF line endings, as SMTP carries it) with a DKIM-Signature header
        prepended."""
        headers, body = parse(message)
        present = [name.lower() for name, _ in headers]
        signed = [name for name in SIGNED_HEADERS for _ in range(present.count(name))]
        if b"from" not in signed:
            raise ValueError("a message without a From header cannot be DKIM-signed")
        signed += OVERSIGNED_HEADERS

        body_hash = hashlib.sha256(canonicalize_body(body)).digest()
        t = int(time.time()) if timestamp is None else timestamp
        atoms = [(b" ", tag) for tag in self._tags]
        atoms.append((b" ", b"t=%d;" % t))
        # h= may fold after each colon (RFC 6376 §3.5: FWS around ":").
        names = [name + b":" for name in signed[:-1]] + [signed[-1] + b";"]
        atoms.append((b" ", b"h=" + names[0]))
        atoms += [(b"", name) for name in names[1:]]
        atoms.append((b" ", b"bh=" + base64.b64encode(body_hash) + b";"))
        atoms.append((b" ", b"b="))
        unsigned = _fold(atoms)

        # The header is hashed exactly as it will be written, its b= value empty (§3.7).
        hasher = hashlib.sha256()
        dkim.hash_headers(
            hasher,
            _RELAXED,
            _RELAXED.canonicalize_headers(headers),
            signed,
            (_HEADER_NAME, unsigned),
            None,
        )
        signature = self._key.sign(hasher.digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        b = base64.b64encode(signature)
        # Folding inside b= is allowed; the signature is written in 64-character pieces.
        atoms += [(b"", b[i : i + 64]) for i in range(0, len(b), 64)]
        return _HEADER_NAME + b":" + _fold(atoms) + b"\r\n" + message


def parse(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """(headers, body) as dkimpy's rfc822_parse gives them, without splitting and rejoining
    every body line when the body's line endings are all CRLF already."""
    end = message.find(b"\r\n\r\n")
    if end == -1:
        return dkim.rfc822_parse(message)
    body = message[end + 4 :]
    if body.count(b"\n") != body.count(b"\r\n"):
        return dkim.rfc822_parse(message)  # a bare LF: dkimpy's line splitting turns it to CRLF
    headers, _ = dkim.rfc822_parse(message[: end + 4])
    return headers, body


def canonicalize_body(body: bytes) -> bytes:
    """RFC 6376 §3.4.4 relaxed body canonicalization: dkimpy's steps, faster compression."""
    return correct_empty_body(
        strip_trailing_lines(_WSP_TO_COMPRESS.sub(b" ", strip_trailing_whitespace(body)))
    )


def _fold(atoms: list[tuple[bytes, bytes]]) -> bytes:
    """The header value from (separator, atom) pairs, a fold (CRLF SP) replacing the separator
    wherever the line would pass 78 characters."""
    out = bytearray()
    line = len(_HEADER_NAME) + 1
    for sep, atom in atoms:
        if line + len(sep) + len(atom) > _LINE and line > 1:
            out += b"\r\n " + atom
            line = 1 + len(atom)
        else:
            out += sep + atom
            line += len(sep) + len(atom)
    return bytes(out)


class _SignerCache:
    """A small LRU of signers, so a worker parses each domain's key once. Keyed by the stored
    ciphertext, so a rotated key is a miss, and a hit costs no decryption."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._signers: OrderedDict[tuple, DkimSigner] = OrderedDict()
        self._lock = threading.Lock()  # Dramatiq workers run actors in threads

    def get(self, key: tuple) -> DkimSigner | None:
        with self._lock:
            signer = self._signers.get(key)
            if signer is not None:
                self._signers.move_to_end(key)
            return signer

    def put(self, key: tuple, signer: DkimSigner) -> None:
        with self._lock:
            self._signers[key] = signer
            self._signers.move_to_end(key)
            while len(self._signers) > self._size:
                self._signers.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._signers.clear()


_signers = _SignerCache(SIGNERS_CACHED)


def signer_for(settings: Settings, domain: Domain) -> DkimSigner | None:
    """The signer of a sending domain, or None for a domain without a DKIM key."""
    if domain.dkim_private_key_encrypted is None or domain.encryption_key_id is None:
        return None
    key: tuple[uuid.UUID, str, str, str, bytes] = (
        domain.id,
        domain.name,
        domain.dkim_selector,
        domain.encryption_key_id,
        bytes(domain.dkim_private_key_encrypted),
    )
    signer = _signers.get(key)
    if signer is None:
        pem = dkim_private_key(settings, domain)
        if pem is None:
            return None
        signer = DkimSigner(domain.name, domain.dkim_selector, pem)
        _signers.put(key, signer)
    return signer
