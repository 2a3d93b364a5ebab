"""Boot to HTTP of a baked image: the smoke test's boot (the image's own bootloader) against its floor
(the same kernel and initrd booted directly), the guest's own breakdown, and QEMU options that suit
TCG, one by one, in one run.

* **bootloader**: the boot the smoke test does (``LocalTarget._smoke_test``): ``bakery.qemu.QemuVM``
  with the smoke test's options (``-snapshot``, the target's memory and vCPUs, the detected accelerator,
  isolated user networking), SeaBIOS -> GRUB -> kernel, timed from before QEMU starts to the catalogue's
  expected answer with the smoke test's HTTP check (``bakery.http_check.poll_http``).
* **floor**: the same QEMU options plus ``-kernel``/``-initrd``/``-append``: the kernel and initrd GRUB
  boots, with GRUB's own kernel command line (its first menu entry: the default, ``GRUB_TIMEOUT=0``),
  taken out of the disk without mounting it (``qemu-img convert -O raw``, ``sfdisk --json`` for the
  root partition's offset, ``debugfs`` on ``<raw>?offset=<bytes>``). No GRUB, no BIOS disk reads.
* **variants** of the bootloader boot, one QEMU option each: multi-threaded TCG (``-accel
  tcg,thread=multi``) and, to see what it is worth, single-threaded TCG (``thread=single``; TCG only),
  ``-cpu max`` (default: QEMU's qemu64), an entropy source (``-device virtio-rng-pci``). What the smoke
  test checks is unchanged (same image, same bootloader, same HTTP check); neither the image nor the
  smoke test is changed here. Which TCG threading QEMU picks by default is printed first: the vCPU
  threads' names of a paused QEMU (``-S``, ``-name debug-threads=on``) started with each setting.

Every boot is polled every 0.25 s (the smoke test polls every 2 s; the same poll for every variant),
``rounds`` rounds (default 3), each round booting every variant once in the same order, so machine
noise hits them alike; medians are compared. Goal (issue 11): bootloader / floor <= 1.5.

Then the guest's own breakdown: one more boot of each of bootloader and floor with an ephemeral SSH
key handed in through QEMU fw_cfg (``opt/bakery/authorized_keys``, as Packer's build does; the image
keeps the base image's unit that installs it) and guest port 22 forwarded; once HTTP answers, over SSH:
``systemd-analyze``, ``systemd-analyze blame`` (top 10) and ``systemd-analyze critical-chain
nginx.service``. These two boots are not in the medians (they carry the key and a second forward).

    source scripts/env.sh && python benchmarks/boot.py [image] [disk.qcow2] [rounds]
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins"), str(REPO / "benchmarks")]

POLL_SECONDS = 0.25
GUEST_COMMANDS = ("timeout 300 systemctl is-system-running --wait >/dev/null; systemd-analyze; echo; "
                  "echo '$ systemd-analyze blame | head -n 10'; systemd-analyze blame --no-pager | head -n 10; echo; "
                  "echo '$ systemd-analyze critical-chain nginx.service'; "
                  "systemd-analyze critical-chain --no-pager nginx.service")


def debugfs(fs: str, request: str) -> str:
    proc = subprocess.run(["debugfs", "-R", request, fs], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"debugfs -R {request!r} {fs} failed: {proc.stderr.strip()}")
    return proc.stdout


def kernel_of(disk: Path, tmp: Path) -> tuple[Path, Path, str, str]:
    """The kernel, initrd and kernel command line of GRUB's default (first) menu entry in ``disk``'s root
    partition, copied out of the disk without mounting it; and the grub.cfg entry's two lines."""
    raw = tmp / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-q", "-O", "raw", str(disk), str(raw)], check=True)
    try:
        table = json.loads(subprocess.run(["sfdisk", "--json", str(raw)], capture_output=True, text=True,
                                          check=True).stdout)["partitiontable"]
        # the bakery's layout (scripts/build-base-image.sh): one partition, the root file system with /boot
        offset = table["partitions"][0]["start"] * table.get("sectorsize", 512)
        fs = f"{raw}?offset={offset}"
        grub_cfg = debugfs(fs, "cat /boot/grub/grub.cfg")
        linux = re.search(r"^\s*linux\s+(\S+)[ \t]*(.*)$", grub_cfg, re.M)
        initrd = re.search(r"^\s*initrd\s+(\S+)\s*$", grub_cfg, re.M)
        if not linux or not initrd:
            raise SystemExit(f"no linux/initrd line in {disk}'s /boot/grub/grub.cfg")
        cmdline = " ".join(linux.group(2).split())
        if "$" in cmdline:
            raise SystemExit(f"GRUB's kernel command line has a GRUB variable in it: {cmdline!r}")
        kernel, initrd_img = tmp / "vmlinuz", tmp / "initrd.img"
        for path, out in ((linux.group(1), kernel), (initrd.group(1), initrd_img)):
            debugfs(fs, f"dump {path} {out}")
            if not out.is_file() or out.stat().st_size == 0:
                raise SystemExit(f"debugfs could not copy {path} out of {disk}")
        return kernel, initrd_img, cmdline, f"{linux.group(0).strip()} / {initrd.group(0).strip()}"
    finally:
        raw.unlink(missing_ok=True)


