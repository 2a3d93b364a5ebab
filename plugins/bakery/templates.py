"""Each image family's Packer folder, rendered from shared Jinja2 sources (no Airflow import).

Packer reads one folder per build, so folders of families that share a builder used to repeat each
other's variables, source block, ``init/`` and scripts. Now a family is one small file and the
folder is rendered from what the families share::

    include/packer/<family>/family.yaml     what the family is: title, builder, source name, package
                                            tool; Azure: image name, base image, purchase plan
    include/packer/shared/                  the sources every family renders from
      template.pkr.hcl.j2                     -> <family>.pkr.hcl (packer, locals, source, build)
      <builder>/_builder.j2                   the builder's parts of it (imported, not rendered)
      <builder>/variables.pkr.hcl.j2          -> variables.pkr.hcl
      <builder>/scripts/*, <builder>/README.md.j2   -> scripts/*, README.md
      init/required_plugins.pkr.hcl.j2        -> init/required_plugins.pkr.hcl (current Packer only)
      scripts/provision.sh.j2                 -> scripts/provision.sh
      capture-packages.sh                     -> scripts/capture-packages.sh (verbatim)

``*.j2`` files are rendered with the family (``family.name``, ``family.builder``, ...), other files
copied as they are; a name starting with ``_`` is a partial. The bake's ``prepare`` renders the
folder into the run's work folder and digests it (``bakery.bake.template_digest``): what Packer
reads is exactly what the digest covers. ``python -m bakery.templates FAMILY FOLDER`` renders one by
hand (to read it, or to run ``packer`` on it).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bakery.paths import REPO_ROOT

PACKER_DIR = REPO_ROOT / "include" / "packer"
SHARED = "shared"
FAMILY_FILE = "family.yaml"
BUILDERS = ("qemu", "azure-arm")
PACKAGE_TOOLS = ("apt", "dnf")
# family.yaml: field -> (required for which builders, type)
FIELDS: dict[str, tuple[tuple[str, ...], type]] = {
    "title": (BUILDERS, str),
    "builder": (BUILDERS, str),
    "source": (BUILDERS, str),
    "packages": (BUILDERS, str),
    "os": (("azure-arm",), str),
    "image_name": (("azure-arm",), str),
    "base_image": (("azure-arm",), dict),
    "plan": ((), dict),
}
SCRIPT_MODE, FILE_MODE = 0o755, 0o644


class TemplateError(ValueError):
    """A family file or a shared source is wrong; the message names the file and the field."""


@dataclass(frozen=True)
class Family:
    name: str
    builder: str
    data: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, item: str) -> Any:  # family.title, family.base_image, ... in the templates
        try:
            return self.data[item]
        except KeyError:
            raise AttributeError(item) from None


def family_name(spec_or_family: Any) -> str:
    """The family of a catalogue entry (its ``template`` field), or a family name as it is."""
    return spec_or_family if isinstance(spec_or_family, str) else spec_or_family.template


def sources_dir(spec_or_family: Any, packer_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the family files and the shared sources are: ``packer_dir``; else, for a catalogue entry,
    the folder holding its family folder (``template_dir``) when it has the shared sources; else
    include/packer."""
    if packer_dir is not None:
        return Path(packer_dir)
    folder = getattr(spec_or_family, "template_dir", None)
    if folder is not None and (Path(folder).parent / SHARED).is_dir():
        return Path(folder).parent
    return PACKER_DIR


