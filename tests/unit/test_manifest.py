"""The package manifest: parsing the guest's capture, digest, version order, diff, files."""

from __future__ import annotations

import json

import pytest

from bakery.packages.manifest import (
    FORMAT,
    Manifest,
    ManifestError,
    Package,
    compare_versions,
    diff,
    format_diff,
    parse_capture,
)

# what include/packer/shared/capture-packages.sh writes in a Debian 12 guest (dpkg-query), trimmed
DEB_CAPTURE = """\
format\tbakery-packages/1
family\tdeb
os\tdebian\t12
pkg\tbase-files\t12.4+deb12u9\tamd64\tbase-files\t12.4+deb12u9
pkg\tbash\t5.2.15-2+b7\tamd64\tbash\t5.2.15-2
pkg\tca-certificates\t20230311\tall\tca-certificates\t20230311
pkg\tcoreutils\t9.1-1\tamd64\tcoreutils\t9.1-1
pkg\tlibc6\t2.36-9+deb12u9\tamd64\tglibc\t2.36-9+deb12u9
pkg\tlibssl3\t3.0.15-1~deb12u1\tamd64\topenssl\t3.0.15-1~deb12u1
pkg\tnginx\t1.22.1-9+deb12u1\tamd64\tnginx\t1.22.1-9+deb12u1
pkg\tnginx-common\t1.22.1-9+deb12u1\tall\tnginx\t1.22.1-9+deb12u1
pkg\topenssh-server\t1:9.2p1-2+deb12u3\tamd64\topenssh\t1:9.2p1-2+deb12u3
pkg\ttzdata\t2024b-0+deb12u1\tall\ttzdata\t2024b-0+deb12u1
pkg\tzlib1g\t1:1.2.13.dfsg-1\tamd64\tzlib\t1:1.2.13.dfsg-1
"""

# the same in an AlmaLinux 9 guest (rpm -qa), epoch written as N: when the package has one
RPM_CAPTURE = """\
format\tbakery-packages/1
family\trpm
os\talmalinux\t9.4
pkg\tbash\t5.1.8-9.el9\tx86_64\tbash\t5.1.8-9.el9
pkg\tglibc\t2.34-100.el9_4.2\tx86_64\tglibc\t2.34-100.el9_4.2
pkg\tkernel-core\t5.14.0-427.13.1.el9_4\tx86_64\tkernel\t5.14.0-427.13.1.el9_4
pkg\tnginx\t1:1.20.1-14.el9_2.1\tx86_64\tnginx\t1:1.20.1-14.el9_2.1
pkg\tnginx-filesystem\t1:1.20.1-14.el9_2.1\tnoarch\tnginx\t1:1.20.1-14.el9_2.1
pkg\topenssl-libs\t1:3.0.7-27.el9\tx86_64\topenssl\t1:3.0.7-27.el9
pkg\ttzdata\t2024a-1.el9\tnoarch\ttzdata\t2024a-1.el9
"""


def deb(*pkgs: tuple[str, str]) -> Manifest:
    return Manifest(family="deb", packages=tuple(Package(name=n, arch="amd64", version=v) for n, v in pkgs))


def rpm(*pkgs: tuple[str, str]) -> Manifest:
    return Manifest(family="rpm", packages=tuple(Package(name=n, arch="x86_64", version=v) for n, v in pkgs))


# ---- parsing -------------------------------------------------------------------------------------------
def test_parse_deb_capture():
    m = parse_capture(DEB_CAPTURE)
    assert (m.family, m.os_id, m.os_version, len(m)) == ("deb", "debian", "12", 11)
    libssl = m.by_key()[("libssl3", "amd64")]
    assert libssl == Package(name="libssl3", arch="amd64", version="3.0.15-1~deb12u1",
                             source="openssl", source_version="3.0.15-1~deb12u1")
    assert m.by_key()[("bash", "amd64")].source_version == "5.2.15-2"  # binNMU: not the binary's version
    assert m.by_key()[("zlib1g", "amd64")].version == "1:1.2.13.dfsg-1"  # epoch kept
    assert [p.name for p in m.packages] == sorted(p.name for p in m.packages)


def test_parse_rpm_capture():
    m = parse_capture(RPM_CAPTURE)
    assert (m.family, m.os_id, m.os_version, len(m)) == ("rpm", "almalinux", "9.4", 7)
    assert m.by_key()[("nginx", "x86_64")].version == "1:1.20.1-14.el9_2.1"
    assert m.by_key()[("openssl-libs", "x86_64")].source == "openssl"


def test_source_defaults_to_the_package_itself():
    m = parse_capture(f"format\t{FORMAT}\nfamily\tdeb\npkg\tcurl\t7.88.1-10+deb12u8\tamd64\n")
    assert m.packages[0].source == "curl"
    assert m.packages[0].source_version == "7.88.1-10+deb12u8"


