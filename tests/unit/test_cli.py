"""The people's command line over the local gallery: diff, packages, sbom (and show/versions still work)."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bakery import cli
from bakery.packages.manifest import Manifest, Package
from bakery.packages.sbom import write_sbom

IMAGE = "debian12-nginx"  # an image of the shipped catalogue (include/catalogue.yaml)
V1, V2, V3 = "2026.301.200000", "2026.302.200000", "2026.303.200000"
REPO = Path(__file__).resolve().parents[2]


def manifest(canary: str, *extra: Package) -> Manifest:
    return Manifest(family="deb", os_id="debian", os_version="12", packages=(
        Package("bakery-canary", "all", canary),
        Package("nginx", "amd64", "1.22.1-9+deb12u1", "nginx", "1.22.1-9+deb12u1"),
        *extra,
    ))


def publish(gallery: Path, version: str, m: Manifest | None, *, sbom: bool = False) -> Path:
    folder = gallery / IMAGE / version
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text(json.dumps({"version": version, "created": "2026-03-01T20:00:00Z",
                                                      "disk": "disk.qcow2", "smoke_test": {"passed": True}}))
    if m is not None:
        m.save(folder / "packages.json")
        if sbom:
            write_sbom(m, folder / "sbom.cdx.json", image=IMAGE, version=version,
                       created=datetime(2026, 3, 1, 20, tzinfo=timezone.utc))
    return folder


@pytest.fixture
def gallery(tmp_path, monkeypatch):
    root = tmp_path / "gallery"
    monkeypatch.setenv("BAKERY_GALLERY", str(root))
    publish(root, V1, manifest("1.0", Package("curl", "amd64", "7.88.1-10")), sbom=True)
    publish(root, V2, manifest("2.0", Package("jq", "amd64", "1.6-2.1")), sbom=True)
    publish(root, V3, None)  # published before manifests existed
    os.symlink(V2, root / IMAGE / "latest")
    return root


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---- diff ------------------------------------------------------------------------------------------------
def test_diff_shows_the_changes(gallery, capsys):
    code, out, err = run(capsys, "diff", IMAGE, V1, V2)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"packages {V1} -> {V2}: 1 added, 1 removed, 1 upgraded, 0 downgraded"
    assert "  ^ bakery-canary 1.0 -> 2.0 (all)" in lines
    assert "  + jq 1.6-2.1 (amd64)" in lines
    assert "  - curl 7.88.1-10 (amd64)" in lines
    assert not any("nginx" in line for line in lines)  # unchanged packages are not listed


def test_diff_the_other_way_is_a_downgrade(gallery, capsys):
    code, out, _ = run(capsys, "diff", IMAGE, V2, V1)
    assert code == 0
    assert "  v bakery-canary 2.0 -> 1.0 (all)" in out.splitlines()
    assert "bakery-canary 1.0 -> 2.0" not in out


def test_diff_prints_every_line(gallery, capsys):
    many = [Package(f"lib{i:02}", "amd64", "1") for i in range(40)]
    publish(gallery, "2026.304.200000", manifest("2.0", Package("jq", "amd64", "1.6-2.1"), *many))
    code, out, _ = run(capsys, "diff", IMAGE, V2, "2026.304.200000")
    assert code == 0
    assert len(out.splitlines()) == 1 + 40
    assert "more" not in out


def test_diff_with_latest(gallery, capsys):
    code, out, _ = run(capsys, "diff", IMAGE, V1, "latest")
    assert code == 0
    assert "^ bakery-canary 1.0 -> 2.0 (all)" in out


def test_diff_json(gallery, capsys):
    code, out, _ = run(capsys, "diff", IMAGE, V1, V2, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["upgraded"] == [{"name": "bakery-canary", "arch": "all", "old": "1.0", "new": "2.0"}]
    assert [p["name"] for p in data["added"]] == ["jq"]
    assert [p["name"] for p in data["removed"]] == ["curl"]
    assert data["downgraded"] == []


def test_diff_of_a_missing_version_names_the_file(gallery, capsys):
    code, out, err = run(capsys, "diff", IMAGE, V1, "2026.1231.200000")
    assert code == 1
    assert out == ""
    assert str(gallery / IMAGE / "2026.1231.200000" / "packages.json") in err
    assert "no such version" in err


def test_diff_of_a_version_without_manifest_names_the_file(gallery, capsys):
    code, out, err = run(capsys, "diff", IMAGE, V3, V2)
    assert code == 1
    assert out == ""
    assert str(gallery / IMAGE / V3 / "packages.json") in err
    assert "that version has none" in err


def test_diff_of_a_broken_manifest(gallery, capsys):
    (gallery / IMAGE / V2 / "packages.json").write_text("{not json")
    code, _, err = run(capsys, "diff", IMAGE, V1, V2)
    assert code == 1
    assert str(gallery / IMAGE / V2 / "packages.json") in err


def test_diff_refuses_a_version_that_is_not_a_version(gallery, capsys):
    code, _, err = run(capsys, "diff", IMAGE, V1, "../../etc")
    assert code == 1
    assert "Major.Minor.Patch" in err


def test_unknown_image_is_refused_by_every_command(gallery, capsys):
    for argv in (["diff", "no-such-image", V1, V2], ["packages", "no-such-image", V1],
                 ["sbom", "no-such-image", V1], ["show", "no-such-image"], ["versions", "no-such-image"]):
        code, out, err = run(capsys, *argv)
        assert code == 2, argv
        assert "no-such-image" in err and out == ""


# ---- packages, sbom ---------------------------------------------------------------------------------------
def test_packages(gallery, capsys):
    code, out, _ = run(capsys, "packages", IMAGE, V1)
    assert code == 0
    assert out.splitlines() == ["bakery-canary 1.0 all", "curl 7.88.1-10 amd64", "nginx 1.22.1-9+deb12u1 amd64"]
    code, _, err = run(capsys, "packages", IMAGE, V3)
    assert code == 1 and "packages.json" in err


def test_sbom_path_and_validation(gallery, capsys):
    path = gallery / IMAGE / V1 / "sbom.cdx.json"
    code, out, _ = run(capsys, "sbom", IMAGE, V1)
    assert (code, out) == (0, f"{path}\n")
    code, out, _ = run(capsys, "sbom", IMAGE, V1, "--validate")
    assert code == 0
    assert out.splitlines() == [str(path), "sbom.cdx.json: valid CycloneDX 1.6"]


def test_sbom_validation_catches_a_broken_document(gallery, capsys):
    path = gallery / IMAGE / V1 / "sbom.cdx.json"
    doc = json.loads(path.read_text())
    doc["components"][0]["type"] = "virtual-machine-image"
    path.write_text(json.dumps(doc))
    assert run(capsys, "sbom", IMAGE, V1)[0] == 0  # without --validate it is only located
    code, _, err = run(capsys, "sbom", IMAGE, V1, "--validate")
    assert code == 1
    assert str(path) in err and "components[0].type" in err


def test_sbom_missing(gallery, capsys):
    code, out, err = run(capsys, "sbom", IMAGE, V3)
    assert code == 1 and out == ""
    assert str(gallery / IMAGE / V3 / "sbom.cdx.json") in err


# ---- the older commands --------------------------------------------------------------------------------------
def test_versions_and_show_still_work(gallery, capsys):
    code, out, _ = run(capsys, "versions", IMAGE)
    assert code == 0
    assert [line.split("\t")[0] for line in out.splitlines()] == [V1, V2, V3]
    code, out, _ = run(capsys, "show", IMAGE)
    assert code == 0
    assert f"version:    {V2} (latest)" in out


# ---- the wrapper script ------------------------------------------------------------------------------------
def test_scripts_bakery_runs_the_cli(gallery):
    script = REPO / "scripts" / "bakery"
    assert os.access(script, os.X_OK)
    proc = subprocess.run([str(script), "diff", IMAGE, V1, V2], capture_output=True, text=True,
                          env={**os.environ, "BAKERY_GALLERY": str(gallery)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "^ bakery-canary 1.0 -> 2.0 (all)" in proc.stdout
    proc = subprocess.run([str(script), "diff", IMAGE, V1, "2026.1231.200000"], capture_output=True, text=True,
                          env={**os.environ, "BAKERY_GALLERY": str(gallery)}, timeout=120)
    assert proc.returncode == 1
    assert "packages.json" in proc.stderr


def test_turn_shows_the_holder_and_releases_only_the_named_run(tmp_path, monkeypatch, capsys):
    from bakery.cli import main
    from bakery.turns import Holder, ImageTurn

    monkeypatch.setenv("BAKERY_HOME", str(tmp_path))
    assert main(["turn", "debian12-nginx"]) == 0 and "free" in capsys.readouterr().out
    ImageTurn("debian12-nginx").take(Holder("bake_debian12_nginx", "run-1"), lambda h: True)
    assert main(["turn", "debian12-nginx"]) == 0 and "held by run run-1" in capsys.readouterr().out
    assert main(["turn", "debian12-nginx", "--release", "run-2"]) == 1
    assert "held by run-1, not run-2" in capsys.readouterr().err
    assert main(["turn", "debian12-nginx", "--release", "run-1"]) == 0
    assert ImageTurn("debian12-nginx").holder() is None
