"""The "nginx" of emulated VMs: tiny HTTP servers on distinct loopback addresses.

Every private IP (NIC) and public IP the emulator hands out is a loopback address ``127.0.0.x`` that
it *reserves* by binding a socket on ``(address, port)`` straight away (so two emulators, or anything
else on the machine, never get the same one). The port is 80 when it can be bound (root on Linux can
bind any 127/8 address); otherwise one free high port is chosen per emulator and used for every
address — ``ArmEmulator.vm_http_port`` says which. A bound but not listening socket refuses
connections, like a VM that is not up yet. When the VM runs, the sockets listen and answer with the
behaviour of the VM's image (:class:`ImageBehaviour`).
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from dataclasses import dataclass

NGINX_WELCOME = """<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
<style>
html { color-scheme: light dark; }
body { width: 35em; margin: 0 auto;
font-family: Tahoma, Verdana, Arial, sans-serif; }
</style>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>

<p>For online documentation and support please refer to
<a href="http://nginx.org/">nginx.org</a>.<br/>
Commercial support is available at
<a href="http://nginx.com/">nginx.com</a>.</p>

<p><em>Thank you for using nginx.</em></p>
</body>
</html>
"""

_REASONS = {200: "OK", 301: "Moved Permanently", 302: "Found", 403: "Forbidden", 404: "Not Found",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


@dataclass(frozen=True)
class ImageBehaviour:
    """What a VM booted from an image serves on its HTTP port."""

    status: int = 200
    body: str = NGINX_WELCOME
    delay_seconds: float = 0.0  # each answer is sent this late
    never_answers: bool = False  # accept the connection, never answer (a hung service)
    boot_seconds: float = 0.0  # refuse connections this long after the VM reaches running
    content_type: str = "text/html"
    server: str = "nginx/1.22.1"

    @classmethod
    def from_tags(cls, tags: dict) -> ImageBehaviour | None:
        """Behaviour from managed-image tags ``emulator.http.*`` (None when there are none)."""
        lowered = {str(k).lower(): str(v) for k, v in (tags or {}).items()}
        keys = {k: v for k, v in lowered.items() if k.startswith("emulator.http.")}
        if not keys:
            return None
        truthy = ("1", "true", "yes")
        return cls(
            status=int(keys.get("emulator.http.status", 200)),
            body=keys.get("emulator.http.body", NGINX_WELCOME),
            delay_seconds=float(keys.get("emulator.http.delay_seconds", 0)),
            never_answers=keys.get("emulator.http.never_answers", "false").lower() in truthy,
            boot_seconds=float(keys.get("emulator.http.boot_seconds", 0)),
        )


class Reservation:
    """A loopback address held by a bound (not listening) socket."""

    def __init__(self, address: str, port: int, sock: socket.socket) -> None:
        self.address, self.port, self.sock = address, port, sock

    def rebind(self) -> None:
        # SO_REUSEADDR only here: connections of the last server may sit in TIME_WAIT. Nobody else
        # can have taken the address meanwhile, since first reservations bind without it.
        self.sock = _bind(self.address, self.port, reuse=True)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _bind(address: str, port: int, reuse: bool = False) -> socket.socket:
    """Bind (not listen). A first reservation binds without SO_REUSEADDR, so the address is ours
    alone, also against other processes (Linux lets sockets share a bound address only when each
    set SO_REUSEADDR before binding). SO_REUSEADDR is switched on right after the bind, so the
    connections the VM later accepts inherit it and their TIME_WAIT does not block our rebind."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if reuse:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


class LoopbackPool:
    """Hands out distinct 127.x.y.z addresses, each reserved on the pool's port."""

    def __init__(self, preferred_port: int = 80) -> None:
        self._lock = threading.Lock()
        self._next = 2  # 127.0.0.2 first: 127.0.0.1 is everybody's
        self.port = self._choose_port(preferred_port)

    @staticmethod
    def _choose_port(preferred: int) -> int:
        if preferred:
            try:
                _bind("127.0.0.1", preferred).close()
                return preferred
            except PermissionError:
                pass
            except OSError as exc:  # in use on 127.0.0.1 only: other addresses may still be free
                if exc.errno == errno.EADDRINUSE:
                    return preferred
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        return port

    def reserve(self) -> Reservation:
        with self._lock:
            for _ in range(250 * 250):
                n = self._next
                self._next += 1
                octets = (n // 65536 % 256, n // 256 % 256, n % 256)
                if octets[2] in (0, 255):
                    continue
                address = "127.{}.{}.{}".format(*octets)
                try:
                    return Reservation(address, self.port, _bind(address, self.port))
                except OSError:
                    continue
        raise RuntimeError("no free loopback address left")


class VmHttpServer:
    """Serves one VM's behaviour on its reserved sockets until :meth:`stop`."""

    def __init__(self, name: str, reservations: list[Reservation], behaviour: ImageBehaviour) -> None:
        self.name = name
        self.reservations = list(reservations)
        self.behaviour = behaviour
        self.started_at = time.monotonic()
        self.requests: list[tuple[str, str, str]] = []  # (address, method, path)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def addresses(self) -> list[str]:
        return [r.address for r in self.reservations]

    def start(self) -> None:
        for res in self.reservations:
            thread = threading.Thread(target=self._accept_loop, args=(res,), daemon=True,
                                      name=f"emulated-vm-{self.name}-{res.address}")
            thread.start()
            self._threads.append(thread)

    def _accept_loop(self, res: Reservation) -> None:
        if self.behaviour.boot_seconds and self._stop.wait(self.behaviour.boot_seconds):
            return  # stopped while still booting (bound, not listening: connections are refused)
        sock = res.sock
        try:
            sock.listen(16)
            sock.settimeout(0.1)
        except OSError:
            return
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._lock:
                self._conns.add(conn)
            worker = threading.Thread(target=self._serve, args=(conn, res.address), daemon=True)
            worker.start()
            with self._lock:
                self._threads.append(worker)

    def _serve(self, conn: socket.socket, address: str) -> None:
        try:
            conn.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            line = data.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split(" ")
            method, path = (parts + ["", ""])[:2]
            self.requests.append((address, method, path))
            behaviour = self.behaviour
            if behaviour.never_answers:
                self._stop.wait()
                return
            if behaviour.delay_seconds and self._stop.wait(behaviour.delay_seconds):
                return
            body = behaviour.body.encode() if method != "HEAD" else b""
            length = len(behaviour.body.encode())
            head = (
                f"HTTP/1.1 {behaviour.status} {_REASONS.get(behaviour.status, 'Status')}\r\n"
                f"Server: {behaviour.server}\r\n"
                f"Content-Type: {behaviour.content_type}\r\n"
                f"Content-Length: {length}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            conn.sendall(head + body)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass

    def stop(self, release: list[Reservation] = ()) -> None:
        """Stop serving; re-reserve every address except those in ``release`` (which are freed)."""
        self._stop.set()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for res in self.reservations:
            res.close()
        for thread in list(self._threads):
            thread.join(timeout=5)
        released = {id(r) for r in release}
        for res in self.reservations:
            if id(res) not in released:
                try:
                    res.rebind()
                except OSError:
                    pass
