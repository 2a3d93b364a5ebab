"""Parser for Packer's ``-machine-readable`` output (no Airflow import).

Each line is ``timestamp,target,type,data...``. Packer escapes the data fields: a comma is
written as ``%!(PACKER_COMMA)``, a newline as a literal backslash-n (``\\n``) and a carriage
return as ``\\r``. ``target`` is empty for UI lines and carries the build name for
``artifact``, ``artifact-count`` and ``error`` lines. Build names are ``<type>.<name>`` for HCL2
templates (``null.example``, ``qemu.debian12``) and the builder ``name`` (default: its type) for
legacy JSON templates (``null``, ``legacy-null``).

Lines that do not have that shape (a panic, ``flag provided but not defined`` on stderr...) are
kept as *raw* events so that nothing Packer says is lost.

Facts from Packer 1.6.6 (see tests/fixtures/packer/ for real transcripts):

- ``ui,say|message|error,<text>``: the human UI. Provisioner stderr arrives as ``ui,error`` and
  is *not* a failure by itself.
- ``<build>,artifact-count,N`` then per artifact ``<build>,artifact,I,builder-id|id|string|
  files-count,<value>``, ``<build>,artifact,I,file,N,<path>`` and ``<build>,artifact,I,end``.
  A post-processor that keeps its input (e.g. ``manifest``) adds a second artifact.
- on failure: ``,error-count,N`` and ``<build>,error,<message>``.
- ``packer version``: ``,version,1.6.6``, ``,version-prelease,``, ``,version-commit,``.
- Packer prints no run UUID (``PACKER_RUN_UUID``) in this output; the runner reads it from
  Packer's environment instead.

An artifact counts only when it is **whole** (``Artifact.problems`` is empty): its ``id``, its
``files-count`` and that many ``file`` lines, its ``end`` line; and each build reported as many
artifacts as its ``artifact-count`` announced. Output cut short (Packer killed while printing
them) or a line that cannot be read (an index that is not a number) is listed by
``artifact_problems()``, never guessed at. Paths are kept as Packer wrote them: the runner
decodes output with ``surrogateescape``, so a file name that is not UTF-8 maps back to its bytes
(``os.fsencode``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

PACKER_COMMA = "%!(PACKER_COMMA)"

_LINE = re.compile(r"^(\d+),([^,]*),([^,]+)(?:,(.*))?$", re.DOTALL)
_BUILD_FINISHED = re.compile(r"^Build '(?P<build>[^']+)' finished\b")
_BUILD_ERRORED = re.compile(r"^Build '(?P<build>[^']+)' errored(?: after [^:]*)?: (?P<message>.*)$", re.DOTALL)

Mask = Callable[[str], str]


def decode(field_text: str) -> str:
    """Undo Packer's escaping of one data field."""
    return field_text.replace("\\n", "\n").replace("\\r", "\r").replace(PACKER_COMMA, ",")


def clean_text(text: str) -> str:
    """A decoded UI message as it should be logged: CR/CRLF as LF, no surrounding blank lines."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip("\n").rstrip()


@dataclass(frozen=True)
class Event:
    """One line of Packer's output, decoded. ``raw`` events are lines that were not machine-readable."""

    timestamp: int
    target: str
    type: str
    data: tuple[str, ...]
    raw: bool = False

    @property
    def text(self) -> str:
        """The human text of a ``ui`` or raw event ('' for others)."""
        if self.raw:
            return self.data[0] if self.data else ""
        if self.type == "ui" and len(self.data) >= 2:
            return ",".join(self.data[1:])
        return ""

    @property
    def level(self) -> str:
        """``say`` / ``message`` / ``error`` for UI events, ``raw`` for raw lines, else ''."""
        if self.raw:
            return "raw"
        if self.type == "ui" and self.data:
            return self.data[0]
        return ""


def parse_line(line: str, mask: Mask | None = None) -> Event:
    """Decode one output line (trailing newline allowed). Never raises."""
    line = line.rstrip("\r\n")
    m = _LINE.match(line)
    if m is None:
        text = mask(line) if mask else line
        return Event(timestamp=0, target="", type="raw", data=(text,), raw=True)
    ts, target, typ, rest = m.groups()
    fields = [] if rest is None else rest.split(",")
    data = tuple(decode(f) for f in fields)
    if mask:
        data = tuple(mask(d) for d in data)
        target = mask(decode(target))
    else:
        target = decode(target)
    return Event(timestamp=int(ts), target=target, type=typ, data=data)


def iter_events(lines: Iterable[str], mask: Mask | None = None) -> Iterator[Event]:
    for line in lines:
        if line.strip():
            yield parse_line(line, mask)


@dataclass
class Artifact:
    """One artifact Packer reported for a build (``<build>,artifact,<index>,...`` lines)."""

    build: str
    index: int
    builder_id: str = ""
    id: str = ""
    string: str = ""
    files_count: int | None = None  # None: no ``files-count`` line (yet)
    files: list[str] = field(default_factory=list)
    complete: bool = False  # the ``end`` line was seen

    @property
    def problems(self) -> list[str]:
        """Why this artifact is not whole ([] when it is): Packer's output was cut or garbled."""
        out = []
        if not self.id:
            out.append("no id")
        if self.files_count is None:
            out.append("no files-count line")
        elif len(self.files) != self.files_count:
            out.append(f"{len(self.files)} of its {self.files_count} file lines")
        if not self.complete:
            out.append("no end line")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"build": self.build, "builder_id": self.builder_id, "id": self.id, "files": list(self.files)}