@pytest.mark.parametrize("bad, line, words", [
    ("pkg\tnginx\t1.22.1-9\n", 4, "expected 'pkg"),                 # no arch
    ("pkg\tnginx\t\tamd64\n", 4, "expected 'pkg"),                  # empty version
    ("package\tnginx\t1.22.1-9\tamd64\n", 4, "unknown record"),
    ("pkg\tbash\t5.2.15-2\tamd64\npkg\tbash\t5.2.15-2+b1\tamd64\n", 5, "already listed on line 4"),
])
def test_parse_errors_name_the_line(bad, line, words):
    text = f"format\t{FORMAT}\nfamily\tdeb\nos\tdebian\t12\n{bad}"
    with pytest.raises(ManifestError) as err:
        parse_capture(text, where="packages.tsv")
    assert f"packages.tsv, line {line}:" in str(err.value)
    assert words in str(err.value)


def test_same_package_on_two_architectures_is_not_a_duplicate():
    m = parse_capture(f"format\t{FORMAT}\nfamily\tdeb\npkg\tlibc6\t2.36-9\tamd64\npkg\tlibc6\t2.36-9\ti386\n")
    assert len(m) == 2


@pytest.mark.parametrize("text, words", [
    ("family\tdeb\npkg\tbash\t5.2\tamd64\n", "no 'format"),
    ("format\tbakery-packages/0\nfamily\tdeb\npkg\tbash\t5.2\tamd64\n", "no 'format"),
    (f"format\t{FORMAT}\nfamily\tdeb\n", "no installed package"),
    (f"format\t{FORMAT}\nfamily\tapk\npkg\tbash\t5.2\tamd64\n", "'apk'"),
    (f"format\t{FORMAT}\npkg\tbash\t5.2\tamd64\n", "'family' line"),
])
def test_parse_rejects_incomplete_captures(text, words):
    with pytest.raises(ManifestError, match="packages.tsv") as err:
        parse_capture(text, where="packages.tsv")
    assert words in str(err.value)


# ---- digest ---------------------------------------------------------------------------------------------
def test_digest_is_independent_of_input_order():
    lines = DEB_CAPTURE.splitlines()
    pkgs = [line for line in lines if line.startswith("pkg\t")]
    shuffled = "\n".join([*lines[:3], *reversed(pkgs)]) + "\n"
    assert shuffled != DEB_CAPTURE
    assert parse_capture(shuffled).digest == parse_capture(DEB_CAPTURE).digest
    assert parse_capture(DEB_CAPTURE).digest.startswith("sha256:")


def test_digest_changes_with_a_version():
    changed = DEB_CAPTURE.replace("nginx\t1.22.1-9+deb12u1\tamd64", "nginx\t1.22.1-9+deb12u2\tamd64")
    assert changed != DEB_CAPTURE
    assert parse_capture(changed).digest != parse_capture(DEB_CAPTURE).digest


def test_digest_changes_with_a_package_added():
    added = DEB_CAPTURE + "pkg\tcurl\t7.88.1-10+deb12u8\tamd64\tcurl\t7.88.1-10+deb12u8\n"
    assert parse_capture(added).digest != parse_capture(DEB_CAPTURE).digest


# ---- version order ------------------------------------------------------------------------------------
@pytest.mark.parametrize("older, newer", [
    ("1.0~rc1", "1.0"),                        # tilde sorts before everything (string order says otherwise)
    ("1.22.1-9", "1.22.1-9+deb12u1"),
    ("2.36-9+deb12u4", "2.36-9+deb12u10"),     # numerically, not as text
    ("9.9", "1:1.0"),                          # epoch first
    ("3.0.15-1~deb12u1", "3.0.15-1"),
])
def test_debian_order(older, newer):
    assert compare_versions("deb", older, newer) < 0
    assert compare_versions("deb", newer, older) > 0
    assert compare_versions("deb", newer, newer) == 0


@pytest.mark.parametrize("older, newer", [
    ("1.24.0-1.el9", "1:1.20.1-14.el9_2.1"),   # epoch beats version
    ("1:1.20.1-14.el9", "2:0.1-1.el9"),
    ("1.20.1-14.el9_2", "1.20.1-14.el9_2.1"),
    ("1.0-2.el9", "1.0.1-1.el9"),              # version before release: not one string (would say 1.0-2 is newer)
    ("1.10-1", "1.10.1-1"),
    ("1.9-1", "1.10-1"),                       # numerically
    ("1.0~beta-1", "1.0-1"),
])
def test_rpm_order(older, newer):
    assert compare_versions("rpm", older, newer) < 0
    assert compare_versions("rpm", newer, older) > 0
    assert compare_versions("rpm", newer, newer) == 0


def test_rpm_epoch_zero_is_no_epoch():
    assert compare_versions("rpm", "0:1.0-1.el9", "1.0-1.el9") == 0


def test_rpm_bad_epoch_and_unknown_family_are_errors():
    with pytest.raises(ManifestError, match="epoch"):
        compare_versions("rpm", "x:1.0-1", "1.0-1")
    with pytest.raises(ManifestError, match="apk"):
        compare_versions("apk", "1.0", "1.1")


