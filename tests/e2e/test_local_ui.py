"""``scripts/ui.sh`` as a new user runs it, and the local build VM's network, for real.

* ``ui.sh`` on a fresh ``$BAKERY_HOME`` (so its first start, the one that writes the password file)
  bakes debian12-nginx end to end through the UI's REST API (a loopback package archive stands in for
  the Debian mirror, tests/pkgmirror). The version it publishes is world-readable (folders 0755, files
  0644): the password file's ``umask 077`` stays in its subshell. Every process of the stack runs with
  the umask the user started it with. Every socket that listens, in the stack and in everything it
  starts (the task processes, the bakery's package server, Packer, the build VM's and the smoke
  test's QEMU), sampled every second through the whole bake, is bound to loopback, and the stack
  runs as many LocalExecutor workers as the machine has CPUs (at least 2), not 32.
* A plain ``packer build`` of the rendered debian12-nginx folder: once QEMU runs, everything of the
  build listens on loopback only, the SSH port forward included (Packer's own default binds every
  interface); QEMU has Packer's network device on the template's loopback ``-netdev``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil
import pytest
import yaml
from bakery.accel import detect_accelerator
from bakery.templates import render
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from tests.airflow_stack import free_port
from tests.pkgmirror import ClosureError, LoopbackMirror, deb_cache_dir, debian_closure

REPO = Path(__file__).resolve().parents[2]
IMAGE, DAG = "debian12-nginx", "bake_debian12_nginx"
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))

pytestmark = [pytest.mark.slow, pytest.mark.needs_tools("packer", "qemu-system-x86_64", "qemu-img")]


# --- what listens ---------------------------------------------------------------------------------------
def tree(root: int) -> dict[int, str]:
    """pid -> name of ``root`` and every process below it (Packer and QEMU too: they start their own
    sessions, but stay children)."""
    try:
        top = psutil.Process(root)
        procs = [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    out = {}
    for p in procs:
        try:
            out[p.pid] = p.name()
        except psutil.NoSuchProcess:
            continue
    return out


def role(pid: int, name: str) -> str:
    """The process's name; a QEMU says whose VM it runs (Packer's build VM, or the smoke test's)."""
    if not name.startswith("qemu-system"):
        return name
    args = " ".join(cmdline(pid))
    return "qemu: build VM" if "id=user.0" in args else "qemu: smoke-test VM" if "bakery-smoke" in args else name


def listening(pids: dict[int, str]) -> set[tuple[str, str, str, int]]:
    """(process, tcp|udp, address, port) of every TCP socket listening and every UDP socket bound but
    not connected (what `ss -l` lists) by one of ``pids``."""
    found = set()
    for conn in psutil.net_connections(kind="inet"):
        if conn.pid not in pids or not conn.laddr:
            continue
        if conn.status == psutil.CONN_LISTEN or (conn.type == socket.SOCK_DGRAM and not conn.raddr):
            proto = "udp" if conn.type == socket.SOCK_DGRAM else "tcp"
            found.add((role(conn.pid, pids[conn.pid]), proto, conn.laddr.ip, conn.laddr.port))
    return found


def beyond_loopback(sockets: set[tuple[str, str, str, int]]) -> list[tuple[str, str, str, int]]:
    return sorted(s for s in sockets if not any(ipaddress.ip_address(s[2].split("%")[0]) in net for net in LOOPBACK))


def slirp_udp_relay(sock: tuple[str, str, str, int]) -> bool:
    """A UDP socket of the build VM's user network that relays one of the guest's own outgoing UDP
    flows (its DNS or NTP queries): slirp sends them from an unconnected socket on an ephemeral port of
    every interface, and QEMU has no setting for that address. It serves nothing; the smoke-test VM,
    whose guest needs no way out (``restrict=on``), has none."""
    name, proto, _, port = sock
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    return name == "qemu: build VM" and proto == "udp" and low <= port <= high


def cmdline(pid: int) -> list[str]:
    try:
        return psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return []


def umask_of(pid: int) -> str | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return line.split()[1]
    except OSError:
        return None
    return None


