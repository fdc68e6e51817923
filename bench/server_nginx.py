"""nginx as the HTTP limit line of the benchmark: what this machine does for a POST that costs nothing.

Why: a server's own overhead only means something against what the same machine, the same client (wrk with
the same bodies) and the same loopback can do at all. nginx (Debian nginx-light, C, one worker per core)
answering every request with `return 200` and a static body the size of the MLP's answer is that ceiling:
the issue's first target is modelserve's MLP req/s over this line, measured in the same run.

nginx runs as a private process: its own config, pid, temp and log files in a temp dir, `daemon off` so the
bench owns the master's pid (and, through its session, the workers' CPU), 127.0.0.1 only.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from server_procs import Server, free_port

NGINX = "/usr/sbin/nginx"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or (NGINX if Path(NGINX).exists() else None)


def nginx_version() -> str:
    binary = nginx_binary()
    if binary is None:
        return "missing"
    out = subprocess.run([binary, "-v"], capture_output=True, text=True)
    return (out.stderr or out.stdout).strip().rsplit("/", 1)[-1] or "?"


def nginx_config(workdir: Path, port: int, body: str) -> str:
    """One server block: every path and method gets 200 with `body` as application/json."""
    quoted = body.replace("\\", "\\\\").replace("'", "\\'")
    temp = {name: workdir / name for name in ("client", "proxy", "fastcgi", "uwsgi", "scgi")}
    return "\n".join(
        [
            "daemon off;",
            "worker_processes auto;",
            f"pid {workdir / 'nginx.pid'};",
            f"error_log {workdir / 'error.log'} warn;",
            "events { worker_connections 1024; }",
            "http {",
            "    access_log off;",
            "    keepalive_requests 1000000;",
            "    keepalive_timeout 75s;",
            "    client_max_body_size 64m;",
            "    client_body_buffer_size 4m;",
            f"    client_body_temp_path {temp['client']};",
            f"    proxy_temp_path {temp['proxy']};",
            f"    fastcgi_temp_path {temp['fastcgi']};",
            f"    uwsgi_temp_path {temp['uwsgi']};",
            f"    scgi_temp_path {temp['scgi']};",
            "    server {",
            f"        listen 127.0.0.1:{port};",
            "        default_type application/json;",
            f"        location / {{ return 200 '{quoted}'; }}",
            "    }",
            "}",
            "",
        ]
    )


def make_nginx(body: str, log: Path) -> Server:
    """A Server for nginx answering `body`; its config lives in a fresh temp dir."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is missing: run hack/install-system-deps.sh (Debian package nginx-light)")
    workdir = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_config(workdir, port, body))
    argv = [binary, "-e", str(workdir / "error.log"), "-p", str(workdir), "-c", str(conf)]
    return Server("nginx", argv, port, log, ready_path="/")
