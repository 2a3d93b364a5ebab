"""The Azure Packer templates (the folders rendered for include/packer/*-azure) with the REAL packer
binary (Debian's 1.6.6).

No Azure account is needed: ``packer validate`` checks the azure-arm builder's configuration
offline, ``packer inspect`` / ``packer console`` evaluate variables and expressions as Packer does.
Plain variables go in a JSON var-file, ``client_secret`` only in ``PKR_VAR_client_secret`` (as the
product passes them). Every check is a function returning its findings; the "control" tests run
it on a deliberately broken copy of the template to show it can fail.

The light HCL reading here relies on the ``packer fmt`` layout (blocks closed by a ``}`` at their
own indentation, two spaces per level), which ``test_packer_fmt_check_is_clean`` enforces.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from bakery.templates import render

from tests.tools import find_tool

REPO = Path(__file__).resolve().parents[2]
PACKER_DIR = REPO / "include" / "packer"
REAL_PACKER = find_tool("packer") or "packer"

# template folder -> (source name, image family, update commands that must precede nginx)
TEMPLATES = {
    "rhel9-nginx-azure": ("rhel9", "rhel9-nginx", ["dnf -y update"]),
    "ubuntu2404-nginx-azure": ("ubuntu2404", "ubuntu2404-nginx", ["apt_get update", "apt_get full-upgrade"]),
}
NGINX_INSTALL = {
    "rhel9-nginx-azure": "dnf -y install nginx",
    "ubuntu2404-nginx-azure": "apt_get install nginx",
}
DEPROVISION = "/usr/sbin/waagent -force -deprovision+user && export HISTSIZE=0 && sync"
REQUIRED = ["subscription_id", "location", "managed_image_resource_group_name", "image_version", "dag_run_id",
            "manifest_path", "package_list_path"]
CAPTURE_SCRIPT = PACKER_DIR / "shared" / "capture-packages.sh"
PACKAGE_LIST_IN_GUEST = "/tmp/bakery-packages.tsv"  # what capture-packages.sh writes by default
COMMON_VARIABLES = {
    "client_id", "client_secret", "tenant_id", "subscription_id", "use_azure_cli_auth", "cloud_environment_name",
    "location", "vm_size", "build_resource_group_name", "managed_image_resource_group_name", "image_name",
    "image_version", "dag_run_id", "manifest_path", "package_list_path", "base_image_publisher", "base_image_offer", "base_image_sku",
    "base_image_version", "plan_name", "plan_product", "plan_publisher",
}

# Unique per session and not a substring of anything Packer prints: Packer masks sensitive values
# in ALL its output, so a short dummy ("x") would mangle every message containing that letter.
SECRET = "bakery-test-" + secrets.token_hex(16)

pytestmark = pytest.mark.needs_tools("packer")


# === running packer ================================================================================
def base_variables(tmp_path: Path, family: str) -> dict:
    return {
        "subscription_id": "00000000-0000-0000-0000-0000000000a1",
        "tenant_id": "00000000-0000-0000-0000-0000000000b2",
        "client_id": "00000000-0000-0000-0000-0000000000c3",
        "location": "westeurope",
        "managed_image_resource_group_name": "rg-bakery-images",
        "image_name": family,
        "image_version": "2026.1128.200000",
        "dag_run_id": "scheduled__2026-11-28T02:00:00+00:00",
        "manifest_path": str(tmp_path / "manifest.json"),
        "package_list_path": str(tmp_path / "packages.tsv"),
    }


def write_var_file(tmp_path: Path, variables: dict) -> Path:
    path = tmp_path / "bakery-variables.pkrvars.json"
    path.write_text(json.dumps(variables, indent=2))
    path.chmod(0o600)
    return path


def packer(args: list[str], *, cwd: Path, secret: str | None = SECRET, stdin: str | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PKR_VAR_", "PACKER_LOG"))}
    env["CHECKPOINT_DISABLE"] = "1"
    if secret is not None:
        env["PKR_VAR_client_secret"] = secret
    argv = [REAL_PACKER, *args]
    assert SECRET not in " ".join(argv), "the secret must never be on the command line"
    return subprocess.run(argv, check=False, cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=timeout)


def validate(template: Path, var_file: Path, *extra: str, secret: str | None = SECRET) -> subprocess.CompletedProcess:
    return packer(["validate", f"-var-file={var_file}", *extra, str(template)], cwd=var_file.parent, secret=secret)


def console(template: Path, var_file: Path, expression: str, *extra: str):
    """Evaluate one HCL expression with Packer's own evaluator; returns the decoded JSON value."""
    proc = packer(["console", f"-var-file={var_file}", *extra, str(template)], cwd=var_file.parent,
                  stdin=f"jsonencode({expression})\n")
    assert proc.returncode == 0, f"packer console failed on {expression!r}:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


