"""Issue #4, security defaults: what a bake exposes, and what a trigger can inject.

* The Azure smoke-test VM (AzureTarget.smoke_setup through the real SDK, inspected in the ARM
  emulator's state): its NSG admits the configured source range on the checked port and nothing
  else - evaluated rule by rule, Azure's default rules included (AllowVnetInBound would otherwise let
  the whole VNet in on every port); the NIC carries that NSG; password login is disabled and no
  password is ever sent; the SSH key differs on every setup and no private key is written anywhere.
* The local build's SSH key (QemuPackerOperator + the real `packer validate`, through a recording
  packer): a new key pair per run, the private key 0600 while Packer runs and gone afterwards, no
  key folder or private key left in the temporary or work folders.
* Trigger Params: every Param of every DAG is typed and bounded (numbers) or enumerated (strings);
  shell and Packer-argument payloads are refused by Airflow's own Param validation.
* Packer variables go in a private var-file, never on a command line or through a shell: a value
  full of shell syntax reaches Packer literally (its manifest shows it) and runs nothing.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import tempfile
from pathlib import Path

import pytest
import recording_packer
from faultkit import REPO

from tests.azure_emulator.dagrun import IMAGE, catalogue_entry, emulated_world
from tests.azure_emulator.world import SMOKE_CIDR, SMOKE_RG

PACKER = recording_packer.REAL_PACKER
VNET_PREFIX = "10.42.0.0/16"  # the emulated smoke VNet (AzureWorld.create_infrastructure)
AZURE_LB = "168.63.129.16"

G_NSG = pytest.mark.guarantee("security-defaults")
G_KEYS = pytest.mark.guarantee("security-defaults")
G_PARAMS = pytest.mark.guarantee("security-defaults")
G_VARS = pytest.mark.guarantee("security-defaults")


# --- Azure smoke-test VM ----------------------------------------------------------------------------
@pytest.fixture
def world():
    with emulated_world() as w:
        yield w


@pytest.fixture
def target(world):
    from bakery.catalogue import parse_catalogue
    from bakery.targets.azure import AzureTarget

    spec = parse_catalogue({"version": 1, "images": {IMAGE: catalogue_entry(world)}})[IMAGE]
    t = AzureTarget(spec, world.clients, progress_interval=0.05, alive_interval=1)
    yield t
    t.close()


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """This process's temporary folder, private to the test (tempfile's mkdtemp & co. go here)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.setenv("TMPDIR", str(folder))
    return folder


def smoke_record(world, version: str):
    from bakery.record import BakeRecord

    return BakeRecord(image=IMAGE, version=version, target="azure", template_digest="sha256:" + "ab" * 32,
                      dag_run_id=f"manual__{version}", run_type="manual", packer_run_uuid="0b5e3c1e-2a59-4d8a-9c43-"
                      "8f5f1f5d7a11", artifact_id=world.make_managed_image(IMAGE, version))


def smoke_check(world):
    from bakery.targets.base import SmokeCheck

    return SmokeCheck(path="/", port=world.emu.vm_http_port, expect_status=200, expect_text="Welcome to nginx",
                      timeout_seconds=20)


def _ports(spec: str) -> range:
    if spec == "*":
        return range(65536)
    low, _, high = spec.partition("-")
    return range(int(low), int(high or low) + 1)


def _source_matches(prefix: str, source: str) -> bool:
    ip = ipaddress.ip_address(source)
    if prefix in ("*", "Any"):
        return True
    if prefix == "VirtualNetwork":
        return ip in ipaddress.ip_network(VNET_PREFIX)
    if prefix == "AzureLoadBalancer":
        return source == AZURE_LB
    if prefix == "Internet":
        return ip not in ipaddress.ip_network(VNET_PREFIX) and ip.is_global
    return ip in ipaddress.ip_network(prefix, strict=False)


