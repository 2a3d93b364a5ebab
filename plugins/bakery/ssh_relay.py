"""A loopback relay between Packer and the build VM's forwarded SSH port that connects only once sshd speaks.

QEMU's user network accepts a forwarded connection on the host side at once, before the guest listens, and
sends the guest's SYN again only after a back-off. Packer 1.6.6 makes its first SSH attempt about 3 s after
starting the VM and then waits on that connection: measured on the base image under TCG, a connection
opened at 3 s got sshd's banner at 21.4 s, a fresh one at 13.2 to 14.7 s.

The relay listens on its own loopback port (Packer's ``ssh_port``, with ``skip_nat_mapping``) and QEMU
forwards ``forward_port`` (also loopback) to the guest's port 22. For each connection Packer makes, the
relay opens a new connection to ``forward_port`` every ``interval`` seconds (each allowed
``ATTEMPT_TIMEOUT`` for its first bytes); the first that brings sshd's banner is spliced to Packer's
connection and the others are closed. When Packer gives up on a connection (it closes it), its attempts
stop. The bytes pass through untouched: the SSH session and its key login run end to end between Packer
and sshd.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from bakery.qemu import free_port

ATTEMPT_TIMEOUT = 10.0  # how long one upstream connection may take to bring the banner
CHUNK = 1 << 16


def _attempt(port: int, stop: threading.Event) -> tuple[socket.socket, bytes] | None:
    """One connection to ``port`` and its first bytes, or None (refused, closed, or nothing in time)."""
    try:
        upstream = socket.create_connection(("127.0.0.1", port), timeout=ATTEMPT_TIMEOUT)
    except OSError:
        return None
    try:
        upstream.settimeout(ATTEMPT_TIMEOUT)
        first = upstream.recv(CHUNK)
        if first and not stop.is_set():
            upstream.settimeout(None)
            return upstream, first
    except OSError:
        pass
    upstream.close()
    return None


class SshRelay:
    """``with SshRelay() as relay:`` Packer connects to ``relay.port``; QEMU forwards ``relay.forward_port``."""

    def __init__(self, *, interval: float = 0.5, forward_port: int | None = None) -> None:
        self.interval = interval
        self.forward_port = forward_port or free_port()  # QEMU's forward binds it itself
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.connected_after: list[float] = []  # per spliced connection: seconds from Packer's connect to sshd's banner

    def packer_variables(self) -> dict[str, int]:
        """The template's variables that make Packer connect through this relay (include/packer/shared/qemu)."""
        return {"ssh_relay_port": self.port, "ssh_forward_port": self.forward_port}

    def __enter__(self) -> SshRelay:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        _shutdown(self._listener, socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                _shutdown(sock, socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()
        for thread in self._threads:
            thread.join(timeout=ATTEMPT_TIMEOUT + 5)

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="ssh-relay")
        self._threads.append(thread)
        thread.start()

    def _track(self, sock: socket.socket) -> bool:
        with self._lock:
            if self._stop.is_set():
                sock.close()
                return False
            self._sockets.add(sock)
            return True

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._track(client):
                self._spawn(self._serve, client)

    def _connect(self, client: socket.socket, early: bytearray) -> tuple[socket.socket, bytes] | None:
        """Overlapping attempts (so at most ATTEMPT_TIMEOUT / interval at a time) until one brings the banner,
        Packer's side closes, or the relay stops. What Packer sends meanwhile (its own version line: an SSH client may
        speak first) is kept in ``early`` for the winner."""
        pool = ThreadPoolExecutor(max_workers=int(ATTEMPT_TIMEOUT / self.interval) + 1, thread_name_prefix="ssh-try")
        pending: set[Future] = set()
        winner = None
        try:
            while winner is None and not self._stop.is_set():
                pending.add(pool.submit(_attempt, self.forward_port, self._stop))
                done, pending = wait(pending, timeout=self.interval, return_when=FIRST_COMPLETED)
                for future in done:
                    result = future.result()
                    if result is None:
                        continue
                    if winner is None:
                        winner = result
                    else:
                        result[0].close()
                if winner is None and not _read_early(client, early):
                    break  # Packer closed this connection (its handshake timed out): it will make a new one
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            for future in pending:  # still waiting: close what they get
                future.add_done_callback(_close_result)
        return winner

    def _serve(self, client: socket.socket) -> None:
        started = time.monotonic()
        early = bytearray()
        winner = self._connect(client, early)
        if winner is None:
            self._forget(client)
            return
        upstream, first = winner
        if not self._track(upstream):
            self._forget(client)
            return
        self.connected_after.append(time.monotonic() - started)
        try:
            client.sendall(first)
            upstream.sendall(early)
        except OSError:
            self._forget(client, upstream)
            return
        back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True, name="ssh-relay-back")
        back.start()
        _pipe(client, upstream)
        back.join()
        self._forget(client, upstream)

    def _forget(self, *socks: socket.socket) -> None:
        with self._lock:
            self._sockets.difference_update(socks)
        for sock in socks:
            sock.close()


def _read_early(sock: socket.socket, early: bytearray) -> bool:
    """Append what Packer sent so far to ``early``; False once it closed its side."""
    try:
        sock.setblocking(False)
        try:
            while data := sock.recv(CHUNK):
                early += data
            return False  # end of stream
        finally:
            sock.setblocking(True)
    except BlockingIOError:
        return True  # nothing more for now, still open
    except OSError:
        return False


def _close_result(future: Future) -> None:
    result = None if future.cancelled() else future.result()
    if result is not None:
        result[0].close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(CHUNK):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        _shutdown(dst, socket.SHUT_WR)
        _shutdown(src, socket.SHUT_RD)


def _shutdown(sock: socket.socket, how: int) -> None:
    with contextlib.suppress(OSError):  # closed already, or the peer went away
        sock.shutdown(how)
