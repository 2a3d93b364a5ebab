"""A CycloneDX 1.6 SBOM of an image version, derived from its package manifest.

Built with ``cyclonedx-python-lib`` (model + JSON outputter) and checked with the library's own
strict JSON-schema validator; nothing here writes CycloneDX JSON by hand. The document describes
the image as ``metadata.component`` (type ``operating-system``) that depends on one ``library``
component per installed package, identified by its package URL::

    pkg:deb/debian/libssl3@3.0.15-1~deb12u1?arch=amd64&distro=debian-12&upstream=openssl
    pkg:rpm/almalinux/nginx@1.20.1-14.el9_2.1?arch=x86_64&distro=almalinux-9.4&epoch=1

(qualifiers in the purl spec's canonical, sorted order; ``upstream`` names the source package when
it differs from the binary one, with ``@<source version>`` when that differs too). The serial
number is a UUIDv5 over image, version and manifest digest, so equal inputs give byte-equal
documents (pass ``created`` to pin the timestamp too). No Airflow import here.
"""

from __future__ import annotations

import functools
import json
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cyclonedx.model import Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output import make_outputter
from cyclonedx.schema import OutputFormat, SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from bakery.packages.manifest import SBOM_NAME, Manifest, Package  # noqa: F401 - SBOM_NAME re-exported

SCHEMA_VERSION = SchemaVersion.V1_6
# fixed namespace of the bakery's SBOM serial numbers (uuid5 of a name of our own)
SERIAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:bakery:sbom")


class SbomError(ValueError):
    pass


# ---- package URLs -----------------------------------------------------------------------------------
def _distro(manifest: Manifest) -> str:
    if not manifest.os_id:
        return ""
    return f"{manifest.os_id}-{manifest.os_version}" if manifest.os_version else manifest.os_id


def _upstream(package: Package, *, with_version: bool) -> str:
    """The purl ``upstream`` qualifier: the source package when it is not the binary package itself,
    ``source@source_version`` (``with_version``) when the source version differs (e.g. a binNMU)."""
    source = package.source or package.name
    source_version = package.source_version or package.version
    if with_version and source_version != package.version:
        return f"{source}@{source_version}"
    return source if source != package.name else ""


def split_epoch(version: str) -> tuple[str, str]:
    """``'1:1.20.1-14.el9'`` -> ``('1', '1.20.1-14.el9')``; no epoch -> ``('', version)``."""
    epoch, sep, rest = version.partition(":")
    if sep and epoch.isdigit():
        return epoch, rest
    return "", version


def package_purl(manifest: Manifest, package: Package) -> PackageURL:
    """The package URL of one package of ``manifest`` (``pkg:deb/...`` or ``pkg:rpm/...``)."""
    qualifiers = {"arch": package.arch}
    version = package.version
    if manifest.family == "rpm":
        epoch, version = split_epoch(package.version)
        if epoch:
            qualifiers["epoch"] = epoch
    if distro := _distro(manifest):
        qualifiers["distro"] = distro
    # deb: source version in the qualifier (Syft's convention); rpm sources carry their own version
    if upstream := _upstream(package, with_version=manifest.family == "deb"):
        qualifiers["upstream"] = upstream
    return PackageURL(type=manifest.family, namespace=manifest.os_id or None, name=package.name,
                      version=version, qualifiers=qualifiers)


# ---- the document -----------------------------------------------------------------------------------
def serial_number(manifest: Manifest, *, image: str, version: str) -> uuid.UUID:
    return uuid.uuid5(SERIAL_NAMESPACE, f"{image}\n{version}\n{manifest.digest}")


def _package_component(manifest: Manifest, package: Package) -> Component:
    purl = package_purl(manifest, package)
    props = []
    if package.source:
        props.append(Property(name="bakery:package:source", value=package.source))
    if package.source_version:
        props.append(Property(name="bakery:package:source-version", value=package.source_version))
    return Component(type=ComponentType.LIBRARY, name=package.name, version=package.version,
                     purl=purl, bom_ref=purl.to_string(), properties=props)


def _image_component(manifest: Manifest, *, image: str, version: str) -> Component:
    props = [Property(name="bakery:package-family", value=manifest.family),
             Property(name="bakery:manifest-digest", value=manifest.digest)]
    if manifest.os_id:
        props.append(Property(name="bakery:os", value=_distro(manifest)))
    return Component(type=ComponentType.OPERATING_SYSTEM, name=image, version=version,
                     bom_ref=f"bakery-image:{image}@{version}", properties=props)


def _utc(created: datetime | None) -> datetime:
    if created is None:
        return datetime.now(timezone.utc).replace(microsecond=0)
    if created.tzinfo is None:  # the bakery's naive times are UTC
        return created.replace(tzinfo=timezone.utc)
    return created.astimezone(timezone.utc)


def build_bom(manifest: Manifest, *, image: str, version: str, created: datetime | None = None,
              properties: dict[str, str] | None = None) -> Bom:
    """The library's :class:`Bom` of an image version (see :func:`build_sbom`)."""
    root = _image_component(manifest, image=image, version=version)
    components = [_package_component(manifest, p) for p in manifest.packages]
    metadata = BomMetaData(
        component=root,
        timestamp=_utc(created),
        properties=[Property(name=k, value=v) for k, v in sorted((properties or {}).items())],
        tools=ToolRepository(components=[Component(type=ComponentType.APPLICATION, name="bakery")]),
    )
    bom = Bom(serial_number=serial_number(manifest, image=image, version=version),
              metadata=metadata, components=components)
    # we know what the image contains, not which package pulled in which: the root depends on all
    bom.register_dependency(root, components)
    return bom


def build_sbom(manifest: Manifest, *, image: str, version: str, created: datetime | None = None,
               properties: dict[str, str] | None = None) -> str:
    """A CycloneDX 1.6 JSON document of the image version ``image``/``version``.

    ``created`` is ``metadata.timestamp`` (default now, UTC); ``properties`` become
    ``metadata.properties`` (e.g. ``bakery:inputs``, ``bakery:template-digest``).
    """
    bom = build_bom(manifest, image=image, version=version, created=created, properties=properties)
    outputter = make_outputter(bom, OutputFormat.JSON, SCHEMA_VERSION)
    return outputter.output_as_string(indent=2) + "\n"


# ---- validation and files ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _validator() -> JsonStrictValidator:
    return JsonStrictValidator(SCHEMA_VERSION)


def _describe(error: Any) -> str:
    data = error.data  # the jsonschema ValidationError; its str() dumps the whole schema
    where = getattr(data, "json_path", "") or "$"
    return f"at {where}: {getattr(data, 'message', str(data))}"


def validate_sbom(text: str) -> None:
    """Raise :class:`SbomError` unless ``text`` is a valid CycloneDX 1.6 JSON document (strict)."""
    try:
        json.loads(text)
    except ValueError as exc:
        raise SbomError(f"SBOM is not JSON: {exc}") from None
    error = _validator().validate_str(text)
    if error is not None:
        raise SbomError(f"SBOM is not valid CycloneDX {SCHEMA_VERSION.to_version()}: {_describe(error)}")


def write_sbom(manifest: Manifest, path: str | Path, **kw: Any) -> Path:
    """Build (see :func:`build_sbom` for ``kw``), validate and write the SBOM atomically."""
    path = Path(path)
    text = build_sbom(manifest, **kw)
    validate_sbom(text)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
