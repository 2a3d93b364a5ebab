"""The pending-update check for rpm images (``bakery.packages.updates``, family rpm) against rpm
repositories on loopback that the tests write (tests/rpmrepo.py: repomd.xml + primary.xml.gz with real
AlmaLinux 9 package versions), and ``bake.check_changes`` deciding from it (no VM, no Azure).
"""

from __future__ import annotations

import time
import tracemalloc

import pytest
from bakery import bake
from bakery.catalogue import parse_catalogue
from bakery.packages.manifest import Manifest, Package, parse_capture
from bakery.packages.pool import PackagePool
from bakery.packages.updates import UpdateCheckError, is_modular, pending_updates
from bakery.record import BakeRecord
from bakery.targets.base import PublishedVersion

from tests.azure_emulator.fake_packer import package_list
from tests.rpmrepo import NGINX_MODULE_STREAM, LoopbackRpmRepos, Rpm, almalinux_repos

NGINX_UPDATE = "1:1.20.1-16.el9_4.1"
INSTALLED = parse_capture(package_list({"image_publisher": "almalinux"}))  # what the fake build VM lists


def quiet(_: str) -> None:
    pass


def triples(m: Manifest) -> list[tuple[str, str, str]]:
    return [(p.name, p.version, p.arch) for p in m.packages]


@pytest.fixture
def repos(tmp_path):
    with LoopbackRpmRepos(tmp_path / "repos") as r:
        yield r


@pytest.fixture
def pool(tmp_path):
    return PackagePool(tmp_path / "pool")


def mirrors_of(repos: LoopbackRpmRepos, *names: str):
    spec = parse_catalogue({"images": {"img": {"target": "local", "template": "debian12-nginx", "packages": {
        "family": "rpm", "mirrors": [{"url": repos.url(n)} for n in names or ("BaseOS", "AppStream")]}}}})["img"]
    return spec.packages.mirrors


def publish_almalinux(repos: LoopbackRpmRepos, **kw) -> None:
    for name, packages in almalinux_repos(triples(INSTALLED), **kw).items():
        repos.publish(name, packages)


def test_nothing_pending_when_the_repositories_have_what_is_installed(repos, pool):
    publish_almalinux(repos)
    check = pending_updates(INSTALLED, mirrors_of(repos), pool, family="rpm", log=quiet)
    assert check.pending == [] and check.not_found == []
    assert len(check.indices) == 2 and all(i.endswith("-primary.xml.gz") for i in check.indices)
    assert check.indices[0].startswith(repos.url("BaseOS") + "/repodata/")


def test_a_newer_nginx_is_pending_and_named(repos, pool):
    publish_almalinux(repos, nginx=NGINX_UPDATE)
    check = pending_updates(INSTALLED, mirrors_of(repos), pool, log=quiet)
    assert [(c.name, c.arch, c.old, c.new) for c in check.pending] == [
        ("nginx", "x86_64", "1:1.20.1-14.el9_2.1", NGINX_UPDATE),
        ("nginx-core", "x86_64", "1:1.20.1-14.el9_2.1", NGINX_UPDATE),
        ("nginx-filesystem", "noarch", "1:1.20.1-14.el9_2.1", NGINX_UPDATE),
    ]
    assert check.lines()[0] == f"nginx 1:1.20.1-14.el9_2.1 -> {NGINX_UPDATE} (x86_64)"


def test_the_candidate_is_the_highest_over_every_repository(repos, pool):
    installed = Manifest("rpm", (Package("openssl-libs", "x86_64", "1:3.0.7-27.el9"),))
    repos.publish("BaseOS", [Rpm.of("openssl-libs", "1:3.0.7-27.el9", "x86_64")])
    repos.publish("AppStream", [Rpm.of("openssl-libs", "1:3.0.7-28.el9_4", "x86_64")])
    check = pending_updates(installed, mirrors_of(repos), pool, log=quiet)
    assert [(c.old, c.new) for c in check.pending] == [("1:3.0.7-27.el9", "1:3.0.7-28.el9_4")]


