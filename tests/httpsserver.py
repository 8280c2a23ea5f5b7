"""A real HTTPS (or plain HTTP) server on 127.0.0.1 for fetch and discovery tests.

``make_ca(dir)`` creates a test CA and a server certificate for 127.0.0.1 and
localhost with the real ``openssl``; ``Server`` serves files from a dict of
path → bytes (or callables) with ETag and Cache-Control, counts requests and
records the request headers, so tests can check conditional GETs.
"""

from __future__ import annotations

import hashlib
import http.server
import ssl
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class CA:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_ca(directory: Path) -> CA:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                   "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", str(ca_key), "-out", str(ca_cert), "-days", "2",
        "-subj", "/CN=podrun test CA")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return CA(ca_cert, cert, key)


Content = bytes | Callable[[], bytes]


@dataclass
class Route:
    body: Content
    cache_control: str | None = None
    etag: bool = True
    status: int = 200


@dataclass
class Server:
    """Serves ``routes`` (URL path → Route) on 127.0.0.1 over TLS when ``ca`` is given."""

    routes: dict[str, Route] = field(default_factory=dict)
    ca: CA | None = None
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def start(self) -> Server:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                server.requests.append((self.path, dict(self.headers)))
                route = server.routes.get(path)
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = route.body() if callable(route.body) else route.body
                tag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                if route.etag and self.headers.get("If-None-Match") == tag:
                    self.send_response(304)
                    if route.cache_control:
                        self.send_header("Cache-Control", route.cache_control)
                    self.send_header("ETag", tag)
                    self.end_headers()
                    return
                self.send_response(route.status)
                if route.etag:
                    self.send_header("ETag", tag)
                if route.cache_control:
                    self.send_header("Cache-Control", route.cache_control)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        if self.ca:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.ca.server_cert, self.ca.server_key)
            self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def base(self) -> str:
        return f"{'https' if self.ca else 'http'}://127.0.0.1:{self.port}"

    def hits(self, path: str) -> list[dict[str, str]]:
        return [h for p, h in self.requests if p.split("?", 1)[0] == path]

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
