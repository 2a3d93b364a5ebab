"""bakery.http_check.poll_http against real sockets: a request that hangs (what QEMU's user network does
with a forwarded connection before the guest listens) does not delay the verdict; slow answers still pass;
wrong answers, a stopped VM and the deadline fail with what was last seen."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from bakery.http_check import ATTEMPT_TIMEOUT, poll_http
from bakery.targets.base import SmokeCheck
from tests.slirp_standin import HoldingListener

PAGE = b"<html><title>Welcome to nginx!</title></html>"


class Server(HoldingListener):
    """A forwarded port (see HoldingListener) whose guest answers HTTP ``status`` after ``delay`` s."""

    def __init__(self, *, ready_after: float = 0.0, delay: float = 0.0, status: int = 200, body: bytes = PAGE):
        self.delay, self.status, self.body = delay, status, body
        super().__init__(ready_after=ready_after)

    def answer(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            time.sleep(self.delay)
            reason = b"OK" if self.status == 200 else b"Error"
            conn.sendall(b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                         % (self.status, reason, len(self.body), self.body))


@pytest.fixture
def serve() -> Iterator:
    servers: list[Server] = []

    def make(**kwargs) -> Server:
        servers.append(Server(**kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def url(server: Server) -> str:
    return f"http://127.0.0.1:{server.port}/"


def test_a_hanging_request_does_not_delay_the_verdict(serve) -> None:
    server = serve(ready_after=2.0)
    lines: list[str] = []
    result = poll_http(url(server), SmokeCheck(timeout_seconds=30), log=lines.append, interval=0.5)
    assert result.passed, result.detail
    assert len(server.held) >= 3  # the requests sent before it was ready are still waiting
    # within one interval (and the machine's jitter) of the first answer, not after ATTEMPT_TIMEOUT
    assert 2.0 <= result.seconds < 4.0 < ATTEMPT_TIMEOUT, result.seconds
    assert "HTTP check passed" in lines[-1]


def test_answers_slower_than_the_interval_still_pass(serve) -> None:
    server = serve(delay=1.5)
    result = poll_http(url(server), SmokeCheck(timeout_seconds=30), log=lambda _: None, interval=0.5)
    assert result.passed, result.detail
    assert 1.5 <= result.seconds < 3.0
    assert server.accepted >= 3  # the attempts overlapped: new ones were sent while the first one waited


def test_a_wrong_answer_fails_at_the_deadline_with_what_it_got(serve) -> None:
    server = serve(status=503, body=b"maintenance")
    started = time.monotonic()
    result = poll_http(url(server), SmokeCheck(timeout_seconds=2), log=lambda _: None, interval=0.5)
    assert not result.passed
    assert 2.0 <= time.monotonic() - started < 3.0
    assert result.status == 503
    assert "expected HTTP 200 containing 'Welcome to nginx', got HTTP 503: maintenance" in result.detail


def test_no_listener_fails_at_the_deadline(serve) -> None:
    server = serve()
    server.close()  # nothing listens on the port any more: refused
    result = poll_http(url(server), SmokeCheck(timeout_seconds=1), log=lambda _: None, interval=0.25)
    assert not result.passed and result.status is None
    assert "no good answer within 1s" in result.detail and "no HTTP answer" in result.detail


def test_a_service_that_accepts_and_never_answers_fails_as_no_http_answer(serve) -> None:
    serve_hung = serve(ready_after=60)  # every connection accepted and held: a hung service
    result = poll_http(url(serve_hung), SmokeCheck(timeout_seconds=1), log=lambda _: None, interval=0.25)
    assert not result.passed and result.status is None
    # no request finished before the deadline, and the verdict still says why
    assert "no good answer within 1s; last: no HTTP answer (" in result.detail, result.detail
    assert "request(s) sent and not answered, the oldest after 1." in result.detail, result.detail


def test_a_wrong_answer_then_a_hang_reports_both(serve) -> None:
    server = serve(status=503, body=b"maintenance")
    lines: list[str] = []
    threading.Timer(0.6, lambda: setattr(server, "ready_at", time.monotonic() + 60)).start()  # then it hangs
    result = poll_http(url(server), SmokeCheck(timeout_seconds=2), log=lines.append, interval=0.25)
    assert not result.passed and result.status == 503
    assert "got HTTP 503: maintenance; " in result.detail and "not answered, the oldest after 1." in result.detail


def test_a_stopped_vm_ends_the_poll_early(serve) -> None:
    server = serve(ready_after=60)
    started = time.monotonic()
    result = poll_http(url(server), SmokeCheck(timeout_seconds=60), log=lambda _: None, interval=0.25,
                       alive=lambda: time.monotonic() - started < 1.0)
    assert not result.passed
    assert result.seconds < 2.0
    assert "VM stopped before the check passed" in result.detail
