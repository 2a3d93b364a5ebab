"""A stand-in for a port QEMU's user network forwards, for tests with real sockets.

QEMU's user network (slirp) accepts a forwarded connection on the host side at once, before the guest
listens, and holds it until its next SYN retry reaches the guest. ``HoldingListener`` does the same on
loopback: a connection accepted before ``ready_at`` is held open and never answered; a later one is
handed to ``answer`` in a thread of its own.
"""

from __future__ import annotations

import socket
import threading
import time


class HoldingListener:
    def __init__(self, *, port: int = 0, ready_after: float = 0.0) -> None:
        self.listener = socket.create_server(("127.0.0.1", port))
        self.port = self.listener.getsockname()[1]
        self.ready_at = time.monotonic() + ready_after
        self.held: list[socket.socket] = []
        self.accepted = 0
        self.answered = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def answer(self, conn: socket.socket) -> None:
        """Serve one connection made once the guest "listens" (the subclass's protocol)."""
        raise NotImplementedError

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            if time.monotonic() < self.ready_at:
                self.held.append(conn)
            else:
                self.answered += 1
                threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def close(self) -> None:
        if self.listener.fileno() == -1:
            return  # closed already
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone leaves it listening
        self.listener.close()
        for conn in self.held:
            conn.close()
