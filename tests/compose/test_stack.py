"""docker-compose.yaml run for real: images built, the stack brought up with podman-compose, a bake
executed by the Celery worker container, the gallery volume read, a second (unchanged) run that only
prunes, a task deferred to the bakery's trigger in the triggerer container and resumed on the worker,
no secret on a command line or in an environment, and nothing left behind.

No registry is reachable on the test machines, so the three base images are local stand-ins built
from Debian packages (scripts/build-standins.sh: one mmdebstrap root filesystem, three `podman
build` layers); the bakery image itself is built from docker/Dockerfile by podman-compose, with the
stand-in as its AIRFLOW_BASE_IMAGE. One override file of the test swaps ./dags for a copy of it plus one
check DAG (CHECK_DAG_FILE); everything else is docker-compose.yaml as users run it. Podman runs with the project's docker/containers.conf (runc,
ulimits within the host's hard limits). Every name carries one random prefix (containers, network,
volumes, images), and the teardown removes all of it; the last test asserts that nothing of it is
left (`podman ps -a`, `podman volume ls`, `podman network ls`, `podman images`).

The secrets the compose file requires are generated here as the files its `secrets` name (in a
0700 folder of the test, BAKERY_SECRETS_DIR), as `scripts/stack.sh secrets` makes them; no secret is
in podman-compose's environment, in a container's environment or on any command line: a sampler reads
every process's command line every 0.2 s from the image build to the teardown, and every container's
environment is inspected (test_no_secret_on_a_command_line_or_in_an_environment).

Debian's podman-compose 1.0.3 does not wait for `depends_on` conditions, and without systemd podman
runs no healthcheck timers: the stack is brought up in the order the conditions describe (postgres
and redis healthy, airflow-init completed, then the rest), and each healthcheck is run with
`podman healthcheck run` until it passes. Figures (image build, start to healthy, the bake's wall
time, the stack's peak memory from `podman stats`) are printed.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.airflow_stack import free_port

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
CONTAINERS_CONF = REPO / "docker" / "containers.conf"
DAG = "bake_debian12_nginx"
IMAGE = "debian12-nginx"
PREFIX = f"bkc{secrets.token_hex(4)}"  # this session's stack: project, network, volumes, images
SERVICES_INIT_FIRST = ["postgres", "redis"]
SERVICES_REST = ["airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-worker",
                 "airflow-triggerer"]
CHECK_DAG = "compose_check_deferral"
# A DAG of the test's, beside the repository's DAGs: its task defers to the bakery's own trigger,
# which the triggerer container must import from the plugins folder and run; the trigger cannot reach
# Azure here (the connection does not exist), so it yields its "error" event at once and the task
# resumes on the worker with it. execute_complete is only ever called with a trigger's event.
CHECK_DAG_FILE = f"""
from datetime import UTC, datetime

from airflow.sdk import DAG, BaseOperator


class DeferToTheBakeryTrigger(BaseOperator):
    def execute(self, context):
        from bakery.triggers.replication import GalleryReplicationTrigger

        self.defer(trigger=GalleryReplicationTrigger(
            conn_id="compose_check_no_such_connection", subscription_id=None, gallery=["rg", "gallery", "image"],
            version="2026.0101.000000", deadline=None, timeout=120, poll_interval=5), method_name="resumed")

    def resumed(self, context, event):
        return event


with DAG("{CHECK_DAG}", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC), catchup=False):
    DeferToTheBakeryTrigger(task_id="defer")
