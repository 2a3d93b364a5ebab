"""Small command line for people: ``python -m bakery.cli show IMAGE`` / ``versions IMAGE``."""

from __future__ import annotations

import argparse
import json
import sys

from bakery.catalogue import UnknownImageError, get_image
from bakery.targets.local import LocalTarget


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bakery")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("show", "versions"):
        p = sub.add_parser(name)
        p.add_argument("image")
    args = ap.parse_args(argv)
    try:
        get_image(args.image)
    except UnknownImageError as exc:
        print(f"bakery: {exc}", file=sys.stderr)
        return 2
    target = LocalTarget()
    if args.cmd == "versions":
        for v in target.list_versions(args.image):
            print(f"{v.version}\t{v.created}\t{'pinned' if v.pinned else ''}\t{v.published_id}")
        return 0
    latest = target.latest(args.image)
    if latest is None:
        print(f"bakery: {args.image} has no published version in {target.gallery}", file=sys.stderr)
        return 1
    meta = target.metadata(args.image, latest)
    smoke = meta.get("smoke_test") or {}
    print(f"image:      {args.image}")
    print(f"version:    {latest} (latest)")
    print(f"disk:       {target.gallery / args.image / latest / meta['disk']}")
    print(f"metadata:   {target.gallery / args.image / latest / 'metadata.json'}")
    print(f"smoke test: {'PASSED' if smoke.get('passed') else 'FAILED'} in {smoke.get('seconds')}s ({smoke.get('detail', '')[:80]})")
    print(f"provenance: {json.dumps({k: meta.get(k) for k in ('template_digest', 'base_digest', 'packer_run_uuid', 'dag_run_id', 'run_type')})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
