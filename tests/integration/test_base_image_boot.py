"""The local target's image chain, for real: base image recipe -> Packer template -> boot.

* the base image (scripts/build-base-image.sh, cached by recipe hash) exists, is a qcow2 that
  matches its .sha256, and a second run of the script is a cache hit that prints the same path;
* the debian12-nginx template (its folder as prepare renders it, bakery.templates) is `packer fmt`
  clean and `packer validate`s with the required variables (and its validations reject bad input);
* slow: `packer build` of the template, then the artifact is booted read-only with QemuVM, nginx
  answers 200 "Welcome to nginx", the image is generalised (no build key, no host keys, empty
  machine-id, /etc/bakery-release), the artifact's sha256 is unchanged and no QEMU is left.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from bakery.accel import detect_accelerator
from bakery.qemu import QemuError, QemuVM, sha256_file
from bakery.templates import render

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "build-base-image.sh"
FW_CFG_KEY = "opt/bakery/authorized_keys"
PART_OFFSET = 1 << 20  # the base image's root partition starts at 1 MiB

pytestmark = pytest.mark.needs_tools("packer", "qemu-system-x86_64", "qemu-img")  # Debian: packer qemu-system-x86 qemu-utils


def base_checksum(image: Path) -> str:
    return Path(f"{image}.sha256").read_text().split()[0]


def make_key(directory: Path) -> tuple[Path, Path]:
    key = directory / "id_ed25519"
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "bakery-test",
            "-f",
            str(key),
        ],
        check=True,
    )
    return key, key.with_name("id_ed25519.pub")


def packer_env(
    base_image: Path, work: Path, key: Path, pub: Path, **extra: str
) -> dict[str, str]:
    env = {
        **os.environ,
        "PACKER_CACHE_DIR": str(work / "packer_cache"),
        "CHECKPOINT_DISABLE": "1",
        "PKR_VAR_base_image_path": str(base_image),
        "PKR_VAR_base_image_checksum": base_checksum(base_image),
        "PKR_VAR_output_directory": str(work / "out"),
        "PKR_VAR_vm_name": "debian12-nginx.qcow2",
        "PKR_VAR_ssh_private_key_file": str(key),
        "PKR_VAR_ssh_public_key_file": str(pub),
        "PKR_VAR_manifest_path": str(work / "manifest.json"),
        "PKR_VAR_image_version": "2026.11.28-test",
        "PKR_VAR_package_list_path": str(work / "packages.tsv"),
        "PKR_VAR_accelerator": detect_accelerator(),
    }
    env.update({f"PKR_VAR_{k}": v for k, v in extra.items()})
    return env


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The debian12-nginx Packer folder as prepare renders it."""
    return render("debian12-nginx", tmp_path_factory.mktemp("packer") / "debian12-nginx")