def test_epoch_first_then_version_then_release(repos, pool):
    installed = Manifest("rpm", (
        Package("openssl", "x86_64", "1:3.0.7-27.el9"),
        Package("glibc", "x86_64", "2.34-100.el9_4.2"),  # no epoch in the manifest: epoch 0
        Package("systemd", "x86_64", "252-32.el9_4"),
    ))
    repos.publish("BaseOS", [
        Rpm("openssl", "x86_64", "3.5.1", "1.el9", epoch="0"),  # a higher version, but a lower epoch: older
        Rpm("glibc", "x86_64", "2.34", "100.el9_4.2", epoch="0"),  # the same, its epoch spelled out
        Rpm("glibc", "x86_64", "2.34", "83.el9_3.12", epoch="0"),  # an older release
        Rpm("systemd", "x86_64", "252", "32.el9_4", epoch="0"),
    ])
    assert pending_updates(installed, mirrors_of(repos, "BaseOS"), pool, log=quiet).pending == []
    # the release decides within one version: 252-32.el9_4 -> 252-46.el9_5.2; and a real epoch-1 update
    repos.publish("BaseOS", [Rpm("openssl", "x86_64", "3.5.1", "1.el9", epoch="0"),
                             Rpm.of("openssl", "1:3.2.2-6.el9_5", "x86_64"),
                             Rpm("glibc", "x86_64", "2.34", "100.el9_4.2", epoch="0"),
                             Rpm.of("systemd", "252-46.el9_5.2", "x86_64")])
    check = pending_updates(installed, mirrors_of(repos, "BaseOS"), pool, log=quiet)
    assert [(c.name, c.old, c.new) for c in check.pending] == [
        ("openssl", "1:3.0.7-27.el9", "1:3.2.2-6.el9_5"), ("systemd", "252-32.el9_4", "252-46.el9_5.2")]


def test_a_package_no_repository_lists_is_reported_not_pending(repos, pool):
    installed = Manifest("rpm", (Package("nginx", "x86_64", "1:1.20.1-14.el9_2.1"),
                                 Package("bakery-agent", "x86_64", "1.0-1.el9"),
                                 Package("nginx-filesystem", "x86_64", "1:1.20.1-14.el9_2.1")))  # listed as noarch
    repos.publish("AppStream", [Rpm.of("nginx", "1:1.20.1-14.el9_2.1", "x86_64"),
                                Rpm.of("nginx-filesystem", NGINX_UPDATE, "noarch")])
    check = pending_updates(installed, mirrors_of(repos, "AppStream"), pool, log=quiet)
    assert check.pending == []
    assert check.not_found == ["bakery-agent", "nginx-filesystem"]  # matched by name AND architecture


def test_module_stream_builds_count_only_for_a_modular_install(repos, pool):
    assert is_modular(NGINX_MODULE_STREAM) and is_modular("1:1.22.1-3.module+el9.2.0+18928+a57e4f50")
    assert not is_modular("1:1.20.1-14.el9_2.1") and not is_modular("1.0-1.module")
    stream_update = "1:1.24.0-5.module_el9.5.0+130+3b4f0e2a"
    repos.publish("AppStream", [Rpm.of("nginx", "1:1.20.1-14.el9_2.1", "x86_64"),
                                Rpm.of("nginx", NGINX_MODULE_STREAM, "x86_64"),
                                Rpm.of("nginx", stream_update, "x86_64")])
    default = Manifest("rpm", (Package("nginx", "x86_64", "1:1.20.1-14.el9_2.1"),))
    assert pending_updates(default, mirrors_of(repos, "AppStream"), pool, log=quiet).pending == []
    enabled = Manifest("rpm", (Package("nginx", "x86_64", NGINX_MODULE_STREAM),))
    check = pending_updates(enabled, mirrors_of(repos, "AppStream"), pool, log=quiet)
    assert [(c.old, c.new) for c in check.pending] == [(NGINX_MODULE_STREAM, stream_update)]


