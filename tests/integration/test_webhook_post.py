"""One webhook attempt against real local HTTP servers: signed, a 2xx is delivered, a redirect
is not followed (nor delivered), a refused connection is an error; and the retry schedule."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from services.alerts.deliver import delay, post_webhook
from services.contracts import webhook
from services.runtime.stack import free_port


class Answer(http.server.BaseHTTPRequestHandler):
    status = 200
    seen: list[tuple[str, bytes, dict[str, str]]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.path, body, dict(self.headers)))
        self.send_response(self.status)
        if self.status in (301, 302, 307, 308):
            self.send_header("Location", "http://127.0.0.1:1/internal")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[Answer]]]:
    handler = type("H", (Answer,), {"status": 200, "seen": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", handler
    httpd.shutdown()
    httpd.server_close()


def test_a_signed_post_is_delivered_on_2xx(server):
    url, handler = server
    outcome = post_webhook(url, b'{"text": "hi"}', b"k", "a1", 5)
    assert (outcome.delivered, outcome.status_code, outcome.error) == (True, 200, None)
    [(path, body, headers)] = handler.seen
    assert (
        path == "/hook" and body == b'{"text": "hi"}' and headers["X-Inferledger-Alert-Id"] == "a1"
    )
    assert webhook.verify(
        b"k", headers[webhook.TIMESTAMP_HEADER], body, headers[webhook.SIGNATURE_HEADER]
    )


@pytest.mark.parametrize("status", [302, 307, 500, 404])
def test_redirects_and_errors_are_not_delivered_and_not_followed(server, status):
    url, handler = server
    handler.status = status
    outcome = post_webhook(url, b"{}", b"k", "a1", 5)
    assert (outcome.delivered, outcome.status_code) == (False, status)
    assert len(handler.seen) == 1  # the redirect's target was never asked


def test_no_answer_is_an_error():
    outcome = post_webhook(f"http://127.0.0.1:{free_port()}/", b"{}", None, "a1", 2)
    assert not outcome.delivered and outcome.status_code is None and outcome.error


def test_attempts_back_off_by_threes_and_span_hours():
    assert [delay(n, 1).total_seconds() for n in (1, 2, 3, 4)] == [1, 3, 9, 27]
    assert sum((delay(n, 1) for n in range(1, 10)), timedelta()) > timedelta(hours=2.7)
