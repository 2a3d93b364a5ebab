"""Run the Packer CLI: streaming, secrets, signals, results (no Airflow import).

How it runs Packer:

- always ``-machine-readable`` (and ``-color=false`` for ``build``: Packer 1.6.6's ``validate``
  and ``version`` reject ``-color``); stdin is closed, stderr is merged into stdout;
- in its own session / process group (``start_new_session``), so that a signal meant for the
  caller does not hit Packer mid-cleanup and so that ``terminate()`` can reach every process
  Packer started (plugins, QEMU, provisioner scripts);
- every line is decoded as it arrives and passed to ``log`` straight away. Packer writes to an
  anonymous file (memfd) that we tail, not to a pipe: Packer never blocks on us, and if this
  process is killed while Packer cleans up, Packer is not killed by SIGPIPE at its next line.
  Lines are decoded with ``surrogateescape``: a path that is not UTF-8 stays the same bytes in
  the artifacts (``os.fsencode``); the log shows such bytes as ``\\xNN``;
- non-sensitive variables go in a JSON var-file in a private temporary folder (Packer 1.6.6
  reads ``*.json`` var-files for HCL2 templates, and legacy JSON templates only read JSON);
  sensitive variables only as ``PKR_VAR_<name>`` environment variables: never on the command
  line, never in a file, and every line is masked before it reaches ``log`` or an error.

``terminate()`` stops Packer's process group with ``bakery.processes.stop``: SIGTERM (Packer
treats it like SIGINT: "Cancelling build after receiving terminated", its builders clean up, e.g.
the QEMU builder stops QEMU and deletes its output folder), up to ``kill_grace_seconds`` for that,
then the hard kill of whatever is left of the group.

A build succeeds only with exit code 0 and whole artifacts (``Artifact.problems``). A failure
quotes, in this order, Packer's ``error`` lines; else what it printed outside its UI (a panic);
else its own UI errors; and then the last error output of the build (provisioner stderr) as
context, never as the reason.

With a ``work_dir`` (the folder this build owns, e.g. ``$BAKERY_HOME/work/<image>/<version>``),
``build()`` also guards against the two ways a build collides with another one on that folder:

- it holds the folder's lock (``bakery.worklock``) for the whole build: a second build (or a
  smoke test / publish) of the same folder fails at once with ``WorkBusyError``;
- it records its Packer in ``<work_dir>/packer.pid.json`` (``bakery.packer.leftovers``); before
  starting, a Packer recorded there by an earlier attempt that is still alive (the task was
  killed hard, Packer survived in its own session) is stopped (``bakery.processes.stop``;
  verified by start time, never a reused pid), and a stale ``output_directory`` inside the work
  folder is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bakery import processes
from bakery.packer.leftovers import (
    STATE_NAME,
    TOKEN_ENV,
    PackerState,
    stop_leftover,
    write_state,
)
from bakery.packer.machine_readable import Artifact, BuildError, MachineReadableParser
from bakery.worklock import work_lock

Log = Callable[[str], None]

MASK = "***"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_REQUIRED_PLUGINS = re.compile(r"^\s*required_plugins\b|\"required_plugins\"\s*:", re.MULTILINE)
_SUMMARY = re.compile(r"^(Build '[^']+' errored|--> |==> Some builds|Cancelling build)")
# a UI line a build printed for one of its steps (provisioner output): "==> qemu.x: ...", "    qemu.x: ..."
_BUILD_OUTPUT = re.compile(r"^(==> |    )[\w.-]+: ")
# where a crash starts in what Go / panicwrap print outside the UI
_CRASH = re.compile(r"^(panic: |fatal error: |SIG[A-Z]+: |runtime: )")
_UUID = re.compile(r"^[0-9a-fA-F-]{36}$")
_NOTHING = object()


class PackerError(RuntimeError):
    """Packer failed; the message quotes Packer's own error lines."""

    def __init__(self, message: str, *, result: PackerResult | None = None, command: str = "") -> None:
        super().__init__(message)
        self.result = result
        self.command = command


