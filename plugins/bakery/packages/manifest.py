"""The package manifest of an image version: every installed package, captured in the guest.

The guest writes a small tab-separated file at the end of provisioning
(``include/packer/shared/capture-packages.sh``; Packer downloads it next to the build)::

    format	bakery-packages/1
    family	deb                      (deb: dpkg; rpm: the RHEL family)
    os	debian	12                   (/etc/os-release ID and VERSION_ID)
    pkg	<name>	<version>	<arch>	<source package>	<source version>
    ...

Here it becomes a :class:`Manifest` (sorted, with a digest over its canonical JSON), stored as
``packages.json`` with the version; :func:`diff` compares two (added, removed, upgraded,
downgraded, version-compared by the family's own rules: ``python-debian`` for deb,
``rpm-vercmp`` for rpm). No Airflow import here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

FORMAT = "bakery-packages/1"
MANIFEST_NAME = "packages.json"  # a version's manifest file (gallery, work folder)
SBOM_NAME = "sbom.cdx.json"  # its CycloneDX SBOM (bakery.packages.sbom)
FAMILIES = ("deb", "rpm")


class ManifestError(ValueError):
    pass


@dataclass(frozen=True, order=True)
class Package:
    name: str
    arch: str
    version: str
    source: str = ""
    source_version: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.arch)


@dataclass(frozen=True)
class Manifest:
    family: str
    packages: tuple[Package, ...]
    os_id: str = ""
    os_version: str = ""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ManifestError(f"package family {self.family!r} is not one of {', '.join(FAMILIES)}")
        object.__setattr__(self, "packages", tuple(sorted(self.packages)))
        seen: set[tuple[str, str]] = set()
        for p in self.packages:
            if p.key in seen:
                raise ManifestError(f"package {p.name} ({p.arch}) is listed twice")
            seen.add(p.key)

    # ---- identity ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "family": self.family,
            "os": {"id": self.os_id, "version_id": self.os_version},
            "packages": [asdict(p) for p in self.packages],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"

    @property
    def digest(self) -> str:
        """sha256 over the canonical JSON of the package set (what the Azure tag and check use)."""
        canonical = json.dumps(
            {"family": self.family, "packages": [asdict(p) for p in self.packages]},
            sort_keys=True, separators=(",", ":"),
        )
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    def by_key(self) -> dict[tuple[str, str], Package]:
        return {p.key: p for p in self.packages}

    def names(self) -> set[str]:
        return {p.name for p in self.packages}

    def __len__(self) -> int:
        return len(self.packages)

    # ---- reading ----------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format") != FORMAT:
            raise ManifestError(f"not a bakery package manifest (format {data.get('format')!r}, expected {FORMAT})")
        os_info = data.get("os") or {}
        try:
            packages = tuple(Package(**p) for p in data["packages"])
            family = data["family"]
        except (KeyError, TypeError) as exc:
            raise ManifestError(f"malformed bakery package manifest: {exc}") from None
        return cls(family=family, packages=packages, os_id=os_info.get("id", ""),
                   os_version=os_info.get("version_id", ""))

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
        return path


def parse_capture(text: str, *, where: str = "the package list") -> Manifest:
    """Parse the guest's capture file (format above); errors say which line is wrong."""
    family = os_id = os_version = ""
    fmt = ""
    packages: list[Package] = []
    line_of: dict[tuple[str, str], int] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        fields = raw.split("\t")
        kind = fields[0]
        if kind == "format":
            fmt = fields[1] if len(fields) > 1 else ""
        elif kind == "family":
            family = fields[1] if len(fields) > 1 else ""
        elif kind == "os":
            os_id = fields[1] if len(fields) > 1 else ""
            os_version = fields[2] if len(fields) > 2 else ""
        elif kind == "pkg":
            if len(fields) < 4 or not all(fields[1:4]):
                raise ManifestError(f"{where}, line {n}: expected 'pkg<TAB>name<TAB>version<TAB>arch[...]', got {raw!r}")
            name, version, arch = fields[1], fields[2], fields[3]
            source = fields[4] if len(fields) > 4 and fields[4] else name
            source_version = fields[5] if len(fields) > 5 and fields[5] else version
            package = Package(name=name, arch=arch, version=version, source=source, source_version=source_version)
            if package.key in line_of:
                raise ManifestError(f"{where}, line {n}: package {name} ({arch}) is already listed on line "
                                    f"{line_of[package.key]}")
            line_of[package.key] = n
            packages.append(package)
        else:
            raise ManifestError(f"{where}, line {n}: unknown record {kind!r}")
    if fmt != FORMAT:
        raise ManifestError(f"{where}: no 'format\t{FORMAT}' line (got {fmt!r}); was it written by capture-packages.sh?")
    if family not in FAMILIES:
        raise ManifestError(f"{where}: the 'family' line says {family!r}, expected one of {', '.join(FAMILIES)}")
    if not packages:
        raise ManifestError(f"{where}: lists no installed package")
    return Manifest(family=family, packages=tuple(packages), os_id=os_id, os_version=os_version)


