"""bakery.accel: KVM only where it can boot a stock kernel; BAKERY_ACCEL overrides."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

# plugins/ is put on sys.path by tests/conftest.py (as Airflow does).
from bakery.accel import detect_accelerator, explain_accelerator

CPUINFO_PLAIN = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov sse sse2 ht syscall nx lm
bugs\t\t: spectre_v1

processor\t: 1
vendor_id\t: GenuineIntel
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov sse sse2 ht syscall nx lm
"""
CPUINFO_VMX = CPUINFO_PLAIN.replace("ht syscall", "ht vmx syscall")
CPUINFO_SVM = CPUINFO_PLAIN.replace(" lm\n", " lm svm\n")
# "vmx" only as part of another word, or outside the flags line, must not count.
CPUINFO_DECOYS = CPUINFO_PLAIN.replace("model name\t: Intel(R) Xeon(R) Platinum", "model name\t: vmx svm") \
    .replace("ht syscall", "ht vmxfoo svm_lock syscall")  # fmt: skip

MODULES_NONE = (
    "virtio_net 57344 0 - Live 0x0000000000000000\nkvm 1142784 0 - Live 0x0\n"
)
MODULES_INTEL = MODULES_NONE + "kvm_intel 380928 0 - Live 0x0000000000000000\n"
MODULES_AMD = "kvm_amd 155648 0 - Live 0x0\n" + MODULES_NONE


@pytest.fixture(autouse=True)
def _no_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BAKERY_ACCEL", raising=False)


@pytest.fixture
def usable_kvm() -> str:
    """A character device we can open read-write: stands in for a usable /dev/kvm."""
    assert os.access("/dev/null", os.R_OK | os.W_OK)
    return "/dev/null"


def files(tmp_path: Path, cpuinfo: str, modules: str | None) -> tuple[str, str]:
    cpu = tmp_path / "cpuinfo"
    cpu.write_text(cpuinfo)
    mods = tmp_path / "modules"
    if modules is not None:
        mods.write_text(modules)
    return str(cpu), str(mods)


@pytest.mark.parametrize(
    ("cpuinfo", "modules"),
    [
        (CPUINFO_VMX, MODULES_NONE),
        (CPUINFO_SVM, MODULES_NONE),
        (CPUINFO_PLAIN, MODULES_INTEL),
        (CPUINFO_PLAIN, MODULES_AMD),
        # no /proc/modules at all (kernel without modules): the flags suffice
        (CPUINFO_VMX, None),
    ],
    ids=[
        "vmx-flag",
        "svm-flag",
        "kvm_intel-loaded",
        "kvm_amd-loaded",
        "vmx-no-modules-file",
    ],
)
def test_kvm_when_device_usable_and_hw_virt(
    tmp_path: Path, usable_kvm: str, cpuinfo: str, modules: str | None
) -> None:
    cpu, mods = files(tmp_path, cpuinfo, modules)
    assert detect_accelerator(cpu, mods, usable_kvm) == "kvm"


def test_tcg_on_pvm_like_host_device_but_no_hw_virt(
    tmp_path: Path, usable_kvm: str
) -> None:
    # /dev/kvm usable, but no vmx/svm and no kvm_intel/kvm_amd: a PVM host. Must be TCG.
    cpu, mods = files(tmp_path, CPUINFO_PLAIN, MODULES_NONE)
    accel, reason = explain_accelerator(cpu, mods, usable_kvm, env={})
    assert accel == "tcg"
    assert "vmx/svm" in reason


def test_flag_must_be_a_whole_word_on_the_flags_line(
    tmp_path: Path, usable_kvm: str
) -> None:
    cpu, mods = files(tmp_path, CPUINFO_DECOYS, MODULES_NONE)
    assert detect_accelerator(cpu, mods, usable_kvm) == "tcg"


def test_tcg_when_kvm_device_missing(tmp_path: Path) -> None:
    cpu, mods = files(tmp_path, CPUINFO_VMX, MODULES_INTEL)
    assert detect_accelerator(cpu, mods, str(tmp_path / "no-such-kvm")) == "tcg"


def test_tcg_when_kvm_device_is_not_a_char_device(tmp_path: Path) -> None:
    cpu, mods = files(tmp_path, CPUINFO_VMX, MODULES_INTEL)
    fake = tmp_path / "kvm"
    fake.write_text("")  # a regular file is not a usable /dev/kvm
    assert detect_accelerator(cpu, mods, str(fake)) == "tcg"


def test_tcg_when_kvm_device_cannot_be_opened(tmp_path: Path) -> None:
    cpu, mods = files(tmp_path, CPUINFO_VMX, MODULES_INTEL)
    if os.geteuid() == 0:
        # Root opens any node whatever its mode: use a character device with no driver
        # (major 240 is reserved for local/experimental use), whose open() fails with ENXIO.
        dev = tmp_path / "kvm"
        try:
            os.mknod(dev, stat.S_IFCHR | 0o600, os.makedev(240, 0))
            os.close(os.open(dev, os.O_RDWR))
        except PermissionError:
            pytest.skip("cannot create device nodes here (nodev mount or no CAP_MKNOD)")
        except OSError:
            pass  # the expected case: the node exists but cannot be opened
        else:
            pytest.skip("a driver answers on char major 240 on this machine")
        assert detect_accelerator(cpu, mods, str(dev)) == "tcg"
    else:
        # /dev/mem cannot be opened read-write by an ordinary user.
        assert detect_accelerator(cpu, mods, "/dev/mem") == "tcg"


def test_missing_cpuinfo_and_modules_mean_tcg(tmp_path: Path, usable_kvm: str) -> None:
    assert (
        detect_accelerator(str(tmp_path / "x"), str(tmp_path / "y"), usable_kvm)
        == "tcg"
    )


@pytest.mark.parametrize(
    ("value", "expected"), [("kvm", "kvm"), ("tcg", "tcg"), (" KVM ", "kvm")]
)
def test_env_override_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str, expected: str
) -> None:
    # Detection alone would say tcg (no device): the override must win either way.
    cpu, mods = files(tmp_path, CPUINFO_PLAIN, MODULES_NONE)
    monkeypatch.setenv("BAKERY_ACCEL", value)
    assert detect_accelerator(cpu, mods, str(tmp_path / "none")) == expected


def test_env_override_tcg_beats_real_kvm(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, usable_kvm: str
) -> None:
    cpu, mods = files(tmp_path, CPUINFO_VMX, MODULES_INTEL)
    monkeypatch.setenv("BAKERY_ACCEL", "tcg")
    assert detect_accelerator(cpu, mods, usable_kvm) == "tcg"


def test_empty_env_override_means_detect(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, usable_kvm: str
) -> None:
    cpu, mods = files(tmp_path, CPUINFO_VMX, MODULES_NONE)
    monkeypatch.setenv("BAKERY_ACCEL", "")
    assert detect_accelerator(cpu, mods, usable_kvm) == "kvm"


@pytest.mark.parametrize("value", ["hvf", "kvm:tcg", "none", "1"])
def test_invalid_env_override_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    cpu, mods = files(tmp_path, CPUINFO_VMX, MODULES_INTEL)
    monkeypatch.setenv("BAKERY_ACCEL", value)
    with pytest.raises(ValueError, match=r"BAKERY_ACCEL=.*'kvm' or 'tcg'"):
        detect_accelerator(cpu, mods, "/dev/null")


def test_this_machine_gives_an_answer() -> None:
    assert detect_accelerator() in ("kvm", "tcg")