def nsg_verdict(nsg: dict, source: str, port: int) -> tuple[str, str]:
    """(Allow|Deny, rule name) for inbound TCP from ``source`` to ``port``, as Azure evaluates an NSG:
    the user's rules and the default rules together, lowest priority number first, first match wins."""
    rules = [*nsg["properties"].get("securityRules", []), *nsg["properties"].get("defaultSecurityRules", [])]
    inbound = sorted((r for r in rules if r["properties"]["direction"] == "Inbound"),
                     key=lambda r: r["properties"]["priority"])
    for rule in inbound:
        p = rule["properties"]
        if p["protocol"] not in ("*", "Tcp"):
            continue
        prefixes = p.get("sourceAddressPrefixes") or [p["sourceAddressPrefix"]]
        ranges = p.get("destinationPortRanges") or [p["destinationPortRange"]]
        if any(_source_matches(x, source) for x in prefixes) and any(port in _ports(r) for r in ranges):
            return p["access"], rule["name"]
    return "Deny", "(no rule)"


def files_holding_private_keys(*roots: Path) -> list[str]:
    found = []
    for root in roots:
        for path in root.rglob("*") if root.is_dir() else []:
            if path.is_file() and not path.is_symlink():
                with path.open("rb") as fh:
                    if b"PRIVATE KEY" in fh.read(1 << 20):
                        found.append(str(path))
    return found


@G_NSG
def test_the_smoke_nsg_admits_only_the_configured_range_on_the_checked_port(world, target, private_tmp):
    from bakery.targets.azure import SmokeNames

    emu, port = world.emu, world.emu.vm_http_port
    rec = smoke_record(world, "2026.1126.200001")
    info = target.smoke_setup(rec, smoke_check(world), print)
    try:
        names = SmokeNames.of(IMAGE, rec.version)
        nsg_id = (f"/subscriptions/{world.subscription_id}/resourceGroups/{SMOKE_RG}/providers/"
                  f"Microsoft.Network/networkSecurityGroups/{names.nsg}")
        nsg = emu.get(nsg_id)
        rules = nsg["properties"]["securityRules"]
        allows = [r["properties"] for r in rules
                  if r["properties"]["direction"] == "Inbound" and r["properties"]["access"] == "Allow"]
        assert allows == [{**allows[0], "protocol": "Tcp", "sourceAddressPrefix": SMOKE_CIDR,
                           "destinationPortRange": str(port)}], rules
        assert any(r["name"] == "DenyAllInBound" for r in nsg["properties"]["defaultSecurityRules"])

        inside = str(next(ipaddress.ip_network(SMOKE_CIDR).hosts()))
        vnet_host = "10.42.1.99"
        expected = {
            (inside, port): "Allow",        # the workers' range, the checked port: the only way in
            (inside, 22): "Deny",           # ... not SSH
            (inside, 8080): "Deny",         # ... nor any other port
            ("8.8.8.8", port): "Deny",      # the Internet
            (vnet_host, port): "Deny",      # the rest of the VNet (Azure's AllowVnetInBound)
            (vnet_host, 22): "Deny",
            (AZURE_LB, port): "Deny",       # Azure's load balancer probes (AllowAzureLoadBalancerInBound)
        }
        got = {probe: nsg_verdict(nsg, *probe) for probe in expected}
        assert {probe: v[0] for probe, v in got.items()} == expected, got

        # the NSG is the one on the VM's only NIC (an NSG nobody uses protects nothing)
        vm = emu.get(info["vm_id"])
        (nic_ref,) = vm["properties"]["networkProfile"]["networkInterfaces"]
        nic = emu.get(nic_ref["id"])
        assert nic["properties"]["networkSecurityGroup"]["id"].lower() == nsg_id.lower()
    finally:
        target.smoke_teardown(rec, print)
    assert world.leftovers() == []


