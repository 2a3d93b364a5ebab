"""Fault injection for the ARM emulator: throttling, server errors, failed and slow LROs.

Every rule matches on the HTTP method (``"*"`` = any) and a regular expression searched in the
request path (no query string, e.g. ``r"/galleries/[^/]+/images/[^/]+/versions/"``). HTTP faults are
answered *before* the emulator looks at the request, so a retried request is processed normally.

    emu.faults.add(429, method="PUT", path="/versions/", times=1, retry_after=1)   # explicit schedule
    emu.faults.random(0.3, statuses=(429, 500, 503), seed=7)                       # seeded chaos
    emu.faults.fail_lro(path="/versions/1.0.0$", code="InternalOperationError", message="boom")
    emu.faults.slow_lro(seconds=3, path="/versions/")                             # slow replication
    emu.faults.throttle(bucket=20, refill_per_second=0.2, method="DELETE")        # ARM's write limits
"""

from __future__ import annotations

import random as _random
import re
import threading
from dataclasses import dataclass, field

_ERROR_CODES = {
    408: ("RequestTimeout", "The request timed out."),
    429: ("TooManyRequests", ("The request is being throttled as the limit has been reached for operation type. "
                              "Please retry after the number of seconds given in the Retry-After header.")),
    500: ("InternalServerError", "Encountered internal server error. Please try again."),
    502: ("BadGateway", "The server received an invalid response from an upstream server."),
    503: ("ServiceUnavailable", "The service is temporarily unavailable. Please try again later."),
    504: ("GatewayTimeout", "The gateway did not receive a response within the specified time period."),
}


def error_for_status(status: int) -> tuple[str, str]:
    return _ERROR_CODES.get(status, ("InternalServerError", f"Injected fault {status}."))


@dataclass
class _Matcher:
    method: str = "*"
    path: str = ".*"

    def matches(self, method: str, path: str) -> bool:
        return (self.method == "*" or self.method.upper() == method.upper()) and re.search(
            self.path, path, re.IGNORECASE) is not None


@dataclass
class HttpFault(_Matcher):
    """Answer ``status`` to matching requests number ``after+1`` .. ``after+times``."""

    status: int = 503
    times: int = 1
    after: int = 0
    retry_after: float | None = None
    code: str | None = None
    message: str | None = None
    seen: int = 0
    fired: int = 0


@dataclass
class RandomFaults(_Matcher):
    """Fail matching requests with ``probability``; never more than ``max_per_request`` times for the
    same request (method + URL + body), so the SDK's retries eventually get through."""

    probability: float = 0.1
    statuses: tuple[int, ...] = (429, 500, 503)
    max_per_request: int = 1
    retry_after: float | None = 1
    rng: _random.Random = field(default_factory=_random.Random)
    per_request: dict = field(default_factory=dict)


@dataclass
class LroFault(_Matcher):
    """Make the next ``times`` matching long-running operations end ``Failed`` with this error."""

    code: str = "InternalOperationError"
    message: str = "An internal execution error occurred. Please retry later."
    times: int = 1
    fired: int = 0


@dataclass
class SlowLro(_Matcher):
    """Matching LROs stay ``InProgress`` for at least ``seconds`` (and ``polls`` polls, if given)."""

    seconds: float = 0.0
    polls: int | None = None


@dataclass
class Throttle(_Matcher):
    """ARM's request limits (a token bucket per subscription and operation kind): ``bucket`` matching
    requests at once, refilled at ``refill_per_second`` (on the emulator's clock); a request finding the
    bucket empty is answered 429 with ``Retry-After`` (real seconds until a token is back, at least 1)."""

    bucket: float = 200.0
    refill_per_second: float = 10.0
    tokens: float = -1.0  # -1: full, set at the first request
    at: float = 0.0  # the emulator's clock at the last refill
    throttled: int = 0


@dataclass
class InjectedFault:
    status: int
    code: str
    message: str
    retry_after: float | None


