"""bakery.ssh_relay.SshRelay against real sockets: a stand-in for QEMU's forwarded port that accepts every
connection at once and holds the ones made before the guest listens (as QEMU's user network does). A
client connected to the relay early gets the banner as soon as a fresh connection would, and the bytes
pass through both ways untouched."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from bakery.ssh_relay import SshRelay
from tests.slirp_standin import HoldingListener

BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"


class Forward(HoldingListener):
    """QEMU's forward of the guest's port 22 (see HoldingListener): once ready, sshd's BANNER, then every line
    the client sends back in upper case."""

    def answer(self, conn: socket.socket) -> None:
        with conn:
            conn.sendall(BANNER)
            while data := conn.recv(4096):
                conn.sendall(data.upper())


@pytest.fixture
def relay() -> Iterator[SshRelay]:
    with SshRelay(interval=0.25) as r:
        yield r


def test_an_early_client_gets_the_banner_when_a_fresh_connection_would(relay: SshRelay) -> None:
    forward = Forward(port=relay.forward_port, ready_after=2.0)
    try:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", relay.port), timeout=15) as client:
            client.settimeout(15)
            client.sendall(b"SSH-2.0-Go\r\n")  # Go's SSH client (Packer's) sends its version line first
            assert client.recv(len(BANNER)) == BANNER
            got_banner = time.monotonic() - started
            assert client.recv(64) == b"SSH-2.0-GO\r\n"  # what it sent before the banner reached sshd
            client.sendall(b"hello\n")
            assert client.recv(64) == b"HELLO\n"  # both ways, through one upstream connection
        assert len(forward.held) >= 3  # connections made before it was ready are still held, unanswered
        assert forward.answered == 1  # the first answered connection was kept, no other was answered
        assert 2.0 <= got_banner < 3.5, got_banner  # not the held connection's wait
        assert relay.connected_after and 2.0 <= relay.connected_after[0] < 3.5
    finally:
        forward.close()


def test_a_client_that_gives_up_stops_the_attempts_and_close_leaves_no_thread(relay: SshRelay) -> None:
    forward = Forward(port=relay.forward_port, ready_after=60)
    try:
        client = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
        client.sendall(b"SSH-2.0-Go\r\n")
        time.sleep(1.0)
        client.close()  # Packer's handshake timed out: it closes and tries again
        time.sleep(0.6)
        held = len(forward.held)
        time.sleep(1.0)
        assert len(forward.held) == held  # no new attempts for a client that is gone
        assert 2 <= held <= 7  # one every 0.25 s while it waited
    finally:
        forward.close()
    relay.close()
    assert not any(t.is_alive() for t in threading.enumerate() if t.name == "ssh-relay")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", relay.port), timeout=2)  # nothing listens after close


def test_the_relay_and_the_forward_port_are_on_loopback() -> None:
    with SshRelay() as r:
        assert r._listener.getsockname()[0] == "127.0.0.1"
        assert r.port != r.forward_port
