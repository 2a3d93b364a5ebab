"""Run the ARM emulator by hand: ``python -m tests.azure_emulator --port 8443``.

Prints the endpoint, the CA bundle to trust and the environment for the fake packer, then serves
until interrupted (Ctrl-C / SIGTERM), logging one line per request.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from .server import ArmEmulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.azure_emulator", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="HTTPS port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--page-size", type=int, default=2)
    parser.add_argument("--lro-polls", type=int, default=1)
    parser.add_argument("--replication-polls", type=int, default=2)
    parser.add_argument("--retry-after", type=int, default=1)
    parser.add_argument("--quiet", action="store_true", help="do not log requests")
    args = parser.parse_args(argv)

    emu = ArmEmulator(port=args.port, page_size=args.page_size, lro_polls=args.lro_polls,
                      replication_polls=args.replication_polls, retry_after=args.retry_after)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print(f"ARM emulator listening on {emu.endpoint}", flush=True)
    print(f"  CA bundle (connection_verify=): {emu.ca_bundle}", flush=True)
    print(f"  emulated VMs serve HTTP on port {emu.vm_http_port}", flush=True)
    for key, value in emu.env().items():
        print(f"  export {key}={value}", flush=True)
    seen = 0
    try:
        while not done.wait(0.2):
            log = emu.log
            if not args.quiet:
                for rec in log[seen:]:
                    stamp = time.strftime("%H:%M:%S", time.localtime(rec.time))
                    print(f"{stamp} {rec.status} {rec.method} {rec.path}{' (fault)' if rec.fault else ''}",
                          flush=True)
            seen = len(log)
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