"""

pytestmark = [
    pytest.mark.compose,
    pytest.mark.slow,
    pytest.mark.needs_tools("podman", "podman-compose", "runc", "mmdebstrap"),
]

COMPOSE_FIGURES: dict[str, str] = {}


def _figure(name: str, value: str) -> None:
    COMPOSE_FIGURES[name] = value
    print(f"[compose figures] {name}: {value}", flush=True)


class Stack:
    def __init__(self, base_image: Path) -> None:
        self.project = PREFIX
        self.base_image = base_image
        self.private = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))  # 0700
        self.log_path = self.private / "compose.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.secrets_dir = self.private / "secrets"
        made = subprocess.run(["bash", str(REPO / "scripts" / "stack.sh"), "secrets"], capture_output=True, text=True,
                              env={**os.environ, "BAKERY_SECRETS_DIR": str(self.secrets_dir)}, timeout=120, check=False)
        assert made.returncode == 0, f"stack.sh secrets failed:\n{made.stderr[-2000:]}"
        values = {f.name: f.read_text().strip() for f in self.secrets_dir.iterdir()}
        self.admin_password = values["airflow_admin_password"]
        # what must appear nowhere: each secret, and the password inside the two URLs
        self.secret_values = sorted(values.values())
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(CONTAINERS_CONF),
            # podman build keeps no intermediate images: the images of this test are the named ones
            "BUILDAH_LAYERS": "false",
            "BAKERY_SECRETS_DIR": str(self.secrets_dir),
            "AIRFLOW_IMAGE_NAME": f"localhost/{PREFIX}-airflow:3.3.2",
            "AIRFLOW_API_BIND_ADDRESS": "127.0.0.1",
            "AIRFLOW_API_PORT": str(self.port),
        }
        # the stack's DAGs folder: the repository's DAG files plus the check DAG, swapped in for ./dags by
        # an override file (compose merges `volumes` by target); everything else is docker-compose.yaml
        self.dags = self.private / "dags"
        self.dags.mkdir(mode=0o755)
        for f in (REPO / "dags").glob("*.py"):
            shutil.copyfile(f, self.dags / f.name)
        (self.dags / f"{CHECK_DAG}.py").write_text(CHECK_DAG_FILE)
        self.override = self.private / "compose.test.yaml"
        mount = {"volumes": [f"{self.dags}:/opt/airflow/dags:ro"]}
        self.override.write_text(json.dumps({"services": {name: mount for name in SERVICES_REST}}))
        self.leaks: list[str] = []  # (process, secret name) seen on a command line
        self.cmdline_sweeps = 0
        self._watching = threading.Event()
        threading.Thread(target=self._watch_command_lines, daemon=True).start()
        self.images: list[str] = []
        self.images_before = set(self.podman("images", "-a", "-q", "--no-trunc").stdout.split())
        self.token: str | None = None
        self.mem_samples: list[tuple[float, int]] = []
        self.mem_errors: list[str] = []
        self._sampling = threading.Event()

    # ---- commands ---------------------------------------------------------------------------
    def podman(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        proc = subprocess.run(["podman", *args], capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc

    def compose(self, *args: str, timeout: float = 1800) -> None:
        with open(self.log_path, "a") as log:
            os.chmod(self.log_path, 0o600)
            log.write(f"\n### podman-compose {' '.join(args)}\n")
            log.flush()
            proc = subprocess.run(["nice", "-n", "19", "podman-compose", "-p", self.project, "-f", str(COMPOSE_FILE),
                                   "-f", str(self.override),
                                   *args], stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO,
                                  timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"podman-compose {' '.join(args)} failed ({proc.returncode}):\n{self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        text = self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""
        for value in self.secret_values:
            text = text.replace(value, "***")
        return text

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def logs(self, service: str, n: int = 60) -> str:
        proc = self.podman("logs", "--tail", str(n), self.container(service), check=False)
        text = proc.stdout + proc.stderr
        for value in self.secret_values:
            text = text.replace(value, "***")
        return text

    # ---- build, up, down ----------------------------------------------------------------------
    def build(self) -> None:
        t0 = time.monotonic()
        proc = subprocess.run(["nice", "-n", "19", "bash", str(REPO / "scripts" / "build-standins.sh"), PREFIX],
                              capture_output=True, text=True, env=self.env, timeout=3600)
        self.images += [f"localhost/{PREFIX}-rootfs:bookworm", f"localhost/{PREFIX}-airflow-base:3.3.2",
                        f"localhost/{PREFIX}-postgres:standin", f"localhost/{PREFIX}-redis:standin"]
        assert proc.returncode == 0, f"build-standins.sh failed:\n{proc.stderr[-4000:]}"
        for line in proc.stdout.splitlines():
            key, sep, value = line.partition("=")
            if sep and key in ("AIRFLOW_BASE_IMAGE", "POSTGRES_IMAGE", "REDIS_IMAGE"):
                self.env[key] = value
        t1 = time.monotonic()
        self.images.append(self.env["AIRFLOW_IMAGE_NAME"])
        self.compose("build", "airflow-init")  # docker/Dockerfile on the stand-in, as compose builds it
        t2 = time.monotonic()
        _figure("image build: stand-ins (mmdebstrap + 3 layers)", f"{t1 - t0:.0f} s")
        _figure("image build: bakery image (docker/Dockerfile)", f"{t2 - t1:.0f} s")

    def seed_base_image(self) -> None:
        """The host's cached VM base image into the bakery volume (the worker, not root, cannot build
        one; scripts/build-base-image.sh finds it cached there)."""
        volume = f"{self.project}_bakery-state"
        self.podman("volume", "create", "--label", f"io.podman.compose.project={self.project}",
                    "--label", f"com.docker.compose.project={self.project}", volume)
        mount = Path(self.podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume).stdout.strip())
        real = self.base_image.resolve()
        (mount / "base").mkdir()
        shutil.copyfile(real, mount / "base" / real.name)
        shutil.copyfile(str(real) + ".sha256", mount / "base" / (real.name + ".sha256"))

    def up(self) -> None:
        t0 = time.monotonic()
        self.compose("up", "-d", "--no-build", *SERVICES_INIT_FIRST)
        self.wait_healthy(SERVICES_INIT_FIRST, timeout=180)
        self.compose("up", "-d", "--no-build", "airflow-init")
        rc = self.podman("wait", self.container("airflow-init"), timeout=900).stdout.strip()
        assert rc == "0", f"airflow-init exited with {rc}:\n{self.logs('airflow-init', 80)}"
        self.compose("up", "-d", "--no-build", *SERVICES_REST)
        self.wait_healthy(SERVICES_REST, timeout=600)
        _figure("stack start to healthy (every healthcheck passing)", f"{time.monotonic() - t0:.0f} s")
        threading.Thread(target=self._sample_memory, daemon=True).start()

    def wait_healthy(self, services: list[str], timeout: float) -> None:
        pending = list(services)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for service in list(pending):
                proc = self.podman("healthcheck", "run", self.container(service), check=False, timeout=120)
                if proc.returncode == 0:
                    pending.remove(service)
            if pending:
                time.sleep(5)
        assert not pending, "not healthy: " + ", ".join(
            f"{s}\n{self.logs(s)}" for s in pending)

    def _watch_command_lines(self) -> None:
        """Every 0.2 s until the teardown ends: no process's command line holds a secret value."""
        import psutil

        while not self._watching.is_set():
            for p in psutil.process_iter(["pid", "cmdline"]):
                line = "\0".join(p.info["cmdline"] or [])
                for value in self.secret_values:
                    if value in line:
                        self.leaks.append(f"pid {p.pid} {(p.info['cmdline'] or ['?'])[0]}")
            self.cmdline_sweeps += 1
            self._watching.wait(0.2)

    def _sample_memory(self) -> None:
        """Every 10 s, the sum of the stack's containers' memory (`podman stats`); errors are kept
        (a sampler that fails must say so, not report nothing)."""
        while not self._sampling.is_set():
            try:
                proc = self.podman("stats", "--no-stream", "--no-reset", "--format", "json", check=False, timeout=120)
                rows = json.loads(proc.stdout or "[]")
                total = sum(_bytes(str(r.get("mem_usage", "0B / 0B")).split("/")[0]) for r in rows
                            if str(r.get("name", "")).startswith(self.project + "_"))
                if total:
                    self.mem_samples.append((time.monotonic(), total))
                else:
                    self.mem_errors.append(f"no rows of the stack: {proc.stdout[:300]!r} {proc.stderr[-300:]!r}")
            except Exception as exc:  # noqa: BLE001 - reported by the figures test
                self.mem_errors.append(repr(exc))
            self._sampling.wait(10)

    def down(self) -> None:
        self._sampling.set()
        try:
            self.compose("down", "-v", timeout=600)
        except AssertionError as exc:
            print(f"podman-compose down: {exc}")
        # whatever podman-compose missed: every object carrying the prefix
        for kind, ls in (("container", ["ps", "-a", "--format", "{{.Names}}"]),
                         ("volume", ["volume", "ls", "--format", "{{.Name}}"]),
                         ("network", ["network", "ls", "--format", "{{.Name}}"])):
            for name in self.podman(*ls, check=False).stdout.split():
                if name.startswith(PREFIX):
                    self.podman(kind, "rm", "-f", name, check=False)
        for image in reversed(self.images):
            self.podman("rmi", "-f", image, check=False)
        self._watching.set()
        shutil.rmtree(self.private, ignore_errors=True)

    # ---- the REST API ---------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path} -> HTTP {exc.code}: {exc.read().decode(errors='replace')[:2000]}") from None
        return json.loads(text) if text else None

    def login(self) -> None:
        self.token = self.request("POST", "/auth/token", {"username": "admin", "password": self.admin_password})[
            "access_token"]

    def run_path(self, run_id: str) -> str:
        return f"/api/v2/dags/{DAG}/dagRuns/{urllib.parse.quote(run_id, safe='')}"

    def wait_runs(self, expected: int, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        runs: list[dict] = []
        while time.monotonic() < deadline:
            runs = self.request("GET", f"/api/v2/dags/{DAG}/dagRuns?limit=100")["dag_runs"]
            if len(runs) >= expected and all(r["state"] in ("success", "failed") for r in runs):
                return runs
            time.sleep(10)
        raise AssertionError(f"runs not done in {timeout} s: "
                             f"{[(r['dag_run_id'], r['state'], self.task_states(r['dag_run_id'])) for r in runs]}")

    def task_instances(self, run_id: str) -> dict[str, dict]:
        tis = self.request("GET", self.run_path(run_id) + "/taskInstances?limit=100")["task_instances"]
        return {ti["task_id"]: ti for ti in tis}

    def task_states(self, run_id: str) -> dict[str, str]:
        return {k: v["state"] for k, v in self.task_instances(run_id).items()}

    def task_log(self, run_id: str, task_id: str, try_number: int) -> str:
        data = self.request("GET", self.run_path(run_id) + f"/taskInstances/{task_id}/logs/{try_number}?full_content=true")
        content = data.get("content")
        if isinstance(content, list):
            return "\n".join(str(c.get("event", c)) if isinstance(c, dict) else str(c) for c in content)
        return str(content)

    def xcom(self, run_id: str, task_id: str, key: str = "return_value") -> Any:
        return self.request("GET", self.run_path(run_id) + f"/taskInstances/{task_id}/xcomEntries/{key}")["value"]

    def gallery(self) -> Path:
        volume = f"{self.project}_bakery-state"
        return Path(self.podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume).stdout.strip()) / "gallery"


