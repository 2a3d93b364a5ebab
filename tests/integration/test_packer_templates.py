"""The Packer folders rendered from one source (``bakery.templates``), with the REAL packer (Debian's 1.6.6).

* every family renders a folder that `packer validate`s and is `packer fmt` clean (its ``init/`` too);
* each rendered folder equals, in effect, the folder that was committed for the family before the
  folders were rendered (``tests/fixtures/packer-templates-before.json``): Packer's own view
  (`packer inspect`: variables and defaults, locals, sources, provisioners, post-processors) is the
  same, and so is every line of code of every file (HCL and scripts, comments and variable
  descriptions aside) but for the changes listed in ``INTENDED``;
* the sources no longer repeat each other's lines; a new family is one small file; a family file
  with a mistake fails with a message naming the file and the field;
* the bake's ``prepare`` renders the folder into the run's work folder, digests exactly that folder,
  keeps a copy by digest, and hands the folder to the target and to the ``validate``/``build`` tasks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from bakery import bake, templates
from bakery.digest import tree_digest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from tests.tools import find_tool

REPO = Path(__file__).resolve().parents[2]
BEFORE = json.loads((REPO / "tests" / "fixtures" / "packer-templates-before.json").read_text())["folders"]
FAMILIES = sorted(BEFORE)
PACKER = find_tool("packer") or "packer"
SHARED_CAPTURE = templates.PACKER_DIR / "shared" / "capture-packages.sh"

# What rendering changed on purpose, as (old line, new line or lines) of the normalised code:
# the capture script is the folder's own copy now (the same file, tested below), and the local
# build VM's SSH port forward listens on loopback only instead of every interface.
CAPTURE_OLD = 'script = "${path.root}/../shared/capture-packages.sh"'
CAPTURE_NEW = 'script = "${path.root}/scripts/capture-packages.sh"'
# Then the bakery's SSH relay (bakery.ssh_relay): two variables, and with ssh_relay_port set Packer makes no
# forward of its own and connects to the relay, QEMU forwarding the relay's upstream port.
NETDEV = '["-netdev", "user,id=user.0,hostfwd=tcp:127.0.0.1:${local.ssh_host_port}-:22"],'
SERIAL_ARGS = ('serial_args = var.serial_log_path == "" ? [] : [["-serial", "file:${replace(var.serial_log_path, '
               '",", ",,")}"]]')
RELAY_VARIABLES = ['variable "ssh_relay_port" {', "type = number", "default = 0", "}",
                   'variable "ssh_forward_port" {', "type = number", "default = 0", "}"]
INTENDED: dict[str, list[tuple[str, list[str]]]] = {
    "*": [(CAPTURE_OLD, [CAPTURE_NEW])],
    "debian12-nginx": [
        ('["-cpu", var.cpu_model],', ['["-cpu", var.cpu_model],', NETDEV]),
        (SERIAL_ARGS, [SERIAL_ARGS, 'ssh_host_port = var.ssh_relay_port > 0 ? "${var.ssh_forward_port}" : '
                                    '"{{ .SSHHostPort }}"']),
        ('communicator = "ssh"', ["skip_nat_mapping = var.ssh_relay_port > 0", 'ssh_host = "127.0.0.1"',
                                  "ssh_port = var.ssh_relay_port > 0 ? var.ssh_relay_port : 22", 'communicator = "ssh"']),
        ('variable "ssh_timeout" {', [*RELAY_VARIABLES, 'variable "ssh_timeout" {']),
    ],
}
INSPECT_ADDED = {"debian12-nginx": {'var.ssh_forward_port: "0"', 'var.ssh_relay_port: "0"',
                                    'local.ssh_host_port: "{{ .SSHHostPort }}"'}}

pytestmark = pytest.mark.needs_tools("packer")


def packer(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PKR_VAR_", "PACKER_LOG"))}
    return subprocess.run([PACKER, *args], cwd=cwd, env={**base, "CHECKPOINT_DISABLE": "1", **(env or {})},
                          capture_output=True, text=True, timeout=120, check=False)


def code_lines(path: str, text: str) -> list[str]:
    """The lines that have an effect: no blank or comment lines, no variable descriptions, white space
    folded (packer fmt's alignment is not an effect)."""
    comment = ("#",) if path.endswith(".sh") else ("//", "#")
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or (stripped.startswith(comment) and not stripped.startswith("#!")):
            continue
        if path.endswith(".pkr.hcl") and re.match(r"description\s*=", stripped):
            continue
        out.append(" ".join(stripped.split()))
    return out


def expected_lines(family: str, path: str, text: str) -> list[str]:
    lines = code_lines(path, text)
    for old, new in INTENDED["*"] + INTENDED.get(family, []):
        lines = [n for line in lines for n in (new if line == old else [line])]
    return lines


def write_before(family: str, dest: Path) -> Path:
    for rel, text in BEFORE[family].items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(text)
    return dest


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture
def rendered(family, tmp_path) -> Path:
    return templates.render(family, tmp_path / "rendered" / family)


def validate_env(family: str, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """Arguments and environment for `packer validate` of the family's folder, as the bake gives them."""
    if templates.load_family(family).builder == "qemu":
        base = tmp_path / "base.qcow2"
        base.write_bytes(b"stand-in base image: packer validate does not read it")
        work = tmp_path / "work"
        key = Ed25519PrivateKey.generate()
        (tmp_path / "key").write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()))
        (tmp_path / "key.pub").write_bytes(key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH))
        variables = {"base_image_path": str(base), "base_image_checksum": hashlib.sha256(base.read_bytes()).hexdigest(),
                     "output_directory": str(work / "output"), "accelerator": "tcg",
                     "ssh_private_key_file": str(tmp_path / "key"), "ssh_public_key_file": str(tmp_path / "key.pub"),
                     "manifest_path": str(work / "manifest.json"), "image_version": "2026.1120.200000",
                     "package_list_path": str(work / "packages.tsv")}
        env = {}
    else:
        variables = {"subscription_id": "00000000-0000-0000-0000-0000000000a1", "tenant_id": "00000000-0000-0000-0000-0000000000b2",
                     "client_id": "00000000-0000-0000-0000-0000000000c3", "location": "westeurope",
                     "managed_image_resource_group_name": "rg-bakery-images", "image_version": "2026.1128.200000",
                     "dag_run_id": "scheduled__2026-11-28T02:00:00+00:00", "manifest_path": str(tmp_path / "manifest.json"),
                     "package_list_path": str(tmp_path / "packages.tsv")}
        env = {"PKR_VAR_client_secret": "not-a-real-secret-" + hashlib.sha256(os.urandom(8)).hexdigest()[:12]}
    var_file = tmp_path / "variables.pkrvars.json"
    var_file.write_text(json.dumps(variables))
    return [f"-var-file={var_file}"], env


