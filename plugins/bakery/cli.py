"""Small command line for people (``python -m bakery.cli``, or ``scripts/bakery``)::

    bakery show IMAGE                   the latest version and its provenance
    bakery versions IMAGE               every published version
    bakery packages IMAGE VERSION       the version's package manifest, ``name version arch``
    bakery diff IMAGE V1 V2 [--json]    what changed in the packages from V1 to V2
    bakery sbom IMAGE VERSION [--validate]   the path of the version's CycloneDX SBOM

A VERSION may be ``latest``. Everything is read from the local gallery (``$BAKERY_GALLERY``,
default ``$BAKERY_HOME/gallery``). Exit status: 0 done, 1 a version or file is missing or broken,
2 usage (unknown image, bad arguments).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from bakery.catalogue import UnknownImageError, get_image
from bakery.packages.manifest import MANIFEST_NAME, Manifest, ManifestError, diff, format_diff
from bakery.targets.local import LocalTarget
from bakery.versioning import VersionError, parse_version

PROVENANCE_KEYS = ("template_digest", "base_digest", "packer_run_uuid", "dag_run_id", "run_type")


class CliError(Exception):
    """A failure the user can act on: printed as ``bakery: <message>``, exit status 1."""


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="bakery", description="Inspect the images in the local gallery.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("show", help="the latest version and its provenance").add_argument("image")
    sub.add_parser("versions", help="every published version").add_argument("image")
    p = sub.add_parser("packages", help="the package manifest of a version")
    p.add_argument("image")
    p.add_argument("version", help="a published version, or 'latest'")
    p = sub.add_parser("diff", help="package changes from one version to another")
    p.add_argument("image")
    p.add_argument("old", metavar="V1", help="the older version (or 'latest')")
    p.add_argument("new", metavar="V2", help="the newer version (or 'latest')")
    p.add_argument("--json", action="store_true", help="print the changes as JSON")
    p = sub.add_parser("sbom", help="the path of a version's CycloneDX SBOM")
    p.add_argument("image")
    p.add_argument("version", help="a published version, or 'latest'")
    p.add_argument("--validate", action="store_true", help="also check it against the CycloneDX 1.6 schema")
    p = sub.add_parser("turn", help="which DAG run holds the image's turn (one bake at a time)")
    p.add_argument("image")
    p.add_argument("--release", metavar="RUN_ID",
                   help="give the turn back for RUN_ID (a run that can no longer do it: killed outside Airflow)")
    return ap


# ---- reading the gallery ----------------------------------------------------------------------------
def _version_dir(target: LocalTarget, image: str, version: str) -> Path:
    """The folder of a published version (``latest`` resolved); the version string is checked first."""
    if version == "latest":
        latest = target.latest(image)
        if latest is None:
            raise CliError(f"{image} has no published version in {target.gallery} (no 'latest' link)")
        version = latest
    try:
        parse_version(version)
    except VersionError as exc:
        raise CliError(str(exc)) from None
    return target.gallery / image / version


def _version_file(target: LocalTarget, image: str, version: str, name: str, what: str) -> Path:
    path = _version_dir(target, image, version) / name
    if not path.is_file():
        why = "that version has none" if path.parent.is_dir() else "no such version is published"
        raise CliError(f"no {what} for {image} {version}: {path} does not exist ({why})")
    return path


def _load_manifest(target: LocalTarget, image: str, version: str) -> Manifest:
    path = _version_file(target, image, version, MANIFEST_NAME, "package manifest")
    try:
        return Manifest.load(path)
    except (ManifestError, ValueError) as exc:
        raise CliError(f"{path} is not a readable package manifest: {exc}") from None


# ---- commands -----------------------------------------------------------------------------------------
def _cmd_versions(target: LocalTarget, args: argparse.Namespace) -> int:
    for v in target.list_versions(args.image):
        print(f"{v.version}\t{v.created}\t{'pinned' if v.pinned else ''}\t{v.published_id}")
    return 0


def _cmd_show(target: LocalTarget, args: argparse.Namespace) -> int:
    latest = target.latest(args.image)
    if latest is None:
        raise CliError(f"{args.image} has no published version in {target.gallery}")
    meta = target.metadata(args.image, latest)
    smoke = meta.get("smoke_test") or {}
    provenance = {k: meta.get(k) for k in PROVENANCE_KEYS}
    print(f"image:      {args.image}")
    print(f"version:    {latest} (latest)")
    print(f"disk:       {target.gallery / args.image / latest / meta['disk']}")
    print(f"metadata:   {target.gallery / args.image / latest / 'metadata.json'}")
    print(f"smoke test: {'PASSED' if smoke.get('passed') else 'FAILED'} in {smoke.get('seconds')}s ({smoke.get('detail', '')[:80]})")
    print(f"provenance: {json.dumps(provenance)}")
    return 0


def _cmd_packages(target: LocalTarget, args: argparse.Namespace) -> int:
    for p in _load_manifest(target, args.image, args.version).packages:
        print(f"{p.name} {p.version} {p.arch}")
    return 0


def _cmd_diff(target: LocalTarget, args: argparse.Namespace) -> int:
    old = _load_manifest(target, args.image, args.old)
    new = _load_manifest(target, args.image, args.new)
    try:
        changes = diff(old, new)
    except ManifestError as exc:
        raise CliError(f"cannot compare {args.image} {args.old} with {args.new}: {exc}") from None
    if args.json:
        print(json.dumps(changes.to_dict(), indent=2, sort_keys=True))
    else:
        print(format_diff(changes, args.old, args.new))
    return 0


def _cmd_sbom(target: LocalTarget, args: argparse.Namespace) -> int:
    from bakery.packages import sbom  # cyclonedx and jsonschema take a second to import: only here

    path = _version_file(target, args.image, args.version, sbom.SBOM_NAME, "SBOM")
    print(path)
    if args.validate:
        try:
            sbom.validate_sbom(path.read_text())
        except sbom.SbomError as exc:
            raise CliError(f"{path}: {exc}") from None
        print(f"{path.name}: valid CycloneDX {sbom.SCHEMA_VERSION.to_version()}")
    return 0


def _cmd_turn(target: LocalTarget, args: argparse.Namespace) -> int:
    from bakery.turns import Holder, ImageTurn

    turn = ImageTurn(args.image)
    holder = turn.holder()
    if args.release:
        if holder is None or holder.run_id != args.release:
            raise CliError(f"{args.image}: the turn is held by {holder.run_id if holder else 'no run'}, not {args.release}")
        turn.give_back(Holder(holder.dag_id, args.release))
        print(f"{args.image}: turn of {args.release} given back")
        return 0
    print(f"{args.image}: " + (f"held by run {holder.run_id} of {holder.dag_id} since {holder.since}" if holder else "free"))
    return 0


COMMANDS: dict[str, Callable[[LocalTarget, argparse.Namespace], int]] = {
    "show": _cmd_show,
    "versions": _cmd_versions,
    "packages": _cmd_packages,
    "diff": _cmd_diff,
    "sbom": _cmd_sbom,
    "turn": _cmd_turn,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        get_image(args.image)
    except UnknownImageError as exc:
        print(f"bakery: {exc}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.cmd](LocalTarget(), args)
    except CliError as exc:
        print(f"bakery: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