def _seconds(start: str, end: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(end.replace("Z", "+00:00")) - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()


def _bytes(text: str) -> int:
    text = text.strip()
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10), ("GB", 10**9), ("MB", 10**6),
                         ("kB", 10**3), ("B", 1)):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return 0


def _ours(stack_prefix: str, podman_env: dict[str, str]) -> dict[str, list[str]]:
    def names(*args: str) -> list[str]:
        out = subprocess.run(["podman", *args], capture_output=True, text=True, env=podman_env).stdout
        return [n for n in out.split() if stack_prefix in n]

    return {"containers": names("ps", "-a", "--format", "{{.Names}}"),
            "volumes": names("volume", "ls", "--format", "{{.Name}}"),
            "networks": names("network", "ls", "--format", "{{.Name}}"),
            "images": names("images", "--format", "{{.Repository}}"),
            "pods": names("pod", "ps", "--format", "{{.Name}}")}


@pytest.fixture(scope="module")
def stack(base_image: Path):
    """The stack, up and signed in; at the end brought down and everything of it removed, and then
    checked: nothing of it is left (a failure here fails the module's last test, in its teardown)."""
    s = Stack(base_image)
    try:
        s.build()
        s.seed_base_image()
        s.up()
        s.login()
        yield s
    finally:
        s.down()
    left = _ours(PREFIX, s.env)
    assert not any(left.values()), f"left behind by the compose test: {left}"
    # no process of it either (conmon, the dnsname plugin's dnsmasq of the project network, ...)
    import psutil

    procs = [p.info for p in psutil.process_iter(["pid", "cmdline"]) if PREFIX in " ".join(p.info["cmdline"] or [])]
    assert not procs, f"processes of the compose test still running: {procs}"
    # and no nameless image: every image id there now was there before (only reported, never
    # removed here: it could be another user's build)
    new_images = set(s.podman("images", "-a", "-q", "--no-trunc").stdout.split()) - s.images_before
    assert not new_images, f"images created during the compose test are still there: {sorted(new_images)}"
    assert not s.private.exists()
    assert not [p for p in os.listdir(tempfile.gettempdir()) if p.startswith(PREFIX)]