# --- real Packer ---------------------------------------------------------------------------------------
def test_the_rendered_folder_passes_packer_validate(family, rendered, tmp_path):
    args, env = validate_env(family, tmp_path)
    proc = packer("validate", *args, str(rendered), cwd=tmp_path, env=env)
    assert proc.returncode == 0, f"packer validate {rendered}:\n{proc.stdout}{proc.stderr}"


def test_the_rendered_folder_is_packer_fmt_clean(family, rendered):
    for folder in (rendered, rendered / "init"):
        proc = packer("fmt", "-check", "-diff", str(folder), cwd=folder)
        assert proc.returncode == 0, f"packer fmt -check {folder}:\n{proc.stdout}{proc.stderr}"


def test_control_validate_fails_on_a_broken_render(family, rendered, tmp_path):
    (rendered / "variables.pkr.hcl").write_text((rendered / "variables.pkr.hcl").read_text().replace(
        'variable "image_version" {', 'variable "image_version" {\n  oops = 1', 1))
    args, env = validate_env(family, tmp_path)
    assert packer("validate", *args, str(rendered), cwd=tmp_path, env=env).returncode != 0


# --- equal in effect to the folders committed before ------------------------------------------------
def test_packer_inspect_sees_the_same_template(family, rendered, tmp_path):
    """Variables (names, defaults), locals, the source, the provisioners and post-processors, as Packer reads them."""
    before = packer("inspect", str(write_before(family, tmp_path / "before" / family)), cwd=tmp_path)
    after = packer("inspect", str(rendered), cwd=tmp_path)
    assert before.returncode == 0 and after.returncode == 0, before.stderr + after.stderr
    assert "input-variables" in after.stdout and f".{templates.load_family(family).source}" in after.stdout
    added = INSPECT_ADDED.get(family, set())
    assert added <= set(after.stdout.splitlines())
    assert [line for line in after.stdout.splitlines() if line not in added] == before.stdout.splitlines()


