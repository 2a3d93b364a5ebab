"""PackerOperator: a thin Airflow adapter around bakery.packer.PackerRunner.

Context in (templated fields, sensitive variables from ``get_sensitive_variables``), one Packer
command run with every UI line streamed into the task log, a small JSON-able dict out (XCom).

Stopping: Airflow 3's task runner calls ``on_kill`` from its SIGTERM handler (task killed, marked
failed/success from the UI, heartbeat lost) and after ``AirflowTaskTimeout`` (``execution_timeout``,
raised by SIGALRM inside ``execute``). ``on_kill`` calls ``PackerRunner.terminate()``; in addition
the runner itself stops Packer's process group on any exception escaping the run (the timeout,
KeyboardInterrupt) and on SIGTERM while Packer runs, so Packer always gets its SIGTERM and the
grace period to clean up its builder before anything is SIGKILLed.

Killed hard (SIGKILL: the worker died, the task was OOM-killed), none of that can run and Packer,
in its own session, survives and keeps building. For ``build`` the operator therefore gives the
runner a work folder (``work_dir``): the runner records its Packer there and, on the retry, stops
a Packer that an earlier attempt left running before it starts its own, and refuses to build
while another build holds that folder (see ``bakery.packer.runner`` and ``bakery.worklock``).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from airflow.sdk import BaseOperator

if TYPE_CHECKING:  # the runner is imported when a task runs, not when a DAG file is parsed
    from bakery.packer.runner import PackerResult, PackerRunner

Command = Literal["init", "validate", "build"]
COMMANDS = ("init", "validate", "build")
AUTO = "auto"


def _as_mapping(value: Any, field: str) -> dict[str, Any]:
    """A rendered template field as a dict (native rendering gives one; string rendering a repr)."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, str):
        for parse in (json.loads, ast.literal_eval):
            try:
                parsed = parse(value)
            except (ValueError, SyntaxError):
                continue
            if isinstance(parsed, dict):
                return parsed
    raise ValueError(
        f"PackerOperator {field} must be a dict of Packer variables, got {type(value).__name__}: {value!r:.200}"
    )


def _as_list(value: Any, field: str) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            for parse in (json.loads, ast.literal_eval):
                try:
                    parsed = parse(stripped)
                except (ValueError, SyntaxError):
                    continue
                if isinstance(parsed, list):
                    return [str(v) for v in parsed]
        return [value]
    if isinstance(value, Sequence):
        return [str(v) for v in value]
    raise ValueError(f"PackerOperator {field} must be a list of paths, got {type(value).__name__}")