# --- ui.sh -----------------------------------------------------------------------------------------------
class UiSh:
    """scripts/ui.sh in its own session, driven through the REST API with the login it printed."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # a user's environment: none of the test session's Airflow settings, the bakery's own defaults
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BAKERY_", "PKR_VAR_"))}
        self.env = {**base, **env, "BAKERY_UI_PORT": str(self.port)}
        self.log = root / "ui.log"
        self.proc: subprocess.Popen | None = None
        self.token: str | None = None

    def __enter__(self) -> UiSh:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(["bash", str(REPO / "scripts" / "ui.sh")], stdout=out, stderr=subprocess.STDOUT,
                                         env=self.env, cwd=self.root, start_new_session=True)
        deadline = time.monotonic() + 600  # setup.sh migrates a new metadata DB first
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"ui.sh exited with {self.proc.returncode}:\n{self.tail()}"
            try:
                health = self.request("GET", "/api/v2/monitor/health", auth=False)
                if all(health[c]["status"] == "healthy" for c in ("scheduler", "triggerer", "dag_processor")):
                    return self
            except (OSError, KeyError, ValueError, RuntimeError):
                pass
            time.sleep(3)
        raise TimeoutError(f"ui.sh's Airflow was not healthy in time:\n{self.tail()}")

    def __exit__(self, *exc) -> None:
        if self.proc is None:
            return
        members = list(tree(self.proc.pid))
        self.proc.send_signal(signal.SIGTERM)  # ui.sh stops its components (what Ctrl-C does)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
            raise AssertionError(f"ui.sh did not stop on SIGTERM within 120s:\n{self.tail()}") from None
        _, alive = psutil.wait_procs([psutil.Process(p) for p in members if psutil.pid_exists(p)], timeout=60)
        assert not alive, f"processes of ui.sh outlived it: {alive}"

    def tail(self, n: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def request(self, method: str, path: str, body=None, *, auth: bool = True):
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.login()}"
        req = urllib.request.Request(self.url + path, method=method, headers=headers,
                                     data=None if body is None else json.dumps(body).encode())
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: HTTP {exc.code} {exc.read().decode(errors='replace')[:1000]}") from None
        return json.loads(text) if text else None

    def login(self) -> str:
        """The admin's password as ui.sh stored it (0600), traded for an API token."""
        if self.token is None:
            pwfile = Path(self.env["BAKERY_HOME"]) / "airflow" / "simple_auth_manager_passwords.json"
            assert pwfile.stat().st_mode & 0o777 == 0o600, oct(pwfile.stat().st_mode)
            password = json.loads(pwfile.read_text())["admin"]
            self.token = self.request("POST", "/auth/token", {"username": "admin", "password": password},
                                      auth=False)["access_token"]
        return self.token


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui-mirror")
    try:
        closure = debian_closure(["nginx"], deb_cache_dir())
    except ClosureError as exc:
        pytest.fail(f"the nginx closure could not be fetched (network to deb.debian.org needed): {exc}")
    with LoopbackMirror(root / "mirror") as m:
        m.publish(closure, when=datetime.now(timezone.utc) - timedelta(hours=1))
        yield m


