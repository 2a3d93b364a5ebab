"""What the gallery page shows of an image: its published versions, read through the image's target
(``Target.describe_versions``, ``Target.manifest``), with what Airflow recorded of the runs that made
them (run type, build duration) passed in by the caller. Plain Python, no Airflow import: the page's
FastAPI app (``bakery.webui``) is the Airflow side.

Read-only. For an image with channels: each version's channel (candidate / stable / superseded /
withdrawn), which one ``latest`` resolves to, and the history of channel changes (who, when, which
run); promotion and rollback are the ``promote_<image>`` / ``rollback_<image>`` DAGs, triggered in Airflow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bakery.packages.manifest import ManifestError, diff

DIFF_LINES = 200  # package changes listed per version (the summary counts them all)


def dag_id_of(image: str, kind: str = "bake") -> str:
    """The bake DAG of an image (as dags/image_bakery.py names it), or its ``promote`` / ``rollback`` DAG
    (dags/channels.py)."""
    return f"{kind}_{image.replace('-', '_')}"


@dataclass
class RunFacts:
    """What Airflow recorded of the DAG run that published a version."""

    run_type: str | None = None
    build_seconds: float | None = None  # the successful build task's duration


@dataclass
class VersionRow:
    version: str
    created: str
    published_id: str
    dag_run_id: str | None = None
    run_type: str | None = None
    inputs: str | None = None  # where the packages came from: pool@<v> | snapshot@<t> | current@<t>
    smoke_passed: bool | None = None
    smoke_seconds: float | None = None  # boot (local) / VM create (Azure) to the first good HTTP answer
    size_bytes: int | None = None  # local: the published disk file
    os_disk_gb: int | None = None  # Azure: the OS disk's size
    pinned: bool = False
    protected_until: str | None = None  # a backfill's rebuild: prune keeps it until then
    build_seconds: float | None = None
    package_count: int | None = None
    has_sbom: bool = False
    diff_from: str | None = None  # the previous version with a package manifest
    diff_summary: str | None = None
    diff_lines: list[str] = field(default_factory=list)
    diff_error: str | None = None
    channel: str | None = None  # candidate / stable / superseded / withdrawn (None: no channels)
    is_latest: bool = False  # what `latest` resolves to (the highest version not excluded from latest)
    is_stable: bool = False
    exclude_from_latest: bool = False


@dataclass
class ImageView:
    image: str
    target: str
    dag_id: str
    description: str = ""
    versions: list[VersionRow] = field(default_factory=list)
    error: str | None = None  # the target could not be read (the page says so for this image)
    channels: bool = False  # the image has channels (promote_/rollback_ DAGs)
    soak_hours: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # channel changes, newest first

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _protected_until(meta: Mapping[str, Any], protect_days: float) -> str | None:
    rebuilt = meta.get("rebuilt_at")
    if not rebuilt:
        return None
    try:
        until = datetime.fromisoformat(str(rebuilt)) + timedelta(days=protect_days)
    except ValueError:
        return f"{rebuilt} + {protect_days:g} days"  # an unreadable tag: prune keeps the version (plan_prune)
    return until.isoformat(timespec="seconds")


def _smoke(meta: Mapping[str, Any]) -> tuple[bool | None, float | None]:
    smoke = meta.get("smoke_test")
    if not isinstance(smoke, Mapping):
        return None, None
    seconds = smoke.get("seconds")
    return (None if smoke.get("passed") is None else bool(smoke["passed"]),
            float(seconds) if isinstance(seconds, int | float) else None)


def image_view(spec: Any, target: Any, runs: Callable[[list[str]], Mapping[str, RunFacts]] | None = None) -> ImageView:
    """The image's versions, oldest first, each with the package diff to the previous version that has a
    package manifest. ``runs`` maps DAG run ids to what Airflow recorded of them (a missing run: the
    version's own record is all there is)."""
    channels = getattr(spec, "channels", None)
    view = ImageView(image=spec.name, target=spec.target, dag_id=dag_id_of(spec.name), description=spec.description,
                     channels=channels is not None, soak_hours=channels.soak_hours if channels else None)
    described = target.describe_versions(spec.name)
    view.history = list(reversed(target.channel_history(spec.name)))
    facts = dict(runs([m["dag_run_id"] for m in described if m.get("dag_run_id")]) if runs else {})
    previous: tuple[str, Any] | None = None  # (version, manifest)
    for meta in described:
        run = facts.get(meta.get("dag_run_id") or "") or RunFacts()
        passed, seconds = _smoke(meta)
        row = VersionRow(
            version=meta["version"], created=str(meta.get("created") or ""), published_id=str(meta.get("published_id", "")),
            dag_run_id=meta.get("dag_run_id") or None, run_type=meta.get("run_type") or run.run_type,
            inputs=(meta.get("inputs") or {}).get("label"), smoke_passed=passed, smoke_seconds=seconds,
            size_bytes=meta.get("size_bytes"), os_disk_gb=meta.get("os_disk_gb"), pinned=bool(meta.get("pinned")),
            protected_until=_protected_until(meta, spec.backfill_protect_days), build_seconds=run.build_seconds,
            package_count=meta.get("package_count"), has_sbom=bool(meta.get("has_sbom")),
            channel=meta.get("channel"), is_latest=bool(meta.get("is_latest")), is_stable=bool(meta.get("is_stable")),
            exclude_from_latest=bool(meta.get("exclude_from_latest")),
        )
        if meta.get("has_manifest"):
            try:
                manifest = target.manifest(spec.name, row.version)
            except (ManifestError, ValueError, RuntimeError, OSError) as exc:
                manifest, row.diff_error = None, f"cannot read the package manifest: {exc}"
            if manifest is not None:
                row.package_count = len(manifest)
                if previous is not None:
                    row.diff_from = previous[0]
                    try:
                        d = diff(previous[1], manifest)
                        row.diff_summary = "no change" if d.empty else d.summary()
                        lines = d.lines()
                        row.diff_lines = lines[:DIFF_LINES] + (
                            [f"... and {len(lines) - DIFF_LINES} more"] if len(lines) > DIFF_LINES else [])
                    except ManifestError as exc:
                        row.diff_error = str(exc)
                previous = (row.version, manifest)
        view.versions.append(row)
    return view
