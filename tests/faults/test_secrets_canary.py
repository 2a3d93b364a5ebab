"""Issue #4, secrets: a canary client secret goes through a whole Azure bake and is found nowhere.

The real Azure DAG runs with `airflow dags test` against the ARM emulator (tests/azure_emulator/
dagrun.py, as in tests/e2e/test_bake_azure.py) with a unique canary as the connection's client
secret. While it runs, a thread samples the command line of every process on the machine every
0.2 s. Afterwards the canary (as is, and base64-encoded at any alignment) is searched in:

* every task log (`airflow dags test` runs the tasks in its own process and they log to its output,
  which is kept as a file of the run) and every file of the session's Airflow home (logs/, the
  metadata DB file);
* every XCom value and every rendered template field of the run, and every row of every table of
  Airflow's metadata DB, read through Airflow's models / SQLAlchemy;
* every sampled command line, and every file sampled (every 0.2 s) in the run's TMPDIR and bakery
  home while it ran (Packer's var-files exist only then);
* every file the run left under its own folder: the bakery home (work folders), the run's private
  TMPDIR (Packer's var-files, key folders, its own temporary files), the output of `airflow dags test`;
  and every file created meanwhile in /tmp, /var/tmp and Packer's cache.

It must be in none of them. And the test proves it could have seen it: the fake packer recorded the
canary in its environment (PKR_VAR_client_secret), logged in with it at the emulator's Entra ID
(which accepts no other token for the managed image it then wrote), the sampler saw that Packer run,
and the same search does find the canary in the fake packer's own record (outside the product).
"""

from __future__ import annotations

import base64
import os
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from tests.azure_emulator.dagrun import CONN_ID, DAG_ID, Bake, emulated_world

CANARY = f"CANARY-{uuid.uuid4().hex}-{uuid.uuid4().hex[:12]}"
SCRATCH = [Path("/tmp"), Path("/var/tmp"), Path.home() / ".cache" / "packer"]
MAX_FILE = 64 << 20

pytestmark = pytest.mark.needs_tools("packer")  # the real one validates; the fake (first on PATH) builds


def needles(secret: str) -> list[bytes]:
    raw = secret.encode()
    out = [raw]
    for shift in range(3):  # base64 of a text containing the secret, at any byte alignment
        encoded = base64.b64encode(b"\0" * shift + raw)
        out.append(encoded[4 if shift else 0:-4])  # without the groups that mix in other bytes
    return out


NEEDLES = needles(CANARY)


def found_in(data: bytes) -> bool:
    return any(n in data for n in NEEDLES)


def _files(root: Path):
    if root.is_file():
        yield root
        return
    for folder, _dirs, names in os.walk(root, onerror=lambda e: None):  # other processes come and go in /tmp
        for name in names:
            yield Path(folder, name)


def files_with_canary(*roots: Path, exclude: tuple[Path, ...] = (), since: float | None = None) -> list[str]:
    hits = []
    for root in roots:
        for path in _files(root):
            try:
                st = path.lstat()
                if not path.is_file() or path.is_symlink() or st.st_size > MAX_FILE or path in exclude:
                    continue
                if since is not None and st.st_mtime < since and st.st_ctime < since:
                    continue
                if found_in(path.read_bytes()):
                    hits.append(str(path))
            except OSError:
                continue  # vanished meanwhile, or not ours to read
    return hits


class Sampler(threading.Thread):
    """Every ``interval`` seconds: the command line and the environment of every process on the
    machine, and the files under ``watch`` that hold the canary (what exists only while the run runs:
    var-files, keys). ``env_hits``: (program, variable) of every environment that held the canary."""

    def __init__(self, interval: float = 0.2, watch: tuple[Path, ...] = ()) -> None:
        super().__init__(name="sampler", daemon=True)
        self.interval = interval
        self.watch = watch
        self.samples = 0
        self.seen: set[str] = set()
        self.files_seen: set[str] = set()
        self.transient_hits: set[str] = set()
        self.env_hits: set[tuple[str, str]] = set()
        self.envs_read = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            programs: dict[int, str] = {}
            envs: list[tuple[int, int, dict[str, str]]] = []
            for proc in psutil.process_iter(["cmdline", "ppid"]):
                cmdline = proc.info.get("cmdline")
                if cmdline:
                    self.seen.add("\0".join(cmdline))
                # Packer: the real binary, or the test's stand-in (a script run by python3)
                names = [Path(a).name for a in (cmdline or [])[:2]]
                is_packer = bool({"packer", "fake_packer.py"} & set(names))
                programs[proc.pid] = "packer" if is_packer else (names[0] if names else "?")
                try:
                    envs.append((proc.pid, proc.info.get("ppid") or 0, proc.environ()))
                except (psutil.Error, OSError):
                    continue  # gone meanwhile
            for pid, ppid, env in envs:
                self.envs_read += 1
                program = programs[pid]
                if programs.get(ppid) == "packer" and program != "packer":
                    program = f"packer>{program}"  # a process Packer started, with the environment Packer gave it
                self.env_hits.update((program, k) for k, v in env.items() if found_in(v.encode()))
            for root in self.watch:
                self.files_seen.update(str(p) for p in _files(root))
                self.transient_hits.update(files_with_canary(root))
            self.samples += 1
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


