"""The build VM's boot to SSH as Packer sees it, with and without the bakery's SSH relay, in the same boots.

Each round boots the base image every local build starts from (QEMU as bakery.qemu starts it, ``-snapshot``,
the build's SSH key through fw_cfg) with port 22 forwarded to a loopback port, and times three clients
from the moment QEMU starts to sshd's banner:

* **direct**: one connection to the forward 3 s after the start, waited on (what Packer 1.6.6 does
  without the relay: its first attempt comes about 3 s after "Starting VM" and waits);
* **relay**: one connection to ``bakery.ssh_relay.SshRelay`` at 3 s, waited on (what Packer does with it);
* **floor**: a fresh connection to the forward every 0.5 s, each waited on up to 10 s, the first banner
  (the earliest a client could have it).

Prints each round, the medians, and the ratios relay / direct and relay / floor.

    source scripts/env.sh && python benchmarks/ssh_relay.py [rounds]
"""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

PACKER_FIRST_ATTEMPT = 3.0
DEADLINE = 180.0


def banner_after(port: int, t0: float, results: dict, key: str) -> None:
    """Connect to ``port`` and record when the first bytes (sshd's banner) arrive, seconds after ``t0``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
            sock.settimeout(DEADLINE)
            if sock.recv(64).startswith(b"SSH-"):
                results.setdefault(key, time.monotonic() - t0)
    except OSError:
        pass


def one_round(base: Path) -> dict[str, float]:
    from bakery.qemu import QemuVM
    from bakery.ssh_relay import SshRelay
    from bakery.sshkey import ephemeral_keypair

    results: dict[str, float] = {}
    with ephemeral_keypair("bakery-bench-relay") as (_private, public):
        t0 = time.monotonic()
        with QemuVM(base, guest_port=22, fw_cfg={"opt/bakery/authorized_keys": public}, name="bench-ssh-relay") as vm, \
                SshRelay(forward_port=vm.port_for(22)) as relay:
            time.sleep(max(0.0, PACKER_FIRST_ATTEMPT - (time.monotonic() - t0)))
            waiters = [threading.Thread(target=banner_after, args=(vm.port_for(22), t0, results, "direct")),
                       threading.Thread(target=banner_after, args=(relay.port, t0, results, "relay"))]
            for waiter in waiters:
                waiter.start()
            while "floor" not in results and time.monotonic() - t0 < DEADLINE and vm.is_running():
                threading.Thread(target=banner_after, args=(vm.port_for(22), t0, results, "floor"), daemon=True).start()
                time.sleep(0.5)
            for waiter in waiters:
                waiter.join(timeout=DEADLINE)
    missing = {"direct", "relay", "floor"} - results.keys()
    if missing:
        raise SystemExit(f"no SSH banner for {', '.join(sorted(missing))} within {DEADLINE:.0f} s")
    return results


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    base = Path(subprocess.run(["bash", str(REPO / "scripts" / "build-base-image.sh")], capture_output=True, text=True,
                               check=True).stdout.strip().splitlines()[-1])
    print(f"boot to sshd's banner of {base.name}, {rounds} rounds (seconds from QEMU's start)", flush=True)
    rows = []
    for n in range(rounds):
        rows.append(one_round(base))
        print(f"round {n + 1}: " + ", ".join(f"{k} {rows[-1][k]:.1f} s" for k in ("direct", "relay", "floor")),
              flush=True)
    med = {k: statistics.median(r[k] for r in rows) for k in ("direct", "relay", "floor")}
    print(f"median: direct {med['direct']:.1f} s, relay {med['relay']:.1f} s, floor {med['floor']:.1f} s")
    print(f"relay / direct = {med['relay'] / med['direct']:.3f}; relay / floor = {med['relay'] / med['floor']:.3f}")


if __name__ == "__main__":
    main()
