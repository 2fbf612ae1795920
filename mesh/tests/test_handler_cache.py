"""HandlerCache: each method's handler is wrapped once, and again only when it changes."""

from __future__ import annotations

from typing import Any

import grpc

from mesh.interceptors import Handler, HandlerCache


async def _echo(request: bytes, context: Any) -> bytes:
    return request


def _counting_cache() -> tuple[HandlerCache, list[str]]:
    wrapped: list[str] = []

    def wrap(handler: Handler, method: str) -> Handler:
        wrapped.append(method)
        return grpc.unary_unary_rpc_method_handler(_echo)

    return HandlerCache(wrap), wrapped


def test_the_same_handler_is_wrapped_once_per_method() -> None:
    cache, wrapped = _counting_cache()
    handler = grpc.unary_unary_rpc_method_handler(_echo)

    first = [cache.get(handler, "/a.S/One") for _ in range(3)]
    other = cache.get(handler, "/a.S/Two")

    assert first[0] is first[1] is first[2]
    assert other is not first[0]
    assert wrapped == ["/a.S/One", "/a.S/Two"]


def test_a_new_handler_for_a_method_is_wrapped_again_and_replaces_the_kept_one() -> None:
    cache, wrapped = _counting_cache()
    old = grpc.unary_unary_rpc_method_handler(_echo)
    new = grpc.unary_unary_rpc_method_handler(_echo)

    from_old = cache.get(old, "/a.S/One")
    from_new = cache.get(new, "/a.S/One")

    assert from_new is not from_old
    assert cache.get(new, "/a.S/One") is from_new
    assert wrapped == ["/a.S/One", "/a.S/One"]
