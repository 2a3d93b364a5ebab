"""Poll an HTTP endpoint until it gives the expected status and text, or a deadline passes."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Callable

from bakery.record import SmokeResult
from bakery.targets.base import SmokeCheck

EXCERPT = 300


def _excerpt(body: str) -> str:
    body = " ".join(body.split())
    return body[:EXCERPT] + ("..." if len(body) > EXCERPT else "")


def poll_http(
    url: str,
    check: SmokeCheck,
    *,
    log: Callable[[str], None],
    started: float | None = None,
    alive: Callable[[], bool] = lambda: True,
    interval: float = 2.0,
) -> SmokeResult:
    """Poll ``url`` until status == check.expect_status and check.expect_text is in the body.

    ``started`` is the monotonic time the VM was started (the result's seconds are measured
    from it). ``alive`` lets the caller stop early when the VM died. Never raises for HTTP or
    network errors: the verdict is in the returned SmokeResult.
    """
    started = time.monotonic() if started is None else started
    deadline = started + check.timeout_seconds
    last_status: int | None = None
    last_detail = "no answer yet"
    attempts = 0
    while True:
        attempts += 1
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 (http on purpose)
                last_status = resp.status
                body = resp.read(1 << 20).decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            last_status = exc.code
            body = exc.read(1 << 20).decode("utf-8", "replace")
        except (OSError, urllib.error.URLError) as exc:
            body = None
            last_detail = f"no HTTP answer ({getattr(exc, 'reason', exc)})"
        if body is not None:
            if last_status == check.expect_status and check.expect_text in body:
                seconds = time.monotonic() - started
                log(f"HTTP check passed: {url} answered {last_status} with {check.expect_text!r} after {seconds:.1f}s")
                return SmokeResult(True, round(seconds, 2), last_status, f"HTTP {last_status}: {_excerpt(body)}")
            want = f"HTTP {check.expect_status} containing {check.expect_text!r}"
            last_detail = f"expected {want}, got HTTP {last_status}: {_excerpt(body)}"
        if attempts == 1 or attempts % 10 == 0:
            log(f"waiting for {url}: {last_detail}")
        now = time.monotonic()
        if not alive():
            return SmokeResult(False, round(now - started, 2), last_status, f"VM stopped before the check passed; last: {last_detail}")
        if now >= deadline:
            return SmokeResult(
                False,
                round(now - started, 2),
                last_status,
                f"no good answer within {check.timeout_seconds}s; last: {last_detail}",
            )
        time.sleep(min(interval, max(0.0, deadline - now)))