@pytest.mark.parametrize("compression", ["xz", "bz2", ""])
def test_xz_bzip2_and_plain_primary_metadata_are_read(repos, pool, compression):
    installed = Manifest("rpm", (Package("nginx", "x86_64", "1:1.20.1-14.el9_2.1"),))
    path = repos.publish("AppStream", [Rpm.of("nginx", NGINX_UPDATE, "x86_64")], compression=compression)
    check = pending_updates(installed, mirrors_of(repos, "AppStream"), pool, log=quiet)
    assert [c.new for c in check.pending] == [NGINX_UPDATE]
    assert check.indices == [f"http://127.0.0.1:{repos.port}{path}"]


def test_a_zstd_primary_is_a_clear_error_naming_the_file_and_is_not_downloaded(repos, pool):
    path = repos.publish("AppStream", [Rpm.of("nginx", NGINX_UPDATE, "x86_64")], compression="zst")
    installed = Manifest("rpm", (Package("nginx", "x86_64", "1:1.20.1-14.el9_2.1"),))
    with pytest.raises(UpdateCheckError) as err:
        pending_updates(installed, mirrors_of(repos, "AppStream"), pool, log=quiet)
    message = str(err.value)
    assert message.startswith(f"http://127.0.0.1:{repos.port}{path}: ")
    assert "zstd-compressed" in message and "gzip, xz and bzip2" in message
    assert f"Named by {repos.url('AppStream')}/repodata/repomd.xml" in message
    assert repos.fetched(".zst") == 0


def test_zstd_content_under_another_name_is_recognised_too(repos, pool, tmp_path):
    path = repos.publish("AppStream", [Rpm.of("nginx", NGINX_UPDATE, "x86_64")], compression="zst")
    renamed = path.replace(".xml.zst", ".bin")  # a repository naming its primary oddly
    (repos.root / renamed.lstrip("/")).write_bytes((repos.root / path.lstrip("/")).read_bytes())
    repomd = repos.root / "AppStream/x86_64/os/repodata/repomd.xml"
    repomd.write_text(repomd.read_text().replace(path.split("/os/", 1)[1], renamed.split("/os/", 1)[1]))
    installed = Manifest("rpm", (Package("nginx", "x86_64", "1:1.20.1-14.el9_2.1"),))
    with pytest.raises(UpdateCheckError, match=r"\.bin: the repository's primary metadata is zstd-compressed"):
        pending_updates(installed, mirrors_of(repos, "AppStream"), pool, log=quiet)


def test_the_primary_is_kept_in_the_pool_by_sha256_and_repomd_is_read_fresh(repos, pool):
    publish_almalinux(repos)
    mirrors = mirrors_of(repos)
    pending_updates(INSTALLED, mirrors, pool, log=quiet)
    pending_updates(INSTALLED, mirrors, pool, log=quiet)
    assert repos.fetched("/repomd.xml") == 4  # twice per repository: always fresh
    assert repos.fetched("-primary.xml.gz") == 2  # once per repository: the second check read the pool
    primary = next(p for m, p, s in repos.requests if p.endswith("-primary.xml.gz") and "BaseOS" in p)
    digest = primary.rsplit("/", 1)[1].split("-", 1)[0]  # the fixture names it by its sha256, as createrepo does
    assert pool.has_blob(digest)
    publish_almalinux(repos, nginx=NGINX_UPDATE)  # the mirror syncs: AppStream's primary changes, BaseOS's not
    assert len(pending_updates(INSTALLED, mirrors, pool, log=quiet).pending) == 3
    assert repos.fetched("-primary.xml.gz") == 3  # only AppStream's new one