def load_family(name: str, packer_dir: Path = PACKER_DIR) -> Family:
    import yaml

    path = Path(packer_dir) / name / FAMILY_FILE
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise TemplateError(f"image family {name!r}: cannot read {path} ({exc.strerror}); every folder under "
                            f"{packer_dir} that a catalogue entry names as its template holds a {FAMILY_FILE}") from None
    if not isinstance(data, dict):
        raise TemplateError(f"{path}: expected a mapping of fields ({', '.join(FIELDS)})")
    problems = [f"unknown field {k!r} (known: {', '.join(FIELDS)})" for k in data if k not in FIELDS]
    builder = data.get("builder")
    if builder not in BUILDERS:
        problems.append(f"field 'builder': {builder!r} is not one of {', '.join(BUILDERS)}")
    if data.get("packages") not in PACKAGE_TOOLS:
        problems.append(f"field 'packages': {data.get('packages')!r} is not one of {', '.join(PACKAGE_TOOLS)}")
    for key, (required_for, kind) in FIELDS.items():
        if key not in data:
            if builder in required_for:
                problems.append(f"field {key!r} is required for the {builder} builder")
        elif not isinstance(data[key], kind):
            problems.append(f"field {key!r} must be a {kind.__name__}, is {type(data[key]).__name__}")
    if problems:
        raise TemplateError(f"{path}:\n  - " + "\n  - ".join(problems))
    return Family(name=name, builder=builder, data={**dict.fromkeys(FIELDS), **data, "name": name})


def _outputs(family: Family, shared: Path) -> dict[str, Path]:
    """Rendered path -> source file, for the family's builder."""
    out: dict[str, Path] = {}
    for src in sorted(p for p in shared.rglob("*") if p.is_file()):
        rel = src.relative_to(shared)
        if src.name.startswith((".", "_")) or rel.parts[0] in BUILDERS and rel.parts[0] != family.builder:
            continue
        if rel.parts[0] == family.builder:
            rel = Path(*rel.parts[1:])
        name = rel.as_posix().removesuffix(".j2")
        if name == "template.pkr.hcl":
            name = f"{family.name}.pkr.hcl"
        elif name == "capture-packages.sh":
            name = "scripts/capture-packages.sh"
        if name in out:
            raise TemplateError(f"{src} and {out[name]} both render {name}")
        out[name] = src
    return out


def rendered_files(spec_or_family: Any, packer_dir: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The family's Packer folder in memory: relative path -> text."""
    import jinja2

    packer_dir = sources_dir(spec_or_family, packer_dir)
    family = load_family(family_name(spec_or_family), packer_dir)
    shared = packer_dir / SHARED
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(shared)), undefined=jinja2.StrictUndefined, autoescape=False,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )
    files: dict[str, str] = {}
    for name, src in _outputs(family, shared).items():
        if src.suffix != ".j2":
            files[name] = src.read_text()
            continue
        try:
            files[name] = env.get_template(src.relative_to(shared).as_posix()).render(family=family)
        except jinja2.TemplateError as exc:
            where = f"{getattr(exc, 'filename', None) or src}" + (f":{exc.lineno}" if getattr(exc, "lineno", None) else "")
            raise TemplateError(f"rendering {name} of image family {family.name!r}: {where}: {exc}") from None
    return files


def render(spec_or_family: Any, dest: str | os.PathLike[str], *, packer_dir: str | os.PathLike[str] | None = None) -> Path:
    """Write the family's Packer folder to ``dest``, replacing whatever is there (atomically: a
    complete folder is renamed into place). Returns ``dest``."""
    dest = Path(dest)
    files = rendered_files(spec_or_family, packer_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        for name, text in files.items():
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(SCRIPT_MODE if name.endswith(".sh") else FILE_MODE)
        tmp.chmod(0o755)
        if dest.exists():
            old = dest.with_name(f".{dest.name}-old-{os.getpid()}")
            os.rename(dest, old)
            os.rename(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def families(packer_dir: Path | None = None) -> list[str]:
    """Every family under ``packer_dir`` (a folder with a family.yaml)."""
    return sorted(p.parent.name for p in Path(packer_dir or PACKER_DIR).glob(f"*/{FAMILY_FILE}"))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(f"usage: python -m bakery.templates FAMILY FOLDER   (families: {', '.join(families())})", file=sys.stderr)
        return 2
    try:
        print(render(args[0], args[1]))
    except TemplateError as exc:
        print(f"bakery.templates: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