def vm_class():
    from bakery.qemu import QemuVM

    class VM(QemuVM):
        """``QemuVM`` with ``-accel <accel_opts>`` in place of ``-machine pc,accel=<accel>`` when
        ``accel_opts`` is given (QEMU refuses the two together); otherwise QemuVM as it is."""

        def __init__(self, disk, *, accel_opts: str | None = None, **kwargs) -> None:
            super().__init__(disk, **kwargs)
            self.accel_opts = accel_opts

        def _build_command(self, host_ports):
            cmd = super()._build_command(host_ports)
            if self.accel_opts:
                cmd[cmd.index("-machine") + 1] = "pc"
                cmd += ["-accel", self.accel_opts]
            return cmd

    return VM


def merged(vm_options: dict, variant: dict, *extra_args: str) -> dict:
    """The QemuVM options of ``variant`` over the common ones, their ``extra_args`` joined (plus ``extra_args``)."""
    return {**vm_options, **variant,
            "extra_args": [*vm_options.get("extra_args", ()), *variant.get("extra_args", ()), *extra_args]}


def tcg_threads(disk: Path, vm_options: dict, variant: dict) -> str:
    """The names of QEMU's vCPU threads (``CPU 0/TCG``... one per vCPU: multi-threaded; ``ALL CPUs/TCG``:
    single-threaded) for ``variant``, read from a paused QEMU (``-S``: the guest does not run)."""
    with vm_class()(disk, **merged(vm_options, variant, "-S", "-name", "debug-threads=on")) as vm:
        names = sorted((task / "comm").read_text().strip() for task in Path(f"/proc/{vm.pid}/task").iterdir())
    return ", ".join(n for n in names if "/TCG" in n) or "no TCG threads"


def boot(disk: Path, check, vm_options: dict, variant: dict, ssh_key: tuple[Path, Path] | None = None
         ) -> tuple[float, str]:
    """Seconds from starting QEMU (as the smoke test counts them) to the expected HTTP answer; with
    ``ssh_key``, also the guest's breakdown read over SSH afterwards."""
    from bake_overhead import quiet

    from bakery.http_check import poll_http

    options = merged(vm_options, variant)
    if ssh_key is not None:
        options.update(extra_guest_ports=[22], fw_cfg={"opt/bakery/authorized_keys": ssh_key[1]})
    started = time.monotonic()
    with vm_class()(disk, guest_port=check.port, **options) as vm:
        result = poll_http(f"http://127.0.0.1:{vm.host_port}{check.path}", check, log=quiet, started=started,
                           alive=vm.is_running, interval=POLL_SECONDS)
        if not result.passed:
            raise SystemExit(f"{vm.command}: the image did not answer as expected: {result.detail}\n"
                             f"{vm.serial_tail(15)}")
        guest = guest_breakdown(vm.port_for(22), ssh_key[0]) if ssh_key is not None else ""
    return result.seconds, guest