# === reading HCL in `packer fmt` layout ===========================================================
@dataclass
class Block:
    type: str
    labels: list[str]
    lines: list[str]  # body, at indent + 2
    indent: int
    attrs: dict[str, str] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)


_BLOCK = re.compile(r'^(?P<type>[A-Za-z][\w-]*)(?P<labels>(?:\s+"[^"]*")*)\s*\{\s*$')
_ATTR = re.compile(r"^(?P<name>[A-Za-z_][\w-]*)\s*=\s*(?P<expr>.*)$")
_OPENERS = {"{": "}", "[": "]", "(": ")"}


def string_literals(expr: str) -> list[str]:
    """The contents of the quoted strings in an expression, interpolations removed."""
    return [re.sub(r"\$\{[^}]*\}", "", m) for m in re.findall(r'"((?:[^"\\]|\\.)*)"', expr)]


def _is_comment(line: str) -> bool:
    return line.strip().startswith(("//", "#", "/*", "*"))


def parse_body(lines: list[str], indent: int) -> tuple[dict[str, str], list[Block]]:
    attrs: dict[str, str] = {}
    blocks: list[Block] = []
    pad = " " * indent
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or _is_comment(line) or not line.startswith(pad) or line[indent:indent + 1] == " ":
            i += 1
            continue
        text = line[indent:]
        if m := _BLOCK.match(text):
            end = next(j for j in range(i + 1, len(lines)) if lines[j] == pad + "}")
            block = Block(m["type"], re.findall(r'"([^"]*)"', m["labels"]), lines[i + 1:end], indent)
            block.attrs, block.blocks = parse_body(block.lines, indent + 2)
            blocks.append(block)
            i = end + 1
        elif m := _ATTR.match(text):
            expr = m["expr"].rstrip()
            if expr and expr[-1] in _OPENERS:  # multi-line map/list: up to its closer at this indent
                closer = pad + _OPENERS[expr[-1]]
                end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith(closer))
                expr = "\n".join([expr, *lines[i + 1:end + 1]])
                i = end + 1
            else:
                i += 1
            attrs[m["name"]] = expr
        else:
            i += 1
    return attrs, blocks


def parse_hcl(path: Path) -> list[Block]:
    return parse_body(path.read_text().splitlines(), 0)[1]


def template_blocks(template: Path) -> list[Block]:
    return [b for f in sorted(template.glob("*.pkr.hcl")) for b in parse_hcl(f)]


def find(blocks: list[Block], type_: str, *labels: str) -> list[Block]:
    return [b for b in blocks if b.type == type_ and (not labels or b.labels[:len(labels)] == list(labels))]


def one_line(expr: str) -> str:
    """A (possibly multi-line) map/list expression on one line, for `packer console`."""
    lines = [ln.strip() for ln in expr.splitlines() if ln.strip() and not _is_comment(ln)]
    if len(lines) == 1:
        return lines[0]
    opener, items, closer = lines[0], lines[1:-1], lines[-1]
    assert not any(ln.endswith(tuple(_OPENERS)) for ln in items), f"nested multi-line expression: {expr}"
    sep = ", " if opener.endswith("{") else " "
    return f"{opener} {sep.join(items)} {closer}"


def source_of(template: Path) -> Block:
    name = TEMPLATES[template.name][0]
    sources = find(template_blocks(template), "source", "azure-arm", name)
    assert len(sources) == 1, f'{template.name}: expected one source "azure-arm" "{name}"'
    return sources[0]


def variables_of(template: Path) -> dict[str, Block]:
    return {b.labels[0]: b for b in find(template_blocks(template), "variable")}