@dataclass
class PackerResult:
    command: str
    exit_code: int
    artifacts: list[Artifact] = field(default_factory=list)
    errors: list[BuildError] = field(default_factory=list)
    ui_errors: list[str] = field(default_factory=list)
    raw_lines: list[str] = field(default_factory=list)  # output that was not machine-readable
    builds: dict[str, str] = field(default_factory=dict)  # build -> finished | errored
    run_uuid: str | None = None
    packer_version: str | None = None
    manifest_entry: dict[str, Any] | None = None
    interrupted: bool = False
    duration_seconds: float = 0.0
    artifact_problems: list[str] = field(default_factory=list)  # why the artifacts are not whole

    @property
    def ok(self) -> bool:
        if self.exit_code != 0 or self.interrupted:
            return False
        return bool(self.artifacts) and not self.artifact_problems if self.command == "build" else True

    def unique_artifacts(self) -> list[Artifact]:
        """Artifacts without the copies that keep-input post-processors (manifest) report again."""
        seen: set[tuple[str, str, str, tuple[str, ...]]] = set()
        out = []
        for a in self.artifacts:
            key = (a.build, a.builder_id, a.id, tuple(a.files))
            if key not in seen:
                seen.add(key)
                out.append(a)
        return out


class Masker:
    """Replaces every occurrence of a secret (and of each line of a multi-line secret) with ***."""

    def __init__(self, secrets: Iterable[Any] = ()) -> None:
        needles: set[str] = set()
        for s in secrets:
            text = s if isinstance(s, str) else json.dumps(s)
            if not text:
                continue
            needles.add(text)
            if "\n" in text:
                needles.update(ln.strip() for ln in text.splitlines() if len(ln.strip()) >= 4)
        self._needles = sorted(needles, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._needles)

    def __call__(self, text: str) -> str:
        for n in self._needles:
            if n in text:
                text = text.replace(n, MASK)
        return text


def is_hcl2(template: str | os.PathLike[str]) -> bool:
    """A folder, ``*.pkr.hcl`` or ``*.pkr.json`` is HCL2; another ``*.json`` is a legacy JSON template."""
    p = Path(template)
    if p.is_dir():
        return True
    name = p.name
    if name.endswith((".pkr.hcl", ".pkr.json")):
        return True
    return not name.endswith(".json")


def declares_required_plugins(template: str | os.PathLike[str]) -> bool:
    """Whether the template (file, or ``*.pkr.hcl``/``*.pkr.json`` in the folder) has ``required_plugins``."""
    p = Path(template)
    files = sorted([*p.glob("*.pkr.hcl"), *p.glob("*.pkr.json")]) if p.is_dir() else [p]
    for f in files:
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        code = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith(("#", "//")))
        if _REQUIRED_PLUGINS.search(code):
            return True
    return False


def parse_version(text: str) -> tuple[int, ...]:
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", text or "")
    return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)


