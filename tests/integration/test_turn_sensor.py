"""The image's turn (bakery.operators.turn) as Airflow runs it: the real task runner and its execution API."""

from __future__ import annotations

import os
import subprocess

from bakery.turns import Holder, ImageTurn

IMAGE, DAG_ID = "debian12-nginx", "bake_debian12_nginx"


def test_a_turn_held_by_a_run_that_no_longer_exists_is_taken(airflow_db, tmp_path):
    # what `airflow tasks test ... wait_turn` leaves behind: the turn held by its temporary run, which Airflow
    # deletes afterwards (and a run deleted in the UI alike). Airflow answers 404 for its state; that run holds
    # nothing, so the next bake takes the turn instead of failing on it.
    home = tmp_path / "home"
    (home / "tmp").mkdir(parents=True)
    gone = Holder(DAG_ID, "manual__2026-11-30T02:00:00+00:00", "2026-11-30T02:00:01+00:00")
    assert ImageTurn(IMAGE, root=home / "turns").take(gone, lambda _: False) == (True, None)
    env = {**os.environ, "BAKERY_HOME": str(home), "TMPDIR": str(home / "tmp")}
    proc = subprocess.run(["airflow", "tasks", "test", DAG_ID, "wait_turn"], capture_output=True, text=True, env=env,
                          timeout=600, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "new_state=success" in out, out[-4000:]  # (a failed task exits 0 too)
    assert f"took the turn of {IMAGE} from run {gone.run_id} of {DAG_ID} (no longer active)" in out
    holder = ImageTurn(IMAGE, root=home / "turns").holder()
    assert holder is not None and holder.dag_id == DAG_ID and holder.run_id != gone.run_id