def test_bake_runs_on_the_celery_worker_and_publishes_to_the_gallery_volume(stack: Stack):
    assert stack.request("GET", "/api/v2/monitor/health")["scheduler"]["status"] == "healthy"
    deadline = time.monotonic() + 300
    while True:  # the DAG processor parses the catalogue
        try:
            stack.request("GET", f"/api/v2/dags/{DAG}")
            break
        except AssertionError:
            assert time.monotonic() < deadline, f"{DAG} not parsed:\n{stack.logs('airflow-dag-processor')}"
            time.sleep(5)
    # A manual run, triggered while the DAG is paused; unpausing then also makes the scheduler
    # create the DAG's latest scheduled run. max_active_runs=1 runs them one after the other: the
    # first bakes (the gallery is empty), the second finds nothing changed, skips the bake and prunes.
    manual = stack.request("POST", f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": None, "conf": {}})
    t0 = time.monotonic()
    stack.request("PATCH", f"/api/v2/dags/{DAG}", {"is_paused": False})
    runs = stack.wait_runs(expected=2, timeout=3600)
    assert manual["dag_run_id"] in {r["dag_run_id"] for r in runs}, runs
    tis = {r["dag_run_id"]: stack.task_instances(r["dag_run_id"]) for r in runs}
    states = {rid: {k: v["state"] for k, v in t.items()} for rid, t in tis.items()}
    assert all(r["state"] == "success" for r in runs), states
    baked = [rid for rid, st in states.items() if st["build"] == "success"]
    skipped = [rid for rid, st in states.items() if st["build"] == "skipped"]
    assert len(baked) == 1 and len(skipped) == 1, states
    first, second = tis[baked[0]], tis[skipped[0]]
    assert {first[t]["state"] for t in ("validate", "build", "smoke_test", "publish", "prune")} == {"success"}
    assert second["publish"]["state"] == "skipped" and second["prune"]["state"] == "success", states
    assert second["check_changes"]["start_date"] > first["prune"]["end_date"], "the runs overlapped"
    bake_wall = _seconds(first["wait_turn"]["start_date"], first["give_back_turn"]["end_date"])
    _figure("bake wall time in the stack (TCG; first task start to last task end)", f"{bake_wall:.0f} s")
    _figure("  of which build / smoke_test", f"{first['build']['duration']:.0f} s / {first['smoke_test']['duration']:.0f} s")
    _figure("unchanged second run in the stack (check_changes skip + prune)",
            f"{_seconds(second['wait_turn']['start_date'], second['give_back_turn']['end_date']):.0f} s")
    _figure("both runs, unpause to done", f"{time.monotonic() - t0:.0f} s")

    # executed by the Celery worker container: the task's hostname is that container's
    worker_host = stack.podman("inspect", "--format", "{{.Config.Hostname}}",
                               stack.container("airflow-worker")).stdout.strip()
    for t in ("prepare", "build", "smoke_test", "publish", "prune"):
        assert first[t]["hostname"] == worker_host, (t, first[t]["hostname"], worker_host)
    assert second["prune"]["hostname"] == worker_host
    assert "accelerator tcg" in stack.task_log(baked[0], "prepare", 1)

    # the published version, read from the gallery volume
    gallery = stack.gallery() / IMAGE
    latest = gallery / "latest"
    meta = json.loads((latest / "metadata.json").read_text())
    assert meta["dag_run_id"] == baked[0], meta
    disk = latest / "disk.qcow2"
    assert disk.stat().st_size > 100 * 2**20
    assert disk.stat().st_uid == 50000  # written by the worker's airflow user
    versions = sorted(p.name for p in gallery.iterdir() if p.is_dir() and not p.is_symlink() and p.name[0].isdigit())
    assert versions == [meta["version"]], versions  # the unchanged run published nothing


def test_a_task_defers_to_the_bakery_trigger_and_resumes_on_the_worker(stack: Stack):
    """The triggerer container runs the bakery's own trigger (imported from the plugins folder) for a
    deferred task, and the task resumes on the Celery worker with the trigger's event; the triggerer
    also lists our plugin."""
    deadline = time.monotonic() + 300
    while True:
        try:
            stack.request("GET", f"/api/v2/dags/{CHECK_DAG}")
            break
        except AssertionError:
            assert time.monotonic() < deadline, f"{CHECK_DAG} not parsed:\n{stack.logs('airflow-dag-processor')}"
            time.sleep(5)
    stack.request("PATCH", f"/api/v2/dags/{CHECK_DAG}", {"is_paused": False})
    run_id = stack.request("POST", f"/api/v2/dags/{CHECK_DAG}/dagRuns", {"logical_date": None})["dag_run_id"]
    path = f"/api/v2/dags/{CHECK_DAG}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
    states: list[str] = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        ti = stack.request("GET", path + "/taskInstances/defer")
        if not states or states[-1] != ti["state"]:
            states.append(ti["state"])
        if ti["state"] in ("success", "failed", "upstream_failed"):
            break
        time.sleep(1)
    assert ti["state"] == "success", (states, stack.logs("airflow-triggerer"), stack.logs("airflow-worker"))
    event = stack.request("GET", path + "/taskInstances/defer/xcomEntries/return_value?deserialize=true")["value"]
    # made by GalleryReplicationTrigger.run in the triggerer (the connection lookup failed there)
    assert isinstance(event, dict) and event.get("status") == "error", event
    assert "could not be followed" in event["message"] and "compose_check_no_such_connection" in event["message"], event
    worker_host = stack.podman("inspect", "--format", "{{.Config.Hostname}}",
                               stack.container("airflow-worker")).stdout.strip()
    assert ti["hostname"] == worker_host, (ti["hostname"], worker_host)
    _figure("deferred task: states seen", " -> ".join(str(s) for s in states))
    plugins = stack.podman("exec", stack.container("airflow-triggerer"), "airflow", "plugins", "--output", "json",
                           check=False)
    assert plugins.returncode == 0, plugins.stderr[-2000:]
    assert any(p.get("name") == "image_bakery" for p in json.loads(plugins.stdout)), plugins.stdout[:2000]


def test_no_secret_on_a_command_line_or_in_an_environment(stack: Stack):
    """The stack's secrets are files (Compose secrets): none of them was on any process's command
    line since the images were built (podman-compose echoes and runs `podman create` with every
    `environment` entry as `-e KEY=value`), none is in a container's environment or in
    podman-compose's log, and the containers read them: Airflow answered (its DB URL, JWT secret and
    Fernet key came from /run/secrets) and the admin signed in with the password from the file."""
    assert stack.cmdline_sweeps > 100, stack.cmdline_sweeps  # the watcher really ran
    assert not stack.leaks, f"secrets on command lines: {sorted(set(stack.leaks))[:10]}"
    for service in ["postgres", "redis", "airflow-init", *SERVICES_REST]:
        env = stack.podman("inspect", "--format", "{{json .Config.Env}}", stack.container(service)).stdout
        assert not [v for v in stack.secret_values if v in env], f"a secret in the environment of {service}"
        assert "_CMD=cat /run/secrets/" in env or service in ("postgres", "redis"), (service, env[:300])
    log = stack.log_path.read_text(errors="replace")
    assert not [v for v in stack.secret_values if v in log], "a secret in podman-compose's output"
    assert stack.token  # login() signed in with the admin password read from its secret file
    mode = stack.secrets_dir.stat().st_mode & 0o777
    assert mode == 0o700, oct(mode)


@pytest.mark.guarantee("compose-nothing-left")
def test_stack_figures_then_nothing_left_behind(stack: Stack):
    """The module's last test: the stack fixture's teardown runs after it and asserts that no
    container, pod, volume, network or image of the stack is left (podman ps -a, volume ls,
    network ls, images)."""
    assert stack.mem_samples, f"no memory sample of the stack: {stack.mem_errors[-3:]}"
    peak = max(m for _, m in stack.mem_samples)
    _figure("stack peak memory (podman stats, sum over containers, page cache included)",
            f"{peak / 2**30:.2f} GiB ({len(stack.mem_samples)} samples, {len(stack.mem_errors)} failed)")
    # no file of the repository holds a secret of this stack (the .env is nowhere: environment only)
    assert not (REPO / ".env").exists() or all(v not in (REPO / ".env").read_text() for v in stack.secret_values)