def packer_validate(env: dict[str, str], template: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["packer", "validate", str(template)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
    )


def qemu_processes_using(*needles: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "qemu-system" in (proc.info["name"] or "") and any(
            n in cmdline for n in needles
        ):
            found.append(proc)
    return found


def ssh(vm: QemuVM, key: Path, command: str, deadline: float) -> str:
    """Run ``command`` as root in the guest, retrying until sshd is up or ``deadline``."""
    args = [
        "ssh", "-i", str(key), "-p", str(vm.port_for(22)),
        "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
        "root@127.0.0.1", command,
    ]  # fmt: skip
    while True:
        proc = subprocess.run(
            args, check=False, capture_output=True, text=True, timeout=120
        )
        if proc.returncode == 0:
            return proc.stdout
        if time.monotonic() > deadline:
            raise AssertionError(
                f"ssh into the guest failed: {proc.stderr}\n{vm.serial_tail()}"
            )
        time.sleep(2)


def guest_file(raw_disk: Path, path: str) -> str | None:
    """Contents of ``path`` in the root file system of a raw disk image (None if absent)."""
    proc = subprocess.run(
        ["debugfs", "-R", f"cat {path}", f"{raw_disk}?offset={PART_OFFSET}"],
        check=False,
        capture_output=True,
        text=True,
    )
    if "File not found" in proc.stderr:
        return None
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# ---------------------------------------------------------------------------- QemuVM


@pytest.fixture
def blank_disk(tmp_path: Path) -> Path:
    """A disk with nothing to boot: QEMU starts and idles in the firmware."""
    disk = tmp_path / "blank.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True
    )
    return disk


def test_qemuvm_snapshot_boot_forwards_a_port_and_stop_kills_it(
    blank_disk: Path,
) -> None:
    digest = sha256_file(blank_disk)
    with QemuVM(blank_disk, guest_port=80, memory_mb=128, cpus=1) as vm:
        assert vm.is_running()
        assert "-snapshot" in vm.command and "-cpu" not in vm.command
        assert f"hostfwd=tcp:127.0.0.1:{vm.host_port}-:80" in " ".join(vm.command)
        os.killpg(vm.pid, 0)  # QEMU leads its own process group
        assert os.getpgid(vm.pid) == vm.pid
        # QEMU's user networking listens on the forwarded port as soon as it runs.
        with socket.create_connection(("127.0.0.1", vm.host_port), timeout=5):
            pass
        pid = vm.pid
    assert not psutil.pid_exists(pid)
    assert not vm.is_running()
    vm.stop()  # idempotent
    assert sha256_file(blank_disk) == digest


def test_qemuvm_retries_when_its_port_was_taken(
    blank_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bakery.qemu as qemu_mod

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    ports = iter([taken])
    real_free_port = qemu_mod.free_port
    monkeypatch.setattr(
        qemu_mod, "free_port", lambda: next(ports, None) or real_free_port()
    )
    try:
        with QemuVM(blank_disk, memory_mb=128, cpus=1) as vm:
            assert vm.is_running()
            assert vm.host_port != taken
    finally:
        squatter.close()


def test_qemuvm_reports_why_qemu_failed(blank_disk: Path) -> None:
    vm = QemuVM(blank_disk, memory_mb=128, extra_args=["-no-such-option"])
    with pytest.raises(QemuError, match="no-such-option"):
        vm.start()
    assert not vm.is_running()


def test_qemuvm_rejects_bad_arguments(tmp_path: Path, blank_disk: Path) -> None:
    with pytest.raises(FileNotFoundError):
        QemuVM(tmp_path / "missing.qcow2")
    with pytest.raises(ValueError, match="'kvm' or 'tcg'"):
        QemuVM(blank_disk, accelerator="hvf")
    with pytest.raises(ValueError, match="opt/"):
        QemuVM(blank_disk, fw_cfg={"bakery/key": blank_disk})


# ---------------------------------------------------------------------------- base image


def test_base_image_matches_its_checksum_and_is_qcow2(base_image: Path) -> None:
    assert base_image.name == "debian12.qcow2"
    assert base_image.is_symlink(), "the stable path is a symlink to the recipe's image"
    target = base_image.resolve()
    assert target.name.startswith("debian12-") and target.suffix == ".qcow2"
    line = Path(f"{base_image}.sha256").read_text().split()
    assert line[1] == target.name
    assert sha256_file(base_image) == line[0]
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(target)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == 4096 * 2**20


def test_base_image_script_is_cached(base_image: Path) -> None:
    before = base_image.resolve().stat()
    t0 = time.monotonic()
    proc = subprocess.run(
        ["bash", str(SCRIPT)],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "BAKERY_HOME": str(base_image.parent.parent)},
        timeout=120,
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(base_image)
    assert "cached" in proc.stderr
    assert elapsed < 10, f"a cache hit took {elapsed:.1f}s"
    after = base_image.resolve().stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_base_image_script_rejects_a_bad_accelerator(tmp_path: Path) -> None:
    # Fails before any work (and before touching the cache) with a message naming the fix.
    script = tmp_path / "build-base-image.sh"
    shutil.copy(
        SCRIPT, script
    )  # a different recipe hash: nothing cached under tmp_path anyway
    proc = subprocess.run(
        ["bash", str(script)],
        check=False,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "BAKERY_HOME": str(tmp_path / "home"),
            "BAKERY_ACCEL": "hvf",
        },
        timeout=60,
    )
    assert proc.returncode != 0
    assert "BAKERY_ACCEL must be 'kvm' or 'tcg'" in proc.stderr
    assert proc.stdout == ""
    assert not list((tmp_path / "home" / "base").glob("*.qcow2"))
    assert not list((tmp_path / "home" / "base").glob(".build-*"))


# ---------------------------------------------------------------------------- template


def test_template_is_packer_fmt_clean(template: Path) -> None:
    proc = subprocess.run(
        ["packer", "fmt", "-check", "-diff", str(template)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_template_validates(base_image: Path, tmp_path: Path, template: Path) -> None:
    key, pub = make_key(tmp_path)
    env = packer_env(base_image, tmp_path, key, pub)
    proc = packer_validate(env, template)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("accelerator", "hvf", '"kvm" or "tcg"'),
        ("base_image_checksum", "abc123", "64 lowercase hex"),
        ("image_version", "1 2", "without spaces"),
    ],
)
def test_template_rejects_bad_variables(
    base_image: Path, tmp_path: Path, template: Path, var: str, value: str, message: str
) -> None:
    key, pub = make_key(tmp_path)
    env = packer_env(base_image, tmp_path, key, pub, **{var: value})
    proc = packer_validate(env, template)
    assert proc.returncode != 0
    assert message in " ".join((proc.stdout + proc.stderr).split())


def test_template_requires_its_inputs(tmp_path: Path, template: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PKR_VAR_")}
    proc = packer_validate(env, template)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    for name in ("base_image_path", "ssh_private_key_file", "image_version"):
        assert name in out


# ---------------------------------------------------------------------------- build + boot


@pytest.mark.slow
def test_packer_build_then_boot_serves_nginx(base_image: Path, tmp_path: Path, template: Path) -> None:
    key, pub = make_key(tmp_path)
    env = packer_env(
        base_image,
        tmp_path,
        key,
        pub,
        serial_log_path=str(tmp_path / "build-serial.log"),
    )
    base_digest = base_checksum(base_image)

    t0 = time.monotonic()
    build = subprocess.run(
        ["packer", "build", "-machine-readable", str(template)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=1800,
    )
    build_seconds = time.monotonic() - t0
    (tmp_path / "build.log").write_text(build.stdout + build.stderr)
    assert build.returncode == 0, (build.stdout + build.stderr)[-6000:]
    assert ",artifact," in build.stdout
    assert "generalize: removing /root/.ssh/authorized_keys" in build.stdout
    listing = (tmp_path / "packages.tsv").read_text()  # the guest's package list, downloaded
    assert listing.startswith("format\tbakery-packages/1\nfamily\tdeb\nos\tdebian\t12\n")
    assert "\npkg\tnginx\t" in listing

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    (entry,) = manifest["builds"]
    assert entry["packer_run_uuid"] == manifest["last_run_uuid"]
    assert entry["custom_data"]["image_version"] == "2026.11.28-test"
    assert entry["custom_data"]["base_image_checksum"] == base_digest
    (artifact_file,) = entry["files"]
    artifact = Path(artifact_file["name"])
    assert artifact == tmp_path / "out" / "debian12-nginx.qcow2"
    assert artifact.stat().st_size == artifact_file["size"]
    assert sha256_file(base_image) == base_digest, (
        "packer build modified the base image"
    )

    # The artifact itself, offline: generalised, versioned, no build key.
    raw = tmp_path / "inspect.raw"
    subprocess.run(
        ["qemu-img", "convert", "-O", "raw", str(artifact), str(raw)], check=True
    )
    try:
        assert guest_file(raw, "/root/.ssh/authorized_keys") is None
        assert guest_file(raw, "/etc/ssh/ssh_host_ed25519_key") is None
        assert guest_file(raw, "/etc/machine-id") == ""
        release = guest_file(raw, "/etc/bakery-release")
        assert release is not None and "IMAGE_VERSION=2026.11.28-test" in release
    finally:
        raw.unlink()

    digest_before = sha256_file(artifact)
    t0 = time.monotonic()
    with QemuVM(
        artifact, guest_port=80, extra_guest_ports=[22], fw_cfg={FW_CFG_KEY: pub}
    ) as vm:
        url = f"http://127.0.0.1:{vm.host_port}/"
        status, body, last_error = None, "", ""
        while time.monotonic() - t0 < 300:
            assert vm.is_running(), (
                f"QEMU exited ({vm.returncode}):\n{vm.serial_tail()}"
            )
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    status, body = resp.status, resp.read().decode(errors="replace")
                if status == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                last_error = repr(exc)
            time.sleep(1)
        http_seconds = time.monotonic() - t0
        assert status == 200, (
            f"no HTTP 200 from nginx in 300s ({last_error}):\n{vm.serial_tail()}"
        )
        assert "Welcome to nginx" in body

        # In the booted guest: sshd key-only, root locked, host keys made at this boot.
        out = ssh(
            vm,
            key,
            "cat /etc/bakery-release; getent shadow root | cut -d: -f2; "
            "sshd -T | grep -E '^(passwordauthentication|permitrootlogin) '; "
            "ls /etc/ssh/ssh_host_ed25519_key; systemctl is-enabled nginx; "
            "test -s /etc/machine-id && echo machine-id-set; "
            # the base image's boot (issue 11): the cloud kernel, an initramfs with only the virtio disk's
            # modules, no e2scrub_reap at boot, GRUB's text console, and no unit failed for any of that
            "echo kernel=$(uname -r); echo e2scrub_reap=$(systemctl is-enabled e2scrub_reap.service); "
            "echo gfxterm=$(grep -c gfxterm /boot/grub/grub.cfg); "
            "echo initrd-modules=$(lsinitramfs /boot/initrd.img-$(uname -r) | grep '[.]ko' | "
            "sed 's:.*/::' | sort | tr '\\n' ' '); "
            "systemctl is-system-running --wait >/dev/null; "
            "echo failed=$(systemctl --failed --no-legend --plain | wc -l)",
            deadline=time.monotonic() + 180,
        )
        assert "IMAGE_VERSION=2026.11.28-test" in out
        assert "\n!" in out or out.startswith("!"), f"root password not locked:\n{out}"
        assert "passwordauthentication no" in out
        assert "permitrootlogin without-password" in out
        assert "/etc/ssh/ssh_host_ed25519_key" in out
        assert "enabled" in out and "machine-id-set" in out
        facts = dict(line.split("=", 1) for line in out.splitlines() if "=" in line and " " not in line.split("=")[0])
        assert facts["kernel"].endswith("-cloud-amd64"), out
        assert facts["e2scrub_reap"] == "masked", out
        assert facts["gfxterm"] == "0", "GRUB's graphical terminal is configured"
        modules = facts["initrd-modules"].split()
        assert "virtio_blk.ko" in modules and len(modules) <= 10, f"not a host-only initramfs: {modules}"
        assert facts["failed"] == "0", out
        pid = vm.pid

    assert pid is not None and not psutil.pid_exists(pid), "QEMU outlived QemuVM.stop()"
    assert not qemu_processes_using(str(artifact), str(tmp_path)), (
        "a QEMU process was left"
    )
    assert sha256_file(artifact) == digest_before, "booting the artifact modified it"
    print(
        f"\npacker build: {build_seconds:.0f}s; boot to HTTP 200: {http_seconds:.1f}s"
    )