def test_a_sha512_checksum_is_verified_and_cached_too(repos, pool):
    repos.publish("AppStream", [Rpm.of("nginx", NGINX_UPDATE, "x86_64")], checksum_type="sha512")
    installed = Manifest("rpm", (Package("nginx", "x86_64", "1:1.20.1-14.el9_2.1"),))
    for _ in range(2):
        assert len(pending_updates(installed, mirrors_of(repos, "AppStream"), pool, log=quiet).pending) == 1
    assert repos.fetched("-primary.xml.gz") == 1


def test_a_primary_that_does_not_match_its_checksum_is_refused(repos, pool):
    repos.publish("AppStream", [Rpm.of("nginx", NGINX_UPDATE, "x86_64")], listed_checksum="ab" * 32)
    installed = Manifest("rpm", (Package("nginx", "x86_64", "1:1.20.1-14.el9_2.1"),))
    with pytest.raises(UpdateCheckError, match=r"its sha256 is [0-9a-f]{64}, but .*/repomd.xml lists abab"):
        pending_updates(installed, mirrors_of(repos, "AppStream"), pool, log=quiet)
    assert not pool.has_blob("ab" * 32)


def test_a_url_that_is_not_a_repository_says_what_the_url_must_be(repos, pool):
    installed = Manifest("rpm", (Package("nginx", "x86_64", "1:1.20.1-14.el9_2.1"),))
    (repos.root / "almalinux/9").mkdir(parents=True)
    with pytest.raises(UpdateCheckError) as err:
        pending_updates(installed, mirrors_of(repos, "AppStream"), pool, log=quiet)
    assert str(err.value) == (
        f"{repos.url('AppStream')}/repodata/repomd.xml: not found: packages.mirrors[0].url of an rpm image must be "
        "a repository base URL, the folder that holds repodata/ (e.g. "
        "https://repo.almalinux.org/almalinux/9/BaseOS/x86_64/os)")


def test_the_catalogue_family_must_be_the_manifests(repos, pool):
    with pytest.raises(UpdateCheckError, match="the catalogue's packages.family is 'deb', but the version's package "
                                               "manifest is 'rpm'"):
        pending_updates(INSTALLED, mirrors_of(repos), pool, family="deb", log=quiet)


def test_a_large_primary_is_streamed(repos, pool):
    """AlmaLinux's AppStream primary.xml is tens of MB: it is parsed as a stream, package by package."""
    filler = [Rpm(f"pkg-{n:05d}", "x86_64", "1.0", f"{n}.el9") for n in range(12000)]
    repos.publish("AppStream", [*filler[:6000], Rpm.of("nginx", NGINX_UPDATE, "x86_64"), *filler[6000:]])
    xml_size = len((repos.root / "AppStream").rglob("*-primary.xml.gz").__next__().read_bytes())
    installed = Manifest("rpm", (Package("nginx", "x86_64", "1:1.20.1-14.el9_2.1"),
                                 Package("pkg-11999", "x86_64", "1.0-11998.el9")))
    tracemalloc.start()
    t0 = time.monotonic()
    try:
        check = pending_updates(installed, mirrors_of(repos, "AppStream"), pool, log=quiet)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"12001 packages ({xml_size / 1e6:.1f} MB gzip) in {time.monotonic() - t0:.1f}s, peak {peak / 1e6:.1f} MB")
    assert [(c.name, c.new) for c in check.pending] == [("nginx", NGINX_UPDATE), ("pkg-11999", "1.0-11999.el9")]
    # the uncompressed XML is ~17 MB and its whole tree many times that; a stream holds a few packages
    assert peak < 8e6, f"peak {peak / 1e6:.1f} MB: the primary was not parsed as a stream"


# --- check_changes of an rpm image ---------------------------------------------------------------
BASE = "marketplace:almalinux:almalinux-x86_64:9-gen2:9.5.202411260"  # the run's base image (Azure's base_digest)


