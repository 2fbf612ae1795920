"""Print a trace from Jaeger as a tree: ``python -m tracing <trace-id> [--jaeger-url URL]``.

Exit status 0 with the tree on stdout; 1 with one line on stderr when the
trace is not found or Jaeger cannot be reached; 2 for a malformed trace id
(argparse's usage error). ``--wait SECONDS`` polls for a trace that is still
being exported instead of giving up at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tracing.jaeger import JaegerError, format_tree, get_trace, query_url, wait_for_trace
from tracing.model import Trace


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tracing",
        description="Print a trace stored in Jaeger as an indented span tree.",
    )
    parser.add_argument("trace_id", help="32 hex digits, as in a traceparent header or a log line")
    parser.add_argument(
        "--jaeger-url",
        default=None,
        help="Jaeger query base URL (default: $JAEGER_QUERY_URL or http://127.0.0.1:16686)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep polling this long for the trace to appear (default: ask once)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    url = query_url(args.jaeger_url)
    trace: Trace | None
    try:
        if args.wait > 0:
            trace = wait_for_trace(args.trace_id, timeout_s=args.wait, base_url=url)
        else:
            trace = get_trace(args.trace_id, base_url=url)
    except ValueError as exc:
        parser.error(str(exc))  # exits with status 2
    except (JaegerError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if trace is None:
        print(f"error: trace {args.trace_id} not found in Jaeger at {url}", file=sys.stderr)
        return 1
    print(format_tree(trace))
    return 0


if __name__ == "__main__":
    sys.exit(main())
