"""The CycloneDX SBOM of an image version: valid 1.6, one component per package, purls, determinism."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from bakery.packages.manifest import Manifest, Package, parse_capture
from bakery.packages.sbom import SbomError, build_sbom, package_purl, validate_sbom, write_sbom

DEB = parse_capture("""\
format\tbakery-packages/1
family\tdeb
os\tdebian\t12
pkg\tbash\t5.2.15-2+b7\tamd64\tbash\t5.2.15-2
pkg\tlibssl3\t3.0.15-1~deb12u1\tamd64\topenssl\t3.0.15-1~deb12u1
pkg\tnginx\t1.22.1-9+deb12u1\tamd64\tnginx\t1.22.1-9+deb12u1
pkg\tnginx-common\t1.22.1-9+deb12u1\tall\tnginx\t1.22.1-9+deb12u1
pkg\tzlib1g\t1:1.2.13.dfsg-1\tamd64\tzlib\t1:1.2.13.dfsg-1
""")

RPM = parse_capture("""\
format\tbakery-packages/1
family\trpm
os\talmalinux\t9.4
pkg\tbash\t5.1.8-9.el9\tx86_64\tbash\t5.1.8-9.el9
pkg\tnginx\t1:1.20.1-14.el9_2.1\tx86_64\tnginx\t1:1.20.1-14.el9_2.1
pkg\topenssl-libs\t1:3.0.7-27.el9\tx86_64\topenssl\t1:3.0.7-27.el9
""")

CREATED = datetime(2026, 3, 5, 2, 0, tzinfo=timezone.utc)
PROPS = {"bakery:inputs": "pool@2026.305", "bakery:template-digest": "sha256:t", "bakery:manifest-digest": DEB.digest}


def sbom(manifest: Manifest = DEB, **kw) -> dict:
    kw = {"image": "debian12-nginx", "version": "2026.305.200000", "created": CREATED, "properties": PROPS, **kw}
    return json.loads(build_sbom(manifest, **kw))


def purls(doc: dict) -> dict[str, str]:
    return {c["name"]: c["purl"] for c in doc["components"]}


# ---- the document ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("manifest", [DEB, RPM], ids=["deb", "rpm"])
def test_sbom_is_valid_cyclonedx_1_6(manifest):
    text = build_sbom(manifest, image="img", version="2026.305.200000", created=CREATED, properties=PROPS)
    validate_sbom(text)
    doc = json.loads(text)
    assert (doc["bomFormat"], doc["specVersion"]) == ("CycloneDX", "1.6")


def test_metadata_describes_the_image():
    meta = sbom()["metadata"]
    root = meta["component"]
    assert (root["type"], root["name"], root["version"]) == ("operating-system", "debian12-nginx", "2026.305.200000")
    assert root["bom-ref"] == "bakery-image:debian12-nginx@2026.305.200000"
    assert meta["timestamp"].startswith("2026-03-05T02:00:00")
    assert {p["name"]: p["value"] for p in meta["properties"]} == PROPS


def test_one_component_per_package():
    doc = sbom()
    assert len(doc["components"]) == len(DEB) == 5
    assert sorted(c["name"] for c in doc["components"]) == sorted(p.name for p in DEB.packages)
    assert {c["type"] for c in doc["components"]} == {"library"}
    assert {c["name"]: c["version"] for c in doc["components"]}["zlib1g"] == "1:1.2.13.dfsg-1"
    # the image depends on every package
    root = next(d for d in doc["dependencies"] if d["ref"] == doc["metadata"]["component"]["bom-ref"])
    assert sorted(root["dependsOn"]) == sorted(c["bom-ref"] for c in doc["components"])


def test_components_sorted():
    names = [c["name"] for c in sbom()["components"]]
    assert names == sorted(names)


def test_deb_purls():
    got = purls(sbom())
    assert got["libssl3"] == "pkg:deb/debian/libssl3@3.0.15-1~deb12u1?arch=amd64&distro=debian-12&upstream=openssl"
    assert got["nginx"] == "pkg:deb/debian/nginx@1.22.1-9%2Bdeb12u1?arch=amd64&distro=debian-12"
    assert got["nginx-common"] == (
        "pkg:deb/debian/nginx-common@1.22.1-9%2Bdeb12u1?arch=all&distro=debian-12&upstream=nginx")
    assert got["zlib1g"] == "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64&distro=debian-12&upstream=zlib"
    # a binNMU: same source package name, other source version
    assert got["bash"] == "pkg:deb/debian/bash@5.2.15-2%2Bb7?arch=amd64&distro=debian-12&upstream=bash%405.2.15-2"


def test_rpm_purls_carry_the_epoch_as_a_qualifier():
    got = purls(sbom(RPM, image="rhel9-nginx"))
    assert got["nginx"] == "pkg:rpm/almalinux/nginx@1.20.1-14.el9_2.1?arch=x86_64&distro=almalinux-9.4&epoch=1"
    assert got["bash"] == "pkg:rpm/almalinux/bash@5.1.8-9.el9?arch=x86_64&distro=almalinux-9.4"
    assert got["openssl-libs"] == (
        "pkg:rpm/almalinux/openssl-libs@3.0.7-27.el9?arch=x86_64&distro=almalinux-9.4&epoch=1&upstream=openssl")


def test_source_package_is_a_property():
    libssl = next(c for c in sbom()["components"] if c["name"] == "libssl3")
    props = {p["name"]: p["value"] for p in libssl["properties"]}
    assert props["bakery:package:source"] == "openssl"
    assert props["bakery:package:source-version"] == "3.0.15-1~deb12u1"


def test_purl_without_os_release():
    m = Manifest(family="deb", packages=(Package("curl", "amd64", "7.88.1-10"),))
    assert package_purl(m, m.packages[0]).to_string() == "pkg:deb/curl@7.88.1-10?arch=amd64"


# ---- validation -----------------------------------------------------------------------------------------
def tampered(change) -> str:
    doc = sbom()
    change(doc)
    return json.dumps(doc)


@pytest.mark.parametrize("change, where", [
    (lambda d: d["components"][0].update(type="virtual-machine-image"), "components[0].type"),
    (lambda d: d.update(specVersion="1.6", serialNumber="not-a-urn"), "serialNumber"),
    (lambda d: d["metadata"].update(colour="blue"), "metadata"),       # strict: no unknown properties
    (lambda d: d.pop("bomFormat"), "bomFormat"),
])
def test_tampered_sbom_fails_validation(change, where):
    with pytest.raises(SbomError, match="not valid CycloneDX 1.6") as err:
        validate_sbom(tampered(change))
    assert where in str(err.value)


def test_untampered_copy_validates():
    validate_sbom(tampered(lambda d: None))  # the tampering helper itself keeps a valid document valid


def test_not_json_fails_validation():
    with pytest.raises(SbomError, match="not JSON"):
        validate_sbom("{'bomFormat': 'CycloneDX'")


# ---- determinism ----------------------------------------------------------------------------------------
def test_same_inputs_same_bytes():
    kw = {"image": "debian12-nginx", "version": "2026.305.200000", "created": CREATED, "properties": PROPS}
    shuffled = Manifest(family="deb", packages=tuple(reversed(DEB.packages)), os_id="debian", os_version="12")
    assert build_sbom(DEB, **kw) == build_sbom(DEB, **kw) == build_sbom(shuffled, **kw)


def test_only_the_timestamp_depends_on_the_time():
    a = sbom(created=None)
    b = sbom(created=datetime(2027, 1, 1, tzinfo=timezone.utc))
    assert a["metadata"].pop("timestamp") != b["metadata"].pop("timestamp")
    assert a == b


def test_serial_number_follows_image_version_and_packages():
    serial = sbom()["serialNumber"]
    assert serial.startswith("urn:uuid:")
    assert sbom()["serialNumber"] == serial
    assert sbom(version="2026.306.200000")["serialNumber"] != serial
    assert sbom(image="other")["serialNumber"] != serial
    changed = Manifest(family="deb", packages=DEB.packages[1:], os_id="debian", os_version="12")
    assert sbom(changed)["serialNumber"] != serial


# ---- files ----------------------------------------------------------------------------------------------
def test_write_sbom(tmp_path):
    path = write_sbom(DEB, tmp_path / "sbom.cdx.json", image="debian12-nginx", version="2026.305.200000",
                      created=CREATED, properties=PROPS)
    assert path == tmp_path / "sbom.cdx.json"
    assert path.read_text() == build_sbom(DEB, image="debian12-nginx", version="2026.305.200000",
                                          created=CREATED, properties=PROPS)
    validate_sbom(path.read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["sbom.cdx.json"]  # no temporary file left
