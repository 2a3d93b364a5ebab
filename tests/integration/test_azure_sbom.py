"""Azure publish with the package manifest: digest tags on the gallery version (ARM emulator), the SBOM
and manifest in Blob Storage (Azurite, the real Azure Storage emulator), reached as the product reaches
it: an Airflow ``wasb`` connection (``AIRFLOW_CONN_<ID>``, a connection string for Azurite's well-known
development account) turned into a container client by the Azure provider's ``WasbHook``
(``bakery.hooks.azure.sbom_container``), handed to the core target through ``AzureClients``.
"""

from __future__ import annotations

import itertools
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

import pytest
from bakery.hooks.azure import sbom_container
from bakery.packages.manifest import Manifest, parse_capture
from bakery.packages.sbom import validate_sbom
from bakery.record import BakeRecord
from bakery.targets.azure import AzureTarget, AzureTargetError, blob_names

from tests.azure_emulator import ArmEmulator
from tests.azure_emulator.azurite import Azurite
from tests.azure_emulator.fake_packer import package_list
from tests.azure_emulator.world import AzureWorld
from tests.integration.test_azure_target import Log, make_spec, puts

IMAGE = "rhel9-nginx"
CONN = "sbom_azurite"
CONTAINER = "image-sboms"
RUN_ID = "manual__2026-11-26T02:00:00+00:00"
NGINX_UPDATE = "1:1.20.1-16.el9_4.1"
_containers = itertools.count(1)


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    with Azurite(tmp_path_factory.mktemp("azurite")) as a:
        yield a
    assert not a.running


@pytest.fixture
def container(azurite):
    """A fresh container per test (one Azurite serves the module)."""
    name = f"sboms-{next(_containers)}"
    azurite.create_container(name)
    return name


@pytest.fixture
def wasb(azurite, monkeypatch):
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", azurite.wasb_connection_json())


@pytest.fixture
def world():
    emulator = ArmEmulator(retry_after=0, require_issued_tokens=True, page_size=2)
    try:
        w = AzureWorld(emulator)
        w.create_infrastructure()
        yield w
    finally:
        emulator.stop()
    assert emulator.internal_errors == []


def clients_with_blobs(world: AzureWorld):
    """What AzureImageHook.clients() builds: ARM clients plus the WasbHook-backed container factory."""
    az = world.clients()
    az.blob_container = sbom_container
    return az


def make_target(world: AzureWorld, container: str | None, **azure) -> AzureTarget:
    if container is not None:
        azure["sbom"] = {"conn_id": CONN, "container": container}
    return AzureTarget(make_spec(world, **azure), lambda: clients_with_blobs(world), progress_interval=0.05)


@pytest.fixture
def target(world, container, wasb):
    t = make_target(world, container)
    yield t
    t.close()


def write_manifest(tmp_path: Path, nginx: str | None = None) -> Manifest:
    """What the build task leaves: the fake build VM's package list, parsed, saved as packages.json."""
    with mock.patch.dict(os.environ, {"BAKERY_FAKE_PACKER_NGINX_VERSION": nginx} if nginx else {}):
        text = package_list({"image_publisher": "almalinux"})
    manifest = parse_capture(text)
    tmp_path.mkdir(parents=True, exist_ok=True)
    manifest.save(tmp_path / "packages.json")
    return manifest


def record(world: AzureWorld, tmp_path: Path, version: str, *, nginx: str | None = None, run_type: str = "manual",
           run_id: str = RUN_ID) -> tuple[BakeRecord, Manifest]:
    manifest = write_manifest(tmp_path / version, nginx)
    rec = BakeRecord(
        image=IMAGE, version=version, target="azure", template_digest="sha256:" + "ab" * 32,
        base_digest="sha256:" + "cd" * 32, variables_digest="sha256:" + "ef" * 32, dag_run_id=run_id,
        run_type=run_type, packer_run_uuid="0b5e3c1e-2a59-4d8a-9c43-8f5f1f5d7a11",
        artifact_id=world.make_managed_image(IMAGE, version),
        smoke={"passed": True, "seconds": 12.5, "status": 200, "detail": "ok"},
        inputs={"kind": "current", "ref": "20261126T020312Z", "label": "current@20261126T020312Z"},
        packages={"list": str(tmp_path / version / "packages.tsv"), "manifest": str(tmp_path / version / "packages.json"),
                  "digest": manifest.digest, "count": len(manifest), "family": manifest.family},
    )
    return rec, manifest