# ---- diff ---------------------------------------------------------------------------------------------
def test_diff_debian():
    old = deb(("nginx", "1.22.1-9"), ("curl", "7.88.1-10"), ("foo", "1.0"), ("same", "1"))
    new = deb(("nginx", "1.22.1-9+deb12u1"), ("foo", "1.0~rc1"), ("same", "1"), ("jq", "1.6-2.1"))
    d = diff(old, new)
    assert [p.name for p in d.added] == ["jq"]
    assert [p.name for p in d.removed] == ["curl"]
    assert [(c.name, c.old, c.new) for c in d.upgraded] == [("nginx", "1.22.1-9", "1.22.1-9+deb12u1")]
    assert [(c.name, c.old, c.new) for c in d.downgraded] == [("foo", "1.0", "1.0~rc1")]
    assert d.summary() == "1 added, 1 removed, 1 upgraded, 1 downgraded"
    assert not d.empty


def test_diff_rpm_uses_epochs():
    old = rpm(("nginx", "1.24.0-1.el9"), ("bash", "1.0.1-1.el9"), ("glibc", "2.34-100.el9"))
    new = rpm(("nginx", "1:1.20.1-14.el9_2.1"), ("bash", "1.0-2.el9"), ("glibc", "0:2.34-100.el9"))
    d = diff(old, new)
    assert [c.name for c in d.upgraded] == ["nginx"]
    assert [c.name for c in d.downgraded] == ["bash"]
    assert not d.added and not d.removed  # glibc: the same version spelled with an explicit epoch 0


def test_diff_of_equal_manifests_is_empty():
    m = parse_capture(DEB_CAPTURE)
    d = diff(m, parse_capture(DEB_CAPTURE))
    assert d.empty
    assert format_diff(d, "a", "b") == "packages a -> b: no change"


def test_diff_matches_by_architecture():
    old = Manifest(family="deb", packages=(Package("libc6", "amd64", "2.36-9"),))
    new = Manifest(family="deb", packages=(Package("libc6", "i386", "2.36-9"),))
    d = diff(old, new)
    assert [(p.name, p.arch) for p in d.added] == [("libc6", "i386")]
    assert [(p.name, p.arch) for p in d.removed] == [("libc6", "amd64")]


def test_diff_refuses_two_families():
    with pytest.raises(ManifestError, match="cannot compare"):
        diff(deb(("bash", "5.2")), rpm(("bash", "5.1")))


def test_format_diff():
    d = diff(deb(("nginx", "1.22.1-9"), ("curl", "7.88")), deb(("nginx", "1.22.1-9+deb12u1"), ("jq", "1.6")))
    text = format_diff(d, "2026.301.200000", "2026.302.200000")
    lines = text.splitlines()
    assert lines[0] == "packages 2026.301.200000 -> 2026.302.200000: 1 added, 1 removed, 1 upgraded, 0 downgraded"
    assert "  ^ nginx 1.22.1-9 -> 1.22.1-9+deb12u1 (amd64)" in lines
    assert "  + jq 1.6 (amd64)" in lines
    assert "  - curl 7.88 (amd64)" in lines
    assert not any(line.startswith("  v ") for line in lines)
    assert format_diff(diff(deb(("nginx", "2")), deb(("nginx", "1"))), "a", "b").endswith("v nginx 2 -> 1 (amd64)")


def test_format_diff_limit():
    d = diff(deb(), deb(*((f"p{i}", "1") for i in range(5))))
    lines = format_diff(d, "a", "b", limit=2).splitlines()
    assert len(lines) == 4 and lines[-1] == "  ... and 3 more"
    assert len(format_diff(d, "a", "b").splitlines()) == 6


def test_diff_to_dict_is_json():
    d = diff(deb(("nginx", "1")), deb(("nginx", "2")))
    upgraded = json.loads(json.dumps(d.to_dict()))["upgraded"]
    assert upgraded == [{"name": "nginx", "arch": "amd64", "old": "1", "new": "2"}]


# ---- files --------------------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    m = parse_capture(RPM_CAPTURE)
    path = m.save(tmp_path / "packages.json")
    assert Manifest.load(path) == m
    assert Manifest.load(path).digest == m.digest
    assert json.loads(path.read_text())["format"] == FORMAT
    assert [p.name for p in tmp_path.iterdir()] == ["packages.json"]  # no temporary file left


@pytest.mark.parametrize("data", [
    {"format": "something-else", "family": "deb", "packages": []},
    {"format": FORMAT, "packages": []},
    {"format": FORMAT, "family": "deb", "packages": [{"name": "bash"}]},
    {"format": FORMAT, "family": "deb", "packages": [{"name": "bash", "arch": "amd64", "version": "1", "x": 1}]},
])
def test_load_rejects_foreign_or_broken_files(tmp_path, data):
    path = tmp_path / "packages.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError):
        Manifest.load(path)


def test_manifest_rejects_duplicates():
    with pytest.raises(ManifestError, match="listed twice"):
        deb(("bash", "1"), ("bash", "2"))