@pytest.mark.guarantee("security-defaults")
def test_ui_sh_publishes_world_readable_versions_and_listens_on_loopback_only(tmp_path, base_image, mirror):
    home = tmp_path / "bakery"
    home.mkdir()
    (home / "base").symlink_to(base_image.parent)  # the cached base image (ui.sh's setup.sh finds it)
    entry = yaml.safe_load((REPO / "include" / "catalogue.yaml").read_text())["images"][IMAGE]
    entry["packages"] = {"mirrors": [{"url": mirror.url, "suites": ["bookworm"], "components": ["main"],
                                      "trusted": True}]}
    entry["retries"] = 0
    catalogue = tmp_path / "catalogue.yaml"
    catalogue.write_text(yaml.safe_dump({"version": 1, "images": {IMAGE: entry}}))
    os.umask(0o022)  # what a user's shell has; ui.sh must keep it for Airflow
    seen: set[tuple[str, str, int]] = set()
    with UiSh(tmp_path, {"BAKERY_HOME": str(home), "BAKERY_CATALOGUE": str(catalogue), "TMPDIR": str(tmp_path)}) as ui:
        stack = tree(ui.proc.pid)
        assert {umask_of(p) for p in stack} - {None} == {"0022"}, {p: (n, umask_of(p)) for p, n in stack.items()}
        seen |= listening(stack)
        assert [(proto, ip) for _, proto, ip, port in seen if port == ui.port] == [("tcp", "127.0.0.1")], seen
        assert beyond_loopback(seen) == [], f"the idle stack listens beyond loopback: {beyond_loopback(seen)}"
        ui.request("PATCH", f"/api/v2/dags/{DAG}", {"is_paused": False})
        run = ui.request("POST", f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": None, "conf": {}})
        run_path = f"/api/v2/dags/{DAG}/dagRuns/{urllib.request.quote(run['dag_run_id'], safe='')}"
        deadline, state, qemu_seen = time.monotonic() + 2400, None, False
        while time.monotonic() < deadline:
            found = listening(tree(ui.proc.pid))
            qemu_seen |= any(name.startswith("qemu") for name, *_ in found)
            seen |= found
            if int(time.monotonic()) % 10 == 0:
                state = ui.request("GET", run_path)["state"]
                if state in ("success", "failed"):
                    break
            time.sleep(1)
        tis = {t["task_id"]: t["state"] for t in ui.request("GET", f"{run_path}/taskInstances")["task_instances"]}
        assert state == "success", f"the bake ended {state}: {tis}\n{ui.tail()}"
        worker_count = sum(1 for pid in tree(ui.proc.pid) if "LocalExecutor" in " ".join(cmdline(pid)))
    print(f"\nlistening sockets seen during the bake: {sorted(seen)}")
    relays = [s for s in beyond_loopback(seen) if slirp_udp_relay(s)]
    print(f"of them the build VM's outgoing UDP relays (see slirp_udp_relay): {relays}")
    assert [s for s in beyond_loopback(seen) if s not in relays] == [], f"listening beyond loopback: {beyond_loopback(seen)}"
    assert qemu_seen, f"no QEMU port forward was seen listening during the bake: {sorted(seen)}"
    assert {"qemu: build VM", "qemu: smoke-test VM"} <= {name for name, proto, *_ in seen if proto == "tcp"}, seen
    cpus = len(os.sched_getaffinity(0))
    assert worker_count == max(2, cpus), f"{worker_count} LocalExecutor workers on {cpus} CPUs"

    (version,) = [p for p in (home / "gallery" / IMAGE).iterdir() if p.is_dir() and not p.is_symlink()]
    modes = {str(p.relative_to(version)): oct(p.stat().st_mode & 0o777) for p in [version, *version.rglob("*")]}
    assert modes == {**{name: "0o644" for name in modes if name != "."}, ".": "0o755"}, modes
    assert {"disk.qcow2", "metadata.json", "packages.json", "sbom.cdx.json"} <= set(modes)
    assert oct((home / "gallery" / IMAGE).stat().st_mode & 0o777) == "0o755"


# --- a plain packer build -----------------------------------------------------------------------------------
def before_change(dest: Path) -> Path:
    """The debian12-nginx folder as committed before it was rendered (Packer's default network)."""
    folders = json.loads((REPO / "tests" / "fixtures" / "packer-templates-before.json").read_text())["folders"]
    for rel, text in folders[IMAGE].items():
        (dest / IMAGE / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / IMAGE / rel).write_text(text)
    (dest / "shared").mkdir()
    (dest / "shared" / "capture-packages.sh").write_text((REPO / "include/packer/shared/capture-packages.sh").read_text())
    return dest / IMAGE


@pytest.mark.parametrize("template", ["rendered", "rendered, with the SSH relay", "control: before the change"])
@pytest.mark.guarantee("security-defaults")
def test_a_running_build_listens_on_loopback_only(tmp_path, base_image, template):
    from bakery.ssh_relay import SshRelay

    rendered = template.startswith("rendered")
    folder = render(IMAGE, tmp_path / "packer" / IMAGE) if rendered else before_change(tmp_path / "packer")
    relay = SshRelay().__enter__() if template.endswith("relay") else None  # closed below
    key = Ed25519PrivateKey.generate()
    (tmp_path / "key").write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()))
    (tmp_path / "key").chmod(0o600)
    (tmp_path / "key.pub").write_bytes(key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH))
    variables = {"base_image_path": str(base_image), "base_image_checksum": Path(f"{base_image}.sha256").read_text().split()[0],
                 "output_directory": str(tmp_path / "out"), "accelerator": detect_accelerator(),
                 "ssh_private_key_file": str(tmp_path / "key"), "ssh_public_key_file": str(tmp_path / "key.pub"),
                 "manifest_path": str(tmp_path / "manifest.json"), "image_version": "2026.1128.1",
                 "package_list_path": str(tmp_path / "packages.tsv"), "ssh_timeout": "3m"}
    if relay:  # as the DAG's build runs it: Packer connects to the relay, QEMU forwards the relay's upstream port
        variables.update(relay.packer_variables())
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PKR_VAR_")}, "CHECKPOINT_DISABLE": "1",
           "PACKER_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen(["packer", "build", "-machine-readable", f"-var-file={tmp_path / 'vars.json'}", str(folder)],
                            cwd=tmp_path, env=env, stdout=open(tmp_path / "build.log", "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline, qemu, seen = time.monotonic() + 300, None, set()
        while time.monotonic() < deadline and proc.poll() is None:
            pids = tree(proc.pid)
            seen |= listening(pids)
            qemu = next((p for p, name in pids.items() if name.startswith("qemu-system")), None)
            if qemu and any(name.startswith("qemu") and proto == "tcp" for name, proto, _, _ in seen):
                time.sleep(3)  # everything Packer opens while it waits for SSH
                seen |= listening(tree(proc.pid))
                break
            time.sleep(0.5)
        log = (tmp_path / "build.log").read_text(errors="replace")
        assert qemu is not None, f"QEMU did not start:\n{log[-3000:]}"
        cmdline = psutil.Process(qemu).cmdline()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # Packer stops QEMU and deletes its output
        proc.wait(timeout=180)
        if relay:
            relay_address = relay._listener.getsockname()
            relay.close()
    print(f"\nlistening while QEMU ran ({template}): {sorted(seen)}")
    netdevs = [cmdline[i + 1] for i, a in enumerate(cmdline[:-1]) if a == "-netdev"]
    devices = [cmdline[i + 1] for i, a in enumerate(cmdline[:-1]) if a == "-device"]
    assert "virtio-net,netdev=user.0" in devices, cmdline
    assert len(netdevs) == 1, cmdline
    ssh_port = int(netdevs[0].split("hostfwd=tcp:")[1].split(":")[1].split("-")[0])
    assert any(name == "qemu: build VM" and (proto, port) == ("tcp", ssh_port) for name, proto, _, port in seen), seen
    if relay:  # QEMU forwards the relay's upstream port; the relay (in the task's process) is on loopback too
        assert ssh_port == relay.forward_port and relay_address == ("127.0.0.1", relay.port), (cmdline, relay_address)
    if rendered:
        assert netdevs[0].startswith("user,id=user.0,hostfwd=tcp:127.0.0.1:"), cmdline
        assert beyond_loopback(seen) == [], f"listening beyond loopback: {beyond_loopback(seen)}"
    else:  # the check sees what the issue saw: Packer's own forward on every interface
        assert [s[3] for s in beyond_loopback(seen)] == [ssh_port], seen
    try:  # Packer's clean-up stops QEMU; its main process may exit first
        _, alive = psutil.wait_procs([psutil.Process(qemu)], timeout=60)
    except psutil.NoSuchProcess:
        alive = []
    assert not alive, f"the build's QEMU outlived Packer: {alive}"