def printable(text: str) -> str:
    """``text`` as it can be logged: bytes that were not UTF-8 (surrogateescape) shown as ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class PackerRunner:
    """Runs ``packer`` for one template.

    ``template`` is a folder (HCL2), a ``*.pkr.hcl`` / ``*.pkr.json`` file, or a legacy ``*.json``
    template. ``env`` is added to this process's environment. ``log`` receives each decoded,
    masked line of Packer's UI as it arrives. ``work_dir``: the folder a ``build`` owns (locked,
    leftover Packer recorded and stopped, see the module doc); None for none of that.
    """

    def __init__(
        self,
        template: str | os.PathLike[str],
        *,
        packer_bin: str = "packer",
        variables: Mapping[str, Any] | None = None,
        sensitive_variables: Mapping[str, Any] | None = None,
        var_files: Sequence[str | os.PathLike[str]] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        log: Log = print,
        kill_grace_seconds: float = 60,
        work_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.template = str(template)
        self.work_dir = Path(work_dir).resolve() if work_dir is not None else None
        self.packer_bin = packer_bin
        self.variables = dict(variables or {})
        self.sensitive_variables = dict(sensitive_variables or {})
        self.var_files = [str(f) for f in var_files or ()]
        self.env = dict(env or {})
        self.cwd = str(cwd) if cwd is not None else None
        self.kill_grace_seconds = kill_grace_seconds
        self.hcl2 = is_hcl2(template)
        for name in [*self.variables, *self.sensitive_variables]:
            if not _NAME.match(name):
                raise ValueError(f"Packer variable name {name!r} is not a valid identifier")
        both = sorted(set(self.variables) & set(self.sensitive_variables))
        if both:
            raise ValueError(f"variables {both} are given both as plain and as sensitive: give each once")
        self._mask = Masker(self.sensitive_variables.values())
        self._log = log
        self._version: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pgid: int | None = None  # Packer's process group (its own session): what terminate() stops
        self._term_lock = threading.Lock()
        self._term_owner: int | None = None
        self._term_done = threading.Event()
        self._interrupted = False
        self._run_started: float | None = None  # wall clock of the last build's start
        self._state: PackerState | None = None  # the state file record of the build in progress
        self.var_file_path: str | None = None  # the var-file of the run in progress (tests look)
        self.last_run_uuid: str | None = None
        self.last_result: PackerResult | None = None

    # -- public API -----------------------------------------------------------------------

    def log(self, text: str) -> None:
        self._log(printable(self._mask(text)))

    def version(self) -> str:
        """Packer's version, e.g. ``"1.6.6"`` (cached)."""
        if self._version is None:
            try:
                cp = subprocess.run(
                    [self.packer_bin, "-machine-readable", "version"],
                    capture_output=True,
                    timeout=120,
                    env=self._environment(),
                    cwd=self.cwd,
                    stdin=subprocess.DEVNULL,
                    check=False,
                )
            except FileNotFoundError as e:
                raise PackerError(
                    f"the Packer binary {self.packer_bin!r} was not found: install Packer or set packer_bin"
                ) from e
            out = cp.stdout.decode(errors="replace")
            parser = MachineReadableParser().feed_all(out.splitlines())
            version = parser.version or ".".join(map(str, parse_version(out)))
            if cp.returncode != 0 or version == "0.0.0":
                raise PackerError(f"`{self.packer_bin} version` failed (exit {cp.returncode}): {out.strip()[:500]}")
            self._version = version
        return self._version

    def version_info(self) -> tuple[int, ...]:
        return parse_version(self.version())

    def init(self) -> PackerResult | None:
        """``packer init``, only when the template declares ``required_plugins`` and Packer >= 1.7."""
        if not self.hcl2:
            self.log("packer init skipped: legacy JSON templates have no required_plugins")
            return None
        if not declares_required_plugins(self.template):
            self.log(f"packer init skipped: {self.template} declares no required_plugins")
            return None
        if self.version_info() < (1, 7):
            self.log(
                f"packer init skipped: Packer {self.version()} has no `init` (added in 1.7); its builders are bundled"
            )
            return None
        result = self._run("init", [], use_variables=False)
        if result.exit_code != 0:
            raise PackerError(self._failure_message(result), result=result, command="init")
        return result

    def validate(self, only: Sequence[str] | None = None) -> PackerResult:
        args = [f"-only={','.join(only)}"] if only else []
        result = self._run("validate", args)
        if result.exit_code != 0 or result.interrupted:
            raise PackerError(self._failure_message(result), result=result, command="validate")
        self.log(f"packer validate: {self.template} is valid")
        return result

    def build(self, force: bool = True, only: Sequence[str] | None = None) -> PackerResult:
        args = ["-color=false"]
        if force:
            args.append("-force")
        if only:
            args.append(f"-only={','.join(only)}")
        if self.work_dir is None:
            result = self._run("build", args, discover_uuid=True)
        else:
            with work_lock(self.work_dir, f"packer build of {self.template}"):
                self.clear_leftovers()
                result = self._run("build", args, discover_uuid=True, state_file=self.state_file)
        if result.exit_code != 0 or result.interrupted:
            raise PackerError(self._failure_message(result), result=result, command="build")
        if result.artifact_problems:
            raise PackerError(
                self._mask(printable(
                    f"packer build of {self.template} exited 0 but its artifacts are not whole (output cut "
                    "short or garbled?); a build succeeds only with complete artifacts:\n"
                    + _indent(result.artifact_problems)
                )),
                result=result,
                command="build",
            )
        if not result.artifacts:
            which = f" (-only={','.join(only)} matched no build?)" if only else ""
            raise PackerError(
                f"packer build of {self.template} exited 0 but reported no artifact{which}; "
                "a build succeeds only with at least one artifact",
                result=result,
                command="build",
            )
        for a in result.unique_artifacts():
            files = f" files: {', '.join(a.files)}" if a.files else ""
            self.log(f"artifact of {a.build}: {a.id} ({a.builder_id}){files}")  # log() shows odd bytes as \\xNN
        return result

    @property
    def state_file(self) -> Path | None:
        return self.work_dir / STATE_NAME if self.work_dir is not None else None

    def clear_leftovers(self) -> dict[str, Any] | None:
        """Stop a Packer run an earlier attempt left in ``work_dir``; remove a stale output folder.

        Call with the work folder's lock held (``build()`` does).
        """
        if self.work_dir is None:
            return None
        report = stop_leftover(self.state_file, grace_seconds=self.kill_grace_seconds, log=self.log)
        out = self.variables.get("output_directory")
        if isinstance(out, str) and out:
            path = Path(out) if os.path.isabs(out) else Path(self.cwd or ".") / out
            path = path.resolve()
            if path.exists() and path != self.work_dir and path.is_relative_to(self.work_dir):
                self.log(f"removing the output folder {path} left by an earlier attempt")
                shutil.rmtree(path)
                report["removed_output"] = str(path)
        return report

    def terminate(self) -> None:
        """Stop Packer: SIGTERM to its process group, wait for its cleanup, then kill the rest.

        Safe to call from another thread, from a signal handler, more than once, or when
        nothing is running. Returns when no process of the group is left (or after the hard kill).
        """
        proc, pgid = self._proc, self._pgid
        if proc is None or pgid is None:
            return
        me = threading.get_ident()
        if not self._term_lock.acquire(blocking=False):
            if self._term_owner != me:  # another thread is on it: wait for it
                self._term_done.wait(self.kill_grace_seconds + 10)
            return
        try:
            if self._term_done.is_set():
                return
            self._term_owner = me
            if not processes.group(pgid) and proc.poll() is not None:
                return  # Packer had already finished: nothing was interrupted
            self._interrupted = True
            self.log(
                f"stopping Packer: SIGTERM to its process group {pgid}; "
                f"waiting up to {self.kill_grace_seconds:g}s for its cleanup"
            )
            # the group is Packer's: its id stays taken (never reused) while any member of it lives
            action = processes.stop(group=pgid, grace_seconds=self.kill_grace_seconds, log=self.log, what="Packer")
            if action == "stopped":
                self.log("Packer stopped and cleaned up")
        finally:
            self._term_done.set()
            self._term_owner = None
            self._term_lock.release()

    def manifest_entry(self, manifest_path: str | os.PathLike[str], build: str | None = None) -> dict[str, Any]:
        """The ``builds`` entry of the manifest post-processor's file that belongs to our last build.

        Our run is identified by its ``packer_run_uuid`` (read from Packer's environment while it
        ran); if that could not be read, by the manifest's ``last_run_uuid`` provided the file was
        written after our build started. ``build`` (``type.name`` or ``name``) picks one entry when
        our run made several.
        """
        path = Path(manifest_path)
        if self.cwd and not path.is_absolute():
            path = Path(self.cwd) / path
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as e:
            raise PackerError(
                f"manifest {path} does not exist: does the template have a `manifest` post-processor writing there?"
            ) from e
        except (OSError, ValueError) as e:
            raise PackerError(f"manifest {path} cannot be read as JSON: {e}") from e
        entries = data.get("builds") or []
        uuid = self.last_run_uuid
        if uuid is None:
            started = self._run_started
            if started is None:
                raise PackerError(f"no build has run with this runner: cannot tell which entry of {path} is ours")
            if path.stat().st_mtime + 1 < started:
                raise PackerError(f"manifest {path} was not written by our build (it is older than the build)")
            uuid = data.get("last_run_uuid")
        ours = [e for e in entries if e.get("packer_run_uuid") == uuid]
        if build is not None:
            ours = [e for e in ours if build in (e.get("name"), f"{e.get('builder_type')}.{e.get('name')}")]
        if not ours:
            runs = sorted({str(e.get("packer_run_uuid")) for e in entries})
            raise PackerError(
                f"manifest {path} has no entry for our Packer run {uuid}"
                + (f" and build {build}" if build else "")
                + f" (it has entries for runs {runs}, last_run_uuid {data.get('last_run_uuid')})"
            )
        if len(ours) > 1:
            names = [f"{e.get('builder_type')}.{e.get('name')}" for e in ours]
            raise PackerError(f"manifest {path} has {len(ours)} entries for our run ({names}): say which build")
        return ours[0]

    # -- running --------------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        env.pop("PACKER_RUN_UUID", None)  # Packer sets its own; a stale one would mislead us
        env.setdefault("CHECKPOINT_DISABLE", "1")
        # Packer 1.6.6 caches in ./packer_cache (it would land in the template folder and change
        # its digest); current Packer uses ~/.cache/packer: use that unless told otherwise.
        cache_home = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        env.setdefault("PACKER_CACHE_DIR", os.path.join(cache_home, "packer"))
        for name, value in self.sensitive_variables.items():
            env[f"PKR_VAR_{name}"] = value if isinstance(value, str) else json.dumps(value)
        return env

    def _var_args(self, tmpdir: str) -> list[str]:
        args = [f"-var-file={f}" for f in self.var_files]
        if self.variables:
            if self.hcl2:
                path = os.path.join(tmpdir, "bakery-variables.pkrvars.json")
                content = self.variables
            else:  # legacy user variables are strings
                path = os.path.join(tmpdir, "bakery-variables.json")
                content = {k: v if isinstance(v, str) else json.dumps(v) for k, v in self.variables.items()}
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(content, fh, indent=2, sort_keys=True)
            self.var_file_path = path
            args.append(f"-var-file={path}")
        return args

    def _run(
        self,
        command: str,
        args: list[str],
        *,
        use_variables: bool = True,
        discover_uuid: bool = False,
        state_file: Path | None = None,
    ) -> PackerResult:
        if self._proc is not None:
            raise RuntimeError("this PackerRunner is already running Packer")
        tmpdir = tempfile.mkdtemp(prefix="bakery-packer-")
        parser = MachineReadableParser(mask=self._mask)
        self._interrupted = False
        self._term_done.clear()
        run_uuid: str | None = None
        started = time.monotonic()
        prev_handler: Any = _NOTHING
        proc = None
        tail: _LineTail | None = None
        try:
            argv = [self.packer_bin, command, "-machine-readable", *args]
            if use_variables:
                argv += self._var_args(tmpdir)
            argv.append(self.template)
            names = ", ".join(f"PKR_VAR_{n}" for n in sorted(self.sensitive_variables))
            self.log(
                f"running: {' '.join(argv)}"
                + (f" (sensitive variables from the environment: {names})" if names else "")
            )
            if discover_uuid:
                self._run_started = time.time()
                self.last_run_uuid = None
            out = _output_channel(tmpdir)
            tail = _LineTail(out)
            prev_handler = self._install_sigterm_handler()
            env = self._environment()
            if state_file is not None:
                # recorded before Packer starts (token only: found by its environment if we die
                # right after starting it), completed with its pid and start time right after
                self._state = PackerState.new(self.template, command)
                env[TOKEN_ENV] = self._state.token
                write_state(state_file, self._state)
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,  # a file we tail, never a pipe (see _output_channel)
                    stderr=subprocess.STDOUT,
                    cwd=self.cwd,
                    env=env,
                    start_new_session=True,  # its own group: our signals are not its, terminate() reaches all of it
                )
                if state_file is not None and self._state is not None:
                    self._state.pid = self._state.pgid = proc.pid
                    with contextlib.suppress(Exception):  # gone already: its group is found by the token
                        self._state.start_time = processes.start_time(processes.Process(proc.pid))
                    write_state(state_file, self._state)
            except FileNotFoundError as e:
                raise PackerError(
                    f"the Packer binary {self.packer_bin!r} was not found: install Packer or set packer_bin"
                ) from e
            self._proc, self._pgid = proc, proc.pid
            try:
                while True:
                    lines = tail.read_lines()
                    for line in lines:
                        self._handle_line(line, parser)
                    if discover_uuid and run_uuid is None and proc.poll() is None:
                        run_uuid = _discover_run_uuid(proc.pid)
                    if not lines:
                        if proc.poll() is not None:
                            for line in tail.read_lines(final=True):
                                self._handle_line(line, parser)
                            break
                        time.sleep(0.05)
                rc = proc.wait()
            except BaseException:
                self.terminate()
                with contextlib.suppress(Exception):  # logging must not hide the original exception
                    for line in tail.read_lines(final=True):
                        self._handle_line(line, parser)
                raise
        finally:
            if prev_handler is not _NOTHING:
                self._restore_sigterm_handler(prev_handler)
            if proc is not None:
                self._proc, self._pgid = proc, proc.pid
                if proc.poll() is None:  # an exception before the loop could stop Packer itself
                    self.terminate()
                self._reap_leftovers()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
                if tail is not None:
                    # Packer's wrapper can exit before the real Packer has finished printing (its
                    # cleanup after SIGTERM): read what came after, now that the group is gone
                    with contextlib.suppress(Exception):
                        for line in tail.read_lines(final=True):
                            self._handle_line(line, parser)
            if state_file is not None and (proc is None or not processes.group(proc.pid)):
                with contextlib.suppress(OSError):
                    state_file.unlink(missing_ok=True)  # nothing of this run is left to find
            self._state = None
            if tail is not None:
                tail.close()
            self._proc = None
            self.var_file_path = None
            shutil.rmtree(tmpdir, ignore_errors=True)
        if discover_uuid:
            self.last_run_uuid = run_uuid
        result = PackerResult(
            command=command,
            exit_code=rc,
            artifacts=parser.artifacts,
            errors=list(parser.errors),
            ui_errors=parser.ui_errors,
            raw_lines=list(parser.raw_lines),
            builds=dict(parser.builds),
            run_uuid=run_uuid,
            packer_version=self._version,
            interrupted=self._interrupted,
            duration_seconds=round(time.monotonic() - started, 3),
            artifact_problems=parser.artifact_problems(),
        )
        self.last_result = result
        return result

    def _handle_line(self, raw: bytes, parser: MachineReadableParser) -> None:
        # surrogateescape, not "replace": a path that is not UTF-8 must name the same file afterwards
        ev = parser.feed(raw.decode("utf-8", errors="surrogateescape"))
        if ev is None:
            return
        if ev.raw or ev.type == "ui":
            text = parser.ui[-1].text if parser.ui else ev.text
            if text:
                self._log(printable(text))  # already masked by the parser

    def _reap_leftovers(self) -> None:
        """After Packer exited: stop what it left in its process group (``processes.stop``)."""
        pgid = self._pgid
        if pgid is None or self._proc is None or self._proc.poll() is None:
            return
        if self._interrupted and not self._term_done.is_set():
            # terminate() runs in another thread: its grace period is Packer's to clean up in (the
            # wrapper, our child, may exit before the real Packer has finished its cleanup)
            self._term_done.wait(self.kill_grace_seconds + 30)
        left = processes.wait_gone(group=pgid, timeout=2)  # plugins exit on their own right after Packer
        if left:
            self.log(f"Packer exited but left processes {sorted(p.pid for p in left)} behind: stopping them")
            processes.stop(group=pgid, grace_seconds=self.kill_grace_seconds, log=self.log, what="what Packer left")

    def _install_sigterm_handler(self) -> Any:
        """While Packer runs, our own SIGTERM first stops Packer (then runs the previous handler)."""
        if threading.current_thread() is not threading.main_thread():
            return _NOTHING
        prev = signal.getsignal(signal.SIGTERM)
        if prev == signal.SIG_IGN:
            return _NOTHING

        def on_sigterm(signum: int, frame: Any) -> None:
            self.log("received SIGTERM: stopping Packer first")
            self.terminate()
            if callable(prev):
                prev(signum, frame)
            else:
                raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, on_sigterm)
        return prev

    @staticmethod
    def _restore_sigterm_handler(prev: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, prev if prev is not None else signal.SIG_DFL)

    def _failure_message(self, result: PackerResult) -> str:
        what = f"packer {result.command} of {self.template}"
        if result.interrupted:
            head = f"{what} was stopped (terminate() / SIGTERM), exit code {result.exit_code}"
        else:
            head = f"{what} failed with exit code {result.exit_code}"
        own_ui_errors = [u for u in result.ui_errors if not _BUILD_OUTPUT.match(u)]
        with_context = True
        if result.errors:  # Packer's verdict on each failed build
            reasons = [f"{e.build}: {e.message}" if e.build else e.message for e in result.errors]
        elif raw := _raw_excerpt(result.raw_lines):  # a crash: Go and panicwrap print outside the UI
            reasons = raw
        elif own_ui_errors:  # Packer's own messages (a template error, "Build was cancelled.")
            reasons, with_context = own_ui_errors[-10:], False
        else:  # only what the build's steps printed: that is context, not why Packer failed
            reasons = [f"Packer exited with code {result.exit_code} without saying why (no error line, nothing "
                       "outside its UI): it crashed or was killed; its crash.log or a run with PACKER_LOG=1 tells more"]
        text = f"{head}:\n{_indent(reasons)}"
        # what the failing step printed on stderr (ui errors before Packer's own summary lines)
        context = [u for u in result.ui_errors if not _SUMMARY.match(u) and u not in reasons][-5:]
        if with_context and context:
            text += f"\nlast error output before that:\n{_indent(context)}"
        return printable(self._mask(text))


