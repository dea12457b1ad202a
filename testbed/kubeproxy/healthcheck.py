"""kube-proxy's two HTTP health servers, as pure request -> response functions.

The service health check (healthCheckNodePort of `externalTrafficPolicy: Local`
services) is what an external load balancer polls to pick nodes; the proxier
health server on port 10256 is what kubelet/LB probes for kube-proxy itself.
Both answer the way pkg/proxy/healthcheck/{service_health,proxier_health}.go
do, byte for byte in status, headers and body, so that anything polling the
lab sees what it would see from a real node. Socket I/O lives in servers.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate

PROXIER_HEALTH_PORT = 10256

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}
_JSON_HEADERS = (("Content-Type", "application/json"), ("X-Content-Type-Options", "nosniff"))


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def encode(self, head_only: bool = False, date: str | None = None) -> bytes:
        """Wire form in Go net/http's order: handler headers sorted, then the ones it adds.

        The servers close after every response, hence `Connection: close`.
        """
        reason = _REASONS.get(self.status, "Unknown")
        lines = [f"HTTP/1.1 {self.status} {reason}"]
        lines += [f"{k}: {v}" for k, v in sorted(self.headers)]
        lines.append("Connection: close")
        lines.append(f"Date: {date or formatdate(usegmt=True)}")
        lines.append(f"Content-Length: {len(self.body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


@dataclass(frozen=True)
class Instant:
    """A Go `time.Time`: wall clock plus the optional monotonic reading `time.Now()` carries."""

    wall_ns: int
    mono_ns: int | None = None

    def go_string(self) -> str:
        """Go's Time.String(): "2006-01-02 15:04:05.999999999 -0700 MST m=+0.000000001"."""
        secs, frac = divmod(self.wall_ns, 1_000_000_000)
        text = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%d %H:%M:%S")
        if frac:
            text += "." + f"{frac:09d}".rstrip("0")
        text += " +0000 UTC"
        if self.mono_ns is not None:
            sign = "+" if self.mono_ns >= 0 else "-"
            m_secs, m_frac = divmod(abs(self.mono_ns), 1_000_000_000)
            text += f" m={sign}{m_secs}.{m_frac:09d}"
        return text


GO_ZERO_TIME = "0001-01-01 00:00:00 +0000 UTC"


def _go_quote(text: str) -> str:
    """Go's %q for ordinary names; JSON string quoting agrees on them."""
    return json.dumps(text, ensure_ascii=False)


def service_health(
    namespace: str, name: str, local_endpoints: int, proxy_healthy: bool
) -> HttpResponse:
    """hcHandler.ServeHTTP: any method, any path; 503 unless endpoints are local and proxy is up."""
    ok = local_endpoints != 0 and proxy_healthy
    body = (
        "{\n"
        '\t"service": {\n'
        f'\t\t"namespace": {_go_quote(namespace)},\n'
        f'\t\t"name": {_go_quote(name)}\n'
        "\t},\n"
        f'\t"localEndpoints": {local_endpoints},\n'
        f'\t"serviceProxyHealthy": {"true" if proxy_healthy else "false"}\n'
        "}"
    )
    return HttpResponse(200 if ok else 503, _JSON_HEADERS, body.encode())


def _not_found() -> HttpResponse:
    """What Go's ServeMux answers for a path no handler owns (http.NotFound)."""
    headers = (
        ("Content-Type", "text/plain; charset=utf-8"),
        ("X-Content-Type-Options", "nosniff"),
    )
    return HttpResponse(404, headers, b"404 page not found\n")


def proxier_health(
    path: str,
    healthy: bool,
    last_updated: Instant | None,
    now: Instant,
    node_eligible: bool = True,
) -> HttpResponse:
    """The mux of proxierHealthServer.Run: /healthz and /livez, anything else 404.

    /healthz also fails when the node is not eligible (deleted or being drained by
    the autoscaler); /livez ignores that. A healthy answer reports lastUpdated as
    now, as kube-proxy does for compatibility; an unhealthy one shows the real
    (possibly zero) last update.
    """
    route = path.split("?", 1)[0]
    if route not in ("/healthz", "/livez"):
        return _not_found()
    ok = healthy and node_eligible if route == "/healthz" else healthy
    shown = now if ok else last_updated
    last = shown.go_string() if shown else GO_ZERO_TIME
    body = f'{{"lastUpdated": {_go_quote(last)},"currentTime": {_go_quote(now.go_string())}'
    if route == "/healthz":
        body += f', "nodeEligible": {"true" if node_eligible else "false"}'
    body += "}"
    return HttpResponse(200 if ok else 503, _JSON_HEADERS, body.encode())