def test_every_line_of_code_is_the_same_but_the_intended_changes(family, rendered):
    files = {p.relative_to(rendered).as_posix() for p in rendered.rglob("*") if p.is_file()}
    assert files == set(BEFORE[family]) | {"README.md", "scripts/capture-packages.sh"}
    for path, old in sorted(BEFORE[family].items()):
        new = (rendered / path).read_text()
        assert code_lines(path, new) == expected_lines(family, path, old), f"{family}/{path} changed in effect"
    # the capture script the templates ran as ../shared/capture-packages.sh, now the folder's own copy
    assert (rendered / "scripts" / "capture-packages.sh").read_text() == SHARED_CAPTURE.read_text()
    for path in files:
        mode = (rendered / path).stat().st_mode & 0o777
        assert mode == (0o755 if path.endswith(".sh") else 0o644), (path, oct(mode))


def test_control_the_comparison_sees_a_changed_setting(family, rendered):
    path = f"{family}.pkr.hcl"
    text = (rendered / path).read_text()
    changed = re.sub(r'(\n  \w+\s+= )("[^"\n]*"|var\.\w+)\n', r'\1"changed"\n', text, count=1)
    assert changed != text
    assert code_lines(path, changed) != expected_lines(family, path, BEFORE[family][path])


# --- one source ----------------------------------------------------------------------------------------
def windows(text: str, size: int = 6) -> set[tuple[str, ...]]:
    lines = [" ".join(ln.split()) for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(("#", "//", "{#")) and ln not in ("}", "{", "]", ")")]
    return {tuple(lines[i:i + size]) for i in range(len(lines) - size + 1)}


def repeats(root: Path) -> list[str]:
    """Pairs of source files under ``root`` that share a run of six lines of code."""
    seen: dict[tuple[str, ...], Path] = {}
    found = set()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".md"):
        for window in windows(path.read_text()):
            if window in seen and seen[window] != path:
                found.add(f"{seen[window].relative_to(root)} ~ {path.relative_to(root)}")
            seen.setdefault(window, path)
    return sorted(found)


def test_the_sources_no_longer_repeat_each_others_lines():
    assert repeats(templates.PACKER_DIR) == []
    for family in FAMILIES:
        assert len((templates.PACKER_DIR / family / templates.FAMILY_FILE).read_text().splitlines()) <= 25


def test_control_the_repeat_check_sees_a_copy(tmp_path):
    shutil.copytree(templates.PACKER_DIR, tmp_path / "packer")
    text = (tmp_path / "packer" / "shared" / "azure-arm" / "variables.pkr.hcl.j2").read_text()
    (tmp_path / "packer" / "shared" / "azure-arm" / "other.pkr.hcl.j2").write_text(text.replace("family.name", "x"))
    assert repeats(tmp_path / "packer") == ["shared/azure-arm/other.pkr.hcl.j2 ~ shared/azure-arm/variables.pkr.hcl.j2"]


def test_a_new_family_is_one_small_file(tmp_path):
    """A copy of the sources with one more family file: it renders, validates, and a catalogue can name it."""
    from bakery.catalogue import parse_catalogue
    from bakery.preflight import check_variables

    packer_dir = tmp_path / "packer"
    shutil.copytree(templates.PACKER_DIR / "shared", packer_dir / "shared")
    (packer_dir / "debian12-web").mkdir()
    (packer_dir / "debian12-web" / "family.yaml").write_text(
        "title: Debian 12 + updates + a web server\nbuilder: qemu\nsource: web\npackages: apt\n")
    entry = yaml.safe_load((REPO / "include" / "catalogue.yaml").read_text())["images"]["debian12-nginx"]
    entry.update(template="debian12-web", variables={"packages": "nginx-light"})
    spec = parse_catalogue({"version": 1, "images": {"debian12-web": entry}}, packer_dir=packer_dir)["debian12-web"]
    check_variables(spec)  # `packages` is declared by the rendered template
    folder = templates.render(spec, tmp_path / "rendered")
    assert (folder / "debian12-web.pkr.hcl").read_text().count('source "qemu" "web"') == 1
    assert 'image_family        = "debian12-web"' in (folder / "debian12-web.pkr.hcl").read_text()
    args, env = validate_env("debian12-nginx", tmp_path)
    proc = packer("validate", *args, str(folder), cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("content, message", [
    ("title: x\nbuilder: vmware\nsource: s\npackages: apt\n", "field 'builder': 'vmware' is not one of qemu, azure-arm"),
    ("title: x\nbuilder: azure-arm\nsource: s\npackages: apt\nos: o\nimage_name: i\n",
     "field 'base_image' is required for the azure-arm builder"),
    ("title: x\nbuilder: qemu\nsource: s\npackages: apt\nbase_imag: {}\n", "unknown field 'base_imag'"),
])
def test_a_wrong_family_file_names_the_file_and_the_field(tmp_path, content, message):
    shutil.copytree(templates.PACKER_DIR / "shared", tmp_path / "shared")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "family.yaml").write_text(content)
    with pytest.raises(templates.TemplateError) as err:
        templates.render("bad", tmp_path / "out", packer_dir=tmp_path)
    assert str(tmp_path / "bad" / "family.yaml") in str(err.value) and message in str(err.value)
    assert not (tmp_path / "out").exists()


