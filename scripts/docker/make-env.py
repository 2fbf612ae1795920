#!/usr/bin/env python3
"""`scripts/docker/make-env.py [PATH]`: write a compose `.env` with fresh random keys.

compose.yaml takes the page-token keys and the gateway's keys from the
environment or from `.env` beside it (git-ignored), so no key is committed.
This writes PATH (default: `.env` at the repository root) once; an existing
file is left alone, so `make compose-env` never changes keys under a running
stack. Standard library only: it runs before any tool is installed.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def contents() -> str:
    api_key = secrets.token_urlsafe(24)
    return "\n".join(
        [
            "# Keys of `docker compose up` (compose.yaml), written by",
            "# scripts/docker/make-env.py. Never commit this file.",
            "# HMAC keys of page tokens, shared by each service's replicas.",
            f"CATALOG_PAGE_TOKEN_KEY={secrets.token_hex(32)}",
            f"ORDERS_PAGE_TOKEN_KEY={secrets.token_hex(32)}",
            f"NOTIFICATIONS_PAGE_TOKEN_KEY={secrets.token_hex(32)}",
            "# The gateway's JWT secret; mint a token with it:",
            "#   set -a && . ./.env && set +a && make -s token | tail -1",
            f"GATEWAY_JWT_KEY={secrets.token_urlsafe(48)}",
            "# API keys, key=customer: send 'authorization: Bearer <key>'.",
            f"GATEWAY_API_KEYS={api_key}=cus-demo",
            "",
        ]
    )


def main(argv: list[str]) -> int:
    if len(argv) > 2:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    path = Path(argv[1]) if len(argv) == 2 else REPO_ROOT / ".env"
    if path.exists():
        print(f"{path} exists; left as it is", file=sys.stderr)
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created readable by its owner only, before anything is written to it.
    path.touch(mode=0o600)
    path.write_text(contents())
    print(f"wrote {path} with new random keys", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
