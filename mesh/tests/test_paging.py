"""Page sizes and signed page tokens, without a network."""

from __future__ import annotations

import pytest

from mesh.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageTokens, page_size
from mesh.status import InvalidField

KEY = b"k" * 32


def _flip(token: str, index: int) -> str:
    """`token` with the base64 character at `index` replaced by another one."""
    old = token[index]
    new = "A" if old != "A" else "B"
    return token[:index] + new + token[index + 1 :]


@pytest.mark.parametrize(
    ("requested", "expected"),
    [(0, DEFAULT_PAGE_SIZE), (1, 1), (37, 37), (MAX_PAGE_SIZE, MAX_PAGE_SIZE)],
)
def test_page_size_defaults_and_accepts_up_to_the_maximum(requested: int, expected: int) -> None:
    assert page_size(requested) == expected


@pytest.mark.parametrize("requested", [-1, -100, MAX_PAGE_SIZE + 1, 2**31 - 1])
def test_page_size_out_of_range_is_invalid(requested: int) -> None:
    with pytest.raises(InvalidField) as caught:
        page_size(requested)
    assert caught.value.field == "page_size"
    assert str(caught.value).startswith("page_size: ")


@pytest.mark.parametrize("offset", [0, 1, 20, 10_000])
@pytest.mark.parametrize("scope", ["", "list", "search:espresso grinder"])
def test_tokens_round_trip(offset: int, scope: str) -> None:
    tokens = PageTokens(KEY)
    token = tokens.issue(offset, scope=scope)
    assert tokens.offset(token, scope=scope) == offset
    # Replicas configured with the same key accept each other's tokens.
    assert PageTokens(KEY).offset(token, scope=scope) == offset


def test_empty_token_is_the_first_page() -> None:
    assert PageTokens(KEY).offset("", scope="anything") == 0


def test_a_token_is_opaque_text_safe_in_a_url() -> None:
    token = PageTokens(KEY).issue(40, scope="list")
    assert token.count(".") == 1
    assert "=" not in token
    assert all(c.isalnum() or c in "-_." for c in token)


def _assert_bad_token(tokens: PageTokens, token: str, scope: str = "") -> None:
    with pytest.raises(InvalidField) as caught:
        tokens.offset(token, scope=scope)
    assert caught.value.field == "page_token"


def test_tampered_payload_is_rejected() -> None:
    tokens = PageTokens(KEY)
    token = tokens.issue(20)
    _assert_bad_token(tokens, _flip(token, 0))
    _assert_bad_token(tokens, _flip(token, 5))


def test_tampered_signature_is_rejected() -> None:
    tokens = PageTokens(KEY)
    token = tokens.issue(20)
    dot = token.index(".")
    _assert_bad_token(tokens, _flip(token, dot + 1))
    _assert_bad_token(tokens, token[:-2])


def test_forged_offset_with_a_copied_signature_is_rejected() -> None:
    tokens = PageTokens(KEY)
    _, signature = tokens.issue(20).split(".")
    forged_payload, _ = tokens.issue(1000).split(".")
    _assert_bad_token(PageTokens(KEY), f"{forged_payload}.{signature}")


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "no-dot-at-all",
        "a.b.c",
        ".",
        "abcde.abcde",  # a base64 length no encoder produces
        "é.é",  # not ASCII
        "!!!!.????",
        "eyJvIjogMjB9",  # a bare payload without signature
    ],
)
def test_malformed_token_is_rejected(token: str) -> None:
    _assert_bad_token(PageTokens(KEY), token)


def test_token_from_another_key_is_rejected() -> None:
    token = PageTokens(b"other key, other service.......").issue(20)
    _assert_bad_token(PageTokens(KEY), token)


def test_tokens_of_a_process_without_key_are_rejected_by_another() -> None:
    token = PageTokens().issue(20)
    _assert_bad_token(PageTokens(), token)


def test_token_for_another_scope_is_rejected() -> None:
    tokens = PageTokens(KEY)
    token = tokens.issue(20, scope="search:espresso")
    _assert_bad_token(tokens, token, scope="search:tea")
    _assert_bad_token(tokens, token, scope="list")
    _assert_bad_token(tokens, tokens.issue(20, scope="list"), scope="search:espresso")


def test_signed_negative_offset_is_rejected() -> None:
    tokens = PageTokens(KEY)
    _assert_bad_token(tokens, tokens.issue(-1))
