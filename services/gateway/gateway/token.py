"""`python -m gateway.token [--sub SUBJECT] [--ttl SECONDS]`: prints a JWT the gateway accepts.

The token is signed with the same GATEWAY_JWT_KEY, GATEWAY_JWT_ISSUER and
GATEWAY_JWT_AUDIENCE the gateway reads (their demo defaults when unset), and
is the last line of the output, so `$(make token | tail -n 1)` captures it.
"""

from __future__ import annotations

import argparse
import sys

from gateway.auth import mint_token
from gateway.config import SUBJECT, AuthConfig
from mesh.config import ConfigError, Env


def _subject(value: str) -> str:
    if not SUBJECT.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a valid subject")
    return value


def _ttl(value: str) -> int:
    try:
        seconds = int(value)
    except ValueError:
        seconds = 0
    if seconds < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number of seconds")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.token", description=__doc__)
    parser.add_argument("--sub", type=_subject, default="cus-demo", help="subject (customer id)")
    parser.add_argument("--ttl", type=_ttl, default=3600, help="seconds until it expires")
    args = parser.parse_args(argv)
    try:
        config = AuthConfig.from_env(Env())
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    print(mint_token(config, args.sub, args.ttl))
    return 0


if __name__ == "__main__":
    sys.exit(main())
