"""kube-proxy's health answers, compared with what service_health.go / proxier_health.go write."""

from __future__ import annotations

import json

import pytest

from testbed.kubeproxy.healthcheck import (
    GO_ZERO_TIME,
    HttpResponse,
    Instant,
    proxier_health,
    service_health,
)

JSON_HEADERS = {"Content-Type": "application/json", "X-Content-Type-Options": "nosniff"}

# 2024-05-09 07:35:25.5 UTC, 12.25 s after process start
NOW = Instant(1_715_240_125_500_000_000, 12_250_000_000)
EARLIER = Instant(1_715_240_100_000_000_000, 1_000)


def test_service_health_with_local_endpoints_is_200_with_go_body() -> None:
    resp = service_health("default", "web", 3, True)
    assert resp.status == 200
    assert dict(resp.headers) == JSON_HEADERS
    # dedent-ed Go template: tab indentation, no trailing newline
    assert resp.body == (
        b'{\n\t"service": {\n\t\t"namespace": "default",\n\t\t"name": "web"\n\t},\n'
        b'\t"localEndpoints": 3,\n\t"serviceProxyHealthy": true\n}'
    )


def test_service_health_without_local_endpoints_is_503() -> None:
    resp = service_health("shop", "cart", 0, True)
    assert resp.status == 503
    assert dict(resp.headers) == JSON_HEADERS
    assert json.loads(resp.body) == {
        "service": {"namespace": "shop", "name": "cart"},
        "localEndpoints": 0,
        "serviceProxyHealthy": True,
    }


def test_service_health_when_proxy_unhealthy_is_503_even_with_endpoints() -> None:
    resp = service_health("default", "web", 2, False)
    assert resp.status == 503
    body = json.loads(resp.body)
    assert body["localEndpoints"] == 2
    assert body["serviceProxyHealthy"] is False


@pytest.mark.parametrize(
    ("instant", "text"),
    [
        (Instant(0), "1970-01-01 00:00:00 +0000 UTC"),
        (Instant(1_500_000_000), "1970-01-01 00:00:01.5 +0000 UTC"),
        (NOW, "2024-05-09 07:35:25.5 +0000 UTC m=+12.250000000"),
        (Instant(7, -3), "1970-01-01 00:00:00.000000007 +0000 UTC m=-0.000000003"),
    ],
)
def test_instant_prints_like_go_time_string(instant: Instant, text: str) -> None:
    assert instant.go_string() == text


def test_proxier_healthz_healthy_reports_now_as_last_updated() -> None:
    resp = proxier_health("/healthz", True, EARLIER, NOW)
    assert resp.status == 200
    assert dict(resp.headers) == JSON_HEADERS
    now = NOW.go_string()
    assert resp.body.decode() == (
        f'{{"lastUpdated": "{now}","currentTime": "{now}", "nodeEligible": true}}'
    )
    assert json.loads(resp.body)["nodeEligible"] is True


def test_proxier_healthz_unhealthy_is_503_with_real_last_update() -> None:
    resp = proxier_health("/healthz", False, EARLIER, NOW)
    assert resp.status == 503
    body = json.loads(resp.body)
    assert body == {
        "lastUpdated": EARLIER.go_string(),
        "currentTime": NOW.go_string(),
        "nodeEligible": True,
    }


def test_proxier_healthz_never_updated_shows_go_zero_time() -> None:
    resp = proxier_health("/healthz?verbose=1", False, None, NOW)
    assert resp.status == 503
    assert json.loads(resp.body)["lastUpdated"] == GO_ZERO_TIME


def test_node_not_eligible_fails_healthz_but_not_livez() -> None:
    healthz = proxier_health("/healthz", True, EARLIER, NOW, node_eligible=False)
    livez = proxier_health("/livez", True, EARLIER, NOW, node_eligible=False)
    assert healthz.status == 503
    assert json.loads(healthz.body)["nodeEligible"] is False
    assert livez.status == 200
    assert json.loads(livez.body) == {
        "lastUpdated": NOW.go_string(),
        "currentTime": NOW.go_string(),
    }


@pytest.mark.parametrize("path", ["/", "/healthz/", "/metrics", "/livezz"])
def test_proxier_unknown_paths_get_go_not_found(path: str) -> None:
    resp = proxier_health(path, True, EARLIER, NOW)
    assert resp.status == 404
    assert resp.body == b"404 page not found\n"
    assert resp.header("content-type") == "text/plain; charset=utf-8"


def test_encode_adds_go_headers_and_head_omits_body() -> None:
    resp = HttpResponse(503, (("X-B", "2"), ("Content-Type", "text/plain")), b"down")
    wire = resp.encode(date="Thu, 09 May 2024 07:35:25 GMT")
    assert wire == (
        b"HTTP/1.1 503 Service Unavailable\r\n"
        b"Content-Type: text/plain\r\nX-B: 2\r\nConnection: close\r\n"
        b"Date: Thu, 09 May 2024 07:35:25 GMT\r\nContent-Length: 4\r\n\r\ndown"
    )
    head = resp.encode(head_only=True, date="Thu, 09 May 2024 07:35:25 GMT")
    assert head == wire[: -len(b"down")]