class Faults:
    """The emulator's fault configuration (``emulator.faults``). Thread-safe."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self.seed = seed
        self.http: list[HttpFault] = []
        self.randoms: list[RandomFaults] = []
        self.lro_failures: list[LroFault] = []
        self.slow: list[SlowLro] = []
        self.throttles: list[Throttle] = []
        self.injected: list[tuple[str, str, int]] = []  # (method, path, status) of every fault answered

    # --- configuration -------------------------------------------------------------------------
    def add(self, status: int, *, method: str = "*", path: str = ".*", times: int = 1, after: int = 0,
            retry_after: float | None = None, code: str | None = None,
            message: str | None = None) -> HttpFault:
        if retry_after is None and status in (429, 503):
            retry_after = 1
        rule = HttpFault(method=method, path=path, status=status, times=times, after=after,
                         retry_after=retry_after, code=code, message=message)
        with self._lock:
            self.http.append(rule)
        return rule

    def random(self, probability: float, *, statuses: tuple[int, ...] = (429, 500, 503), method: str = "*",
               path: str = ".*", seed: int | None = None, max_per_request: int = 1,
               retry_after: float | None = 1) -> RandomFaults:
        rule = RandomFaults(method=method, path=path, probability=probability, statuses=tuple(statuses),
                            max_per_request=max_per_request, retry_after=retry_after,
                            rng=_random.Random(self.seed if seed is None else seed))
        with self._lock:
            self.randoms.append(rule)
        return rule

    def fail_lro(self, *, method: str = "*", path: str = ".*", code: str = "InternalOperationError",
                 message: str = "An internal execution error occurred. Please retry later.",
                 times: int = 1) -> LroFault:
        rule = LroFault(method=method, path=path, code=code, message=message, times=times)
        with self._lock:
            self.lro_failures.append(rule)
        return rule

    def slow_lro(self, seconds: float = 0.0, *, polls: int | None = None, method: str = "*",
                 path: str = ".*") -> SlowLro:
        rule = SlowLro(method=method, path=path, seconds=seconds, polls=polls)
        with self._lock:
            self.slow.append(rule)
        return rule

    def throttle(self, *, bucket: float, refill_per_second: float, method: str = "*", path: str = ".*") -> Throttle:
        rule = Throttle(method=method, path=path, bucket=bucket, refill_per_second=refill_per_second)
        with self._lock:
            self.throttles.append(rule)
        return rule

    def slow_replication(self, seconds: float, polls: int | None = None) -> SlowLro:
        """Gallery image versions stay ``InProgress`` (replicating) for ``seconds``."""
        return self.slow_lro(seconds, polls=polls, method="PUT",
                             path=r"/providers/Microsoft\.Compute/galleries/[^/]+/images/[^/]+/versions/[^/]+$")

    def clear(self) -> None:
        with self._lock:
            self.http.clear()
            self.randoms.clear()
            self.lro_failures.clear()
            self.slow.clear()
            self.throttles.clear()

    # --- used by the emulator ------------------------------------------------------------------
    def http_fault(self, method: str, path: str, request_key: str, *, clock: float = 0.0,
                   time_scale: float = 1.0) -> InjectedFault | None:
        with self._lock:
            for rule in self.throttles:
                if not rule.matches(method, path):
                    continue
                if rule.tokens < 0:
                    rule.tokens, rule.at = rule.bucket, clock
                rule.tokens = min(rule.bucket, rule.tokens + (clock - rule.at) * rule.refill_per_second)
                rule.at = clock
                if rule.tokens < 1:
                    rule.throttled += 1
                    wait = (1 - rule.tokens) / rule.refill_per_second / time_scale  # real seconds
                    return self._fault(method, path, 429, None, None, max(1, int(wait + 0.999)))
                rule.tokens -= 1
            for rule in self.http:
                if not rule.matches(method, path):
                    continue
                rule.seen += 1
                if rule.seen > rule.after and rule.fired < rule.times:
                    rule.fired += 1
                    return self._fault(method, path, rule.status, rule.code, rule.message, rule.retry_after)
            for rnd in self.randoms:
                if not rnd.matches(method, path):
                    continue
                count = rnd.per_request.get(request_key, 0)
                if count < rnd.max_per_request and rnd.rng.random() < rnd.probability:
                    rnd.per_request[request_key] = count + 1
                    status = rnd.rng.choice(rnd.statuses)
                    return self._fault(method, path, status, None, None, rnd.retry_after if status in (429, 503) else None)
                rnd.per_request[request_key] = 0
        return None

    def _fault(self, method: str, path: str, status: int, code: str | None, message: str | None,
               retry_after: float | None) -> InjectedFault:
        default_code, default_message = error_for_status(status)
        self.injected.append((method, path, status))
        return InjectedFault(status, code or default_code, message or default_message, retry_after)

    def lro_failure(self, method: str, path: str) -> tuple[str, str] | None:
        with self._lock:
            for rule in self.lro_failures:
                if rule.fired < rule.times and rule.matches(method, path):
                    rule.fired += 1
                    return rule.code, rule.message
        return None

    def lro_slowness(self, method: str, path: str) -> tuple[float, int | None]:
        seconds, polls = 0.0, None
        with self._lock:
            for rule in self.slow:
                if rule.matches(method, path):
                    seconds = max(seconds, rule.seconds)
                    if rule.polls is not None:
                        polls = max(polls or 0, rule.polls)
        return seconds, polls
