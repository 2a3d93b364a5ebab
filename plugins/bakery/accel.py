"""Pick the QEMU accelerator for this machine: ``kvm`` only where it can really boot a guest.

Plain Python, no Airflow import. The rule (see DESIGN.md, "Facts about this machine"):

* ``BAKERY_ACCEL=kvm|tcg`` in the environment wins (anything else is an error; empty = unset);
* otherwise ``kvm`` only if ``/dev/kvm`` is a usable character device (open read-write works)
  AND the CPU advertises hardware virtualisation (``vmx``/``svm`` in ``/proc/cpuinfo`` flags) or
  ``kvm_intel``/``kvm_amd`` is loaded (``/proc/modules``). A ``/dev/kvm`` without either (e.g. a
  PVM host) cannot boot a stock distribution kernel, so that case is ``tcg``;
* else ``tcg``.

The CPU model is not chosen here: callers never pass ``-cpu host`` by default.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

ENV_VAR = "BAKERY_ACCEL"
ACCELERATORS = ("kvm", "tcg")
_HW_FLAGS = frozenset({"vmx", "svm"})
_KVM_MODULES = frozenset({"kvm_intel", "kvm_amd"})


def _override(env: Mapping[str, str]) -> str | None:
    raw = env.get(ENV_VAR)
    if raw is None or raw.strip() == "":
        return None
    value = raw.strip().lower()
    if value not in ACCELERATORS:
        raise ValueError(
            f"{ENV_VAR}={raw!r} is not a valid accelerator: use 'kvm' or 'tcg', "
            f"or unset {ENV_VAR} to detect it"
        )
    return value


def _cpu_has_hw_virt(cpuinfo_path: str) -> bool:
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "flags" and _HW_FLAGS & set(value.split()):
                    return True
    except OSError:
        return False
    return False


def _kvm_module_loaded(modules_path: str) -> bool:
    try:
        with open(modules_path, encoding="utf-8", errors="replace") as fh:
            return any(line.split(" ", 1)[0] in _KVM_MODULES for line in fh)
    except OSError:
        return False


def _kvm_dev_usable(kvm_dev: str) -> bool:
    try:
        if not stat.S_ISCHR(os.stat(kvm_dev).st_mode):
            return False
        fd = os.open(kvm_dev, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def explain_accelerator(
    cpuinfo_path: str = "/proc/cpuinfo",
    modules_path: str = "/proc/modules",
    kvm_dev: str = "/dev/kvm",
    env: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """Return ``(accelerator, reason)``; the reason is one short sentence for logs."""
    override = _override(os.environ if env is None else env)
    if override is not None:
        return override, f"forced by {ENV_VAR}={override}"
    if not _kvm_dev_usable(kvm_dev):
        return "tcg", f"{kvm_dev} is missing or not usable (read-write open failed)"
    if _cpu_has_hw_virt(cpuinfo_path):
        return "kvm", f"{kvm_dev} usable and the CPU advertises vmx/svm"
    if _kvm_module_loaded(modules_path):
        return "kvm", f"{kvm_dev} usable and kvm_intel/kvm_amd is loaded"
    return (
        "tcg",
        (
            f"{kvm_dev} exists but the CPU has no vmx/svm flag and no kvm_intel/kvm_amd "
            "module is loaded (e.g. a PVM host that cannot boot a stock kernel)"
        ),
    )


def detect_accelerator(
    cpuinfo_path: str = "/proc/cpuinfo",
    modules_path: str = "/proc/modules",
    kvm_dev: str = "/dev/kvm",
) -> str:
    """Return ``"kvm"`` or ``"tcg"`` for this machine (``BAKERY_ACCEL`` overrides).

    Raises ``ValueError`` if ``BAKERY_ACCEL`` is set to anything but ``kvm`` or ``tcg``.
    """
    return explain_accelerator(cpuinfo_path, modules_path, kvm_dev)[0]