def _raw_excerpt(raw_lines: Sequence[str], limit: int = 10) -> list[str]:
    """The lines worth quoting of what Packer printed outside its UI: a crash from its first line
    (``panic: ...`` and where, up to panicwrap's banner), else the last lines; plus a pointer to
    the crash.log panicwrap wrote."""
    lines = [ln for ln in raw_lines if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if _CRASH.match(ln)), None)
    if start is not None:
        crash = lines[start:]
        end = next((i for i, ln in enumerate(crash) if ln.startswith("!!!")), len(crash))
        out = crash[: min(end, limit)]
    else:
        out = [ln for ln in lines if not ln.startswith("!!!")][-limit:]
    if any("crash.log" in ln for ln in lines):
        out.append("(Packer crashed: it wrote crash.log in its working folder)")
    return out


def _indent(lines: Iterable[str]) -> str:
    out = []
    for item in lines:
        parts = [p for p in item.strip().splitlines() if p.strip()]
        out.extend("  " + p if i == 0 else "    " + p for i, p in enumerate(parts))
    return "\n".join(out)


def _output_channel(tmpdir: str) -> int:
    """A file descriptor of an anonymous file: Packer's stdout and stderr, and what we tail.

    Not a pipe: if this process dies (Airflow kills a task hard a few seconds after SIGTERM), a
    pipe would kill Packer with SIGPIPE at its next line, in the middle of its cleanup. A file
    takes Packer's writes whoever reads it. memfd (Linux) keeps it off the disk, since it may hold
    what provisioners print; elsewhere an unlinked temporary file. Packer's copy of the descriptor
    shares its file offset with ours, so we read with ``pread`` at our own offset and never move
    it: Packer's writes always land at the end.
    """
    try:
        return os.memfd_create("packer-output", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        path = os.path.join(tmpdir, "packer-output")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.unlink(path)
        return fd


class _LineTail:
    """Reads complete lines from a growing file without blocking (and without moving its offset)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._offset = 0
        self._partial = b""

    def read_lines(self, final: bool = False) -> list[bytes]:
        chunks = [self._partial]
        while True:
            data = os.pread(self.fd, 1 << 16, self._offset)
            if not data:
                break
            self._offset += len(data)
            chunks.append(data)
        buf = b"".join(chunks)
        *lines, self._partial = buf.split(b"\n")
        if final and self._partial:
            lines.append(self._partial)
            self._partial = b""
        return lines

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _discover_run_uuid(pid: int) -> str | None:
    """Packer's wrapper generates PACKER_RUN_UUID and starts the real Packer with it in its env."""
    wrapper = processes.find(pid)
    for child in processes.tree(wrapper)[1:] if wrapper is not None else []:
        value = processes.environ_value(child, "PACKER_RUN_UUID")
        if value and _UUID.match(value):
            return value
    return None