def version_tags(world: AzureWorld, version: str) -> dict:
    (v,) = [r for r in world.emu.state.of_type("Microsoft.Compute/galleries/images/versions") if r.name == version]
    return dict(v.tags)


# --- publish: tags, SBOM, manifest -------------------------------------------------------------------------
def test_publish_tags_the_version_and_stores_a_valid_sbom_and_the_manifest_in_azurite(world, target, azurite,
                                                                                      container, tmp_path):
    rec, manifest = record(world, tmp_path, "2026.1126.200001")
    log = Log()
    target.publish(rec, log)

    tags = version_tags(world, rec.version)
    assert tags["manifest_digest"] == manifest.digest == rec.packages["digest"]
    assert tags["inputs"] == "current@20261126T020312Z"
    assert tags["variables_digest"] == rec.variables_digest and tags["base_digest"] == rec.base_digest
    assert tags["template_digest"] == rec.template_digest
    assert "rebuilt_at" not in tags
    assert all(len(v) <= 256 for v in tags.values())

    sbom_blob, manifest_blob = blob_names(IMAGE, rec.version)
    assert (sbom_blob, manifest_blob) == (f"{IMAGE}/{rec.version}/sbom.cdx.json", f"{IMAGE}/{rec.version}/packages.json")
    assert azurite.blob_names(container) == [manifest_blob, sbom_blob]
    sbom = azurite.read_blob(container, sbom_blob).decode()
    validate_sbom(sbom)  # the library's strict CycloneDX 1.6 validator
    doc = json.loads(sbom)
    assert doc["metadata"]["component"]["name"] == IMAGE and doc["metadata"]["component"]["version"] == rec.version
    assert len(doc["components"]) == len(manifest) == 19
    props = {p["name"]: p["value"] for p in doc["metadata"]["properties"]}
    assert props["bakery:manifest-digest"] == manifest.digest
    assert props["bakery:inputs"] == "current@20261126T020312Z"
    assert Manifest.from_dict(json.loads(azurite.read_blob(container, manifest_blob))) == manifest
    meta = azurite.blob_properties(container, sbom_blob)
    assert meta.content_settings.content_type == "application/json"
    assert meta.metadata["manifest_digest"] == manifest.digest
    assert f"stored in blob container {container!r}" in log.text()
    assert "no earlier version with a package manifest" in log.text()

    # read back through the target, as check_changes does
    assert target.manifest(IMAGE, rec.version) == manifest
    meta = target.published(IMAGE, rec.version)
    assert meta["manifest_digest"] == manifest.digest and meta["inputs"] == {"label": "current@20261126T020312Z"}
    assert meta["base_digest"] == rec.base_digest and meta["variables_digest"] == rec.variables_digest
    assert meta["rebuilt_at"] is None and meta["dag_run_id"] == RUN_ID
    assert abs(datetime.fromisoformat(meta["created"]) - datetime.now(UTC)) < timedelta(minutes=5)
    assert target.manifest(IMAGE, "2026.1125.200000") is None  # no such blob
    assert target.published(IMAGE, "2026.1125.200000") is None  # no such version


def test_publish_logs_the_package_diff_to_the_previous_version(world, target, tmp_path):
    first, old = record(world, tmp_path, "2026.1126.200000")
    target.publish(first, Log())
    second, new = record(world, tmp_path, "2026.1127.200000", nginx=NGINX_UPDATE)
    log = Log()
    target.publish(second, log)
    assert new.digest != old.digest
    assert version_tags(world, second.version)["manifest_digest"] == new.digest
    text = log.text()
    assert "packages 2026.1126.200000 -> 2026.1127.200000: 0 added, 0 removed, 3 upgraded, 0 downgraded" in text
    for name, arch in (("nginx", "x86_64"), ("nginx-core", "x86_64"), ("nginx-filesystem", "noarch")):
        assert f"^ {name} 1:1.20.1-14.el9_2.1 -> {NGINX_UPDATE} ({arch})" in text


