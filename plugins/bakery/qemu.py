"""Boot a built disk image read-only under QEMU, for the local target's smoke test.

Plain Python, no Airflow import. ``QemuVM`` starts ``qemu-system-x86_64 -snapshot`` (every guest
write goes to a throw-away overlay: the artifact is never modified), with user networking that
forwards ``127.0.0.1:<free port>`` to a guest port, the serial console in a log file, and QEMU in
its own process group so that ``stop()`` can always take it down (``bakery.processes.stop``:
SIGTERM, a bounded wait, then the hard kill).

    with QemuVM("output/debian12-nginx.qcow2", guest_port=80) as vm:
        poll(f"http://127.0.0.1:{vm.host_port}/")   # the caller polls; this module only boots

The accelerator comes from ``bakery.accel.detect_accelerator()``; no ``-cpu host`` by default.

Every VM carries ``-name bakery-...`` (``MARKER_PREFIX``) on its command line: that, together with
the bakery's own paths in the command line, is how ``bakery.janitor`` recognises a QEMU the bakery
started and whose owner died (never by the binary's name alone: other users run QEMU too).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from bakery import processes
from bakery.accel import detect_accelerator
from bakery.digest import sha256_file  # noqa: F401 (re-exported for callers)

DEFAULT_QEMU = "qemu-system-x86_64"
MARKER_PREFIX = "bakery-"  # -name bakery-<purpose>: what bakery.janitor looks for
_QCOW2_MAGIC = b"QFI\xfb"
_PORT_RETRIES = 5
# Seconds to watch for QEMU dying on start (e.g. its forwarded port was taken meanwhile).
_EARLY_EXIT_WINDOW = 1.0


# The guest kernel's watchdog line for a CPU that stopped scheduling: under TCG a boot now and then
# hangs with every vCPU in it (seen about once in 76 boots of the debian12 image on this machine kind,
# (udev-worker) about 8 s into the boot), and never comes back.
_SOFT_LOCKUP = re.compile(r"watchdog: BUG: soft lockup - CPU#\d+ stuck for \d+s!.*")


def soft_lockup(console: str) -> str | None:
    """The kernel's soft-lockup report in ``console`` (serial console text), or None."""
    found = _SOFT_LOCKUP.search(console)
    return found.group(0).strip() if found else None


class QemuError(RuntimeError):
    """QEMU could not be started (or died while starting)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _qemu_opt(value: str | os.PathLike[str]) -> str:
    """Escape a value for QEMU's ``key=value,...`` option syntax (a comma is doubled)."""
    return os.fspath(value).replace(",", ",,")


def _disk_format(path: Path) -> str:
    with open(path, "rb") as fh:
        return "qcow2" if fh.read(4) == _QCOW2_MAGIC else "raw"


def _stop_group(pgid: int, grace_seconds: float) -> None:
    """Stop QEMU's process group (its pid: ``start_new_session``). QEMU is our child and not reaped
    before this returns, so the group id is still QEMU's."""
    processes.stop(group=pgid, grace_seconds=grace_seconds)


