"""The interface every target (local, azure) implements. No Airflow import here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from bakery.record import BakeRecord, SmokeResult

Log = Callable[[str], None]


@dataclass(frozen=True)
class SmokeCheck:
    path: str = "/"
    port: int = 80
    expect_status: int = 200
    expect_text: str = "Welcome to nginx"
    timeout_seconds: int = 300


@dataclass(frozen=True)
class PublishedVersion:
    image: str
    version: str
    created: str  # ISO-8601 UTC
    pinned: bool = False
    published_id: str = ""


class Target(Protocol):
    name: str

    def prepare(
        self, spec: Any, record: BakeRecord, work_dir: Path, *, accelerator: str, log: Log,
        inputs: Any = None, pool: Any = None,
    ) -> tuple[dict[str, Any], str | None]:
        """Return (Packer variables for this bake, digest of the base image or None).

        ``inputs`` (``bakery.packages.inputs.Inputs``) says where the packages come from; a
        rebuild from the pool starts from the base image the pool keeps for that version."""

    def artifact_id(self, artifact: dict[str, Any]) -> str:
        """The id of the built image from a Packer artifact (local: disk path; azure: image id)."""

    def smoke_test(self, record: BakeRecord, check: SmokeCheck, log: Log) -> SmokeResult: ...

    # The smoke test as three steps, for a DAG that runs them as an Airflow setup / check / teardown
    # (the Azure one: the VM outlives a failed check until the teardown task deletes it). A target whose
    # smoke test cleans up after itself (local) keeps these defaults: nothing to set up, the whole test
    # as the check, nothing left to tear down.
    def smoke_setup(self, record: BakeRecord, check: SmokeCheck, log: Log) -> dict[str, Any]:
        """Create what the check needs; return what ``smoke_check`` needs to reach it (JSON-able).
        Cleans up after itself when it fails; a retry first deletes what an earlier attempt left."""
        return {}

    def smoke_check(self, record: BakeRecord, info: dict[str, Any], check: SmokeCheck, log: Log) -> SmokeResult:
        """The check itself: a verdict (a failed check is a result, not an exception)."""
        return self.smoke_test(record, check, log)

    def smoke_teardown(self, record: BakeRecord, log: Log, *, quiet: bool = False,
                       delete_image: bool = False) -> list[str]:
        """Delete whatever ``smoke_setup`` made (idempotent), and with ``delete_image`` the bake's image
        (a failed bake's). Returns what was deleted."""
        return []

    def close(self) -> None:
        """Release clients and connections (the operators call it when a task is done)."""

    def publish(self, record: BakeRecord, log: Log, *, replace_existing: bool = False) -> str:
        """Publish the record's artifact as version ``record.version``; return its published id.

        Atomic and idempotent: re-publishing the same run's version is a no-op. A version of the
        same number published by another run is refused unless ``replace_existing``.
        """

    def published(self, image: str, version: str) -> dict[str, Any] | None:
        """What the target recorded of a published version (local: metadata.json; Azure: the
        version's tags), or None if there is no such version."""

    def canary(self, image: str, version: str, check: SmokeCheck, log: Log) -> SmokeResult | None:
        """Boot the published ``version`` once more and run ``check`` against it, never modifying
        what is published (a rollout's canary). None: the target boots no canary (Azure: a VM per
        rollout is the deployment's own business)."""
        return None

    def manifest(self, image: str, version: str) -> Any:
        """The package manifest (``bakery.packages.manifest.Manifest``) of a published version,
        or None where the target has none for it."""

    def list_versions(self, image: str) -> list[PublishedVersion]: ...

    def describe_versions(self, image: str) -> list[dict[str, Any]]:
        """Every published version of ``image``, oldest first, for readers (the gallery page): what
        ``published`` says of it (provenance, ``created``, ``run_type`` where recorded, ``inputs``,
        ``smoke_test``, ``rebuilt_at``, digests) plus ``version``, ``published_id``, ``pinned``,
        ``size_bytes`` (None where the target does not know it), ``has_manifest`` and ``has_sbom``,
        ``channel`` (None without channels), ``exclude_from_latest``, ``is_latest`` and ``is_stable``.
        One listing, no per-version round trip where the target can avoid it."""

    def sbom(self, image: str, version: str) -> bytes | None:
        """The CycloneDX SBOM (``sbom.cdx.json``) of a published version, or None where the target has
        none for it."""

    # ---- channels (bakery.channels) ----
    def channel_states(self, image: str) -> list[Any]:
        """Every published version as ``bakery.channels.VersionState`` (channel, excluded from latest,
        publish time, smoke verdict), oldest first."""

    def change_channels(self, image: str, plan: Callable[[list[Any]], tuple[list[Any], str]], log: Log) -> list[Any]:
        """Apply the ``bakery.channels.Change`` list that ``plan(states)`` returns for the current states
        (with the image's other writers held off where the target can), record each change, and move
        ``latest`` (and ``stable``). Returns the changes applied."""

    def channel_history(self, image: str) -> list[dict[str, Any]]:
        """Every recorded channel change of the image (``Change.to_dict()``), oldest first."""

    def check_promotable(self, image: str, version: str, log: Log) -> list[str]:
        """The promotion's own check of a published version: what is wrong with it (empty: fine)."""

    def prune(
        self, image: str, keep: int, *, protect: set[str], dry_run: bool, log: Log,
        backfill_protect_days: float = 7.0,
    ) -> list[str]:
        """Delete all but the ``keep`` newest versions (never one in ``protect``, never the highest,
        never a backfill's rebuild younger than ``backfill_protect_days``, never one a channel points at:
        ``bakery.channels.pinned_by_channels``).

        Returns the versions deleted (or that would be, with ``dry_run``).
        """
