"""The fake ``packer`` runs the REAL Azure templates' provisioners against its model of the build VM:
the shared capture script lists the packages, the file provisioner downloads the list to
``package_list_path``, and nothing can reach the VM once deprovision.sh ran. So a template that
captures too late (or not at all) fails here as it would on Azure; and the list is what the product
parses into the version's manifest.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from bakery.packages.manifest import parse_capture
from bakery.templates import render

from tests.azure_emulator import FAKE_PACKER, ArmEmulator
from tests.azure_emulator.world import IMAGES_RG, AzureWorld

TEMPLATES = {"rhel9-nginx-azure": "rhel9-nginx", "ubuntu2404-nginx-azure": "ubuntu2404-nginx"}

pytestmark = pytest.mark.needs_tools("packer")  # the fake evaluates the template with the real one's console


@pytest.fixture(scope="module")
def world():
    emulator = ArmEmulator(retry_after=0, require_issued_tokens=True)
    try:
        w = AzureWorld(emulator)
        w.create_infrastructure()
        yield w
    finally:
        emulator.stop()
    assert emulator.internal_errors == []


def build(world: AzureWorld, template: Path, tmp_path: Path, version: str, **env: str) -> tuple[int, str, Path]:
    """`packer build` of ``template`` with the fake; returns (exit code, output, package_list_path)."""
    listing = tmp_path / "work" / "packages.tsv"
    variables = {
        "subscription_id": world.subscription_id, "tenant_id": world.tenant_id, "client_id": world.client_id,
        "location": world.location, "managed_image_resource_group_name": IMAGES_RG,
        "image_name": TEMPLATES[template.name], "image_version": version, "dag_run_id": f"manual__{version}",
        "manifest_path": str(tmp_path / "manifest.json"), "package_list_path": str(listing),
    }
    var_file = tmp_path / "vars.json"
    var_file.write_text(json.dumps(variables))
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("PKR_VAR_", "BAKERY_FAKE_PACKER_"))}
    run_env.update(world.emu.env(), PKR_VAR_client_secret=world.client_secret, CHECKPOINT_DISABLE="1", **env)
    proc = subprocess.run([str(FAKE_PACKER), "build", "-force", f"-var-file={var_file}", str(template)],
                          cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=300, check=False)
    return proc.returncode, proc.stdout + proc.stderr, listing


def copy_of(template: str, tmp_path: Path) -> Path:
    """The family's Packer folder as prepare renders it (bakery.templates): a folder of its own, to change."""
    return render(template, tmp_path / "packer" / template)


@pytest.mark.parametrize("template, family, os_line, nginx", [
    ("rhel9-nginx-azure", "rpm", ("almalinux", "9.4"), "1:1.20.1-14.el9_2.1"),
    ("ubuntu2404-nginx-azure", "deb", ("ubuntu", "24.04"), "1.24.0-2ubuntu7.1"),
])
def test_the_package_list_is_downloaded_to_package_list_path(world, tmp_path, template, family, os_line, nginx):
    code, out, listing = build(world, copy_of(template, tmp_path), tmp_path, "2026.1126.200001")
    assert code == 0, out
    manifest = parse_capture(listing.read_text(), where=str(listing))
    assert (manifest.family, manifest.os_id, manifest.os_version) == (family, *os_line)
    assert 15 <= len(manifest) <= 25
    assert {p.name: p.version for p in manifest.packages}["nginx"] == nginx
    assert f"Downloading /tmp/bakery-packages.tsv => {listing}" in out
    # the order of the build: list captured and downloaded, then deprovisioned, then the image captured
    steps = [out.index(s) for s in ("capture-packages.sh", "Downloading /tmp/bakery-packages.tsv",
                                    "deprovision.sh", "Capturing image")]
    assert steps == sorted(steps)


def test_a_test_can_change_the_nginx_version(world, tmp_path):
    code, out, listing = build(world, copy_of("rhel9-nginx-azure", tmp_path), tmp_path, "2026.1126.200002",
                               BAKERY_FAKE_PACKER_NGINX_VERSION="1:1.20.1-16.el9_4.1")
    assert code == 0, out
    versions = {p.name: p.version for p in parse_capture(listing.read_text()).packages}
    assert versions["nginx"] == versions["nginx-core"] == versions["nginx-filesystem"] == "1:1.20.1-16.el9_4.1"


def test_control_downloading_after_deprovisioning_fails_like_azure(world, tmp_path):
    template = copy_of("rhel9-nginx-azure", tmp_path)
    hcl = template / "rhel9-nginx-azure.pkr.hcl"
    text = hcl.read_text()
    start = text.index('  provisioner "file" {')
    end = text.index("  }\n", start) + 4
    block, text = text[start:end], text[:start] + text[end:]
    at = text.index("  post-processor")
    hcl.write_text(text[:at] + block + "\n" + text[at:])
    code, out, listing = build(world, template, tmp_path, "2026.1126.200003")
    assert code == 1
    assert "ssh: handshake failed" in out
    assert not listing.exists()


def test_control_a_download_without_the_capture_fails(world, tmp_path):
    template = copy_of("rhel9-nginx-azure", tmp_path)
    hcl = template / "rhel9-nginx-azure.pkr.hcl"
    hcl.write_text(hcl.read_text().replace("${path.root}/scripts/capture-packages.sh",
                                           "${path.root}/scripts/provision.sh"))
    code, out, listing = build(world, template, tmp_path, "2026.1126.200004")
    assert code == 1
    assert "Error downloading /tmp/bakery-packages.tsv" in out and not listing.exists()


def test_control_deprovisioning_without_skip_clean_fails(world, tmp_path):
    template = copy_of("rhel9-nginx-azure", tmp_path)
    hcl = template / "rhel9-nginx-azure.pkr.hcl"
    hcl.write_text(hcl.read_text().replace("skip_clean      = true", "skip_clean      = false"))
    code, out, _ = build(world, template, tmp_path, "2026.1126.200005")
    assert code == 1 and "Error removing temporary script" in out
