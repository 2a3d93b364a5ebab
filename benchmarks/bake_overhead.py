"""What the DAG costs over doing the same bake by hand, stage by stage, in one run.

* **hand path** (the floor): the same ``packer build`` with the same variables (the template folder
  and variables the DAG's ``prepare`` makes, an SSH key pair, the bakery's package server for the
  guest's packages and its SSH relay, as the DAG's ``build`` has them), a plain QEMU boot of the result
  (the smoke test's QEMU options, ``-snapshot``) polled with HTTP until the catalogue's expected answer, and the copy of
  the disk into a gallery folder as ``publish`` stores it (``qemu-img convert -c``, zstd, + fsync). Only those three are timed: the set-up before them is
  the part of ``prepare`` a person would also have to do, and ``prepare`` is timed on the DAG side.
* **DAG**: ``airflow dags test bake_<image>`` with ``force_rebuild`` (the same as ``scripts/bake.sh``),
  wall time of the command, and each task's duration from the metadata DB.

Then Airflow's own cost of a run, which no DAG can go below: ``airflow dags test`` of the same task graph
of EmptyOperators (``unchanged_nightly.floor_runs``, a warm-up and three runs), beside the goal's allowance
(5 % of the hand path) and DAG / (hand path + that cost).

Order: hand, DAG, hand. The packages of the first build may come from the mirror (a cold package
pool); the DAG and the second hand path find them in the pool: the ratio is DAG / second hand path,
both warm. The DAG publishes into the bakery's gallery (``$BAKERY_HOME/gallery``, as ``scripts/bake.sh``
does, prune included); the hand path copies into a temporary folder.

    source scripts/env.sh && python benchmarks/bake_overhead.py [image]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins"), str(REPO / "benchmarks")]


def quiet(_line: str) -> None:
    return None


def boot_to_http(disk: Path, check, memory_mb: int, cpus: int, accelerator: str, tmp: Path) -> float:
    """Seconds from starting QEMU on ``disk`` (read-only, -snapshot) to the expected HTTP answer, polled
    the way the smoke test polls (``bakery.http_check.poll_http``)."""
    from bakery.http_check import poll_http
    from bakery.targets.local import SMOKE_POLL_SECONDS

    from tests.airflow_stack import free_port

    port = free_port()
    argv = ["qemu-system-x86_64", "-machine", f"pc,accel={accelerator}", "-m", str(memory_mb), "-smp", str(cpus),
            "-display", "none", "-monitor", "none", "-snapshot",
            "-drive", f"file={disk},format=qcow2,if=virtio,snapshot=on",
            "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:{check.port},restrict=on",
            "-device", "virtio-net-pci,netdev=net0", "-serial", f"file:{tmp / 'serial.log'}"]
    t0 = time.monotonic()
    vm = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "TMPDIR": str(tmp)})
    try:
        result = poll_http(f"http://127.0.0.1:{port}{check.path}", check, log=quiet, started=t0,
                           alive=lambda: vm.poll() is None, interval=SMOKE_POLL_SECONDS)
        if not result.passed:
            raise SystemExit(f"hand path: the booted image did not answer as expected: {result.detail}")
        return result.seconds
    finally:
        vm.terminate()
        vm.wait(30)


def hand(spec, label: str) -> dict[str, float]:
    from bakery import bake
    from bakery.packages.inputs import Inputs, b64, guest_apt_config
    from bakery.ssh_relay import SshRelay
    from bakery.sshkey import ephemeral_keypair
    from bakery.targets.local import LocalTarget

    now = datetime.now(UTC)
    prepared = bake.prepare(spec, run_type="manual", logical_date=None, run_after=now,
                            dag_run_id=f"bench-hand-{label}-{now:%H%M%S}", log=quiet)
    rec = prepared["record"]
    template = Path(prepared["template_dir"])
    variables = dict(prepared["packer_variables"])
    inputs = Inputs.from_dict(rec["inputs"])
    target = LocalTarget()
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bakery-hand-") as tmp_s, \
            ephemeral_keypair("bakery-bench-hand") as (private_key, public_key), \
            bake.package_server(spec, inputs, log=quiet) as server, SshRelay() as relay:
        tmp = Path(tmp_s)
        variables.update(ssh_private_key_file=str(private_key), ssh_public_key_file=str(public_key),
                         **relay.packer_variables())
        if server is not None:
            sources, conf = guest_apt_config(inputs, spec.packages.mirrors, server.guest_url())
            variables.update(apt_sources_b64=b64(sources), apt_conf_b64=b64(conf))
        var_file = tmp / "vars.pkrvars.json"
        var_file.write_text(json.dumps(variables))
        env = {**os.environ, "CHECKPOINT_DISABLE": "1",
               "PACKER_CACHE_DIR": os.path.join(os.path.expanduser("~"), ".cache", "packer")}
        t0 = time.monotonic()
        build = subprocess.run(["packer", "build", "-color=false", "-force", f"-var-file={var_file}", str(template)],
                               capture_output=True, text=True, env=env, cwd=template, check=False)
        times["build"] = time.monotonic() - t0
        if build.returncode != 0:
            raise SystemExit(f"hand path: packer build failed:\n{build.stdout[-3000:]}")
        fetched = server.summary() if server is not None else "no package server"
        out = Path(variables["output_directory"])
        disk = out / variables.get("vm_name", f"{spec.template}.qcow2")
        if not disk.is_file():
            (disk,) = out.glob("*.qcow2")
        times["boot_to_http"] = boot_to_http(disk, spec.smoke_test, target.vm_memory_mb, target.vm_cpus,
                                             variables.get("accelerator", "tcg"), tmp)
        t0 = time.monotonic()
        gallery = tmp / "gallery" / rec["version"]
        gallery.mkdir(parents=True)
        # as publish stores a version: zstd-compressed clusters (benchmarks/gallery_storage.py)
        subprocess.run(["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "qcow2", "-c", "-o", "compression_type=zstd",
                        str(disk), str(gallery / "disk.qcow2")], check=True)
        with open(gallery / "disk.qcow2", "rb") as fh:
            os.fsync(fh.fileno())
        times["copy"] = time.monotonic() - t0
    shutil.rmtree(bake.work_dir(spec.name, rec["version"]), ignore_errors=True)
    times["total"] = times["build"] + times["boot_to_http"] + times["copy"]
    print(f"hand path {label}: build {times['build']:.1f} s, boot to HTTP {times['boot_to_http']:.1f} s, copy "
          f"{times['copy']:.1f} s = {times['total']:.1f} s ({fetched})", flush=True)
    return times


def dag(spec) -> dict[str, float]:
    from stage_times import latest_run

    from bakery.gallery import dag_id_of

    dag_id = dag_id_of(spec.name)
    t0 = time.monotonic()
    proc = subprocess.run(["airflow", "dags", "test", dag_id, "-c", json.dumps({"force_rebuild": True})],
                          capture_output=True, text=True, timeout=3600, check=False)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"airflow dags test {dag_id} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    run_id, _, tasks = latest_run(dag_id)
    if any(tasks.get(t, (0, ""))[1] != "success" for t in ("build", "smoke_test", "publish")):
        raise SystemExit(f"the DAG run did not bake, smoke-test and publish: {tasks}")
    print(f"DAG ({dag_id}, run {run_id}): `airflow dags test` wall {wall:.1f} s; tasks: " + ", ".join(
        f"{t} {d:.1f}" for t, (d, _) in tasks.items()) + f" (sum {sum(d for d, _ in tasks.values()):.1f} s)",
        flush=True)
    return {"total": wall, **{t: d for t, (d, _) in tasks.items()}}


def main() -> None:
    from bakery.catalogue import load_catalogue

    image = sys.argv[1] if len(sys.argv) > 1 else "debian12-nginx"
    spec = load_catalogue()[image]
    if spec.target != "local":
        raise SystemExit(f"{image}: the hand path is the local target's (QEMU); {image} builds on {spec.target}")
    print(f"bake overhead of {image}: hand path, DAG, hand path (one run, this machine, "
          f"accelerator {os.environ.get('BAKERY_ACCEL', 'auto')})", flush=True)
    first = hand(spec, "1")
    by_dag = dag(spec)
    second = hand(spec, "2")
    floor = second["total"]
    print(f"stage by stage (DAG task / hand path 2): build {by_dag['build']:.1f} / {second['build']:.1f} s, "
          f"smoke_test {by_dag['smoke_test']:.1f} / boot to HTTP {second['boot_to_http']:.1f} s, publish "
          f"{by_dag['publish']:.1f} / copy {second['copy']:.1f} s; the DAG's other tasks "
          f"{sum(v for k, v in by_dag.items() if k not in ('total', 'build', 'smoke_test', 'publish')):.1f} s")
    ratio = by_dag["total"] / floor
    print(f"DAG / hand path = {by_dag['total']:.1f} / {floor:.1f} s = {ratio:.3f} (goal <= 1.05: "
          f"{'met' if ratio <= 1.05 else 'NOT met'}); against the first (possibly cold) hand path "
          f"{by_dag['total'] / first['total']:.3f}")
    # what Airflow itself costs a run of this task graph: the CLI, the DAG's parse, the in-process execution
    # API `dags test` starts before its first task, each task's round trip; none of it is the bakery's code
    from unchanged_nightly import floor_runs

    from bakery.gallery import dag_id_of

    airflow = statistics.median(floor_runs(dag_id_of(spec.name), dict(os.environ), 3))
    print(f"Airflow's own cost of a run (`airflow dags test` of the same task graph of EmptyOperators, median of 3): "
          f"{airflow:.1f} s; DAG - hand path = {by_dag['total'] - floor:.1f} s; the goal allows "
          f"{0.05 * floor:.1f} s. DAG / (hand path + Airflow's own cost) = {by_dag['total'] / (floor + airflow):.3f}")


if __name__ == "__main__":
    main()
