"""Authentication: JWTs (HS256 only) and static API keys, without a network."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest

from gateway.auth import Authenticator, Identity, mint_token
from gateway.config import AuthConfig
from gateway.errors import Unauthenticated

KEY = b"test-key-of-thirty-two-bytes-or-more"
API_KEY = "test-api-key-0123456789"
CONFIG = AuthConfig(jwt_key=KEY, issuer="iss-1", audience="aud-1", api_keys={API_KEY: "svc-bot"})


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "cus-1",
        "iss": "iss-1",
        "aud": "aud-1",
        "iat": now,
        "exp": now + 60,
    }
    return {k: v for k, v in {**base, **changes}.items() if v is not None}


def signed(key: bytes = KEY, **changes: Any) -> str:
    return jwt.encode(claims(**changes), key, algorithm="HS256")


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def refusal(authorization: str) -> str:
    with pytest.raises(Unauthenticated) as error:
        Authenticator(CONFIG).authenticate(authorization)
    message = str(error.value)
    token = authorization.partition(" ")[2]
    assert not token or token not in message, "a message never repeats the credential"
    return message


def test_a_valid_jwt_gives_its_subject() -> None:
    identity = Authenticator(CONFIG).authenticate(f"Bearer {signed()}")
    assert identity == Identity("cus-1", "jwt")


def test_the_scheme_is_case_insensitive() -> None:
    assert Authenticator(CONFIG).authenticate(f"bearer {signed()}").subject == "cus-1"


def test_a_valid_api_key_gives_its_subject() -> None:
    assert Authenticator(CONFIG).authenticate(f"Bearer {API_KEY}") == Identity("svc-bot", "api-key")


def test_a_minted_token_is_accepted() -> None:
    token = mint_token(CONFIG, "cus-42", ttl_s=60)
    assert Authenticator(CONFIG).authenticate(f"Bearer {token}") == Identity("cus-42", "jwt")
    decoded = jwt.decode(token, KEY, algorithms=["HS256"], audience="aud-1")
    assert decoded["exp"] - decoded["iat"] == 60
    assert decoded["iss"] == "iss-1"


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        ("", "authorization must be 'Bearer <token>'"),
        ("Bearer", "authorization must be 'Bearer <token>'"),
        ("Bearer   ", "authorization must be 'Bearer <token>'"),
        (f"Basic {API_KEY}", "authorization must be 'Bearer <token>'"),
        (API_KEY, "authorization must be 'Bearer <token>'"),
        ("Bearer not-a-known-key-at-all", "unknown API key"),
        ("Bearer a.b.c", "malformed token"),
        ("Bearer ..", "malformed token"),
    ],
)
def test_malformed_credentials(authorization: str, message: str) -> None:
    assert refusal(authorization) == message


def test_a_wrong_signature() -> None:
    assert refusal(f"Bearer {signed(key=b'another-key-of-thirty-two-bytes-long')}") == (
        "token signature is invalid"
    )


def test_a_tampered_payload() -> None:
    header, _, signature = signed().split(".")
    forged = f"{header}.{b64(claims(sub='cus-admin'))}.{signature}"
    assert refusal(f"Bearer {forged}") == "token signature is invalid"


def test_alg_none_is_refused() -> None:
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}."
    assert refusal(f"Bearer {unsigned}") == "token algorithm must be HS256"


def test_another_hmac_algorithm_is_refused() -> None:
    token = jwt.encode(claims(), KEY + KEY, algorithm="HS512")
    assert refusal(f"Bearer {token}") == "token algorithm must be HS256"


def test_an_expired_token() -> None:
    past = int(time.time()) - 120
    assert refusal(f"Bearer {signed(iat=past, exp=past + 60)}") == "token expired"


def test_a_token_not_yet_valid() -> None:
    later = int(time.time()) + 600
    assert refusal(f"Bearer {signed(nbf=later, exp=later + 60)}") == "token not yet valid"


def test_a_wrong_audience() -> None:
    assert refusal(f"Bearer {signed(aud='someone-else')}") == "token has the wrong audience"


def test_a_wrong_issuer() -> None:
    assert refusal(f"Bearer {signed(iss='someone-else')}") == "token has the wrong issuer"


@pytest.mark.parametrize("claim", ["sub", "exp", "iss", "aud"])
def test_a_missing_claim(claim: str) -> None:
    token = jwt.encode(claims(**{claim: None}), KEY, algorithm="HS256")
    assert refusal(f"Bearer {token}") == f"token has no '{claim}' claim"


@pytest.mark.parametrize("subject", ["", "has space", "x" * 200, "new\nline"])
def test_a_subject_that_is_no_identity(subject: str) -> None:
    assert refusal(f"Bearer {signed(sub=subject)}") == "token subject is not a valid identity"


def test_a_subject_that_is_not_a_string() -> None:
    assert refusal(f"Bearer {signed(sub=42)}") == "token subject must be a string"


def test_a_verified_token_is_remembered_until_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [time.time()]
    authenticator = Authenticator(CONFIG, clock=lambda: now[0])
    token = signed(exp=int(now[0]) + 60)
    assert authenticator.authenticate(f"Bearer {token}").subject == "cus-1"

    def no_more_decoding(*args: Any, **kwargs: Any) -> Any:
        raise jwt.ExpiredSignatureError("decoded again")

    monkeypatch.setattr(jwt, "decode", no_more_decoding)
    now[0] += 59
    assert authenticator.authenticate(f"Bearer {token}").subject == "cus-1"
    now[0] += 1  # at exp: the remembered verdict no longer holds
    with pytest.raises(Unauthenticated, match="token expired"):
        authenticator.authenticate(f"Bearer {token}")


def test_the_cache_is_bounded() -> None:
    authenticator = Authenticator(CONFIG, cache_size=3)
    for number in range(10):
        authenticator.authenticate(f"Bearer {signed(sub=f'cus-{number}')}")
        assert len(authenticator._verified) <= 3