def test_render_replaces_a_folder_whole(tmp_path):
    dest = tmp_path / "packer"
    templates.render("debian12-nginx", dest)
    (dest / "stale.pkr.hcl").write_text("// left by an older render\n")
    templates.render("rhel9-nginx-azure", dest)
    assert not (dest / "stale.pkr.hcl").exists() and not (dest / "debian12-nginx.pkr.hcl").exists()
    assert (dest / "rhel9-nginx-azure.pkr.hcl").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["packer"]  # no temporary folder left


# --- prepare --------------------------------------------------------------------------------------------
class StubTarget:
    """Records what the bake hands to the target's prepare."""

    def __init__(self) -> None:
        self.spec = None

    def prepare(self, spec, record, work_dir, **kwargs):
        self.spec = spec
        return {"manifest_path": str(work_dir / "manifest.json")}, None


@pytest.mark.parametrize("image", ["debian12-nginx", "rhel9-nginx"])
def test_prepare_renders_into_the_work_folder_and_digests_it(image, tmp_path, monkeypatch):
    from bakery.catalogue import get_image

    if image == "debian12-nginx" and not (shutil.which("qemu-system-x86_64") and shutil.which("qemu-img")):
        pytest.skip("the local preflight wants QEMU on PATH")
    monkeypatch.setenv("BAKERY_HOME", str(tmp_path / "home"))
    spec = get_image(image)
    target = StubTarget()
    when = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    prepared = bake.prepare(spec, run_type="scheduled", logical_date=when, run_after=when, dag_run_id="r1",
                            log=print, target=target, now=when)
    folder = Path(prepared["template_dir"])
    rec = prepared["record"]
    assert folder == tmp_path / "home" / "work" / image / rec["version"] / "packer"
    assert (folder / f"{spec.template}.pkr.hcl").is_file() and (folder / "scripts" / "capture-packages.sh").is_file()
    assert rec["template_digest"] == tree_digest(folder) == bake.template_digest(folder)
    assert target.spec.template_dir == folder and target.spec.name == image  # the target reads the rendered folder
    kept = Path(rec["extra"]["template"]["kept"])
    assert kept == tmp_path / "home" / "templates" / "sha256" / rec["template_digest"].removeprefix("sha256:")
    assert tree_digest(kept) == rec["template_digest"]
    # the same template again (the next night): the same digest, kept once
    again = bake.prepare(spec, run_type="manual", logical_date=None, run_after=when, dag_run_id="r2", log=print,
                         target=StubTarget(), now=when)
    assert again["record"]["template_digest"] == rec["template_digest"]
    assert len(list((tmp_path / "home" / "templates" / "sha256").iterdir())) == 1


def test_the_packer_tasks_take_the_folder_prepare_rendered():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "image_bakery.py"))
    assert bag.dags and not bag.import_errors
    for dag in bag.dags.values():
        for task_id in ("validate", "build"):
            arg = dag.get_task(task_id).template_dir  # prepare.output["template_dir"] (an XComArg)
            assert (arg.operator.task_id, arg.key) == ("prepare", "template_dir")


def test_a_packer_task_whose_folder_is_gone_says_to_clear_prepare(tmp_path):
    from bakery.operators.bake import QemuPackerOperator
    from bakery.preflight import PreflightError

    gone = tmp_path / "work" / "debian12-nginx" / "2026.1128.200000" / "packer"
    op = QemuPackerOperator(task_id="build", command="build", template_dir=str(gone), variables={})
    with pytest.raises(PreflightError, match=r"clear this run's prepare task and the tasks after it") as err:
        op.execute({})
    assert str(gone) in str(err.value)
