"""Who is calling: `authorization: Bearer <token>` checked against JWTs and API keys.

- A token of three dot-separated parts is a JWT, verified with PyJWT: HS256
  only (`none` and every other algorithm refused), signature, `exp` (required),
  `nbf` and `iat` if present, `iss` and `aud` against the configuration, and a
  `sub` claim that becomes the caller's subject.
- Anything else is a static API key, looked up by its SHA-256 digest, so the
  lookup's timing does not depend on how much of a key a guess got right.

A verified JWT is remembered (bounded) until it expires: a client sends the
same token on every call, and a full verification costs tens of microseconds,
which at the gateway's scale is a real share of the latency it adds.
Messages say what is wrong, never the credential.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from gateway.config import SUBJECT, AuthConfig
from gateway.errors import Unauthenticated

__all__ = ["JWT_ALGORITHM", "Authenticator", "Identity", "mint_token"]

JWT_ALGORITHM = "HS256"
_REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]

# PyJWT's exceptions, most specific first, to the message a caller sees.
_JWT_PROBLEMS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidAudienceError, "token has the wrong audience"),
    (jwt.InvalidIssuerError, "token has the wrong issuer"),
    (jwt.InvalidAlgorithmError, f"token algorithm must be {JWT_ALGORITHM}"),
    (jwt.InvalidSignatureError, "token signature is invalid"),
    (jwt.exceptions.InvalidSubjectError, "token subject must be a string"),
    (jwt.DecodeError, "malformed token"),
)


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller."""

    subject: str
    credential: str  # which kind vouched for the subject: "jwt" or "api-key"


class Authenticator:
    def __init__(
        self,
        config: AuthConfig,
        cache_size: int = 4096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._api_keys = {_digest(key): subject for key, subject in config.api_keys.items()}
        # token -> (identity, not before, expires), both in seconds since the epoch.
        self._verified: dict[str, tuple[Identity, float, float]] = {}
        self._cache_size = cache_size
        self._clock = clock

    def authenticate(self, authorization: str) -> Identity:
        """The identity behind an `authorization` metadata value; raises Unauthenticated."""
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("authorization must be 'Bearer <token>'")
        if token.count(".") == 2:
            return self._jwt(token)
        subject = self._api_keys.get(_digest(token))
        if subject is None:
            raise Unauthenticated("unknown API key")
        return Identity(subject, "api-key")

    def _jwt(self, token: str) -> Identity:
        cached = self._verified.get(token)
        if cached is not None:
            identity, not_before, expires = cached
            if not_before <= self._clock() < expires:
                return identity
            del self._verified[token]  # verify again: the error says why it failed
        claims = self._decode(token)
        subject = claims["sub"]
        if not SUBJECT.fullmatch(subject):
            raise Unauthenticated("token subject is not a valid identity")
        identity = Identity(subject, "jwt")
        if len(self._verified) >= self._cache_size:
            self._verified.clear()  # rare, and cheaper than bookkeeping for an LRU
        not_before = max(_seconds(claims.get("nbf")), _seconds(claims.get("iat")))
        self._verified[token] = (identity, not_before, _seconds(claims["exp"]))
        return identity

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._config.jwt_key,
                algorithms=[JWT_ALGORITHM],
                audience=self._config.audience,
                issuer=self._config.issuer,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.MissingRequiredClaimError as error:
            raise Unauthenticated(f"token has no '{error.claim}' claim") from None
        except jwt.InvalidTokenError as error:
            raise Unauthenticated(_problem(error)) from None
        return claims


def mint_token(config: AuthConfig, subject: str, ttl_s: int, now: float | None = None) -> str:
    """A JWT for `subject` that this configuration accepts for `ttl_s` seconds."""
    issued = int(time.time() if now is None else now)
    claims = {
        "sub": subject,
        "iss": config.issuer,
        "aud": config.audience,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_s,
    }
    return jwt.encode(claims, config.jwt_key, algorithm=JWT_ALGORITHM)


def _problem(error: Exception) -> str:
    for cls, message in _JWT_PROBLEMS:
        if isinstance(error, cls):
            return message
    return "invalid token"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _seconds(value: Any) -> float:
    """A NumericDate claim PyJWT already validated, or 0 when it is absent."""
    return float(value) if isinstance(value, int | float) else 0.0