class PackerOperator(BaseOperator):
    """Run ``packer init|validate|build`` on a template folder (or template file).

    :param template_dir: folder of an HCL2 template (or a ``*.pkr.hcl`` / legacy ``*.json`` file).
        Packer runs with this folder as its working directory. Templated.
    :param command: ``init``, ``validate`` or ``build``. ``validate`` and ``build`` run ``packer
        init`` first when the template declares ``required_plugins`` and Packer is >= 1.7.
    :param variables: non-sensitive Packer variables (written to a private var-file). Templated.
    :param var_files: extra var-files, relative to ``template_dir`` or absolute. Templated.
    :param only: build names for ``-only`` (``type.name``, e.g. ``qemu.debian12``).
    :param packer_bin: the Packer executable.
    :param kill_grace_seconds: how long Packer may take to clean up after SIGTERM before SIGKILL.
    :param manifest_path: the manifest post-processor's output; when set, the entry of *this*
        run is attached to the result. Relative to ``template_dir``. Templated.
    :param work_dir: for ``build``, the folder this build owns: locked for the build (a second
        build of it fails at once), Packer recorded in it so that a retry stops a Packer left
        running by a killed attempt. ``"auto"`` (default): the parent folder of the template's
        ``output_directory`` variable if it has one (the bakery's ``<work>/<image>/<version>/output``
        layout), else none; ``None``: none. Templated.
    """

    template_fields: Sequence[str] = ("template_dir", "variables", "var_files", "manifest_path", "work_dir")
    ui_color = "#02a8ef"

    def __init__(
        self,
        *,
        template_dir: str,
        command: Command = "build",
        variables: dict[str, Any] | None = None,
        var_files: list[str] | None = None,
        only: list[str] | None = None,
        packer_bin: str = "packer",
        kill_grace_seconds: int = 120,
        manifest_path: str | None = None,
        work_dir: str | None = AUTO,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if command not in COMMANDS:
            raise ValueError(f"PackerOperator command must be one of {COMMANDS}, got {command!r}")
        self.template_dir = template_dir
        self.command = command
        self.variables = variables
        self.var_files = var_files
        self.only = list(only) if only else None
        self.packer_bin = packer_bin
        self.kill_grace_seconds = kill_grace_seconds
        self.manifest_path = manifest_path
        self.work_dir = work_dir
        self._runner: PackerRunner | None = None

    def get_sensitive_variables(self, context: Any) -> dict[str, str]:
        """Variables passed only through ``PKR_VAR_<name>`` (never argv, never a file, masked).

        Subclasses (e.g. the Azure one) override this to read credentials from a connection.
        """
        return {}

    def make_runner(self, context: Any) -> PackerRunner:
        from bakery.packer.runner import PackerRunner

        sensitive = dict(self.get_sensitive_variables(context) or {})
        if sensitive:
            from airflow.sdk.log import mask_secret

            for name, value in sensitive.items():
                mask_secret(value, name)
        template = Path(self.template_dir).expanduser().resolve()
        if not template.exists():
            raise FileNotFoundError(f"Packer template {template} does not exist (template_dir of {self.task_id})")
        cwd = template if template.is_dir() else template.parent
        variables = _as_mapping(self.variables, "variables")
        return PackerRunner(
            template,
            packer_bin=self.packer_bin,
            variables=variables,
            sensitive_variables=sensitive,
            var_files=_as_list(self.var_files, "var_files"),
            cwd=cwd,
            log=self.log.info,
            kill_grace_seconds=self.kill_grace_seconds,
            work_dir=self.resolve_work_dir(variables, cwd),
        )

    def resolve_work_dir(self, variables: dict[str, Any], cwd: Path) -> Path | None:
        """The build's work folder (see ``work_dir``); None for other commands."""
        if self.command != "build" or self.work_dir in (None, ""):
            return None
        if self.work_dir != AUTO:
            return Path(str(self.work_dir)).expanduser().resolve()
        out = variables.get("output_directory")
        if not isinstance(out, str) or not out.strip():
            return None
        path = Path(out).expanduser()
        return (path if path.is_absolute() else cwd / path).resolve().parent

    def execute(self, context: Any) -> dict[str, Any]:
        from bakery.packer.runner import PackerError

        runner = self._runner = self.make_runner(context)
        try:
            version = runner.version()
            self.log.info("Packer %s, template %s, command %s", version, runner.template, self.command)
            result: PackerResult | None
            if self.command == "init":
                result = runner.init()
            else:
                runner.init()
                if self.command == "validate":
                    result = runner.validate(only=self.only)
                else:
                    result = runner.build(force=True, only=self.only)
            manifest_entry = None
            if self.command == "build" and self.manifest_path:
                build = self.only[0] if self.only and len(self.only) == 1 else None
                manifest_entry = runner.manifest_entry(self.manifest_path, build=build)
                if result is not None:
                    result.manifest_entry = manifest_entry
        except PackerError as e:
            if self.command == "validate" and e.result is not None and not e.result.interrupted:
                # a template error is not fixed by retrying: fail without retries
                from airflow.sdk.exceptions import AirflowFailException

                raise AirflowFailException(str(e)) from e
            raise
        except BaseException:
            runner.terminate()  # no-op when the runner already stopped Packer
            raise
        run_uuid = runner.last_run_uuid
        if run_uuid is None and manifest_entry is not None:
            run_uuid = manifest_entry.get("packer_run_uuid")
        return {
            "command": self.command,
            "packer_version": version,
            "packer_run_uuid": run_uuid if self.command == "build" else None,
            "artifacts": [a.to_dict() for a in result.unique_artifacts()] if result is not None else [],
            "manifest_entry": manifest_entry,
        }

    def on_kill(self) -> None:
        if self._runner is not None:
            self._runner.terminate()