def metadata_db_rows(run_id: str) -> dict[str, list[str]]:
    """What Airflow's metadata DB holds: the run's XComs and rendered fields, and every row of every table."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import MetaData, select

    out: dict[str, list[str]] = {}
    with create_session() as session:
        xcoms = session.scalars(select(XComModel).where(XComModel.dag_id == DAG_ID, XComModel.run_id == run_id)).all()
        out["xcom"] = [f"{x.task_id}/{x.key}: {x.value!r}" for x in xcoms]
        rtifs = session.scalars(select(RenderedTaskInstanceFields).where(
            RenderedTaskInstanceFields.dag_id == DAG_ID, RenderedTaskInstanceFields.run_id == run_id)).all()
        out["rendered_fields"] = [f"{r.task_id}: {r.rendered_fields!r} {r.k8s_pod_yaml!r}" for r in rtifs]
        meta = MetaData()
        meta.reflect(bind=session.get_bind())
        for table in meta.sorted_tables:
            out[f"table {table.name}"] = [repr(tuple(row)) for row in session.execute(select(table)).all()]
    return out


@pytest.fixture
def world():
    with emulated_world(client_secret=CANARY) as w:
        yield w


@pytest.mark.guarantee("secret-nowhere")
def test_a_canary_client_secret_is_nowhere_after_a_whole_azure_bake(world, tmp_path, airflow_db):
    run = tmp_path / "run"
    private_tmp = run / "tmp"
    private_tmp.mkdir(parents=True)
    bake = Bake(world, run, env={"TMPDIR": str(private_tmp), "BAKERY_FAKE_PACKER_BUILD_SECONDS": "2"})
    assert bake.world.client_secret == CANARY and CANARY in bake.env()[f"AIRFLOW_CONN_{CONN_ID.upper()}"]
    sampler = Sampler(0.1, watch=(private_tmp, bake.bakery_home))
    started = time.time()
    sampler.start()
    try:
        state = bake.run("2026-11-29T02:00:00+00:00")
    finally:
        sampler.stop()
    assert state == "success", bake.output[-6000:]

    # --- the canary was really there: Packer had it, used it, and the search can see it ---------------
    invocations = bake.packer_invocations()
    used = [inv for inv in invocations if inv["argv"][:1] in (["validate"], ["build"])]
    assert [inv["argv"][0] for inv in used] == ["validate", "build"]
    assert all(inv["pkr_vars"].get("client_secret") == CANARY for inv in used)
    assert "Getting tokens using client secret" in bake.output
    tokens = world.emu.identity.token_requests
    assert tokens and {(t.client_id, t.status) for t in tokens} == {(world.client_id, 200)}
    assert world.emu.requests("PUT", r"/providers/Microsoft\.Compute/images/rhel9-nginx-2026-1129-200001$")
    assert files_with_canary(bake.packer_log) == [str(bake.packer_log)]  # the search finds it where it is
    assert sampler.samples >= 10
    assert any("\0build\0" in c and str(bake.bakery_home / "work" / "rhel9-nginx") in c for c in sampler.seen), \
        "the sampler missed the build"

    # --- and it is nowhere else ------------------------------------------------------------------------
    # `airflow dags test` runs the tasks in its own process: their logs are its output (kept in
    # run/dags-test-*.log and scanned with the run's files below); AIRFLOW_HOME/logs has what else logs
    for task_line in ("Packer 1.6.6, template", "smoke test: creating NSG", "publish: creating", "prune rhel9-nginx"):
        assert task_line in bake.output, f"the task logs are not in the output of airflow dags test: {task_line!r}"
    airflow_home = Path(os.environ["AIRFLOW_HOME"])
    assert files_with_canary(airflow_home) == []  # logs/, the metadata DB file, the config
    rows = metadata_db_rows(bake.run_id)
    assert rows["xcom"] and rows["rendered_fields"], rows
    # the rendered Packer variables of validate and build are stored (the secret is never among them)
    # (and those of every task taking prepare's XCom as an XComArg: check_changes, smoke_setup)
    rendered = {r.split(":", 1)[0] for r in rows["rendered_fields"] if "'image_version': '2026.1129.200001'" in r}
    assert {"validate", "build"} <= rendered, rendered
    assert {name: [r for r in found if found_in(r.encode())] for name, found in rows.items()
            if any(found_in(r.encode()) for r in found)} == {}
    assert [c.replace("\0", " ") for c in sampler.seen if found_in(c.encode())] == []
    # in environments only where it must be: the connection the user configured (this test gives it
    # as AIRFLOW_CONN_*, in Airflow's processes) and PKR_VAR_client_secret of Packer itself; nowhere
    # else (not the task's other children, not Packer's plugins' arguments, not a shell)
    assert sampler.envs_read > 100
    # Packer 1.6.6 itself runs `uname -s`, `uname -r` and `uname -m` when it starts (strace -f -e execve packer
    # version shows them), with its own environment: that is Packer's process, not one of ours (a sample at the
    # wrong millisecond catches one); any other child of Packer (a shell of a shell-local step) is still a hit
    assert ("packer", "PKR_VAR_client_secret") in sampler.env_hits, "the sampler never saw Packer's environment"
    assert {(prog, var) for prog, var in sampler.env_hits
            if not (var == f"AIRFLOW_CONN_{CONN_ID.upper()}"
                    or (prog in ("packer", "packer>uname") and var == "PKR_VAR_client_secret"))} == set()
    # not even for a moment in a file: the var-files Packer read while it ran were sampled too
    assert any(p.endswith(".pkrvars.json") for p in sampler.files_seen), "the sampler saw no var-file"
    assert sampler.transient_hits == set()
    assert files_with_canary(run, exclude=(bake.packer_log,)) == []  # bakery home, TMPDIR, outputs
    assert files_with_canary(*SCRATCH, exclude=(bake.packer_log,), since=started) == []
    assert CANARY not in bake.output
    # nothing of the run is left in its temporary folder (var-files, Packer's own files)
    assert sorted(p.name for p in private_tmp.iterdir()) == []
