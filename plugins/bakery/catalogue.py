"""The image catalogue: a declarative YAML file listing the images to bake, validated up front.

Every error names the file, the image and the field, and all errors are reported at once.
No Airflow import here: the DAG factory and the tests use this module directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from croniter import croniter

from bakery.targets.base import SmokeCheck

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CATALOGUE = REPO_ROOT / "include" / "catalogue.yaml"
DEFAULT_PACKER_DIR = REPO_ROOT / "include" / "packer"

TARGETS = ("local",)
_NAME = r"^[a-z][a-z0-9-]{0,62}[a-z0-9]$"

_SMOKE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "path": {"type": "string", "pattern": r"^/[A-Za-z0-9._~/%?=&-]*$"},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "expect_status": {"type": "integer", "minimum": 100, "maximum": 599},
        "expect_text": {"type": "string", "minLength": 1},
        "timeout_seconds": {"type": "integer", "minimum": 10, "maximum": 7200},
    },
}
_PRUNE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "keep": {"type": "integer", "minimum": 1, "maximum": 1000},
        "dry_run": {"type": "boolean"},
    },
}
_IMAGE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["target", "template"],
    "properties": {
        "description": {"type": "string"},
        "target": {"enum": list(TARGETS)},
        "template": {"type": "string", "pattern": r"^[A-Za-z0-9._-]+$"},
        "schedule": {"type": ["string", "null"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "variables": {
            "type": "object",
            "additionalProperties": {"type": ["string", "integer", "number", "boolean"]},
        },
        "smoke_test": _SMOKE,
        "prune": _PRUNE,
        "build_timeout_minutes": {"type": "integer", "minimum": 5, "maximum": 1440},
        "retries": {"type": "integer", "minimum": 0, "maximum": 10},
    },
}
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["images"],
    "properties": {
        "version": {"const": 1},
        "images": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": _NAME},
            "additionalProperties": _IMAGE,
        },
    },
}


class CatalogueError(ValueError):
    def __init__(self, path: Path, problems: list[str]):
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid image catalogue {path}:\n{lines}")


@dataclass(frozen=True)
class PrunePolicy:
    keep: int = 3
    dry_run: bool = False


@dataclass(frozen=True)
class ImageSpec:
    name: str
    target: str
    template: str
    template_dir: Path
    schedule: str | None = "0 2 * * *"
    description: str = ""
    tags: tuple[str, ...] = ()
    variables: dict[str, Any] = field(default_factory=dict)
    smoke_test: SmokeCheck = SmokeCheck()
    prune: PrunePolicy = PrunePolicy()
    build_timeout_minutes: int = 90
    retries: int = 1


def _where(err: jsonschema.ValidationError) -> str:
    path = list(err.absolute_path)
    if len(path) >= 2 and path[0] == "images":
        fld = ".".join(str(p) for p in path[2:]) or "(the image entry)"
        return f"image {path[1]!r}, field {fld!r}"
    if path:
        return "field " + repr(".".join(str(p) for p in path))
    return "top level"


def _message(err: jsonschema.ValidationError) -> str:
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        allowed = ", ".join(sorted(err.schema.get("properties", {})))
        return f"unknown field(s) {', '.join(map(repr, extra))} (allowed: {allowed})"
    if err.validator == "enum":
        return f"{err.instance!r} is not one of {', '.join(map(repr, err.validator_value))}"
    if "propertyNames" in err.schema_path:
        return (
            f"image name {err.instance!r} must be 2-64 lower-case letters, digits or '-', "
            "starting with a letter"
        )
    return err.message


def parse_catalogue(
    data: Any, *, path: Path = DEFAULT_CATALOGUE, packer_dir: Path = DEFAULT_PACKER_DIR
) -> dict[str, ImageSpec]:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    problems = [f"{_where(e)}: {_message(e)}" for e in errors]
    if problems:
        raise CatalogueError(path, problems)

    specs: dict[str, ImageSpec] = {}
    for name, entry in data["images"].items():
        where = f"image {name!r}"
        schedule = entry.get("schedule", "0 2 * * *")
        if schedule is not None and not schedule.startswith("@") and not croniter.is_valid(schedule):
            problems.append(f"{where}, field 'schedule': {schedule!r} is not a valid cron expression")
        template_dir = packer_dir / entry["template"]
        if not template_dir.is_dir():
            problems.append(
                f"{where}, field 'template': no template folder {template_dir} "
                f"(expected one of: {', '.join(sorted(p.name for p in packer_dir.iterdir() if p.is_dir()))})"
            )
        specs[name] = ImageSpec(
            name=name,
            target=entry["target"],
            template=entry["template"],
            template_dir=template_dir,
            schedule=schedule,
            description=entry.get("description", ""),
            tags=tuple(entry.get("tags", ())),
            variables=dict(entry.get("variables", {})),
            smoke_test=SmokeCheck(**entry.get("smoke_test", {})),
            prune=PrunePolicy(**entry.get("prune", {})),
            build_timeout_minutes=entry.get("build_timeout_minutes", 90),
            retries=entry.get("retries", 1),
        )
    if problems:
        raise CatalogueError(path, problems)
    return specs


def load_catalogue(path: str | os.PathLike[str] | None = None) -> dict[str, ImageSpec]:
    path = Path(path or os.environ.get("BAKERY_CATALOGUE") or DEFAULT_CATALOGUE)
    try:
        text = path.read_text()
    except OSError as exc:
        raise CatalogueError(path, [f"cannot read the file: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise CatalogueError(path, [f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    return parse_catalogue(data, path=path)