class QemuVM:
    """A QEMU guest booted from ``disk`` in snapshot mode; a context manager.

    Args:
        disk: disk image (qcow2 or raw; detected from its header unless ``disk_format`` is given).
        guest_port: guest TCP port forwarded from ``127.0.0.1:<host_port>``.
        extra_guest_ports: more guest TCP ports to forward (see ``host_ports`` / ``port_for``).
        memory_mb, cpus: guest size.
        accelerator: ``"kvm"`` or ``"tcg"``; default ``detect_accelerator()``.
        cpu_model: passed as ``-cpu`` if given; default: QEMU's own default (never ``host``).
        serial_log: where the serial console goes; default a file in a private temp dir that is
            removed by ``stop()`` (read it before with ``serial_tail()``).
        fw_cfg: ``{name: file}`` blobs for ``-fw_cfg`` (names start with ``opt/``), e.g.
            ``{"opt/bakery/authorized_keys": "key.pub"}`` for the bakery base image's SSH key unit.
        isolated: ``restrict=on`` for user networking (guest cannot reach out; forwards still work).
        extra_args: appended to the QEMU command line as-is.
        stop_timeout: seconds to wait after SIGTERM before the hard kill.
        name: the guest's ``-name``; always starts with ``bakery-`` (added if missing).
    """

    def __init__(
        self,
        disk: str | os.PathLike[str],
        *,
        guest_port: int = 80,
        extra_guest_ports: Sequence[int] = (),
        memory_mb: int = 1024,
        cpus: int = 2,
        accelerator: str | None = None,
        cpu_model: str | None = None,
        serial_log: str | os.PathLike[str] | None = None,
        fw_cfg: Mapping[str, str | os.PathLike[str]] | None = None,
        isolated: bool = False,
        disk_format: str | None = None,
        qemu_binary: str = DEFAULT_QEMU,
        extra_args: Sequence[str] = (),
        stop_timeout: float = 15.0,
        name: str = "bakery-vm",
    ) -> None:
        self.disk = Path(disk).resolve()
        self.name = name if name.startswith(MARKER_PREFIX) else MARKER_PREFIX + name
        if not self.disk.is_file():
            raise FileNotFoundError(f"disk image not found: {self.disk}")
        if accelerator is None:
            accelerator = detect_accelerator()
        if accelerator not in ("kvm", "tcg"):
            raise ValueError(f"accelerator must be 'kvm' or 'tcg', got {accelerator!r}")
        ports = [guest_port, *extra_guest_ports]
        if len(set(ports)) != len(ports):
            raise ValueError(f"guest ports must be distinct, got {ports}")
        for blob_name, blob in (fw_cfg or {}).items():
            if not blob_name.startswith("opt/"):
                raise ValueError(f"fw_cfg name must start with 'opt/', got {blob_name!r}")
            if not Path(blob).is_file():
                raise FileNotFoundError(f"fw_cfg file for {blob_name} not found: {blob}")
        self.guest_port = guest_port
        self.guest_ports = ports
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.accelerator = accelerator
        self.cpu_model = cpu_model
        self.fw_cfg = {k: Path(v).resolve() for k, v in (fw_cfg or {}).items()}
        self.isolated = isolated
        self.disk_format = disk_format or _disk_format(self.disk)
        self.qemu_binary = qemu_binary
        self.extra_args = list(extra_args)
        self.stop_timeout = stop_timeout
        self._serial_log_arg = (
            Path(serial_log).resolve() if serial_log is not None else None
        )
        self._workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None
        self.host_ports: dict[int, int] = {}
        self.command: list[str] = []
        self.serial_log: Path | None = None
        self.started_at: float | None = None

    # ------------------------------------------------------------------ properties
    @property
    def host_port(self) -> int:
        """Host port forwarded to ``guest_port`` (after ``start()``)."""
        return self.port_for(self.guest_port)

    def port_for(self, guest_port: int) -> int:
        if not self.host_ports:
            raise RuntimeError("the VM is not started")
        return self.host_ports[guest_port]

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------------ command line
    def _build_command(self, host_ports: Mapping[int, int]) -> list[str]:
        assert self.serial_log is not None
        fwd = ",".join(
            f"hostfwd=tcp:127.0.0.1:{hp}-:{gp}" for gp, hp in host_ports.items()
        )
        netdev = f"user,id=net0,{fwd}" + (",restrict=on" if self.isolated else "")
        cmd = [
            self.qemu_binary,
            "-name", _qemu_opt(self.name),
            "-machine", f"pc,accel={self.accelerator}",
            "-m", str(self.memory_mb),
            "-smp", str(self.cpus),
            "-display", "none",
            "-monitor", "none",
            "-snapshot",
            "-drive",
            f"file={_qemu_opt(self.disk)},format={self.disk_format},if=virtio,snapshot=on",
            "-netdev", netdev,
            "-device", "virtio-net-pci,netdev=net0",
            "-chardev", f"file,id=serial0,path={_qemu_opt(self.serial_log)}",
            "-serial", "chardev:serial0",
        ]  # fmt: skip
        if self.cpu_model:
            cmd += ["-cpu", self.cpu_model]
        for name, blob in self.fw_cfg.items():
            cmd += ["-fw_cfg", f"name={_qemu_opt(name)},file={_qemu_opt(blob)}"]
        return cmd + self.extra_args

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        if self._proc is not None:
            raise RuntimeError("the VM was already started")
        if shutil.which(self.qemu_binary) is None:
            raise QemuError(
                f"{self.qemu_binary} not found on PATH; install QEMU (Debian: qemu-system-x86)"
            )
        self._workdir = Path(tempfile.mkdtemp(prefix="bakery-qemu-"))
        self.serial_log = self._serial_log_arg or self._workdir / "serial.log"
        self.serial_log.parent.mkdir(parents=True, exist_ok=True)
        stderr_path = self._workdir / "qemu.stderr"
        # QEMU puts the -snapshot overlay in TMPDIR: keep it in our private dir.
        env = {**os.environ, "TMPDIR": str(self._workdir)}
        last_error = ""
        try:
            for _attempt in range(_PORT_RETRIES):
                self.host_ports = {gp: free_port() for gp in self.guest_ports}
                self.command = self._build_command(self.host_ports)
                with open(stderr_path, "wb") as err:
                    proc = subprocess.Popen(
                        self.command,
                        stdin=subprocess.DEVNULL,
                        stdout=err,
                        stderr=subprocess.STDOUT,
                        env=env,
                        start_new_session=True,  # own process group: stop() kills all of it
                        close_fds=True,
                    )
                self._proc = proc
                # a VM dropped without stop() (or at interpreter exit) is still stopped
                self._finalizer = weakref.finalize(self, _stop_group, proc.pid, 0)
                self.started_at = time.monotonic()
                deadline = time.monotonic() + _EARLY_EXIT_WINDOW
                while time.monotonic() < deadline and proc.poll() is None:
                    time.sleep(0.05)
                if proc.poll() is None:
                    return self
                last_error = stderr_path.read_text(errors="replace").strip()
                self._reap()
                if "forward" not in last_error.lower():
                    break  # not a port race: do not retry
            raise QemuError(
                f"QEMU exited while starting (disk {self.disk}, accel {self.accelerator}): "
                f"{last_error or 'no output'}"
            )
        except BaseException:
            self.stop()
            raise

    def _reap(self) -> None:
        """After QEMU died while starting: stop what is left of its group, reap it."""
        proc = self._proc
        if proc is None:
            return
        _stop_group(proc.pid, 0)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        self._proc = None

    def stop(self) -> None:
        """Stop QEMU and its process group (SIGTERM, ``stop_timeout``, then the hard kill). Idempotent."""
        proc = self._proc
        if proc is not None:
            _stop_group(proc.pid, self.stop_timeout)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)  # reap it (Popen's exit code)
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def serial_tail(self, lines: int = 50) -> str:
        """The last ``lines`` lines of the serial console ('' if there is none yet)."""
        if self.serial_log is None:
            return ""
        try:
            text = self.serial_log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def locked_up(self) -> str | None:
        """The guest kernel's soft-lockup report if its serial console shows one (see ``soft_lockup``)."""
        return soft_lockup(self.serial_tail(40))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"QemuVM(disk={str(self.disk)!r}, accel={self.accelerator}, {state})"