def test_a_backfill_is_tagged_rebuilt_at_and_diffs_with_the_version_below_it(world, target, tmp_path):
    target.publish(record(world, tmp_path, "2026.1120.200000")[0], Log())
    target.publish(record(world, tmp_path, "2026.1128.200000", nginx=NGINX_UPDATE)[0], Log())
    rebuilt, _ = record(world, tmp_path, "2026.1124.200000", run_type="backfill",
                        run_id="backfill__2026-11-24T02:00:00+00:00")
    log = Log()
    before = datetime.now(UTC).replace(microsecond=0)
    target.publish(rebuilt, log)
    tags = version_tags(world, rebuilt.version)
    assert before <= datetime.fromisoformat(tags["rebuilt_at"]) <= datetime.now(UTC)
    assert target.published(IMAGE, rebuilt.version)["rebuilt_at"] == tags["rebuilt_at"]
    assert "rebuilt by a backfill" in log.text()
    # compared with 2026.1120 (the next lower version), not with the newer 2026.1128
    assert "packages 2026.1120.200000 -> 2026.1124.200000: no change" in log.text()


# --- retries and failures ----------------------------------------------------------------------------------
def test_a_retry_adopts_the_version_and_restores_missing_blobs_without_a_second_version(world, target, azurite,
                                                                                       container, tmp_path):
    rec, manifest = record(world, tmp_path, "2026.1126.200001")
    target.publish(rec, Log())
    log = Log()
    target.publish(rec, log)  # a retry after success: nothing to upload, nothing to create
    assert "are already in blob container" in log.text() and "already published by this run" in log.text()
    with azurite.service() as svc:  # the blobs are lost (or the first try died before them)
        for name in blob_names(IMAGE, rec.version):
            svc.get_blob_client(container, name).delete_blob()
    log = Log()
    target.publish(rec, log)
    assert "already published by this run" in log.text() and "stored in blob container" in log.text()
    assert Manifest.from_dict(json.loads(azurite.read_blob(container, blob_names(IMAGE, rec.version)[1]))) == manifest
    assert len(puts(world.emu, r"/versions/")) == 1


def test_a_missing_container_fails_before_the_version_is_created_and_prepare_names_the_field(world, wasb, tmp_path):
    target = make_target(world, "not-created-yet")
    try:
        with pytest.raises(AzureTargetError) as err:
            target.check_infrastructure(Log())
        assert "blob container 'not-created-yet' (wasb connection 'sbom_azurite') does not exist" in str(err.value)
        assert "azure.sbom.container" in str(err.value)
        rec, _ = record(world, tmp_path, "2026.1126.200001")
        with pytest.raises(AzureTargetError, match=r"could not upload rhel9-nginx/2026\.1126\.200001/sbom\.cdx\.json "
                                                   r".*ContainerNotFound.*create the container"):
            target.publish(rec, Log())
        assert puts(world.emu, r"/versions/") == []  # the upload comes first: no version without its SBOM
    finally:
        target.close()


def test_an_undefined_wasb_connection_is_reported_by_prepare_with_the_catalogue_field(world, monkeypatch, tmp_path):
    monkeypatch.delenv(f"AIRFLOW_CONN_{CONN.upper()}", raising=False)
    target = make_target(world, "image-sboms")
    try:
        with pytest.raises(AzureTargetError) as err:
            target.check_infrastructure(Log())
        assert "'sbom_azurite' is not defined (the image's catalogue field azure.sbom.conn_id names it)" in str(err.value)
        assert "type wasb" in str(err.value)
    finally:
        target.close()


def test_a_changed_manifest_file_is_refused(world, target, tmp_path):
    rec, _ = record(world, tmp_path, "2026.1126.200001")
    write_manifest(tmp_path / rec.version, NGINX_UPDATE)  # someone rewrote it after the build
    with pytest.raises(AzureTargetError, match="changed since the build"):
        target.publish(rec, Log())
    assert puts(world.emu, r"/versions/") == []


def test_without_an_sbom_block_the_tags_still_carry_the_digest(world, tmp_path):
    target = make_target(world, None)
    try:
        rec, manifest = record(world, tmp_path, "2026.1126.200001")
        log = Log()
        target.publish(rec, log)
        assert version_tags(world, rec.version)["manifest_digest"] == manifest.digest
        assert "no azure.sbom block in the catalogue" in log.text()
        assert target.manifest(IMAGE, rec.version) is None
    finally:
        target.close()
