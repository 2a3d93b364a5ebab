"""Cheap checks of a bake's inputs before anything is built (no Airflow import).

``bakery.bake.prepare`` runs :func:`run` first, before the target's own preparation (the local
base image build, the Azure infrastructure check), so that a bake with bad input fails in its
first task, in seconds, with a message that says what is wrong, where, and how to fix it:

* the tools the image's target needs are on this worker's ``PATH`` (Packer; for the local target
  QEMU and ``qemu-img``), naming the Debian package of each missing one (the build's ephemeral SSH
  key is made in Python, ``bakery.sshkey``: no ``ssh-keygen`` needed);
* every catalogue ``variables`` entry is declared by the image's Packer template, the folder the
  bake renders for its family (Packer itself only warns about an undeclared one and goes on
  without it).

:func:`check_base_image` is for the local target's Packer tasks: the base image ``prepare``
recorded must still be there when ``validate`` / ``build`` start.

What the catalogue schema checks (fields, types, ranges, cron, regions, CIDRs) is in
``bakery.catalogue``; the Azure resources and the connection are checked by the Azure target's
``prepare`` (``check_infrastructure``), against Azure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bakery.paths import REPO_ROOT, bakery_home


class PreflightError(ValueError):
    """Bad input found before the build; the message says what, where and how to fix it."""


# tool -> (Debian package, what the bakery needs it for)
TOOLS: dict[str, tuple[str, str]] = {
    "packer": ("packer", "runs the Packer templates (validate, build)"),
    "qemu-system-x86_64": ("qemu-system-x86", "boots the build VM and the smoke-test VM of the local target"),
    "qemu-img": ("qemu-utils", "reads and converts the local target's qcow2 disks"),
}
TARGET_TOOLS: dict[str, tuple[str, ...]] = {
    "local": ("packer", "qemu-system-x86_64", "qemu-img"),
    "azure": ("packer",),
}
BASE_IMAGE_SCRIPT = REPO_ROOT / "scripts" / "build-base-image.sh"
_VARIABLE_BLOCK = re.compile(r'^\s*variable\s+"([^"]+)"\s*\{', re.MULTILINE)


def check_tools(spec: Any, path: str | None = None) -> None:
    """Every tool the image's target needs is on ``path`` (default: this process's ``PATH``)."""
    path = os.environ.get("PATH", "") if path is None else path
    missing = [t for t in TARGET_TOOLS.get(spec.target, ("packer",)) if shutil.which(t, path=path) is None]
    if not missing:
        return
    lines = []
    for tool in missing:
        package, why = TOOLS[tool]
        lines.append(f"{tool} is not on PATH (it {why}): install the Debian package {package} "
                     f"(apt-get install -y {package})")
    hint = ("Packer: the Debian package packer (1.6.6) or HashiCorp's build (https://developer.hashicorp.com/packer/install); "
            if "packer" in missing else "")
    raise PreflightError(
        f"image {spec.name!r} (target {spec.target}) cannot be baked on this worker:\n  - "
        + "\n  - ".join(lines)
        + f"\n{hint}scripts/setup.sh installs all of them (the docker-compose image has them). "
        f"PATH of this worker: {path or '(empty)'}"
    )


def declared_variables(template_dir: str | os.PathLike[str]) -> set[str]:
    """The variables a template folder declares (``variable "x" {`` in ``*.pkr.hcl``, ``*.pkr.json``).

    Packer reads only the folder's own files (not sub-folders), so neither does this.
    """
    folder = Path(template_dir)
    texts = {f.name: f.read_text(errors="replace") for f in sorted(folder.glob("*.pkr.hcl"))}
    texts.update({f.name: f.read_text(errors="replace") for f in sorted(folder.glob("*.pkr.json"))})
    return _declared(texts)


def _declared(files: Mapping[str, str]) -> set[str]:
    """The variables declared by a folder's top-level files (name -> text), as Packer reads them."""
    names: set[str] = set()
    for name, text in sorted(files.items()):
        if "/" in name:
            continue  # a sub-folder (init/): not part of the template
        if name.endswith(".pkr.hcl"):
            code = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith(("#", "//")))
            names.update(_VARIABLE_BLOCK.findall(code))
        elif name.endswith(".pkr.json"):
            try:
                data = json.loads(text)
            except ValueError:
                continue  # packer validate reports a broken file with its own message
            block = data.get("variable") if isinstance(data, dict) else None
            if isinstance(block, dict):
                names.update(block)
    return names


def check_variables(spec: Any) -> None:
    """Every ``variables`` entry of the image's catalogue entry is declared by its template: the
    Packer folder the bake renders for the image's family (``bakery.templates``), read in memory."""
    if not spec.variables:
        return
    from bakery import templates

    declared = _declared(templates.rendered_files(spec))
    unknown = sorted(set(spec.variables) - declared)
    if not unknown:
        return
    family = templates.load_family(templates.family_name(spec), templates.sources_dir(spec))
    where = f"{spec.catalogue_path}: " if getattr(spec, "catalogue_path", None) else ""
    problems = [
        f"{where}image {spec.name!r}, field 'variables.{name}': the template {spec.template} ({spec.template_dir}) "
        f"declares no variable {name!r} (Packer would only warn and build without it)" for name in unknown
    ]
    shared = templates.sources_dir(spec) / templates.SHARED / family.builder / "variables.pkr.hcl.j2"
    raise PreflightError(
        "\n".join(problems)
        + f"\nfix the name, or declare it in {shared} (the variables of every {family.builder} family); "
        "the template's variables: " + ", ".join(sorted(declared))
    )


def check_base_image(variables: Mapping[str, Any]) -> None:
    """The base image a local template starts from (``base_image_path``) still exists."""
    path = variables.get("base_image_path")
    if not path or Path(str(path)).is_file():
        return
    raise PreflightError(
        f"the base image {path} does not exist: this run's prepare task found it, it has been removed since "
        f"(by a base image rebuild that pruned older recipes, or by hand). Build it again with "
        f"`BAKERY_HOME={bakery_home()} bash {BASE_IMAGE_SCRIPT}` (cached: it builds only what is missing), "
        "then clear this run's prepare task and the tasks after it, so that the bake uses the current base image"
    )


def run(spec: Any, log: Any = None) -> None:
    """All cheap checks of a bake's inputs, before anything is built or any cloud call is made."""
    check_tools(spec)
    check_variables(spec)
    if log is not None:
        log(f"preflight of {spec.name}: tools ({', '.join(TARGET_TOOLS.get(spec.target, ('packer',)))}) on PATH, "
            f"catalogue variables declared by the template")
