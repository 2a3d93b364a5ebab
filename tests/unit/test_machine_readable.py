"""The machine-readable parser against REAL Packer 1.6.6 transcripts (tests/fixtures/packer/).

The transcripts were captured from real runs of the templates in tests/fixtures/templates/
(see tests/fixtures/packer/README.md); only the carriage-return case below is synthetic, since
Packer 1.6.6's provisioners resolve CRs before the UI sees them.

The Packer output edge cases (a crash, an artifact cut short, a path that is not UTF-8, an
artifact index that is not a number) are fed through ``PackerRunner`` itself, with
``tests/fixtures/packer/replay-packer`` standing in for the binary: it prints a transcript (real,
or a variant of a real one) byte for byte and exits with the code Packer did.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bakery.packer.machine_readable import BuildError, MachineReadableParser, decode, parse_line
from bakery.packer.runner import Masker, PackerError, PackerResult, PackerRunner, declares_required_plugins, is_hcl2

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TRANSCRIPTS = FIXTURES / "packer"
TEMPLATES = FIXTURES / "templates"


def parse(name: str, mask=None) -> MachineReadableParser:
    lines = (TRANSCRIPTS / name).read_text().splitlines(keepends=True)
    return MachineReadableParser(mask=mask).feed_all(lines)


def texts(p: MachineReadableParser, level: str | None = None) -> list[str]:
    return [u.text for u in p.ui if level is None or u.level == level]


# -- single lines ----------------------------------------------------------------------------


def test_line_fields_and_decoding():
    ev = parse_line("1795858532,,ui,message,    null.example: hello%!(PACKER_COMMA) world 1\n")
    assert (ev.timestamp, ev.target, ev.type, ev.level) == (1795858532, "", "ui", "message")
    assert ev.text == "    null.example: hello, world 1"
    assert not ev.raw


def test_artifact_file_line_keeps_every_field():
    ev = parse_line("1795858545,qemu.tiny,artifact,0,file,0,/tmp/brd/out/tiny.qcow2")
    assert ev.target == "qemu.tiny"
    assert ev.data == ("0", "file", "0", "/tmp/brd/out/tiny.qcow2")


def test_escaped_newline_and_carriage_return_are_decoded():
    assert decode("a%!(PACKER_COMMA) b\\nc\\rd") == "a, b\nc\rd"
    ev = parse_line("1,,ui,say,progress 10%\\rprogress 100%\\r\\ndone")  # synthetic, see module doc
    assert ev.text == "progress 10%\rprogress 100%\r\ndone"


def test_non_machine_readable_line_is_kept_raw():
    ev = parse_line("flag provided but not defined: -color\n")
    assert ev.raw and ev.level == "raw"
    assert ev.text == "flag provided but not defined: -color"
    p = MachineReadableParser().feed_all(["panic: runtime error\n", "\n"])
    assert p.raw_lines == ["panic: runtime error"]
    assert len(p.events) == 1  # the blank line is not an event


# -- real transcripts ------------------------------------------------------------------------


def test_version_transcript():
    p = parse("version.txt")
    assert p.version == "1.6.6"
    assert p.version_prerelease == ""


def test_hcl2_null_success():
    p = parse("hcl2_null_success.txt")
    assert p.builds == {"null.example": "finished"}
    # the manifest post-processor keeps its input: Packer reports the artifact twice
    assert p.artifact_counts == {"null.example": 2}
    assert [(a.build, a.index, a.builder_id, a.id, a.files, a.complete) for a in p.artifacts] == [
        ("null.example", 0, "fnoeding.null", "Null", [], True),
        ("null.example", 1, "fnoeding.null", "Null", [], True),
    ]
    msgs = texts(p, "message")
    assert "    null.example: hello, world 1" in msgs  # %!(PACKER_COMMA) decoded
    assert "    null.example: hello, world 2" in msgs
    assert "    null.example: first line" in msgs
    # provisioner stderr arrives as ui,error: recorded, but it is not a failure
    assert p.ui_errors == ["==> null.example: a line on stderr"]
    assert p.error_count is None and p.errors == []
    # leading "\n" of Packer's summary lines is dropped for the log
    assert "==> Builds finished. The artifacts of successful builds are:" in texts(p, "say")


def test_legacy_json_success_uses_the_builder_name():
    p = parse("legacy_json_success.txt")
    assert p.builds == {"legacy-null": "finished"}
    (art,) = p.artifacts
    assert (art.build, art.builder_id, art.id) == ("legacy-null", "fnoeding.null", "Null")
    assert "    legacy-null: hello, from a legacy JSON template" in texts(p, "message")


def test_failing_build_has_error_count_and_error_lines():
    p = parse("build_failure.txt")
    assert p.artifacts == []
    assert p.error_count == 1
    assert p.errors == [
        BuildError("null.failing", "Script exited with non-zero exit status: 3.Allowed exit codes are: [0]")
    ]
    assert p.builds == {"null.failing": "errored"}
    assert p.build_messages["null.failing"].startswith("Script exited with non-zero exit status: 3")
    assert "==> null.failing: provisioner says: disk full" in p.ui_errors


def test_validate_error_is_one_multiline_ui_error():
    p = parse("validate_error.txt")
    (err,) = p.ui_errors
    lines = err.splitlines()
    assert lines[0] == "Error: Unsupported argument"
    assert "validate_error.pkr.hcl line 4:" in err
    assert lines[-1] == 'An argument named "no_such_option" is not expected here.'
    assert "\\n" not in err


def test_qemu_success_artifact_with_file_and_multiline_comma_warning():
    p = parse("qemu_success.txt")
    (art,) = p.artifacts
    assert art.build == "qemu.reset"
    assert art.builder_id == "transcend.qemu"
    assert art.id == "VM"
    assert art.files_count == 1 and len(art.files) == 1 and art.files[0].endswith("/reset.qcow2")
    assert art.string.startswith("VM files in directory: ")
    assert art.complete
    warning = next(t for t in texts(p, "say") if t.startswith("Warning: A checksum of 'none'"))
    assert "Since ISO files are so big,\na checksum is highly recommended." in warning
    headless = next(t for t in texts(p, "message") if "headless" in t)
    assert headless.count("\n") == 2 and "run headless, without a GUI" in headless


def test_interrupted_qemu_build_is_errored_without_error_lines():
    p = parse("qemu_interrupted.txt")
    assert p.builds == {"qemu.blank": "errored"}
    assert p.build_messages["qemu.blank"] == "Build was cancelled."
    assert "Cancelling build after receiving terminated" in p.ui_errors
    assert "==> qemu.blank: Deleting output directory..." in texts(p, "say")
    assert p.error_count is None and p.artifacts == []


# -- masking ---------------------------------------------------------------------------------


def test_masker_masks_values_and_lines_of_multiline_secrets():
    m = Masker(["s3cr3t-token", "-----BEGIN KEY-----\nAAAAbbbbCCCC\n-----END KEY-----", ""])
    assert m("token=s3cr3t-token, again s3cr3t-token") == "token=***, again ***"
    assert m("a key line: AAAAbbbbCCCC") == "a key line: ***"
    assert m("nothing secret here") == "nothing secret here"
    assert not Masker([""]) and Masker(["x"])


def test_parser_masks_before_storing_anything():
    mask = Masker(["hello"])
    p = parse("hcl2_null_success.txt", mask=mask)
    joined = "\n".join(texts(p)) + repr(p.events)
    assert "hello" not in joined
    assert "    null.example: ***, world 1" in texts(p, "message")
    f = parse("build_failure.txt", mask=Masker(["disk full", "non-zero"]))
    assert f.errors[0].message == "Script exited with *** exit status: 3.Allowed exit codes are: [0]"
    assert "==> null.failing: provisioner says: ***" in f.ui_errors


# -- what the runner makes of a transcript (no process) --------------------------------------


def _result_from(name: str, command: str, exit_code: int, interrupted: bool = False) -> PackerResult:
    p = parse(name)
    return PackerResult(
        command=command,
        exit_code=exit_code,
        artifacts=p.artifacts,
        errors=p.errors,
        ui_errors=p.ui_errors,
        raw_lines=p.raw_lines,
        builds=p.builds,
        interrupted=interrupted,
    )


def test_failure_message_quotes_packer_error_lines_and_the_stderr_before():
    runner = PackerRunner(TEMPLATES / "build_fail", sensitive_variables={"pw": "disk full"})
    msg = runner._failure_message(_result_from("build_failure.txt", "build", 1))
    assert msg.splitlines()[0].endswith("failed with exit code 1:")
    assert "  null.failing: Script exited with non-zero exit status: 3." in msg
    assert "provisioner says: ***" in msg  # the stderr context, masked
    assert "disk full" not in msg


def test_failure_message_of_validate_quotes_the_ui_error():
    runner = PackerRunner(TEMPLATES / "validate_error")
    msg = runner._failure_message(_result_from("validate_error.txt", "validate", 1))
    assert "packer validate of" in msg
    assert 'An argument named "no_such_option" is not expected here.' in msg


def test_failure_message_of_an_interrupted_build():
    runner = PackerRunner(TEMPLATES / "qemu_wait_ssh")
    msg = runner._failure_message(_result_from("qemu_interrupted.txt", "build", 1, interrupted=True))
    assert "was stopped" in msg and "Build was cancelled." in msg


def test_result_ok_needs_exit_0_and_an_artifact_for_build():
    ok = _result_from("hcl2_null_success.txt", "build", 0)
    assert ok.ok and len(ok.unique_artifacts()) == 1  # the manifest's copy is folded
    assert not _result_from("hcl2_null_success.txt", "build", 1).ok
    no_artifact = _result_from("build_failure.txt", "build", 0)
    assert not no_artifact.ok
    assert _result_from("validate_error.txt", "validate", 0).ok


# -- manifest --------------------------------------------------------------------------------


def test_manifest_entry_is_the_one_of_our_run(tmp_path):
    manifest = json.loads((TRANSCRIPTS / "hcl2_null_success.manifest.json").read_text())
    ours = manifest["last_run_uuid"]
    other = dict(manifest["builds"][0], packer_run_uuid="00000000-0000-0000-0000-000000000000", name="old")
    manifest["builds"].insert(0, other)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    runner = PackerRunner(TEMPLATES / "null_ok")
    runner.last_run_uuid = ours
    entry = runner.manifest_entry(path)
    assert entry["packer_run_uuid"] == ours and entry["name"] == "example"
    assert runner.manifest_entry(path, build="null.example") == entry
    runner.last_run_uuid = "11111111-2222-3333-4444-555555555555"
    with pytest.raises(PackerError, match="has no entry for our Packer run 11111111-2222"):
        runner.manifest_entry(path)
    with pytest.raises(PackerError, match="does not exist"):
        runner.manifest_entry(tmp_path / "missing.json")


# -- template kinds --------------------------------------------------------------------------


def test_template_kind_and_required_plugins(tmp_path):
    assert is_hcl2(TEMPLATES / "null_ok") and is_hcl2("x.pkr.hcl") and is_hcl2("x.pkr.json")
    assert not is_hcl2(TEMPLATES / "legacy_ok.json")
    assert not declares_required_plugins(TEMPLATES / "null_ok")
    (tmp_path / "plugins.pkr.hcl").write_text(
        'packer {\n  required_plugins {\n    qemu = {\n      source = "github.com/hashicorp/qemu"\n    }\n  }\n}\n'
    )
    assert declares_required_plugins(tmp_path)
    (tmp_path / "plugins.pkr.hcl").write_text("# required_plugins { } is only a comment here\n")
    assert not declares_required_plugins(tmp_path)


def test_variable_names_are_checked_and_not_given_twice():
    with pytest.raises(ValueError, match="not a valid identifier"):
        PackerRunner("t.pkr.hcl", variables={"bad name": "x"})
    with pytest.raises(ValueError, match="both as plain and as sensitive"):
        PackerRunner("t.pkr.hcl", variables={"a": "1"}, sensitive_variables={"a": "2"})


# -- Packer output edge cases, fed through the runner ---------------------------------------------

REPLAY = TRANSCRIPTS / "replay-packer"


def replay(transcript: Path, exit_code: int, lines: list[str] | None = None) -> PackerRunner:
    """A runner whose ``packer`` prints ``transcript`` and exits ``exit_code``."""
    return PackerRunner(TEMPLATES / "null_ok", packer_bin=str(REPLAY), log=(lines if lines is not None else []).append,
                        env={"REPLAY_TRANSCRIPT": str(transcript), "REPLAY_EXIT": str(exit_code)})


def test_real_transcripts_have_whole_artifacts():
    for name in ("hcl2_null_success.txt", "legacy_json_success.txt", "qemu_success.txt"):
        assert parse(name).artifact_problems() == [], name
    result = replay(TRANSCRIPTS / "qemu_success.txt", 0).build()
    assert result.ok and result.artifact_problems == []
    (art,) = result.artifacts
    assert art.files == ["/tmp/brd/cap/out/reset.qcow2"] and art.files_count == 1


def test_a_packer_crash_is_quoted_not_the_provisioner_stderr_before_it():
    """A panic: exit 2, no error-count / error lines; the panic (raw lines) is the reason."""
    with pytest.raises(PackerError) as info:
        replay(TRANSCRIPTS / "variant_panic.txt", 2).build()
    msg = str(info.value)
    head, _, context = msg.partition("last error output before that:")
    assert head.splitlines()[0].endswith("failed with exit code 2:")
    assert head.splitlines()[1] == "  panic: runtime error: invalid memory address or nil pointer dereference"
    assert "provisioner/shell-local/provisioner.go:43" in head
    assert "Packer crashed: it wrote crash.log in its working folder" in head
    assert "apt-get clean" not in head and "!!!" not in head
    assert "==> null.crash: + apt-get clean" in context  # what the build printed last: context only
    assert info.value.result.raw_lines[0].startswith("panic: ")


def test_a_packer_that_dies_without_a_word_is_not_blamed_on_the_provisioner():
    """Real output of a Packer whose core was killed (SIGQUIT) mid-provisioner: exit 2, only UI lines."""
    with pytest.raises(PackerError) as info:
        replay(TRANSCRIPTS / "crash_sigquit.txt", 2).build()
    head, _, context = str(info.value).partition("last error output before that:")
    assert "Packer exited with code 2 without saying why" in head and "crashed or was killed" in head
    assert "apt-get clean" not in head
    assert "==> null.crash: + apt-get clean" in context and "==> null.crash: + sleep 30" in context


def test_an_artifact_cut_after_its_builder_id_is_not_a_success():
    lines: list[str] = []
    runner = replay(TRANSCRIPTS / "variant_artifact_cut.txt", 0, lines)
    with pytest.raises(PackerError) as info:
        runner.build()
    msg = str(info.value)
    assert "exited 0 but its artifacts are not whole" in msg
    assert "artifact 0 of qemu.reset: no id, no files-count line, no end line" in msg
    result = info.value.result
    assert result.exit_code == 0 and not result.ok
    assert not any(line.startswith("artifact of ") for line in lines)  # never announced as built


def test_a_path_that_is_not_utf8_names_the_same_file(tmp_path):
    out = os.fsencode(tmp_path) + b"/out-\xff\xfe-caf\xe9"
    os.mkdir(out)
    disk = out + b"/reset.qcow2"
    open(disk, "wb").close()
    transcript = tmp_path / "transcript.txt"
    transcript.write_bytes((TRANSCRIPTS / "qemu_success.txt").read_bytes().replace(b"/tmp/brd/cap/out", out))
    lines: list[str] = []
    result = replay(transcript, 0, lines).build()
    (art,) = result.artifacts
    (path,) = art.files
    assert os.fsencode(path) == disk and os.path.isfile(path)  # the bytes Packer wrote, not U+FFFD
    assert art.string == "VM files in directory: " + os.fsdecode(out)
    # the log shows the odd bytes escaped (a log line must be valid UTF-8)
    logged = next(line for line in lines if line.startswith("artifact of qemu.reset"))
    assert "out-\\xff\\xfe-caf\\xe9/reset.qcow2" in logged
    for line in lines:
        line.encode("utf-8")


def test_an_artifact_index_that_is_not_a_number_is_not_merged_into_artifact_0():
    p = parse("variant_artifact_index.txt")
    (art,) = p.artifacts  # artifact 0 only, untouched by the lines of "1x"
    assert (art.index, art.id, art.files_count, art.complete) == (0, "Null", 0, True)
    assert len(p.malformed) == 5 and "artifact index '1x' is not a number" in p.malformed[0]
    with pytest.raises(PackerError) as info:
        replay(TRANSCRIPTS / "variant_artifact_index.txt", 0).build()
    msg = str(info.value)
    assert "null.example: artifact index '1x' is not a number" in msg
    assert "null.example: 2 artifacts announced, 1 reported" in msg