class PublishedTarget:
    """The latest published version as a target reports it (tags + manifest), nothing else."""

    name = "azure"

    def __init__(self, manifest: Manifest, **meta) -> None:
        self._manifest = manifest
        self.meta = {"template_digest": "sha256:t", "base_digest": BASE, "variables_digest": bake.variables_digest({}),
                     **meta}

    def published(self, image, version):
        return dict(self.meta) if version == "2026.1126.300000" else None

    def list_versions(self, image):
        return [PublishedVersion(image, "2026.1126.300000", "2026-11-26T03:10:00+00:00")]

    def manifest(self, image, version):
        return self._manifest


def decide(repos: LoopbackRpmRepos, tmp_path, target, **record):
    spec = parse_catalogue({"images": {"rhel9-nginx": {"target": "local", "template": "debian12-nginx", "packages": {
        "family": "rpm", "mirrors": [{"url": repos.url("BaseOS")}, {"url": repos.url("AppStream")}]}}}})["rhel9-nginx"]
    rec = BakeRecord(image="rhel9-nginx", version="2026.1127.300000", target="azure", template_digest="sha256:t",
                     base_digest=BASE, variables_digest=bake.variables_digest({}),
                     dag_run_id="scheduled__2026-11-27T03:00:00+00:00", run_type="scheduled", **record)
    return bake.check_changes(spec, {"record": rec.to_dict()}, log=quiet, target=target,
                              pool=PackagePool(tmp_path / "pool"))


def test_check_changes_skips_an_unchanged_rpm_image_and_bakes_for_an_update(repos, tmp_path):
    target = PublishedTarget(INSTALLED)
    publish_almalinux(repos)
    same = decide(repos, tmp_path, target)
    assert same["build"] is False, same["reasons"]
    assert same["reasons"] == [
        f"nothing changed since 2026.1126.300000: same template (sha256:t), base image "
        f"(marketplace:almalinux:almalinux-x86_64:9-gen2:9.5.202411260), catalogue variables, and none of its 19 "
        f"packages has a newer version on {repos.url('BaseOS')}, {repos.url('AppStream')}"]
    assert len(same["compared"]["indices"]) == 2
    publish_almalinux(repos, nginx=NGINX_UPDATE)
    moved = decide(repos, tmp_path, target)
    assert moved["build"] is True
    assert moved["reasons"] == [
        "3 package update(s) pending on the mirrors since 2026.1126.300000: "
        f"nginx 1:1.20.1-14.el9_2.1 -> {NGINX_UPDATE} (x86_64); nginx-core 1:1.20.1-14.el9_2.1 -> {NGINX_UPDATE} "
        f"(x86_64); nginx-filesystem 1:1.20.1-14.el9_2.1 -> {NGINX_UPDATE} (noarch)"]
    publish_almalinux(repos)  # no update pending, but the latest version was built on an older Marketplace image
    new_base = decide(repos, tmp_path, PublishedTarget(INSTALLED, base_digest="marketplace:almalinux:"
                                                       "almalinux-x86_64:9-gen2:9.4.2024050902"))
    assert new_base["build"] is True and new_base["reasons"] == [(
        "base image changed since 2026.1126.300000: marketplace:almalinux:almalinux-x86_64:9-gen2:9.4.2024050902 "
        "-> marketplace:almalinux:almalinux-x86_64:9-gen2:9.5.202411260")]


def test_check_changes_bakes_when_the_repositories_cannot_be_read_and_says_why(repos, tmp_path):
    publish_almalinux(repos)
    path = repos.publish("AppStream", [Rpm.of("nginx", "1:1.20.1-14.el9_2.1", "x86_64")], compression="zst")
    decision = decide(repos, tmp_path, PublishedTarget(INSTALLED))
    assert decision["build"] is True
    (reason,) = decision["reasons"]
    assert reason.startswith(f"pending package updates could not be checked, so the run bakes: "
                             f"http://127.0.0.1:{repos.port}{path}: the repository's primary metadata is zstd-compressed")
    assert decision["compared"]["update_check_error"] in reason
