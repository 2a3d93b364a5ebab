"""The local target: smoke-test with QEMU on this machine, publish to a gallery on the filesystem.

Gallery layout (``$BAKERY_HOME/gallery`` by default)::

    <image>/<version>/disk.qcow2       the published disk (never modified after publish): a qcow2 stored
                                       with zstd-compressed clusters (self-contained, boots as it is)
    <image>/<version>/metadata.json    provenance: version, digests, run ids, smoke verdict, size
    <image>/latest -> <version>        symlink: the highest version not excluded from latest (Azure's rule)
    <image>/stable -> <version>        symlink: the version the stable channel points at (images with channels)
    <image>/channels.json              each version's channel and exclusion from latest, and every change
    <image>/.lock                      flock serialising publish and prune of one image
    <image>/.staging-* / .trash-*      in-flight publish / delete (never a visible version)

A version becomes visible only by ``rename(2)`` of a complete staging folder, so no half-written
version is ever visible; publishing the same run again is a no-op.

A publish or prune killed half-way (SIGKILL, power loss) leaves a ``.staging-*`` / ``.trash-*`` /
``.latest-*`` entry behind, never a visible version. The next publish or prune of the image removes
them, under the image lock: holding it means no other publish or prune of the image is in flight,
so every such entry is stale.

The built disk lives in the version's work folder (``$BAKERY_HOME/work/<image>/<version>``); the
smoke test and the publish hold that folder's lock (``bakery.worklock``) while they read it, so a
second build of the same image version cannot rewrite the disk under them (and they refuse to run
while such a build holds it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

from bakery.digest import sha256_file
from bakery.http_check import poll_http
from bakery.packages.inputs import Inputs, InputsError
from bakery.packages.manifest import MANIFEST_NAME, SBOM_NAME, Manifest, ManifestError, diff, format_diff
from bakery.packages.pool import PackagePool, default_pool
from bakery.paths import REPO_ROOT, bakery_home, gallery_root, work_root
from bakery.record import BakeRecord, SmokeResult
from bakery.channels import (
    Actor,
    Change,
    VersionState,
    latest_of,
    pinned_by_channels,
    published_change,
    stable_of,
    with_channel_marks,
)
from bakery.targets.base import Log, PublishedVersion, SmokeCheck, Target
from bakery.versioning import VersionError, parse_version, version_key
from bakery.worklock import work_lock

DISK_NAME = "disk.qcow2"
META_NAME = "metadata.json"
CHANNELS_NAME = "channels.json"
STALE_PREFIXES = (".staging-", ".trash-", ".latest-")  # in-flight entries; stale unless locked
# The smoke test asks every 0.5 s: a refused connection on loopback costs nothing, and its boot figure
# is not quantised to poll_http's default of 2 s (meant for targets across a network).
SMOKE_POLL_SECONDS = 0.5
# Boots of one check when the guest's kernel locks up (bakery.qemu.soft_lockup), all within the check's
# one deadline: a hung boot is the emulator's, not the image's answer, and would otherwise run out the
# whole timeout and fail as a verdict. An image that locks up on every boot still fails, saying so.
BOOT_ATTEMPTS = 3


class GalleryError(RuntimeError):
    pass


@contextlib.contextmanager
def _artifact_lock(record: BakeRecord, purpose: str) -> Iterator[None]:
    """Hold the version's work-folder lock when the artifact lives in it (the bakery's layout)."""
    wd = (work_root() / record.image / record.version).resolve()
    src = Path(record.artifact_id or "").resolve()
    if not src.is_relative_to(wd):
        yield
        return
    with work_lock(wd, f"{purpose} of {record.image} {record.version}"):
        yield


QCOW2_MAGIC = b"QFI\xfb"


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the process that started it dies (``PR_SET_PDEATHSIG``),
    so a publisher killed mid-write leaves no ``qemu-img`` writing on."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def store_disk(src: Path, dst: Path) -> str:
    """Write the gallery's copy of a built disk at ``dst`` (new file, fsynced); say how.

    A qcow2 (what every template builds) is rewritten by ``qemu-img convert -c`` with zstd-compressed
    clusters: a third of the bytes of Packer's output, still one self-contained qcow2 that QEMU boots
    as it is (no backing file). Any other file is copied byte for byte."""
    with open(src, "rb") as fh:
        is_qcow2 = fh.read(4) == QCOW2_MAGIC
    if is_qcow2:
        proc = subprocess.run(
            ["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "qcow2", "-c", "-o", "compression_type=zstd",
             str(src), str(dst)],
            capture_output=True, text=True, check=False, preexec_fn=_die_with_parent)
        if proc.returncode != 0:
            raise GalleryError(f"publish: qemu-img convert of {src} to {dst} failed (exit {proc.returncode}): "
                               f"{(proc.stderr or proc.stdout).strip()[-500:]}")
        how = "qcow2, zstd-compressed clusters"
    else:
        shutil.copyfile(src, dst)
        how = "copied as it is"
    with open(dst, "rb") as fh:
        os.fsync(fh.fileno())
    return how


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


BASE_IMAGE_SCRIPT = REPO_ROOT / "scripts" / "build-base-image.sh"


def ensure_base_image(log: Log) -> Path:
    """Run the (cached) base image recipe; return the image path it prints last."""
    env = {**os.environ, "BAKERY_HOME": str(bakery_home())}
    proc = subprocess.Popen(
        ["bash", str(BASE_IMAGE_SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=env, start_new_session=True,
    )
    last = ""
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line:
                last = line
                log(f"base image: {line}")
        rc = proc.wait()
    except BaseException:
        from bakery.processes import stop

        stop(group=proc.pid, grace_seconds=60, what="the base image build")  # its mmdebstrap / QEMU too
        proc.wait(timeout=10)
        raise
    if rc != 0:
        raise GalleryError(f"{BASE_IMAGE_SCRIPT} failed with exit code {rc}: {last}")
    path = Path(last.strip())
    if not path.is_file():
        raise GalleryError(f"{BASE_IMAGE_SCRIPT} did not print an existing image path (last line: {last!r})")
    return path


class LocalTarget(Target):  # the Target interface's three-step smoke test and close() defaults apply
    name = "local"

    def __init__(self, gallery: Path | None = None, *, vm_memory_mb: int = 1024, vm_cpus: int = 2):
        self.gallery = Path(gallery) if gallery else gallery_root()
        self.vm_memory_mb = vm_memory_mb
        self.vm_cpus = vm_cpus

    # ---- build inputs -----------------------------------------------------------------------
    def prepare(self, spec, record: BakeRecord, work_dir: Path, *, accelerator: str, log: Log,
                inputs: Inputs | None = None, pool: PackagePool | None = None):
        """Make sure the base image exists (cached build), return Packer variables + base digest.

        Rebuilding a version from the pool (``inputs`` pool@<version>) starts from the very base
        image that version was built on, which the pool keeps by digest."""
        from bakery.accel import detect_accelerator

        if inputs is not None and inputs.kind == "pool":
            digest = inputs.base_digest or ""
            base = (pool or default_pool()).base_path(digest)
            if not base.is_file():
                raise InputsError(
                    f"cannot rebuild {spec.name} {record.version} from the pool: the base image it was built on "
                    f"({digest}) is no longer kept at {base}. Trigger the run with allow_current_inputs=true to "
                    "rebuild it from today's base image and packages.")
            checksum = digest.removeprefix("sha256:")
            log(f"base image {base}: the one {record.version} was built on")
        else:
            base = ensure_base_image(log)
            checksum = Path(str(base) + ".sha256").read_text().split()[0]
        accel = detect_accelerator() if accelerator == "auto" else accelerator
        if accel not in ("kvm", "tcg"):
            raise ValueError(f"accelerator must be auto, kvm or tcg, not {accelerator!r}")
        log(f"base image {base} (sha256 {checksum[:12]}...), accelerator {accel}")
        variables = {
            "base_image_path": str(base),
            "base_image_checksum": checksum,
            "output_directory": str(work_dir / "output"),
            "vm_name": f"{spec.name}-{record.version}.qcow2",
            "accelerator": accel,
            "manifest_path": str(work_dir / "manifest.json"),
            "image_version": record.version,
        }
        record.extra["accelerator"] = accel
        return variables, f"sha256:{checksum}"

    def artifact_id(self, artifact: dict) -> str:
        files = [f for f in artifact.get("files") or [] if f.endswith(".qcow2")]
        if len(files) != 1:
            raise GalleryError(f"expected one .qcow2 file in the Packer artifact, got {artifact.get('files')}")
        return str(Path(files[0]).resolve())

    # ---- smoke test -------------------------------------------------------------------------
    def smoke_test(self, record: BakeRecord, check: SmokeCheck, log: Log) -> SmokeResult:
        with _artifact_lock(record, "smoke test"):
            return self._smoke_test(record, check, log)

    def _smoke_test(self, record: BakeRecord, check: SmokeCheck, log: Log) -> SmokeResult:
        disk = Path(record.artifact_id or "")
        if not disk.is_file():
            raise GalleryError(f"smoke test: the built disk {disk} does not exist")
        return self._boot_check(disk, check, log, accelerator=record.extra.get("accelerator"),
                                name=f"bakery-smoke-{record.image}-{record.version}",
                                serial_log=disk.parent / "smoke-serial.log")

    def canary(self, image: str, version: str, check: SmokeCheck, log: Log) -> SmokeResult:
        """Boot the published disk of ``version`` read-only (``-snapshot``; its checksum is compared
        before and after) with ``check``. Not under the image lock: prune never removes the highest
        version, and a version it removes meanwhile fails the canary saying so."""
        parse_version(version)  # a version number, never a path
        disk = self._image_dir(image) / version / DISK_NAME
        if not disk.is_file():
            raise GalleryError(f"canary: {image} {version} has no published disk at {disk}")
        try:
            return self._boot_check(disk, check, log, accelerator=None, name=f"bakery-canary-{image}-{version}")
        except FileNotFoundError:
            if disk.is_file():
                raise
            raise GalleryError(f"canary: {image} {version} was removed from the gallery while the canary booted it "
                               f"({disk})") from None

    def _boot_check(self, disk: Path, check: SmokeCheck, log: Log, *, accelerator: str | None, name: str,
                    serial_log: Path | None = None) -> SmokeResult:
        """Boot ``disk`` read-only and poll ``check`` until it passes or its deadline; the VM is always
        stopped, and a disk that changed meanwhile fails the check."""
        from bakery.qemu import QemuVM

        before = sha256_file(disk)
        log(f"booting {disk} read-only (-snapshot) to check http://<vm>:{check.port}{check.path}")
        started = time.monotonic()  # one deadline for every boot of this check
        for attempt in range(1, BOOT_ATTEMPTS + 1):
            with QemuVM(
                disk,
                guest_port=check.port,
                memory_mb=self.vm_memory_mb,
                cpus=self.vm_cpus,
                serial_log=serial_log,
                accelerator=accelerator,  # None: detected
                isolated=True,  # the guest cannot reach out; the port forward still works
                name=name,
            ) as vm:
                url = f"http://127.0.0.1:{vm.host_port}{check.path}"
                result = poll_http(url, check, log=log, started=started, interval=SMOKE_POLL_SECONDS,
                                   alive=lambda vm=vm: vm.is_running() and vm.locked_up() is None)
                lockup = None if result.passed else vm.locked_up()
                tail = "" if result.passed else vm.serial_tail(15)
            if lockup is None:
                break
            if attempt == BOOT_ATTEMPTS or time.monotonic() - started >= check.timeout_seconds:
                result = SmokeResult(False, result.seconds, result.status,
                                     f"the guest's kernel locked up on boot {attempt} of at most {BOOT_ATTEMPTS}: "
                                     f"{lockup}")
                break
            log(f"boot {attempt} of {BOOT_ATTEMPTS}: the guest's kernel locked up ({lockup}), which is QEMU's "
                f"emulation failing, not the image answering; booting it again within the same deadline")
        after = sha256_file(disk)
        if after != before:
            return SmokeResult(False, result.seconds, result.status, f"the disk changed during the check ({before} -> {after})")
        if tail:
            log("last lines of the VM's serial console:\n" + tail)
        return result

    # ---- gallery ----------------------------------------------------------------------------
    def _image_dir(self, image: str) -> Path:
        return self.gallery / image

    @contextlib.contextmanager
    def _locked(self, image: str) -> Iterator[Path]:
        d = self._image_dir(image)
        d.mkdir(parents=True, exist_ok=True)
        with open(d / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield d
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def try_locked(self, image: str) -> Iterator[Path | None]:
        """The image lock if it is free right now (yields the image folder), else yields None."""
        d = self._image_dir(image)
        if not d.is_dir():
            yield None
            return
        with open(d / ".lock", "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            try:
                yield d
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @staticmethod
    def stale_entries(image_dir: Path) -> list[Path]:
        """``.staging-*`` / ``.trash-*`` / ``.latest-*`` entries (stale when the image lock is free)."""
        if not image_dir.is_dir():
            return []
        return sorted(p for p in image_dir.iterdir() if p.name.startswith(STALE_PREFIXES))

    @staticmethod
    def remove_entry(path: Path) -> None:
        if path.is_symlink() or not path.is_dir():
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path)

    def _remove_stale(self, image_dir: Path, log: Log) -> list[str]:
        """With the image lock held: remove what killed publishes / prunes left behind."""
        removed = []
        for p in self.stale_entries(image_dir):
            self.remove_entry(p)
            removed.append(p.name)
        if removed:
            _fsync_dir(image_dir)
            log(f"removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} left by an interrupted "
                f"publish or prune in {image_dir}: {', '.join(removed)}")
        return removed

    def _versions(self, image_dir: Path) -> list[str]:
        out = []
        if not image_dir.is_dir():
            return out
        for p in image_dir.iterdir():
            if p.is_dir() and not p.is_symlink() and not p.name.startswith("."):
                try:
                    parse_version(p.name)
                except VersionError:
                    continue
                if (p / META_NAME).is_file():
                    out.append(p.name)
        return sorted(out, key=version_key)

    def _update_latest(self, image_dir: Path) -> str | None:
        """Point ``latest`` (and ``stable``, for an image with channels) at what the channels say; None
        when no version is in latest."""
        states = self._states(image_dir)
        latest = latest_of(states)
        for name, version in (("latest", latest), ("stable", stable_of(states))):
            link = image_dir / name
            if version is None:
                with contextlib.suppress(FileNotFoundError):
                    link.unlink()
                continue
            tmp = image_dir / f".latest-{uuid.uuid4().hex}"
            os.symlink(version, tmp)
            os.replace(tmp, link)
        _fsync_dir(image_dir)
        return latest

    # ---- channels (bakery.channels) ---------------------------------------------------------
    @staticmethod
    def _read_channels(image_dir: Path) -> dict:
        path = image_dir / CHANNELS_NAME
        data = json.loads(path.read_text()) if path.is_file() else {}
        return {"versions": data.get("versions") or {}, "history": data.get("history") or []}

    def _states(self, image_dir: Path) -> list[VersionState]:
        """Each version's channel: its last change in channels.json, else the one it was published into."""
        channels = self._read_channels(image_dir)["versions"]
        out = []
        for v in self._versions(image_dir):
            meta = json.loads((image_dir / v / META_NAME).read_text())
            entry = channels.get(v) or meta.get("channel") or {}
            created = meta.get("created")
            out.append(VersionState(v, entry.get("channel"), bool(entry.get("exclude_from_latest")),
                                    datetime.fromisoformat(created) if created else None,
                                    (meta.get("smoke_test") or {}).get("passed")))
        return out

    def _record_changes(self, image_dir: Path, changes: list[Change], *, history_only: bool = False) -> None:
        """With the image lock held: write the versions' channels and append the changes to the history
        (``history_only``: a publish, whose channel is in the version's metadata)."""
        data = self._read_channels(image_dir)
        for c in changes:
            if not history_only:
                data["versions"][c.version] = {"channel": c.channel, "exclude_from_latest": c.exclude_from_latest}
            data["history"].append(c.to_dict())
        self._write_channels(image_dir, data)

    def _forget_channels(self, image_dir: Path, versions: list[str]) -> None:
        """With the image lock held: versions deleted (prune) or replaced lose their channel entry (a
        version of the same number published again starts from its own publish); the history stays."""
        data = self._read_channels(image_dir)
        if any(data["versions"].pop(v, None) is not None for v in list(versions)):
            self._write_channels(image_dir, data)

    def _write_channels(self, image_dir: Path, data: dict) -> None:
        self._write(image_dir / CHANNELS_NAME, json.dumps(data, indent=2, sort_keys=True) + "\n")
        _fsync_dir(image_dir)

    def channel_states(self, image: str) -> list[VersionState]:
        return self._states(self._image_dir(image))

    def channel_history(self, image: str) -> list[dict]:
        """Every channel change of the image, oldest first (``Change.to_dict()``), also of versions pruned
        since; a publish killed before it wrote its entry is taken from the version's metadata."""
        image_dir = self._image_dir(image)
        history = self._read_channels(image_dir)["history"]
        seen = {(c["version"], c["action"], c["at"]) for c in history}
        missing = [c for v in self._versions(image_dir) if (c := (self.published(image, v) or {}).get("channel"))
                   and (c["version"], c["action"], c["at"]) not in seen]
        return sorted(history + missing, key=lambda c: datetime.fromisoformat(c["at"]))

    def change_channels(self, image: str, plan, log: Log) -> list[Change]:
        """Apply the changes ``plan(states)`` returns, with the image lock held (no publish or prune
        between reading the states and writing them); move ``latest`` and ``stable``. ``plan`` gets the
        current states and returns ``(changes, summary)``. Returns the changes applied."""
        with self._locked(image) as image_dir:
            changes, summary = plan(self._states(image_dir))
            log(f"{image}: {summary}")
            if changes:
                self._record_changes(image_dir, changes)
                latest = self._update_latest(image_dir)
                for c in changes:
                    log(f"{image} {c.line()}")
                log(f"{image}: stable -> {self._link(image_dir, 'stable') or '(none)'}, latest -> {latest or '(none)'}")
            return changes

    def check_promotable(self, image: str, version: str, log: Log) -> list[str]:
        """The published disk is whole: there, of the size published, a consistent qcow2 (``qemu-img
        check``), and its smoke test passed."""
        parse_version(version)
        meta = self.published(image, version)
        if meta is None:
            return [f"{image} {version} is not published in {self._image_dir(image)}"]
        disk = self._image_dir(image) / version / meta.get("disk", DISK_NAME)
        problems = []
        if not (meta.get("smoke_test") or {}).get("passed"):
            problems.append("its smoke test did not pass")
        if not disk.is_file():
            return [*problems, f"its disk {disk} is missing"]
        if meta.get("size_bytes") is not None and disk.stat().st_size != meta["size_bytes"]:
            problems.append(f"its disk {disk} is {disk.stat().st_size} bytes, published as {meta['size_bytes']}")
        check = subprocess.run(["qemu-img", "check", "-q", str(disk)], capture_output=True, text=True)
        if check.returncode != 0:
            problems.append(f"qemu-img check {disk}: exit {check.returncode}: "
                            f"{(check.stderr or check.stdout).strip()[-500:]}")
        if not problems:
            log(f"{image} {version}: disk {disk} checked (qemu-img check, {disk.stat().st_size} bytes), smoke test passed")
        return problems

    @staticmethod
    def _link(image_dir: Path, name: str) -> str | None:
        link = image_dir / name
        return os.readlink(link) if link.is_symlink() else None

    def latest(self, image: str) -> str | None:
        return self._link(self._image_dir(image), "latest")

    def metadata(self, image: str, version: str) -> dict:
        return json.loads((self._image_dir(image) / version / META_NAME).read_text())

    def published(self, image: str, version: str) -> dict | None:
        """The metadata of a published version, or None."""
        path = self._image_dir(image) / version / META_NAME
        return json.loads(path.read_text()) if path.is_file() else None

    def manifest(self, image: str, version: str) -> Manifest | None:
        """The package manifest of a published version (None: not published, or made before the
        bakery captured manifests)."""
        path = self._image_dir(image) / version / MANIFEST_NAME
        return Manifest.load(path) if path.is_file() else None

    def publish(self, record: BakeRecord, log: Log, *, replace_existing: bool = False) -> str:
        parse_version(record.version)
        src = Path(record.artifact_id or "")
        if not record.smoke or not record.smoke.get("passed"):
            raise GalleryError(f"refusing to publish {record.image} {record.version}: the smoke test did not pass")
        manifest = self._record_manifest(record)
        with _artifact_lock(record, "publish"), self._locked(record.image) as image_dir:
            self._remove_stale(image_dir, log)
            final = image_dir / record.version
            old = None
            if final.exists():
                if not replace_existing or self._same_run(record, final):
                    return self._adopt_existing(record, final, log)
                old = final
            if not src.is_file():
                raise GalleryError(f"publish: the built disk {src} does not exist")
            staging = image_dir / f".staging-{record.version}-{uuid.uuid4().hex[:8]}"
            staging.mkdir()
            try:
                disk = staging / DISK_NAME
                # a copy, not a hard link: the published disk must never share an inode with a
                # work file that a later build or a retry could rewrite in place
                t0 = time.monotonic()
                how = store_disk(src, disk)
                log(f"stored {record.image} {record.version}'s disk: {src.stat().st_size} -> {disk.stat().st_size} "
                    f"bytes ({how}) in {time.monotonic() - t0:.1f} s")
                meta = self._metadata(record, disk, manifest)  # with its channel: visible and excluded at once
                if manifest is not None:
                    self._write(staging / MANIFEST_NAME, manifest.to_json())
                    self._write(staging / SBOM_NAME, self._sbom(record, manifest, meta))
                self._write(staging / META_NAME, json.dumps(meta, indent=2, sort_keys=True) + "\n")
                _fsync_dir(staging)
                self._commit_pool_index(record, log)
                if old is not None:  # replace_existing: the old version goes only once the new one is whole
                    trash = image_dir / f".trash-{record.version}-{uuid.uuid4().hex[:8]}"
                    os.rename(old, trash)
                    self._forget_channels(image_dir, [record.version])
                    os.rename(staging, final)
                    _fsync_dir(image_dir)
                    shutil.rmtree(trash)
                    log(f"replaced {record.image} {record.version} (replace_existing)")
                else:
                    os.rename(staging, final)  # the atomic step: the version becomes visible whole
                    _fsync_dir(image_dir)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            if meta.get("channel"):
                self._record_changes(image_dir, [Change(**meta["channel"])], history_only=True)
            latest = self._update_latest(image_dir)
            log(f"published {record.image} {record.version} at {final} (latest -> {latest}, "
                f"packages from {(record.inputs or {}).get('label', 'unrecorded inputs')})")
            if manifest is not None:
                self._log_diff(record.image, record.version, manifest, log)
            return str(final)

    @staticmethod
    def _write(path: Path, text: str) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @staticmethod
    def _record_manifest(record: BakeRecord) -> Manifest | None:
        path = (record.packages or {}).get("manifest")
        if not path:
            return None
        try:
            manifest = Manifest.load(path)
        except (OSError, ManifestError, ValueError) as exc:
            raise GalleryError(f"publish: cannot read the package manifest {path} of {record.image} "
                               f"{record.version}: {exc}") from None
        if manifest.digest != record.packages.get("digest"):
            raise GalleryError(f"publish: the package manifest {path} changed since the build "
                               f"({record.packages.get('digest')} -> {manifest.digest})")
        return manifest

    @staticmethod
    def _metadata(record: BakeRecord, disk: Path, manifest: Manifest | None) -> dict:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return {
            "image": record.image,
            "version": record.version,
            "template_digest": record.template_digest,
            "base_digest": record.base_digest,
            "variables_digest": record.variables_digest,
            "packer_run_uuid": record.packer_run_uuid,
            "dag_run_id": record.dag_run_id,
            "run_type": record.run_type,
            "inputs": record.inputs,
            "manifest_digest": manifest.digest if manifest else None,
            "package_count": len(manifest) if manifest else None,
            "smoke_test": record.smoke,
            "created": now,
            # a past date's version rebuilt by a backfill: prune keeps it for the catalogue's protect_days
            "rebuilt_at": now if record.run_type == "backfill" else None,
            "size_bytes": disk.stat().st_size,
            "disk": DISK_NAME,
            "pinned": False,
            # the channel it was published into (a later change is in the image's channels.json)
            "channel": (change.to_dict() if (change := published_change(
                record.version, Actor(record.extra.get("triggered_by") or "scheduler", datetime.now(timezone.utc),
                                      record.dag_run_id or ""), channels=bool(record.extra.get("channel")))) else None),
        }

    @staticmethod
    def _sbom(record: BakeRecord, manifest: Manifest, meta: dict) -> str:
        from bakery.packages.sbom import build_sbom

        props = {"bakery:inputs": (record.inputs or {}).get("label", ""), "bakery:manifest-digest": manifest.digest,
                 "bakery:template-digest": record.template_digest, "bakery:base-digest": record.base_digest or "",
                 "bakery:dag-run-id": record.dag_run_id or ""}
        return build_sbom(manifest, image=record.image, version=record.version,
                          created=datetime.fromisoformat(meta["created"]), properties=props)

    @staticmethod
    def _commit_pool_index(record: BakeRecord, log: Log) -> None:
        """The version's pool index goes into the pool with it: from now on the version can be rebuilt
        exactly, also after prune (for the catalogue's retention period)."""
        path = (record.packages or {}).get("pool_index")
        if not path or not Path(path).is_file():
            return
        from bakery.packages.pool import PoolIndex

        index = PoolIndex.load(Path(path))
        base = index.extra.get("base_image")
        default_pool().commit_index(index, Path(base) if base else None)
        log(f"pool: committed the index of {record.image} {record.version} ({len(index.packages)} packages)")

    def _log_diff(self, image: str, version: str, manifest: Manifest, log: Log) -> None:
        """The package diff to the previous version (the next lower one, for a backfill)."""
        lower = [v for v in self._versions(self._image_dir(image)) if version_key(v) < version_key(version)]
        for prev in reversed(lower):
            old = self.manifest(image, prev)
            if old is not None:
                log(format_diff(diff(old, manifest), prev, version))
                return
        log(f"packages of {version}: {len(manifest)} (no earlier version with a manifest to compare with)")

    @staticmethod
    def _same_run(record: BakeRecord, final: Path) -> bool:
        meta = json.loads((final / META_NAME).read_text())
        return meta.get("packer_run_uuid") == record.packer_run_uuid and meta.get("dag_run_id") == record.dag_run_id

    def _adopt_existing(self, record: BakeRecord, final: Path, log: Log) -> str:
        meta = json.loads((final / META_NAME).read_text())
        same = (
            meta.get("packer_run_uuid") == record.packer_run_uuid
            and meta.get("dag_run_id") == record.dag_run_id
        )
        if not same:
            raise GalleryError(
                f"version {record.version} of {record.image} is already published at {final} by "
                f"DAG run {meta.get('dag_run_id')!r} (packer run {meta.get('packer_run_uuid')}); "
                "published versions are immutable: prune or remove it first, or bake another version"
            )
        self._update_latest(final.parent)
        log(f"{record.image} {record.version} is already published by this run at {final}: nothing to do")
        return str(final)

    def _rebuilt_protected(self, image: str, versions: list[PublishedVersion], days: float,
                           now: datetime | None) -> dict[str, str]:
        """Versions a backfill rebuilt less than ``days`` ago -> why prune keeps them."""
        now = now or datetime.now(timezone.utc)
        out = {}
        for v in versions:
            rebuilt_at = (self.published(image, v.version) or {}).get("rebuilt_at")
            if not rebuilt_at:
                continue
            until = datetime.fromisoformat(rebuilt_at) + timedelta(days=days)
            if now < until:
                out[v.version] = (f"rebuilt by a backfill at {rebuilt_at}, protected until "
                                  f"{until.isoformat(timespec='seconds')} (catalogue backfill.protect_days={days:g})")
        return out

    def list_versions(self, image: str) -> list[PublishedVersion]:
        image_dir = self._image_dir(image)
        out = []
        for v in self._versions(image_dir):
            meta = json.loads((image_dir / v / META_NAME).read_text())
            out.append(
                PublishedVersion(
                    image=image,
                    version=v,
                    created=meta.get("created", ""),
                    pinned=bool(meta.get("pinned")),
                    published_id=str(image_dir / v),
                )
            )
        return out

    def describe_versions(self, image: str) -> list[dict]:
        """Every version's metadata.json with ``published_id`` (its folder), ``has_manifest`` and
        ``has_sbom`` (its packages.json / sbom.cdx.json exist), oldest first. Read without the image
        lock: a version folder appears and goes by ``rename(2)``; one pruned while this reads is left out."""
        image_dir = self._image_dir(image)
        channels = self._read_channels(image_dir)["versions"]
        out = []
        for v in self._versions(image_dir):
            folder = image_dir / v
            try:
                meta = json.loads((folder / META_NAME).read_text())
            except FileNotFoundError:  # pruned meanwhile
                continue
            entry = channels.get(v) or meta.get("channel") or {}
            out.append({**meta, "version": v, "published_id": str(folder), "pinned": bool(meta.get("pinned")),
                        "size_bytes": meta.get("size_bytes"), "has_manifest": (folder / MANIFEST_NAME).is_file(),
                        "has_sbom": (folder / SBOM_NAME).is_file(), "channel": entry.get("channel"),
                        "exclude_from_latest": bool(entry.get("exclude_from_latest"))})
        return with_channel_marks(out)

    def sbom(self, image: str, version: str) -> bytes | None:
        parse_version(version)  # a version number, never a path
        path = self._image_dir(image) / version / SBOM_NAME
        return path.read_bytes() if path.is_file() else None

    def prune(self, image: str, keep: int, *, protect: set[str], dry_run: bool, log: Log,
              backfill_protect_days: float = 7.0, now: datetime | None = None) -> list[str]:
        if keep < 1:
            raise ValueError(f"prune: keep must be at least 1, got {keep}")
        with self._locked(image) as image_dir:
            if not dry_run:
                self._remove_stale(image_dir, log)
            versions = self.list_versions(image)
            if not versions:
                log(f"prune {image}: no published versions")
                return []
            highest = versions[-1].version
            # never the highest, never what `latest` names right now (readers follow it without
            # the lock: it must not dangle even for a moment, e.g. after a publish was killed
            # between its rename and its move of `latest`)
            current = self.latest(image)
            keep_set = {v.version for v in versions[-keep:]} | set(protect) | {highest} | ({current} if current else set())
            rebuilt = self._rebuilt_protected(image, versions, backfill_protect_days, now)
            channels = pinned_by_channels(self._states(image_dir))
            doomed = [v for v in versions if v.version not in keep_set and not v.pinned and v.version not in rebuilt
                      and v.version not in channels]
            for v in versions:
                if v.version in keep_set:
                    continue
                if v.version in channels:
                    log(f"prune {image}: keeping {v.version} ({channels[v.version]})")
                elif v.pinned:
                    log(f"prune {image}: keeping {v.version} (pinned)")
                elif v.version in rebuilt:
                    log(f"prune {image}: keeping {v.version} ({rebuilt[v.version]})")
            for v in doomed:
                if dry_run:
                    log(f"prune {image}: would delete {v.version} (dry run)")
                    continue
                src = image_dir / v.version
                trash = image_dir / f".trash-{v.version}-{uuid.uuid4().hex[:8]}"
                os.rename(src, trash)  # the version disappears atomically
                shutil.rmtree(trash)
                log(f"prune {image}: deleted {v.version} ({src})")
            if not dry_run:
                self._forget_channels(image_dir, [v.version for v in doomed])
                self._update_latest(image_dir)
            kept = [v.version for v in versions if v not in doomed or dry_run]
            log(f"prune {image}: kept {len(kept)} version(s): {', '.join(kept)}")
            return [v.version for v in doomed]
