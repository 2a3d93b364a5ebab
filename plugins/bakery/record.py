"""The one record that flows between the tasks of a bake (passed as a small JSON-able XCom)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SmokeResult:
    passed: bool
    seconds: float  # boot (or VM create) to first good HTTP answer, or to the deadline
    status: int | None = None  # last HTTP status seen
    detail: str = ""  # short human explanation; on failure an excerpt of the body / error

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class BakeRecord:
    image: str
    version: str
    target: str
    template_digest: str
    dag_run_id: str | None = None
    run_type: str | None = None
    base_digest: str | None = None
    packer_run_uuid: str | None = None
    artifact_id: str | None = None  # local: path of the disk file; azure: managed image id
    artifact_files: list[str] = field(default_factory=list)
    smoke: dict[str, Any] | None = None  # SmokeResult.to_dict()
    published_id: str | None = None
    # where the packages came from (bakery.packages.inputs.Inputs.to_dict(): kind, ref, label, ...)
    inputs: dict[str, Any] | None = None
    # the version's package manifest: {"manifest": path of packages.json, "digest", "count", "family",
    # "pool_index": path of the pending pool index (local builds)}
    packages: dict[str, Any] | None = None
    variables_digest: str | None = None  # the catalogue variables of the bake (check_changes compares it)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BakeRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"bake record has unknown fields: {sorted(unknown)}")
        return cls(**data)

    def with_(self, **changes: Any) -> BakeRecord:
        return dataclasses.replace(self, **changes)