def guest_breakdown(port: int, private_key: Path) -> str:
    ssh = ["ssh", "-p", str(port), "-i", str(private_key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
           "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
           "-o", "ConnectTimeout=10", "root@127.0.0.1"]
    deadline = time.monotonic() + 300
    while True:
        probe = subprocess.run([*ssh, "true"], capture_output=True, text=True, timeout=60, check=False)
        if probe.returncode == 0:
            break
        if time.monotonic() > deadline:
            return f"(no SSH login within 300 s after HTTP answered: {probe.stderr.strip()})"
        time.sleep(1)
    proc = subprocess.run([*ssh, GUEST_COMMANDS], capture_output=True, text=True, timeout=420, check=False)
    return (proc.stdout + proc.stderr).rstrip()


def main() -> None:
    from gallery_storage import newest_published

    from bakery.accel import detect_accelerator
    from bakery.catalogue import load_catalogue
    from bakery.sshkey import ephemeral_keypair
    from bakery.targets.local import LocalTarget

    image = sys.argv[1] if len(sys.argv) > 1 else "debian12-nginx"
    disk = Path(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] else newest_published(image)
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    check = load_catalogue()[image].smoke_test
    target = LocalTarget()
    accelerator = detect_accelerator()
    # the smoke test's QemuVM options (LocalTarget._boot_check)
    vm_options = {"memory_mb": target.vm_memory_mb, "cpus": target.vm_cpus, "accelerator": accelerator,
                  "isolated": True, "name": f"bakery-bench-boot-{image}"}
    with tempfile.TemporaryDirectory(prefix="bakery-boot-") as tmp_s:
        tmp = Path(tmp_s)
        t0 = time.monotonic()
        kernel, initrd, cmdline, entry = kernel_of(disk, tmp)
        print(f"{image}: {disk} (accelerator {accelerator}, {target.vm_cpus} vCPUs, {target.vm_memory_mb} MiB; "
              f"HTTP {check.expect_status} with {check.expect_text!r} on port {check.port}, polled every "
              f"{POLL_SECONDS} s)", flush=True)
        print(f"GRUB's default entry: {entry} (kernel and initrd copied out in {time.monotonic() - t0:.1f} s)",
              flush=True)
        variants = {
            "bootloader": {},
            "floor": {"extra_args": ["-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline]},
        }
        if accelerator == "tcg":
            variants["bootloader + -accel tcg,thread=multi"] = {"accel_opts": "tcg,thread=multi"}
            variants["bootloader + -accel tcg,thread=single"] = {"accel_opts": "tcg,thread=single"}
            print("vCPU threads: " + "; ".join(
                f"{name.removeprefix('bootloader + ') if '+' in name else 'today'}: "
                f"{tcg_threads(disk, vm_options, variants[name])}"
                for name in ("bootloader", "bootloader + -accel tcg,thread=multi",
                             "bootloader + -accel tcg,thread=single")), flush=True)
        variants["bootloader + -cpu max"] = {"cpu_model": "max"}
        variants["bootloader + -device virtio-rng-pci"] = {"extra_args": ["-device", "virtio-rng-pci"]}
        times: dict[str, list[float]] = {name: [] for name in variants}
        for n in range(1, rounds + 1):
            for name, variant in variants.items():
                seconds, _ = boot(disk, check, vm_options, variant)
                times[name].append(seconds)
                print(f"round {n}: {name}: boot to HTTP {seconds:.1f} s", flush=True)
        med = {name: statistics.median(v) for name, v in times.items()}
        today = med["bootloader"]
        print(f"medians of {rounds} boots each (ratio to today's bootloader boot, {today:.1f} s):", flush=True)
        for name in variants:
            print(f"  {name}: {med[name]:.1f} s ({', '.join(f'{s:.1f}' for s in times[name])}) "
                  f"ratio {med[name] / today:.3f}", flush=True)
        ratio = today / med["floor"]
        print(f"bootloader / floor = {today:.1f} / {med['floor']:.1f} s = {ratio:.3f} "
              f"(goal <= 1.5: {'met' if ratio <= 1.5 else 'NOT met'})", flush=True)
        for name in ("bootloader", "floor"):
            with ephemeral_keypair("bakery-bench-boot") as key:
                seconds, guest = boot(disk, check, vm_options, variants[name], ssh_key=key)
            print(f"guest breakdown, {name} boot (fw_cfg key + SSH forward; boot to HTTP {seconds:.1f} s, "
                  f"not in the medians):", flush=True)
            print("  " + guest.replace("\n", "\n  "), flush=True)


if __name__ == "__main__":
    main()
