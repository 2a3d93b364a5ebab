"""Poll an HTTP endpoint until it gives the expected status and text, or a deadline passes."""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Callable

from bakery.record import SmokeResult
from bakery.targets.base import SmokeCheck

EXCERPT = 300
NO_ANSWER_YET = "no answer yet"


def _excerpt(body: str) -> str:
    body = " ".join(body.split())
    return body[:EXCERPT] + ("..." if len(body) > EXCERPT else "")


# How long one request may wait for its answer. The attempts overlap (a new one every ``interval``), so a
# request that hangs does not hold up the next: QEMU's user network accepts a forwarded connection before the
# guest listens and sends the guest's SYN again only after a back-off, so one early request can hang for
# seconds after nginx is up (measured: a sequential poll with this timeout reported 16.5 s for a boot whose
# nginx answered a fresh request at 13.5 s).
ATTEMPT_TIMEOUT = 10.0


def _fetch(url: str) -> tuple[int | None, str | None, str]:
    """One GET: (status, body, "") or (None, None, why there was no answer)."""
    try:
        with urllib.request.urlopen(url, timeout=ATTEMPT_TIMEOUT) as resp:  # noqa: S310 (http on purpose)
            return resp.status, resp.read(1 << 20).decode("utf-8", "replace"), ""
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(1 << 20).decode("utf-8", "replace"), ""
    except (OSError, urllib.error.URLError) as exc:
        return None, None, f"no HTTP answer ({getattr(exc, 'reason', exc)})"


def _last(detail: str, pending: dict[Future, float], now: float) -> str:
    """The verdict's "last:" part: what the last answered request got, and the requests still unanswered (a
    service that accepts connections and never answers leaves only those)."""
    if not pending:
        return detail
    waiting = f"{len(pending)} request(s) sent and not answered, the oldest after {now - min(pending.values()):.1f}s"
    return f"no HTTP answer ({waiting})" if detail == NO_ANSWER_YET else f"{detail}; {waiting}"


def poll_http(
    url: str,
    check: SmokeCheck,
    *,
    log: Callable[[str], None],
    started: float | None = None,
    alive: Callable[[], bool] = lambda: True,
    interval: float = 2.0,
) -> SmokeResult:
    """Ask ``url`` every ``interval`` seconds until status == check.expect_status and check.expect_text is in
    the body. Attempts overlap: one that waits for its answer (up to ``ATTEMPT_TIMEOUT``) does not delay the
    next, so the time reported is within ``interval`` of the first answer a fresh request gets.

    ``started`` is the monotonic time the VM was started (the result's seconds are measured
    from it). ``alive`` lets the caller stop early when the VM died. Never raises for HTTP or
    network errors: the verdict is in the returned SmokeResult.
    """
    started = time.monotonic() if started is None else started
    deadline = started + check.timeout_seconds
    last_status: int | None = None
    last_detail = NO_ANSWER_YET
    attempts = 0
    next_attempt = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=math.ceil(ATTEMPT_TIMEOUT / max(interval, 0.1)) + 1,
                              thread_name_prefix="poll-http")
    pending: dict[Future, float] = {}  # request -> when it was sent
    try:
        while True:
            if time.monotonic() >= next_attempt:
                attempts += 1
                pending[pool.submit(_fetch, url)] = time.monotonic()
                next_attempt = time.monotonic() + interval
                if attempts == 1 or attempts % 10 == 0:
                    log(f"waiting for {url}: {last_detail}")
            done, _ = wait(pending, timeout=max(0.0, min(next_attempt, deadline) - time.monotonic()),
                           return_when=FIRST_COMPLETED)
            for answered in done:
                del pending[answered]
                status, body, why = answered.result()
                if body is None:
                    last_detail = why
                    continue
                last_status = status
                if status == check.expect_status and check.expect_text in body:
                    seconds = time.monotonic() - started
                    log(f"HTTP check passed: {url} answered {status} with {check.expect_text!r} after {seconds:.1f}s")
                    return SmokeResult(True, round(seconds, 2), status, f"HTTP {status}: {_excerpt(body)}")
                want = f"HTTP {check.expect_status} containing {check.expect_text!r}"
                last_detail = f"expected {want}, got HTTP {status}: {_excerpt(body)}"
            now = time.monotonic()
            if not alive():
                return SmokeResult(False, round(now - started, 2), last_status,
                                   f"VM stopped before the check passed; last: {_last(last_detail, pending, now)}")
            if now >= deadline:
                return SmokeResult(False, round(now - started, 2), last_status,
                                   f"no good answer within {check.timeout_seconds}s; "
                                   f"last: {_last(last_detail, pending, now)}")
            if not pending:  # wait() returns at once on nothing pending
                time.sleep(max(0.0, min(next_attempt, deadline) - now))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a request still waiting ends by its own timeout
