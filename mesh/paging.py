"""Page sizes and opaque, tamper-proof page tokens.

A token carries the offset of the next page and a digest of the request it
belongs to (the search query, the customer), signed with HMAC-SHA256. Clients
cannot forge an offset or reuse a token with another request: both fail the
check and come back as INVALID_ARGUMENT on `page_token` (AIP-158), through
`InvalidField`, which every service's status table maps. Offsets are enough
for the catalog, read-only while it runs; for a list that grows at its head
(notifications, newest first) an item created while a client pages moves the
later ones down by one, so the client may see an item twice, never miss one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets

from mesh.status import InvalidField

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
_SIGNATURE_BYTES = 16


def page_size(requested: int) -> int:
    """The number of items to return for a requested `page_size`."""
    if requested < 0:
        raise InvalidField("page_size", f"must not be negative, got {requested}")
    if requested > MAX_PAGE_SIZE:
        raise InvalidField("page_size", f"must be at most {MAX_PAGE_SIZE}, got {requested}")
    return requested or DEFAULT_PAGE_SIZE


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PageTokens:
    """Issues and checks page tokens signed with one key."""

    def __init__(self, key: bytes | None = None) -> None:
        # Without a configured key, tokens are valid only in this process.
        self._key = key or secrets.token_bytes(32)

    def _scope_digest(self, scope: str) -> str:
        return hashlib.sha256(scope.encode()).hexdigest()[:16]

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]

    def issue(self, offset: int, scope: str = "") -> str:
        payload = json.dumps({"o": offset, "s": self._scope_digest(scope)}).encode()
        return f"{_b64encode(payload)}.{_b64encode(self._sign(payload))}"

    def offset(self, token: str, scope: str = "") -> int:
        """The offset a token points to; 0 for the empty token (first page)."""
        if not token:
            return 0
        try:
            payload_part, signature_part = token.split(".")
            payload = _b64decode(payload_part)
            signature = _b64decode(signature_part)
        except (ValueError, binascii.Error):
            raise InvalidField("page_token", "is malformed") from None
        if not hmac.compare_digest(signature, self._sign(payload)):
            raise InvalidField("page_token", "is not a token this service issued")
        fields = json.loads(payload)
        if fields.get("s") != self._scope_digest(scope):
            raise InvalidField("page_token", "was issued for a different request")
        offset = fields.get("o")
        if not isinstance(offset, int) or offset < 0:
            raise InvalidField("page_token", "is malformed")
        return offset
