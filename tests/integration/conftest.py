"""Fixtures of the integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def dags_folder(airflow_db, tmp_path, monkeypatch) -> Path:
    """A DAGs folder of this test's own: dag.test() serializes the DAG from its bundle's files."""
    from airflow import settings

    folder = tmp_path / "dags"
    folder.mkdir()
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(folder))
    monkeypatch.setattr(settings, "DAGS_FOLDER", str(folder))
    return folder