def script_lines(script: Path) -> list[str]:
    """The script's commands: no blank lines, no comment lines."""
    return [ln.strip() for ln in script.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


# === the checks (each returns its findings: [] means fine) =========================================
def check_client_secret_sensitive(template: Path, var_file: Path) -> list[str]:
    problems = []
    var = variables_of(template).get("client_secret")
    if var is None:
        return [f"{template.name}: no variable client_secret"]
    if var.attrs.get("sensitive") != "true":
        problems.append(f"{template.name}: variable client_secret is not declared `sensitive = true`")
    if var.attrs.get("default", '""') != '""':
        problems.append(f"{template.name}: client_secret has a non-empty default")
    expr = source_of(template).attrs.get("client_secret", "")
    if "var.client_secret" not in expr or any(string_literals(expr)):
        problems.append(f"{template.name}: the source's client_secret must come from var.client_secret only: {expr!r}")
    # Packer's own view: sensitive values are shown as <sensitive> and never in clear.
    proc = packer(["inspect", f"-var-file={var_file}", str(template)], cwd=var_file.parent)
    if proc.returncode != 0:
        problems.append(f"packer inspect failed:\n{output(proc)}")
    if 'var.client_secret: "<sensitive>"' not in proc.stdout:
        problems.append(f"{template.name}: packer inspect does not show client_secret as <sensitive>")
    if SECRET in output(proc):
        problems.append(f"{template.name}: packer inspect printed the secret")
    return problems


def check_provisioning(template: Path) -> list[str]:
    """provision.sh updates and installs nginx; then the package list is captured (the shared script)
    and downloaded; deprovision.sh generalises with waagent as the very last command of the build."""
    problems = []
    script = template / "scripts" / "provision.sh"
    deprovision = template / "scripts" / "deprovision.sh"
    for path in (script, deprovision):
        if not path.is_file():
            return [f"{template.name}: no scripts/{path.name}"]
        syntax = subprocess.run(["sh", "-n", str(path)], check=False, capture_output=True, text=True)
        if syntax.returncode != 0:
            problems.append(f"{path}: sh -n: {syntax.stderr}")
    cmds = script_lines(script)
    waagent = DEPROVISION.split()[0]

    def first(needle: str) -> int:
        rx = re.compile(re.escape(needle) + r"\b")
        return next((i for i, c in enumerate(cmds) if rx.match(c)), -1)

    install, enable = first(NGINX_INSTALL[template.name]), first("systemctl enable nginx")
    for needle in TEMPLATES[template.name][2]:
        at = first(needle)
        if at < 0:
            problems.append(f"{script}: no `{needle}`")
        elif not 0 <= at < install:
            problems.append(f"{script}: `{needle}` must come before the nginx install")
    if install < 0:
        problems.append(f"{script}: no `{NGINX_INSTALL[template.name]}`")
    if enable < 0 or enable < install:
        problems.append(f"{script}: nginx must be enabled (`systemctl enable nginx`) after installing it")
    if any(waagent in c for c in cmds):
        problems.append(f"{script}: deprovisions (waagent), but the package list is captured after it")
    dcmds = script_lines(deprovision)
    if not dcmds or dcmds[-1] != DEPROVISION:
        problems.append(f"{deprovision}: the last command must be `{DEPROVISION}`, is {dcmds[-1] if dcmds else None!r}")
    if any(waagent in c for c in dcmds[:-1]):
        problems.append(f"{deprovision}: waagent runs before the last line")
    if not any(c.startswith("rm ") and PACKAGE_LIST_IN_GUEST in c for c in dcmds):
        problems.append(f"{deprovision}: the package list {PACKAGE_LIST_IN_GUEST} must not stay in the image (rm it)")

    # The template: provision.sh, capture, download, deprovision.sh LAST, with sudo; no cleanup after it.
    builds = find(template_blocks(template), "build")
    provisioners = [b for build in builds for b in build.blocks if b.type == "provisioner"]

    def kind(p: Block) -> str:
        if p.labels == ["shell"]:
            path = p.attrs.get("script", "")
            for name, suffix in (("provision", "/scripts/provision.sh"), ("capture", "/scripts/capture-packages.sh"),
                                 ("deprovision", "/scripts/deprovision.sh")):
                if path == f'"${{path.root}}{suffix}"':
                    return name
            return f"shell {path}"
        if p.labels == ["file"] and p.attrs.get("direction") == '"download"':
            return "download"
        return " ".join(p.labels)

    kinds = [kind(p) for p in provisioners]
    if kinds != ["provision", "capture", "download", "deprovision"]:
        problems.append(f"{template.name}: the provisioners must be provision.sh, capture-packages.sh, the "
                        f"file download of the list, deprovision.sh (in this order), are {kinds}")
    by_kind = {k: p.attrs for k, p in zip(kinds, provisioners)}
    for name in ("provision", "capture", "deprovision"):
        if name in by_kind and "sudo -E sh" not in by_kind[name].get("execute_command", ""):
            problems.append(f"{template.name}: execute_command of the {name} script must run it with sudo -E sh")
    if by_kind.get("deprovision", {}).get("skip_clean") != "true":
        problems.append(f"{template.name}: skip_clean must be true on deprovision.sh (the build user is gone after it)")
    download = by_kind.get("download", {})
    if download and (download.get("source") != f'"{PACKAGE_LIST_IN_GUEST}"'
                     or download.get("destination") != "var.package_list_path"):
        problems.append(f"{template.name}: the download must fetch {PACKAGE_LIST_IN_GUEST} to var.package_list_path, "
                        f"is {download.get('source')} -> {download.get('destination')}")
    capture = template / "scripts" / "capture-packages.sh"
    if not capture.is_file() or capture.read_text() != CAPTURE_SCRIPT.read_text():
        problems.append(f"{capture} is not the shared {CAPTURE_SCRIPT}")
    elif f'out="${{1:-{PACKAGE_LIST_IN_GUEST}}}"' not in CAPTURE_SCRIPT.read_text():
        problems.append(f"{CAPTURE_SCRIPT} no longer writes {PACKAGE_LIST_IN_GUEST} by default")
    return problems


def check_azure_tags(template: Path, var_file: Path, variables: dict) -> list[str]:
    expr = source_of(template).attrs.get("azure_tags")
    if expr is None:
        return [f"{template.name}: the source sets no azure_tags"]
    tags = console(template, var_file, one_line(expr))
    want = {"image": variables["image_name"], "version": variables["image_version"],
            "dag_run_id": variables["dag_run_id"], "managed_by": "image-bakery"}
    return [f"{template.name}: azure_tags[{k!r}] is {tags.get(k)!r}, want {v!r}" for k, v in want.items()
            if tags.get(k) != v]


_GUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
_AZURE_SECRET = re.compile(r"[A-Za-z0-9_~.\-]{3}\dQ~[A-Za-z0-9_~.\-]{31,34}")  # AAD client secret format
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
_TOKEN = re.compile(r"[A-Za-z0-9+/=_~\-]{24,}")
_SENSITIVE_NAME = re.compile(r"(secret|password|passwd|token|client_jwt|private_key|access_key|sas)", re.IGNORECASE)


def _entropy(s: str) -> float:
    return -sum(n / len(s) * math.log2(n / len(s)) for n in Counter(s).values())


def check_no_secret_literals(template: Path) -> list[str]:
    problems = []
    files = [*template.glob("*.pkr.hcl"), *template.glob("*.pkrvars.*"), *(template / "scripts").glob("*")]
    for path in files:
        text = path.read_text()
        for rx, what in ((_GUID, "a GUID (subscription/tenant/client id)"), (_AZURE_SECRET, "an Azure client secret"),
                         (_PRIVATE_KEY, "a private key")):
            for m in rx.finditer(text):
                problems.append(f"{path}: {what} literal: {m.group()[:12]}...")
        for m in _TOKEN.finditer(text):
            tok = m.group()
            classes = sum(bool(re.search(p, tok)) for p in (r"[a-z]", r"[A-Z]", r"\d"))
            if classes == 3 and _entropy(tok) > 4.0:
                problems.append(f"{path}: high-entropy literal {tok[:8]}... (a key or token?)")
    for block in template_blocks(template):  # secret-named settings: variables or empty, no literals
        for name, expr in block.attrs.items():
            if _SENSITIVE_NAME.search(name) and any(string_literals(expr)) and block.type != "variable":
                problems.append(f"{template.name}: {block.type} {block.labels}: {name} has a literal: {expr!r}")
        if block.type == "variable" and _SENSITIVE_NAME.search(block.labels[0]):
            if block.attrs.get("default", '""') != '""':
                problems.append(f"{template.name}: variable {block.labels[0]} has a non-empty default")
            if block.attrs.get("sensitive") != "true":
                problems.append(f"{template.name}: variable {block.labels[0]} is not sensitive")
    return problems


# === fixtures ======================================================================================
@pytest.fixture(params=sorted(TEMPLATES))
def template(request, tmp_path_factory) -> Path:
    """The family's Packer folder as prepare renders it (bakery.templates), named after the family."""
    return render(request.param, tmp_path_factory.mktemp("rendered") / request.param)


@pytest.fixture
def variables(template: Path, tmp_path: Path) -> dict:
    return base_variables(tmp_path, TEMPLATES[template.name][1])


@pytest.fixture
def var_file(tmp_path: Path, variables: dict) -> Path:
    return write_var_file(tmp_path, variables)


def broken_copy(template: Path, tmp_path: Path, edit) -> Path:
    """A copy of the template folder (same folder name) with ``edit(copy)`` applied."""
    copy = tmp_path / "copy" / template.name
    shutil.copytree(template, copy)
    edit(copy)
    return copy


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


# === tests =========================================================================================
@pytest.mark.parametrize("mode", ["service-principal", "azure-cli", "build-resource-group", "no-plan"])
def test_packer_validate_passes(template, tmp_path, variables, mode):
    secret = SECRET
    if mode == "azure-cli":
        variables.update(use_azure_cli_auth=True, client_id="", tenant_id="")
        secret = None
    elif mode == "build-resource-group":  # azure-arm refuses location + build_resource_group_name
        variables["build_resource_group_name"] = "rg-bakery-build"
    elif mode == "no-plan":
        variables.update(plan_name="", plan_product="", plan_publisher="")
    var_file = write_var_file(tmp_path, variables)
    assert "client_secret" not in var_file.read_text()
    proc = validate(template, var_file, secret=secret)
    assert proc.returncode == 0, f"packer validate {template.name} ({mode}) failed:\n{output(proc)}"
    assert SECRET not in output(proc)


def test_client_secret_is_read_from_the_environment(template, var_file):
    """Without PKR_VAR_client_secret the service principal is incomplete: the builder says so."""
    proc = validate(template, var_file, secret=None)
    assert proc.returncode != 0
    assert "No valid set of authentication values specified" in output(proc), output(proc)


def test_packer_fmt_check_is_clean(template):
    for folder in (template, template / "init"):
        proc = packer(["fmt", "-check", "-diff", str(folder)], cwd=folder)
        assert proc.returncode == 0, f"packer fmt -check {folder} is not clean:\n{output(proc)}"


def test_required_variables_are_exactly_these(template):
    declared = variables_of(template)
    assert set(declared) == COMMON_VARIABLES, "both Azure templates take the same variables (one product interface)"
    assert sorted(n for n, b in declared.items() if "default" not in b.attrs) == sorted(REQUIRED)
    for name, block in declared.items():
        assert block.attrs.get("type"), f"variable {name} has no type"
        assert block.attrs.get("description", '""') != '""', f"variable {name} has no description"
    cli = declared["use_azure_cli_auth"].attrs
    assert (cli["type"], cli["default"]) == ("bool", "false")
    assert declared["cloud_environment_name"].attrs["default"] == '"Public"'
    assert declared["build_resource_group_name"].attrs["default"] == '""'


@pytest.mark.parametrize("missing", REQUIRED)
def test_validate_without_a_required_variable_names_it(template, tmp_path, variables, missing):
    del variables[missing]
    proc = validate(template, write_var_file(tmp_path, variables))
    assert proc.returncode != 0
    assert f'Unset variable "{missing}"' in output(proc), output(proc)


def test_image_version_is_validated(template, tmp_path, variables):
    variables["image_version"] = "2026.01.28"  # leading zero: not a gallery version
    proc = validate(template, write_var_file(tmp_path, variables))
    assert proc.returncode != 0
    assert "image_version must be Major.Minor.Patch" in " ".join(output(proc).split()), output(proc)


def test_client_secret_is_sensitive(template, var_file):
    assert check_client_secret_sensitive(template, var_file) == []


def test_provisioning_updates_installs_nginx_captures_packages_and_deprovisions_last(template):
    assert check_provisioning(template) == []


def test_package_list_download_goes_to_the_variable(template, var_file, variables):
    builds = find(template_blocks(template), "build")
    (download,) = [b for build in builds for b in build.blocks if b.type == "provisioner" and b.labels == ["file"]]
    assert console(template, var_file, download.attrs["destination"]) == variables["package_list_path"]
    capture = [b for build in builds for b in build.blocks
               if b.type == "provisioner" and "capture-packages.sh" in b.attrs.get("script", "")]
    script = console(template, var_file, capture[0].attrs["script"])
    # the rendered folder's copy of the shared script, which the template digest covers
    assert Path(script).resolve() == (template / "scripts" / "capture-packages.sh").resolve()
    assert Path(script).read_text() == CAPTURE_SCRIPT.read_text()


def test_azure_tags_name_the_image_version_and_dag_run(template, var_file, variables):
    assert check_azure_tags(template, var_file, variables) == []


def test_managed_image_name_is_derived_from_the_version(template, var_file, variables):
    source = source_of(template)
    name = console(template, var_file, source.attrs["managed_image_name"])
    assert name == f"{variables['image_name']}-2026-1128-200000"
    assert console(template, var_file, source.attrs["managed_image_resource_group_name"]) == "rg-bakery-images"
    assert "shared_image_gallery_destination" not in source.attrs
    assert not find(source.blocks, "shared_image_gallery_destination"), "the product publishes to the gallery itself"


def test_location_is_given_only_without_a_build_resource_group(template, var_file):
    expr = source_of(template).attrs["location"]
    assert console(template, var_file, expr) == "westeurope"
    assert console(template, var_file, expr, "-var", "build_resource_group_name=rg-bakery-build") == ""


def test_manifest_custom_data(template, var_file, variables):
    builds = find(template_blocks(template), "build")
    manifests = [b for build in builds for b in build.blocks if b.type == "post-processor" and b.labels == ["manifest"]]
    assert len(manifests) == 1
    assert console(template, var_file, manifests[0].attrs["output"]) == variables["manifest_path"]
    data = console(template, var_file, one_line(manifests[0].attrs["custom_data"]))
    assert data["image_name"] == variables["image_name"]
    assert data["image_version"] == variables["image_version"]
    assert data["managed_image_name"] == f"{variables['image_name']}-2026-1128-200000"


def test_plan_info_defaults(template, var_file):
    """AlmaLinux 9's Marketplace image has a purchase plan (Azure refuses it without); Canonical's has none."""
    source = source_of(template)
    (plan,) = find(source.blocks, "plan_info")
    got = {k: console(template, var_file, v) for k, v in plan.attrs.items()}
    image = {k: console(template, var_file, source.attrs[k]) for k in ("image_publisher", "image_offer", "image_sku")}
    if template.name == "rhel9-nginx-azure":
        assert image == {"image_publisher": "almalinux", "image_offer": "almalinux-x86_64", "image_sku": "9-gen2"}
        assert got == {"plan_name": "9-gen2", "plan_product": "almalinux-x86_64", "plan_publisher": "almalinux"}
    else:
        assert image == {"image_publisher": "Canonical", "image_offer": "ubuntu-24_04-lts", "image_sku": "server"}
        assert got == {"plan_name": "", "plan_product": "", "plan_publisher": ""}
    assert console(template, var_file, source.attrs["image_version"]) == "latest"


def test_no_secret_looking_literal_in_the_template(template):
    assert check_no_secret_literals(template) == []


def test_required_plugins_only_in_the_init_subfolder(template):
    init = (template / "init" / "required_plugins.pkr.hcl").read_text()
    assert re.search(r'source\s*=\s*"github.com/hashicorp/azure"', init)
    assert re.search(r'version\s*=\s*">= 2.0.0"', init)
    for f in template.glob("*.pkr.hcl"):
        assert not re.search(r"^\s*required_plugins\s*\{", f.read_text(), re.MULTILINE), f"{f}: 1.6.6 rejects it"
    assert (template / "README.md").is_file()


# === controls: each check catches the defect it is there for =======================================
def test_control_fmt_check_catches_misformatting(template, tmp_path):
    copy = broken_copy(template, tmp_path, lambda c: replace_in(
        c / f"{template.name}.pkr.hcl", "  os_type ", "os_type "))
    proc = packer(["fmt", "-check", str(copy)], cwd=copy)
    assert proc.returncode != 0


def test_control_validate_catches_location_with_build_resource_group(template, tmp_path, variables):
    copy = broken_copy(template, tmp_path, lambda c: replace_in(
        c / f"{template.name}.pkr.hcl", 'var.build_resource_group_name == "" ? var.location : ""', "var.location"))
    variables["build_resource_group_name"] = "rg-bakery-build"
    proc = validate(copy, write_var_file(tmp_path, variables))
    assert proc.returncode != 0 and "but not both" in output(proc), output(proc)


def test_control_sensitive_check_catches_a_plain_client_secret(template, tmp_path, var_file):
    copy = broken_copy(template, tmp_path, lambda c: replace_in(c / "variables.pkr.hcl", "  sensitive   = true\n", ""))
    problems = check_client_secret_sensitive(copy, var_file)
    assert any("not declared `sensitive = true`" in p for p in problems)
    assert any("<sensitive>" in p for p in problems)  # and Packer itself would show it
    assert any("printed the secret" in p for p in problems)


@pytest.mark.parametrize("defect", ["command-after-deprovision", "no-update", "nginx-not-enabled", "no-skip-clean",
                                    "deprovision-in-provision", "download-after-deprovision", "no-capture",
                                    "list-left-in-image"])
def test_control_provisioning_check_catches(template, tmp_path, defect):
    update = TEMPLATES[template.name][2][0]
    hcl = f"{template.name}.pkr.hcl"

    def edit(c: Path) -> None:
        script, deprovision = c / "scripts" / "provision.sh", c / "scripts" / "deprovision.sh"
        if defect == "command-after-deprovision":
            deprovision.write_text(deprovision.read_text() + "echo done\n")
        elif defect == "no-update":
            replace_in(script, f"\n{update}\n", "\n")
        elif defect == "nginx-not-enabled":
            replace_in(script, "\nsystemctl enable nginx.service\n", "\n")
        elif defect == "no-skip-clean":
            replace_in(c / hcl, "skip_clean      = true", "skip_clean      = false")
        elif defect == "deprovision-in-provision":  # the old layout: deprovision at the end of provision.sh
            script.write_text(script.read_text() + DEPROVISION + "\n")
        elif defect == "download-after-deprovision":
            text = (c / hcl).read_text()
            start = text.index('  provisioner "file" {')
            end = text.index("  }\n", start) + 4
            block = text[start:end]
            text = text[:start] + text[end:]
            at = text.index("  post-processor")
            (c / hcl).write_text(text[:at] + block + "\n" + text[at:])
        elif defect == "no-capture":
            replace_in(c / hcl, "${path.root}/scripts/capture-packages.sh", "${path.root}/scripts/provision.sh")
        else:
            replace_in(deprovision, "rm -f /tmp/bakery-packages.tsv", ": keep")

    assert check_provisioning(broken_copy(template, tmp_path, edit)) != []


def test_control_tags_check_catches_a_missing_tag(template, tmp_path, var_file, variables):
    copy = broken_copy(template, tmp_path, lambda c: replace_in(
        c / f"{template.name}.pkr.hcl", "    dag_run_id = var.dag_run_id\n", ""))
    problems = check_azure_tags(copy, var_file, variables)
    assert problems and "dag_run_id" in problems[0]


@pytest.mark.parametrize("old, new", [
    ('var.use_azure_cli_auth ? "" : var.client_secret', '"not-a-variable"'),  # a literal for a secret setting
    ("var.subscription_id", '"3f2a9c1e-4b7d-4e2a-9c8f-1a2b3c4d5e6f"'),  # an id
    ("var.tenant_id", '"Xy78Q~abcdefghijklmnopqrstuvwxyz01234567"'),  # client secret format
    ('"image-bakery"', '"kJ8vQ2mZp4Lw9XrT6bNc3YhF"'),  # a random-looking token
])
def test_control_secret_scan_catches_a_literal(template, tmp_path, old, new):
    copy = broken_copy(template, tmp_path, lambda c: replace_in(c / f"{template.name}.pkr.hcl", old, new))
    assert check_no_secret_literals(copy) != []
