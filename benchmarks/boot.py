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

Every boot is polled every 0.25 s (the local smoke test polls every 0.5 s; the same poll for every variant),
``rounds`` rounds (default 3), each round booting every variant once in the same order, so machine
noise hits them alike; medians are compared. Goal (issue 11): bootloader / floor <= 1.5.

Then the guest's own breakdown: one more boot of each bootloader and floor (today's too, with --today)
with an ephemeral SSH key handed in through QEMU fw_cfg (``opt/bakery/authorized_keys``, as Packer's build
does; the image keeps the base image's unit that installs it) and guest port 22 forwarded; once HTTP
answers, over SSH: ``systemd-analyze``, ``systemd-analyze blame`` (top 10) and ``systemd-analyze
critical-chain nginx.service``. These boots are not in the medians (they carry the key and a second forward).

The build's boot: ``--base DISK`` boots a base image to the first SSH login with an ephemeral key through
fw_cfg, as Packer's build reaches its VM (twice: the new base image, then today's, for their ratio).

Today's image against the new one, in the same run (issue 11: at most half of today's boot to HTTP):
``--today DISK`` adds the bootloader and floor boots of the same image baked on today's base image to
every round. Changes to the kernel command line are measured one at a time as floor variants of today's
image (``--append ARG``: the argument added, ``--drop ARG``: taken out of GRUB's command line).

    source scripts/env.sh && python benchmarks/boot.py [image] [disk.qcow2] [rounds] [--today today.qcow2]
        [--compare other.qcow2] [--append ARG] [--drop ARG] [--base new-base.qcow2 --base today-base.qcow2]
        [--no-qemu-options]
"""

from __future__ import annotations

import argparse
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


def tcg_threads(vm_options: dict, variant: dict) -> str:
    """The names of QEMU's vCPU threads (``CPU 0/TCG``... one per vCPU: multi-threaded; ``ALL CPUs/TCG``:
    single-threaded) for ``variant``, read from a paused QEMU (``-S``: the guest does not run)."""
    options = merged(vm_options, variant, "-S", "-name", "debug-threads=on")
    with vm_class()(options.pop("disk"), **options) as vm:
        names = sorted((task / "comm").read_text().strip() for task in Path(f"/proc/{vm.pid}/task").iterdir())
    return ", ".join(n for n in names if "/TCG" in n) or "no TCG threads"


def boot(check, vm_options: dict, variant: dict, ssh_key: tuple[Path, Path] | None = None) -> tuple[float, str]:
    """Seconds from starting QEMU (as the smoke test counts them) to the expected HTTP answer; with
    ``ssh_key``, also the guest's breakdown read over SSH afterwards."""
    from bake_overhead import quiet

    from bakery.http_check import poll_http

    options = merged(vm_options, variant)
    disk = options.pop("disk")
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


