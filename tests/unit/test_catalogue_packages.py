"""The catalogue's ``packages`` block: deb archives (url + suites + components) and rpm repositories
(a repository base URL, no suites or components), and the shipped catalogue's mirrors."""

from __future__ import annotations

from pathlib import Path

import pytest
from bakery.catalogue import DEFAULT_CATALOGUE, CatalogueError, load_catalogue, parse_catalogue

ALMA = "https://repo.almalinux.org/almalinux/9"


def parse(packages: dict):
    return parse_catalogue({"images": {"img": {"target": "local", "template": "debian12-nginx",
                                               "packages": packages}}}, path=Path("cat.yaml"))["img"]


def problems(packages: dict) -> list[str]:
    with pytest.raises(CatalogueError) as err:
        parse(packages)
    return err.value.problems


def test_an_rpm_mirror_is_a_repository_base_url_without_suites():
    spec = parse({"family": "rpm", "mirrors": [{"url": f"{ALMA}/BaseOS/x86_64/os/"},
                                               {"url": f"{ALMA}/AppStream/x86_64/os", "trusted": True}]})
    assert spec.packages.family == "rpm" and spec.packages.arch == "x86_64"  # rpm's default architecture
    assert [(m.url, m.suites, m.components, m.trusted) for m in spec.packages.mirrors] == [
        (f"{ALMA}/BaseOS/x86_64/os", (), (), False), (f"{ALMA}/AppStream/x86_64/os", (), (), True)]


def test_a_deb_mirror_needs_its_suites_and_the_error_names_the_field():
    assert problems({"mirrors": [{"url": "http://deb.debian.org/debian"}]}) == [
        "image 'img', field 'packages.mirrors.0.suites': required for family deb: the archive's suites to read, "
        "e.g. [bookworm, bookworm-updates] (or set packages.family: rpm for an rpm repository)"]
    assert problems({"family": "deb", "mirrors": [{"url": "http://a/debian", "suites": ["bookworm"]},
                                                  {"url": "http://b/debian", "components": ["main"]}]}) == [
        "image 'img', field 'packages.mirrors.1.suites': required for family deb: the archive's suites to read, "
        "e.g. [bookworm, bookworm-updates] (or set packages.family: rpm for an rpm repository)"]
    spec = parse({"mirrors": [{"url": "http://deb.debian.org/debian", "suites": ["bookworm"]}]})
    assert spec.packages.arch == "amd64" and spec.packages.mirrors[0].components == ("main",)


@pytest.mark.parametrize("extra", [{"suites": ["9"]}, {"components": ["BaseOS"]}])
def test_an_rpm_mirror_refuses_suites_and_components(extra):
    (problem,) = problems({"family": "rpm", "mirrors": [{"url": f"{ALMA}/BaseOS/x86_64/os", **extra}]})
    field = next(iter(extra))
    assert problem.startswith(f"image 'img', field 'packages.mirrors.0.{field}': not used for family rpm: the url is "
                              "the repository itself, the folder that holds repodata/")
    assert problem.endswith(f"remove {field}")


def test_the_shipped_catalogue_gives_the_azure_images_their_distributions_repositories():
    specs = load_catalogue(DEFAULT_CATALOGUE)
    rhel = specs["rhel9-nginx"].packages
    assert (rhel.family, rhel.arch) == ("rpm", "x86_64")
    assert [m.url for m in rhel.mirrors] == [f"{ALMA}/BaseOS/x86_64/os", f"{ALMA}/AppStream/x86_64/os"]
    ubuntu = specs["ubuntu2404-nginx"].packages
    assert (ubuntu.family, ubuntu.arch) == ("deb", "amd64")
    assert [(m.url, m.suites, m.components) for m in ubuntu.mirrors] == [
        ("http://archive.ubuntu.com/ubuntu", ("noble", "noble-updates"), ("main", "universe")),
        ("http://security.ubuntu.com/ubuntu", ("noble-security",), ("main", "universe"))]
    # the azure.sbom example is there, commented out (the shipped catalogue must parse without a wasb connection)
    assert all(s.azure.sbom is None for s in specs.values() if s.azure)
    text = DEFAULT_CATALOGUE.read_text()
    assert "      # sbom:\n      #   conn_id: wasb_bakery_sboms" in text


def test_signed_by_names_a_deb_archives_keyring_and_the_shipped_debian_mirrors_use_it():
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    spec = parse({"mirrors": [{"url": "http://deb.debian.org/debian", "suites": ["bookworm"], "signed_by": keyring}]})
    assert spec.packages.mirrors[0].signed_by == keyring
    assert parse({"mirrors": [{"url": "http://a/debian", "suites": ["bookworm"]}]}).packages.mirrors[0].signed_by is None
    debian = load_catalogue(DEFAULT_CATALOGUE)["debian12-nginx"].packages.mirrors
    assert [m.signed_by for m in debian] == [keyring, keyring]
    (relative,) = problems({"mirrors": [{"url": "http://a/debian", "suites": ["bookworm"], "signed_by": "keyring.gpg"}]})
    assert relative.startswith("image 'img', field 'packages.mirrors.0.signed_by': 'keyring.gpg' is not an absolute "
                               "path in the build guest to the keyring that signs this archive"), relative
    (spaced,) = problems({"mirrors": [{"url": "http://a/debian", "suites": ["bookworm"], "signed_by": "/a b] x"}]})
    assert "field 'packages.mirrors.0.signed_by'" in spaced  # nothing can end apt's [options] early
    assert problems({"mirrors": [{"url": "http://a/debian", "suites": ["bookworm"], "trusted": True,
                                  "signed_by": keyring}]}) == [
        "image 'img', field 'packages.mirrors.0': trusted and signed_by together: trusted: true skips the signature "
        "check that signed_by names the keyring for; keep one"]
    assert problems({"family": "rpm", "mirrors": [{"url": f"{ALMA}/BaseOS/x86_64/os", "signed_by": keyring}]}) == [
        "image 'img', field 'packages.mirrors.0.signed_by': not used for family rpm: dnf checks a repository with the "
        "keys of the guest's own repository configuration (gpgkey); remove signed_by"]


def test_index_max_age_hours_defaults_to_6_and_refuses_out_of_range_values():
    assert parse({}).packages.index_max_age_hours == 6
    assert parse({"index_max_age_hours": 0}).packages.index_max_age_hours == 0
    for bad in (-1, 169, "6h"):
        found = problems({"index_max_age_hours": bad})
        assert len(found) == 1 and "field 'packages.index_max_age_hours'" in found[0], found