@dataclass(frozen=True)
class UiLine:
    level: str  # say | message | error | raw
    text: str


@dataclass(frozen=True)
class BuildError:
    build: str
    message: str


class MachineReadableParser:
    """Feed it lines as they arrive; it keeps what a caller needs to judge the run.

    ``mask`` is applied to every decoded field before anything is stored, so nothing kept here
    (UI lines, errors, artifacts) can hold a secret.
    """

    def __init__(self, mask: Mask | None = None) -> None:
        self._mask = mask
        self.events: list[Event] = []
        self.ui: list[UiLine] = []
        self.raw_lines: list[str] = []
        self.malformed: list[str] = []  # artifact lines that could not be read, with the reason
        self.artifact_counts: dict[str, int] = {}
        self._artifacts: dict[tuple[str, int], Artifact] = {}
        self.error_count: int | None = None
        self.errors: list[BuildError] = []
        self.builds: dict[str, str] = {}  # build name -> "finished" | "errored"
        self.build_messages: dict[str, str] = {}  # build name -> message of "errored"
        self.version: str | None = None
        self.version_prerelease: str | None = None

    # -- feeding ---------------------------------------------------------------------------

    def feed(self, line: str) -> Event | None:
        """Parse one line, record what it says and return its event (``None`` for blank lines)."""
        if not line.strip():
            return None
        ev = parse_line(line, self._mask)
        self.events.append(ev)
        if ev.raw:
            self.raw_lines.append(ev.text)
            self.ui.append(UiLine("raw", ev.text))
        elif ev.type == "ui":
            self._on_ui(ev)
        elif ev.type == "artifact":
            self._on_artifact(ev)
        elif ev.type == "artifact-count" and ev.data:
            count = _int(ev.data[0])
            if count is None:
                self._malformed(ev, f"artifact-count {ev.data[0]!r} is not a number")
            else:
                self.artifact_counts[ev.target] = count
        elif ev.type == "error-count" and ev.data:
            self.error_count = _int(ev.data[0])
        elif ev.type == "error":
            self.errors.append(BuildError(ev.target, ",".join(ev.data)))
        elif ev.type == "version" and ev.data:
            self.version = ev.data[0]
        elif ev.type == "version-prelease" and ev.data:
            self.version_prerelease = ev.data[0]
        return ev

    def feed_all(self, lines: Iterable[str]) -> MachineReadableParser:
        for line in lines:
            self.feed(line)
        return self

    def _on_ui(self, ev: Event) -> None:
        text = clean_text(ev.text)
        self.ui.append(UiLine(ev.level, text))
        m = _BUILD_FINISHED.match(text)
        if m:
            self.builds[m["build"]] = "finished"
            return
        m = _BUILD_ERRORED.match(text)
        if m:
            self.builds[m["build"]] = "errored"
            self.build_messages[m["build"]] = m["message"].strip()

    def _malformed(self, ev: Event, why: str) -> None:
        self.malformed.append(f"{ev.target or '?'}: {why} (line: {ev.type},{','.join(ev.data)[:200]})")

    def _on_artifact(self, ev: Event) -> None:
        if len(ev.data) < 2:
            self._malformed(ev, "artifact line without index and key")
            return
        index = _int(ev.data[0])
        if index is None:  # never merge it into another artifact: it is unreadable
            self._malformed(ev, f"artifact index {ev.data[0]!r} is not a number")
            return
        key = ev.data[1]
        values = ev.data[2:]
        art = self._artifacts.get((ev.target, index))
        if art is None:
            art = self._artifacts[(ev.target, index)] = Artifact(build=ev.target, index=index)
        if ev.target and ev.target not in self.builds:
            self.builds[ev.target] = "finished"
        value = ",".join(values)
        if key == "builder-id":
            art.builder_id = value
        elif key == "id":
            art.id = value
        elif key == "string":
            art.string = value
        elif key == "files-count":
            art.files_count = _int(value)
            if art.files_count is None:
                self._malformed(ev, f"files-count {value!r} is not a number")
        elif key == "file" and len(values) >= 2:
            art.files.append(",".join(values[1:]))
        elif key == "end":
            art.complete = True

    # -- reading ---------------------------------------------------------------------------

    @property
    def artifacts(self) -> list[Artifact]:
        return list(self._artifacts.values())

    @property
    def ui_errors(self) -> list[str]:
        return [u.text for u in self.ui if u.level == "error"]

    def artifacts_for(self, build: str) -> list[Artifact]:
        return [a for a in self._artifacts.values() if a.build == build]

    def artifact_problems(self) -> list[str]:
        """Why the reported artifacts cannot be trusted ([] when every one is whole, see the module doc)."""
        out = list(self.malformed)
        for a in self._artifacts.values():
            if a.problems:
                out.append(f"artifact {a.index} of {a.build or '?'}: {', '.join(a.problems)}")
        for build, count in self.artifact_counts.items():
            seen = len(self.artifacts_for(build))
            if seen != count:
                out.append(f"{build}: {count} artifacts announced, {seen} reported")
        return out


def _int(text: str) -> int | None:
    """A non-negative decimal number, or None (Packer writes nothing else in these fields)."""
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() else None