@G_KEYS
def test_the_smoke_vm_has_no_password_login_and_a_new_key_every_time_with_no_private_key_kept(
        world, target, private_tmp, tmp_path, monkeypatch):
    from bakery.targets.azure import SmokeNames

    emu = world.emu
    home = tmp_path / "bakery"
    monkeypatch.setenv("BAKERY_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    keys = []
    for version in ("2026.1126.200001", "2026.1127.200001"):
        rec = smoke_record(world, version)
        info = target.smoke_setup(rec, smoke_check(world), print)
        try:
            vm = emu.get(info["vm_id"])  # the state, as ARM returns it
            linux = vm["properties"]["osProfile"]["linuxConfiguration"]
            assert linux["disablePasswordAuthentication"] is True
            assert "adminPassword" not in vm["properties"]["osProfile"]
            (key,) = linux["ssh"]["publicKeys"]
            assert key["keyData"].startswith("ssh-rsa ")
            keys.append(key["keyData"].split()[1])
            # what was sent: never a password, never a private key (ARM would not echo a password back)
            (put,) = [r for r in emu.requests("PUT", r"/virtualMachines/") if not r.fault
                      and r.path.endswith("/" + SmokeNames.of(IMAGE, version).vm)]
            assert "adminPassword" not in json.dumps(put.body) and "PRIVATE KEY" not in json.dumps(put.body)
        finally:
            target.smoke_teardown(rec, print)
    assert len(set(keys)) == 2, "the SSH key must be new for every smoke-test VM"
    assert files_holding_private_keys(private_tmp, home, tmp_path) == []
    assert list(private_tmp.iterdir()) == []


def local_validate(tmp_path: Path, log: Path) -> dict:
    """The local validate task (QemuPackerOperator, real `packer validate` behind a recording shim)."""
    from bakery.operators.bake import QemuPackerOperator
    from bakery.templates import render

    base = tmp_path / "base.qcow2"
    base.write_bytes(b"stand-in base image: packer validate does not read it")
    work = tmp_path / "bakery" / "work" / "debian12-nginx" / "2026.1120.200000"
    variables = {"base_image_path": str(base), "base_image_checksum": hashlib.sha256(base.read_bytes()).hexdigest(),
                 "output_directory": str(work / "output"), "vm_name": "debian12-nginx-2026.1120.200000.qcow2",
                 "accelerator": "tcg", "manifest_path": str(work / "manifest.json"), "image_version": "2026.1120.200000",
                 "package_list_path": str(work / "packages.tsv")}
    template = render("debian12-nginx", tmp_path / "packer" / "debian12-nginx")  # as prepare renders it
    op = QemuPackerOperator(task_id="validate", command="validate", template_dir=str(template),
                            variables=variables, packer_bin=str(recording_packer.install(tmp_path / "shim", log) / "packer"))
    return op.execute({})


@G_KEYS
def test_a_local_build_gets_a_new_key_pair_that_is_gone_after_the_step(tmp_path, private_tmp, monkeypatch):
    monkeypatch.setenv("BAKERY_HOME", str(tmp_path / "bakery"))
    log = tmp_path / "packer.jsonl"
    for _ in range(2):
        local_validate(tmp_path, log)
    runs = [inv for inv in recording_packer.invocations(log) if inv["command"] == "validate"]
    assert len(runs) == 2
    publics = []
    for inv in runs:
        (values,) = inv["var_files"].values()
        private, public = values["ssh_private_key_file"], values["ssh_public_key_file"]
        assert Path(private).parent.parent == private_tmp and Path(private).parent.name.startswith("bakery-key-")
        # while Packer ran: the private key was there, readable by its owner only ...
        assert inv["files"]["ssh_private_key_file"] == {"mode": "0o600", "private_key": True}
        publics.append(inv["files"]["ssh_public_key_file"]["content"].split()[1])
        # ... after the step: gone, with its folder
        assert not Path(private).exists() and not Path(public).exists() and not Path(private).parent.exists()
    assert publics[0] != publics[1], "a new key pair for every run"
    assert list(private_tmp.iterdir()) == []  # no key folder, no var-file folder
    assert files_holding_private_keys(private_tmp, tmp_path / "bakery") == []


# --- trigger Params ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    assert len(bag.dags) >= 2
    # as the API server and the scheduler have them (what validates a trigger's conf)
    return {dag_id: DagSerialization.from_dict(DagSerialization.to_dict(dag)) for dag_id, dag in bag.dags.items()}


def bounded(schema: dict) -> str | None:
    """Why a Param's schema does not pin its value down (None: it does)."""
    if "enum" in schema:
        return None if schema["enum"] and all(isinstance(v, str | int | bool) for v in schema["enum"]) else "bad enum"
    kind = schema.get("type")
    if kind in ("integer", "number"):
        missing = [k for k in ("minimum", "maximum") if k not in schema]
        return f"no {' and no '.join(missing)}" if missing else None
    if kind == "boolean":
        return None
    if kind == "string":
        return None if "pattern" in schema and "maxLength" in schema else "a free string (no enum, no pattern+maxLength)"
    return f"no type or an open one: {kind!r}"


INJECTIONS = ["tcg; rm -rf /", "$(touch /tmp/pwned)", "`id`", "-var=client_secret=x", "kvm\n-only=x",
              "1; reboot", 10**9, -1, 1.5, None, ["tcg"], {"a": 1}]


@G_PARAMS
def test_every_trigger_param_of_every_dag_is_typed_and_bounded_or_enumerated(dags):
    problems = []
    for dag_id, dag in sorted(dags.items()):
        for name in dag.params:
            why = bounded(dag.params.get_param(name).schema)
            if why:
                problems.append(f"{dag_id}.{name}: {why}")
    assert problems == []


@G_PARAMS
def test_shell_and_packer_argument_payloads_are_refused_for_every_param(dags):
    from airflow.sdk.exceptions import ParamValidationError

    accepted = []
    for dag_id, dag in sorted(dags.items()):
        for name in dag.params:
            for payload in INJECTIONS:
                try:
                    dag.params.deep_merge({name: payload}).validate()
                except ParamValidationError:
                    continue
                accepted.append(f"{dag_id}.{name} = {payload!r}")
    assert accepted == []
    with pytest.raises(ParamValidationError, match=r"Invalid input for param accelerator: 'tcg; rm -rf /' is not one of"):
        dags["bake_debian12_nginx"].params.deep_merge({"accelerator": "tcg; rm -rf /"}).validate()


# --- Packer variables ------------------------------------------------------------------------------------
TEMPLATE = """
variable "payload" {
  type = string
}

variable "manifest_path" {
  type = string
}

source "null" "literal" {
  communicator = "none"
}

build {
  sources = ["source.null.literal"]

  post-processor "manifest" {
    output      = var.manifest_path
    custom_data = { payload = var.payload }
  }
}
"""


@G_VARS
def test_a_variable_full_of_shell_syntax_reaches_packer_literally_and_runs_nothing(tmp_path, private_tmp):
    from bakery.operators.packer import PackerOperator

    pwned = tmp_path / "pwned"
    payload = (f'"; touch {pwned}-1 #\' && touch {pwned}-2; $(touch {pwned}-3) `touch {pwned}-4` '
               f'| touch {pwned}-5 \n-var=payload=x -only=nothing')
    template = tmp_path / "literal"
    template.mkdir()
    (template / "literal.pkr.hcl").write_text(TEMPLATE)
    manifest = tmp_path / "manifest.json"
    log = tmp_path / "packer.jsonl"
    shim = recording_packer.install(tmp_path / "shim", log) / "packer"
    for command in ("validate", "build"):
        op = PackerOperator(task_id=command, command=command, template_dir=str(template), packer_bin=str(shim),
                            variables={"payload": payload, "manifest_path": str(manifest)},
                            manifest_path=str(manifest) if command == "build" else None)
        op.execute({})
    assert sorted(tmp_path.glob("pwned*")) == []
    entry = json.loads(manifest.read_text())["builds"][-1]
    assert entry["custom_data"]["payload"] == payload  # literally what was given, newline included
    runs = recording_packer.invocations(log)
    assert [r["command"] for r in runs if r["command"] != "version"] == ["validate", "build"]
    for run in runs:
        assert payload not in " ".join(run["argv"]) and "pwned" not in " ".join(run["argv"])
        if run["command"] in ("validate", "build"):
            (values,) = run["var_files"].values()
            assert values["payload"] == payload
            assert all(not a.startswith("-var=") for a in run["argv"])
    assert list(private_tmp.iterdir()) == []  # the var-file and its folder are gone