def ssh_command(port: int, private_key: Path) -> list[str]:
    return ["ssh", "-p", str(port), "-i", str(private_key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=10", "root@127.0.0.1"]


def first_login(ssh: list[str], seconds: float, interval: float, alive=lambda: True) -> str | None:
    """Try ``ssh true`` until it succeeds (None) or ``seconds`` pass or ``alive()`` turns false (the last
    attempt's error)."""
    deadline = time.monotonic() + seconds
    while True:
        probe = subprocess.run([*ssh, "true"], capture_output=True, text=True, timeout=60, check=False)
        if probe.returncode == 0:
            return None
        if time.monotonic() > deadline or not alive():
            return probe.stderr.strip() or f"ssh exited {probe.returncode}"
        time.sleep(interval)


def guest_breakdown(port: int, private_key: Path) -> str:
    ssh = ssh_command(port, private_key)
    error = first_login(ssh, 300, 1)
    if error is not None:
        return f"(no SSH login within 300 s after HTTP answered: {error})"
    proc = subprocess.run([*ssh, GUEST_COMMANDS], capture_output=True, text=True, timeout=420, check=False)
    return (proc.stdout + proc.stderr).rstrip()


def boot_to_ssh(disk: Path, vm_options: dict) -> float:
    """Seconds from starting QEMU to the first SSH login as root with an ephemeral key handed in through
    fw_cfg: how Packer's build reaches its VM (same memory, vCPUs and key path; ``-snapshot`` where Packer
    boots its own copy of the base image)."""
    from bakery.sshkey import ephemeral_keypair

    with ephemeral_keypair("bakery-bench-boot") as (private, public):
        started = time.monotonic()
        options = {**vm_options, "fw_cfg": {"opt/bakery/authorized_keys": public}}
        with vm_class()(disk, guest_port=22, **options) as vm:
            error = first_login(ssh_command(vm.host_port, private), 600, POLL_SECONDS, vm.is_running)
            if error is not None:
                raise SystemExit(f"{disk}: no SSH login within 600 s ({error})\n{vm.serial_tail(15)}")
            return time.monotonic() - started


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Boot to HTTP of a baked image against its floor (issue 11 part 2).")
    ap.add_argument("image", nargs="?", default="debian12-nginx")
    ap.add_argument("disk", nargs="?", default="", help="the image's disk (default: its newest published version)")
    ap.add_argument("rounds", nargs="?", type=int, default=3)
    ap.add_argument("--today", metavar="DISK", type=Path,
                    help="the same image baked on today's base image: its bootloader and floor boots join every "
                         "round, and the new bootloader boot is compared with today's (goal <= 0.5)")
    ap.add_argument("--compare", metavar="DISK", type=Path, action="append", default=[],
                    help="another build of the image (for example with one change fewer): its bootloader boot "
                         "joins every round, and its ratio to the new image's is printed")
    ap.add_argument("--append", metavar="ARG", action="append", default=[],
                    help="a floor variant with this kernel argument added (one change measured at a time); "
                         "booted from --today's kernel if given, else from the image's")
    ap.add_argument("--drop", metavar="ARG", action="append", default=[],
                    help="a floor variant with this kernel argument taken out of GRUB's command line")
    ap.add_argument("--base", metavar="DISK", type=Path, action="append", default=[],
                    help="a base image (scripts/build-base-image.sh) to boot to SSH as Packer's build does, in every "
                         "round; give it twice (the new base image, then today's) for their ratio")
    ap.add_argument("--no-qemu-options", action="store_true",
                    help="leave out the QEMU option variants (TCG threading, -cpu max, virtio-rng)")
    return ap.parse_args(argv)


def main() -> None:
    from gallery_storage import newest_published

    from bakery.accel import detect_accelerator
    from bakery.catalogue import load_catalogue
    from bakery.sshkey import ephemeral_keypair
    from bakery.targets.local import LocalTarget

    args = parse_args(sys.argv[1:])
    image, rounds = args.image, args.rounds
    disk = Path(args.disk) if args.disk else newest_published(image)
    check = load_catalogue()[image].smoke_test
    target = LocalTarget()
    accelerator = detect_accelerator()
    # the smoke test's QemuVM options (LocalTarget._boot_check)
    vm_options = {"memory_mb": target.vm_memory_mb, "cpus": target.vm_cpus, "accelerator": accelerator,
                  "isolated": True, "name": f"bakery-bench-boot-{image}"}
    with tempfile.TemporaryDirectory(prefix="bakery-boot-") as tmp_s:
        tmp = Path(tmp_s)
        print(f"{image}: {disk} (accelerator {accelerator}, {target.vm_cpus} vCPUs, {target.vm_memory_mb} MiB; "
              f"HTTP {check.expect_status} with {check.expect_text!r} on port {check.port}, polled every "
              f"{POLL_SECONDS} s)", flush=True)
        disks = {"": disk, "today: ": args.today} if args.today else {"": disk}
        floors: dict[str, tuple[Path, Path, str]] = {}
        for label, d in disks.items():
            folder = tmp / label.strip(": ")  # "" (the image) is tmp itself
            folder.mkdir(exist_ok=True)
            t0 = time.monotonic()
            kernel, initrd, cmdline, entry = kernel_of(d, folder)
            floors[label] = kernel, initrd, cmdline
            print(f"{label}{d}: GRUB's default entry: {entry}; kernel {kernel.stat().st_size:,} bytes, initrd "
                  f"{initrd.stat().st_size:,} bytes (copied out in {time.monotonic() - t0:.1f} s)", flush=True)

        def floor(label: str, cmdline: str) -> dict:
            kernel, initrd, _ = floors[label]
            return {"disk": disks[label], "extra_args": ["-kernel", str(kernel), "-initrd", str(initrd),
                                                         "-append", cmdline]}

        variants: dict[str, dict] = {}
        for label, d in disks.items():
            variants[f"{label}bootloader"] = {"disk": d}
            variants[f"{label}floor"] = floor(label, floors[label][2])
        for other in args.compare:
            variants[f"{other.name}: bootloader"] = {"disk": other}
        changed = "today: " if args.today else ""  # kernel arguments are measured on today's image if given
        base_cmdline = floors[changed][2]
        cmdline_variants = []
        for arg in args.append:
            cmdline_variants.append(f"{changed}floor + {arg}")
            variants[cmdline_variants[-1]] = floor(changed, f"{base_cmdline} {arg}")
        for arg in args.drop:
            kept = [a for a in base_cmdline.split() if a != arg]
            if len(kept) == len(base_cmdline.split()):
                raise SystemExit(f"--drop {arg}: not in GRUB's command line {base_cmdline!r}")
            cmdline_variants.append(f"{changed}floor - {arg}")
            variants[cmdline_variants[-1]] = floor(changed, " ".join(kept))
        if not args.no_qemu_options:
            if accelerator == "tcg":
                variants["bootloader + -accel tcg,thread=multi"] = {"disk": disk, "accel_opts": "tcg,thread=multi"}
                variants["bootloader + -accel tcg,thread=single"] = {"disk": disk, "accel_opts": "tcg,thread=single"}
                print("vCPU threads: " + "; ".join(
                    f"{name.removeprefix('bootloader + ') if '+' in name else 'default'}: "
                    f"{tcg_threads(vm_options, variants[name])}"
                    for name in ("bootloader", "bootloader + -accel tcg,thread=multi",
                                 "bootloader + -accel tcg,thread=single")), flush=True)
            variants["bootloader + -cpu max"] = {"disk": disk, "cpu_model": "max"}
            variants["bootloader + -device virtio-rng-pci"] = {"disk": disk,
                                                               "extra_args": ["-device", "virtio-rng-pci"]}
        bases = {f"build: {b.resolve().name} to SSH": b for b in args.base}  # ordered as given
        times: dict[str, list[float]] = {name: [] for name in [*variants, *bases]}
        for n in range(1, rounds + 1):
            for name, variant in variants.items():
                seconds, _ = boot(check, vm_options, variant)
                times[name].append(seconds)
                print(f"round {n}: {name}: boot to HTTP {seconds:.1f} s", flush=True)
            for name, base in bases.items():
                times[name].append(boot_to_ssh(base, vm_options))
                print(f"round {n}: {name}: {times[name][-1]:.1f} s", flush=True)
        med = {name: statistics.median(v) for name, v in times.items()}
        new = med["bootloader"]
        print(f"medians of {rounds} boots each (ratio to the bootloader boot of {disk.name}, {new:.1f} s):",
              flush=True)
        for name in times:
            print(f"  {name}: {med[name]:.1f} s ({', '.join(f'{s:.1f}' for s in times[name])}) "
                  f"ratio {med[name] / new:.3f}", flush=True)
        for other in args.compare:
            name = f"{other.name}: bootloader"
            print(f"bootloader / {name} = {new:.1f} / {med[name]:.1f} s = {new / med[name]:.3f}", flush=True)
        if len(bases) == 2:
            new_base, today_base = bases
            print(f"build's boot to SSH, {args.base[0].resolve().name} / {args.base[1].resolve().name} = "
                  f"{med[new_base]:.1f} / {med[today_base]:.1f} s = {med[new_base] / med[today_base]:.3f}", flush=True)
        ratio = new / med["floor"]
        print(f"bootloader / floor = {new:.1f} / {med['floor']:.1f} s = {ratio:.3f} "
              f"(goal <= 1.5: {'met' if ratio <= 1.5 else 'NOT met'})", flush=True)
        if args.today:
            today = med["today: bootloader"]
            print(f"bootloader / today's bootloader = {new:.1f} / {today:.1f} s = {new / today:.3f} "
                  f"(goal <= 0.5: {'met' if new / today <= 0.5 else 'NOT met'}); today's bootloader / floor = "
                  f"{today / med['today: floor']:.3f}", flush=True)
        for name in cmdline_variants:
            print(f"  {name} / {changed}floor = {med[name] / med[f'{changed}floor']:.3f}", flush=True)
        for name in [f"{label}{kind}" for label in disks for kind in ("bootloader", "floor")]:
            with ephemeral_keypair("bakery-bench-boot") as key:
                seconds, guest = boot(check, vm_options, variants[name], ssh_key=key)
            print(f"guest breakdown, {name} boot (fw_cfg key + SSH forward; boot to HTTP {seconds:.1f} s, "
                  f"not in the medians):", flush=True)
            print("  " + guest.replace("\n", "\n  "), flush=True)


if __name__ == "__main__":
    main()
