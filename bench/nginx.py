"""nginx as the benchmarks run it: one `grpc_pass` proxy to one upstream, in a folder of its own.

`bench.gateway` puts one in front of catalog as the reference gateway;
`bench.anchors` chains two in front of a bare echo as a sidecar pair. Each is
one process (`master_process off`, no daemon) whose prefix, configuration,
pid file and error log live in `<run_dir>/<name>`, with `grpc_pass` to an
upstream block with `keepalive 32`. The binary is Debian's, unpacked by
`make bench-tools` into .tools/nginx; when it is missing or does not start,
`start_nginx` raises `NginxUnavailable` saying why, so that the results can.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from localmode.processes import StartError, free_port
from localmode.topology import REPO_ROOT, LocalService

__all__ = ["NGINX", "NginxUnavailable", "nginx_service", "nginx_version", "start_nginx"]

NGINX = REPO_ROOT / ".tools" / "nginx" / "usr" / "sbin" / "nginx"

# One process, no daemon; every path nginx would write under /var goes to
# the prefix. keepalive_requests lifts the default of 1000 calls per
# connection, after which nginx would close the client's or the upstream's
# HTTP/2 connection mid-run and charge a reconnection to some call.
NGINX_CONF = """\
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    upstream backend {{
        server {upstream};
        keepalive 32;
        keepalive_requests 1000000;
    }}
    server {{
        listen {listen} http2;
        keepalive_requests 1000000;
        location / {{
            grpc_pass grpc://backend;
        }}
    }}
}}
"""


class NginxUnavailable(Exception):
    """Why nginx is not measured, worded to end a sentence ("... is missing")."""


def nginx_service(binary: Path, upstream: str, run_dir: Path, name: str = "nginx") -> LocalService:
    """nginx on a free loopback port, forwarding every call to `upstream` (HOST:PORT)."""
    prefix = run_dir / name
    prefix.mkdir(parents=True, exist_ok=True)
    listen = f"127.0.0.1:{free_port()}"
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, upstream=upstream, listen=listen))
    return LocalService(
        name=name,
        command=(
            str(binary),
            *("-p", str(prefix), "-c", str(conf)),
            *("-g", "daemon off; master_process off;"),
        ),
        environment={},
        ready=f"grpc://{listen}",  # a health check through nginx reaches the upstream's
        ports={},
        run_dir=run_dir,
    )


def nginx_version(binary: Path) -> str:
    """`nginx/1.22.1`, from `nginx -v` (which writes to stderr)."""
    done = subprocess.run(
        [str(binary), "-v"], capture_output=True, text=True, timeout=10, check=True
    )
    return done.stderr.strip().removeprefix("nginx version: ")


def start_nginx(
    binary: Path,
    upstream: str,
    run_dir: Path,
    start: Callable[[LocalService], None],
    name: str = "nginx",
) -> tuple[LocalService, str]:
    """nginx in front of `upstream`, started (and waited for) by `start`; with its version.

    Raises NginxUnavailable when the binary is missing or nginx does not start.
    """
    if not binary.is_file():
        raise NginxUnavailable(f"{binary} is missing (`make bench-tools` unpacks it)")
    try:
        version = nginx_version(binary)
        service = nginx_service(binary, upstream, run_dir, name)
        start(service)
    except (OSError, subprocess.SubprocessError, StartError) as error:
        reason = " ".join(str(error).split()).rstrip(".")  # it goes into a sentence
        raise NginxUnavailable(f"nginx did not start: {reason}") from error
    return service, version