# ---- version comparison ---------------------------------------------------------------------------
def compare_versions(family: str, a: str, b: str) -> int:
    """<0, 0, >0 as ``a`` is older than, equal to, newer than ``b`` by the family's rules."""
    if family == "deb":
        from debian.debian_support import version_compare

        return version_compare(a, b)
    if family == "rpm":
        from rpm_vercmp import vercmp

        # rpm compares epoch, then version, then release, each on its own: one rpmvercmp over
        # "version-release" would rank 1.0-2 above 1.0.1-1
        (ea, va, ra), (eb, vb, rb) = _rpm_evr(a), _rpm_evr(b)
        if ea != eb:
            return ea - eb
        return vercmp(va, vb) or vercmp(ra, rb)
    raise ManifestError(f"unknown package family {family!r}")


def _rpm_evr(evr: str) -> tuple[int, str, str]:
    """``'1:1.20.1-14.el9'`` -> ``(1, '1.20.1', '14.el9')``; no epoch is epoch 0."""
    epoch, sep, rest = evr.partition(":")
    if not sep:
        epoch, rest = "0", evr
    if not epoch.isdigit():
        raise ManifestError(f"rpm version {evr!r}: the epoch {epoch!r} is not a number")
    version, sep, release = rest.rpartition("-")
    if not sep:
        version, release = rest, ""
    return int(epoch), version, release


# ---- diff -------------------------------------------------------------------------------------------
@dataclass
class Change:
    name: str
    arch: str
    old: str
    new: str


@dataclass
class ManifestDiff:
    added: list[Package] = field(default_factory=list)
    removed: list[Package] = field(default_factory=list)
    upgraded: list[Change] = field(default_factory=list)
    downgraded: list[Change] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.upgraded or self.downgraded)

    def summary(self) -> str:
        return (f"{len(self.added)} added, {len(self.removed)} removed, "
                f"{len(self.upgraded)} upgraded, {len(self.downgraded)} downgraded")

    def lines(self) -> list[str]:
        out = [f"+ {p.name} {p.version} ({p.arch})" for p in self.added]
        out += [f"- {p.name} {p.version} ({p.arch})" for p in self.removed]
        out += [f"^ {c.name} {c.old} -> {c.new} ({c.arch})" for c in self.upgraded]
        out += [f"v {c.name} {c.old} -> {c.new} ({c.arch})" for c in self.downgraded]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": [asdict(p) for p in self.added],
            "removed": [asdict(p) for p in self.removed],
            "upgraded": [asdict(c) for c in self.upgraded],
            "downgraded": [asdict(c) for c in self.downgraded],
        }


def diff(old: Manifest, new: Manifest) -> ManifestDiff:
    """What changed from ``old`` to ``new`` (packages matched by name and architecture)."""
    if old.family != new.family:
        raise ManifestError(f"cannot compare a {old.family} manifest with a {new.family} one")
    a, b = old.by_key(), new.by_key()
    d = ManifestDiff()
    d.added = [b[k] for k in sorted(b.keys() - a.keys())]
    d.removed = [a[k] for k in sorted(a.keys() - b.keys())]
    for k in sorted(a.keys() & b.keys()):
        o, n = a[k], b[k]
        if o.version == n.version:
            continue
        order = compare_versions(new.family, n.version, o.version)
        if order == 0:  # spelled differently, equal by the family's rules (e.g. rpm 0:1.0-1 and 1.0-1)
            continue
        (d.upgraded if order > 0 else d.downgraded).append(Change(n.name, n.arch, o.version, n.version))
    return d


def format_diff(d: ManifestDiff, old_label: str, new_label: str, limit: int | None = None) -> str:
    """Human text: a summary line, then one line per change (``limit`` caps the lines shown)."""
    lines = d.lines()
    head = f"packages {old_label} -> {new_label}: " + ("no change" if d.empty else d.summary())
    if limit is not None and len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more"]
    return "\n".join([head, *("  " + line for line in lines)])


def manifest_of(packages: Iterable[Package], family: str = "deb") -> Manifest:
    """Convenience for tests and tools."""
    return Manifest(family=family, packages=tuple(packages))
