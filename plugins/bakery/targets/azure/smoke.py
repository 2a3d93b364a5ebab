"""The smoke-test VM of an Azure bake: setup, HTTP check, teardown (and the janitor's group delete).

In the catalogue's smoke resource group and subnet: an NSG admitting only the check port from
``allowed_source_cidr`` (and denying every other inbound flow, the VNet's included), a Static public IP
(mode public), a NIC, and a VM from the bake's managed image with an ephemeral SSH public key
(password login disabled; the private key is never written anywhere, nobody logs in), its OS disk
deleted with it. When the image's source carried a Marketplace purchase plan the VM sends that plan
(Azure refuses the VM otherwise: ``VMMarketplaceInvalidInput``; ``infra`` says where it comes from).
All named ``smoke-<image>-<version>-*`` and tagged ``image, version, dag_run_id, managed_by=image-bakery,
purpose=smoke-test, smoke_id, created_at`` (so that people and a janitor can find them and judge their
age). Teardown deletes by name and by tag, in dependency order, treating 404 and 204 as done:
idempotent. It finds tagged resources by listing the group and matching the tags here: ARM omits the
tags from a list filtered by tag.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from azure.core.exceptions import AzureError

from bakery.http_check import poll_http
from bakery.record import BakeRecord, SmokeResult
from bakery.targets.azure.common import (
    IMAGE_ID,
    MANAGED_BY,
    AzureBase,
    AzureTargetError,
    delete_found,
    error_text,
    image_ready,
    is_not_found,
    managed_image_name,
    tags_of,
    text,
)
from bakery.targets.azure.infra import PurchasePlan, plan_text
from bakery.targets.base import Log, SmokeCheck


@dataclass(frozen=True)
class SmokeNames:
    """The smoke-test resources of one image version: deterministic names (<= 64 characters)."""

    base: str

    @classmethod
    def of(cls, image: str, version: str) -> SmokeNames:
        base = f"smoke-{image}-{version.replace('.', '-')}"
        if len(base) > 56:  # VM names (Linux computer names too) stop at 64 characters
            digest = hashlib.sha256(base.encode()).hexdigest()[:8]
            base = f"{base[:47].rstrip('-')}-{digest}"
        return cls(base)

    @property
    def vm(self) -> str:
        return f"{self.base}-vm"

    @property
    def nic(self) -> str:
        return f"{self.base}-nic"

    @property
    def public_ip(self) -> str:
        return f"{self.base}-pip"

    @property
    def nsg(self) -> str:
        return f"{self.base}-nsg"

    @property
    def os_disk(self) -> str:
        return f"{self.base}-osdisk"


def ssh_public_key(comment: str) -> str:
    """An ephemeral RSA key pair; only the OpenSSH public key is returned, the private key is dropped."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    del key
    return f"{public.decode()} {comment}"


class SmokeSteps(AzureBase):
    """The smoke test in one call (``smoke_test``) or as the DAG's three tasks (setup, check, teardown)."""

    def smoke_tags(self, record: BakeRecord, names: SmokeNames) -> dict[str, str]:
        return {"image": record.image, "version": record.version, "dag_run_id": record.dag_run_id or "",
                "managed_by": MANAGED_BY, "purpose": "smoke-test", "smoke_id": names.base,
                "created_at": self.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}

    def smoke_test(self, record: BakeRecord, check: SmokeCheck, log: Log) -> SmokeResult:
        """The whole smoke test in one call: create, check, and tear down whatever happened."""
        try:
            info = self.smoke_setup(record, check, log)
            return self.smoke_check(record, info, check, log)
        finally:
            self.smoke_teardown(record, log)

    def smoke_setup(self, record: BakeRecord, check: SmokeCheck, log: Log) -> dict[str, Any]:
        """Create the smoke-test VM (and its NSG, IP, NIC) from the record's managed image; wait for it.

        Leftovers of an earlier attempt are deleted first; on any failure everything is deleted
        again before the error propagates. Returns what :meth:`smoke_check` needs (JSON-able).
        """
        az, cfg, net = self.az, self.cfg, self.cfg.smoke_test
        names = SmokeNames.of(record.image, record.version)
        rg, location = net.resource_group, cfg.location
        tags = self.smoke_tags(record, names)
        image_id = record.artifact_id or self.managed_image_id(record.image, record.version)
        m = IMAGE_ID.match(image_id)
        if not m:
            raise AzureTargetError(f"smoke test: {image_id!r} is not a managed image id")
        image = az.compute.images.get(m["rg"], m["name"])
        if not image_ready(image.provisioning_state):
            raise AzureTargetError(f"smoke test: managed image {image_id} is {text(image.provisioning_state)}, not "
                                   "Succeeded")
        vnet_rg, vnet, subnet_name = net.subnet_id_parts
        subnet = az.network.subnets.get(vnet_rg, vnet, subnet_name)
        plan = self.smoke_plan(record, log)

        self.smoke_teardown(record, log, quiet=True)  # what an earlier attempt may have left
        try:
            log(f"smoke test: creating NSG {names.nsg} (TCP {check.port} from {net.allowed_source_cidr} only)")
            nsg = az.network.network_security_groups.begin_create_or_update(rg, names.nsg, {
                "location": location, "tags": tags,
                "properties": {"securityRules": [{
                    "name": f"allow-smoke-check-{check.port}",
                    "properties": {
                        "description": "image bakery smoke test: the HTTP check only, from the configured range",
                        "protocol": "Tcp", "sourceAddressPrefix": net.allowed_source_cidr, "sourcePortRange": "*",
                        "destinationAddressPrefix": "*", "destinationPortRange": str(check.port),
                        "access": "Allow", "priority": 100, "direction": "Inbound",
                    },
                }, {
                    # Azure's default rules let the whole virtual network (and the load balancer) in on
                    # every port (AllowVnetInBound, 65000): nothing but the check may reach the VM
                    "name": "deny-all-other-inbound",
                    "properties": {
                        "description": "image bakery smoke test: nothing else reaches the VM, not even the VNet",
                        "protocol": "*", "sourceAddressPrefix": "*", "sourcePortRange": "*",
                        "destinationAddressPrefix": "*", "destinationPortRange": "*",
                        "access": "Deny", "priority": 4096, "direction": "Inbound",
                    },
                }]},
            }).result()
            ip_config: dict[str, Any] = {"subnet": {"id": subnet.id}, "privateIPAllocationMethod": "Dynamic"}
            if net.mode == "public":
                log(f"smoke test: creating Static public IP {names.public_ip}")
                pip = az.network.public_ip_addresses.begin_create_or_update(rg, names.public_ip, {
                    "location": location, "tags": tags, "sku": {"name": "Standard", "tier": "Regional"},
                    "properties": {"publicIPAllocationMethod": "Static", "publicIPAddressVersion": "IPv4"},
                }).result()
                ip_config["publicIPAddress"] = {"id": pip.id}
            log(f"smoke test: creating NIC {names.nic} in subnet {vnet}/{subnet_name}")
            nic = az.network.network_interfaces.begin_create_or_update(rg, names.nic, {
                "location": location, "tags": tags,
                "properties": {"networkSecurityGroup": {"id": nsg.id},
                               "ipConfigurations": [{"name": "ipconfig1", "properties": ip_config}]},
            }).result()
            user = net.admin_username
            log(f"smoke test: creating VM {names.vm} ({net.vm_size}) from {image_id}, SSH key only, no password"
                + (f", purchase plan {plan}" if plan else ""))
            created = time.time()
            vm_body: dict[str, Any] = {
                "location": location, "tags": tags,
                "properties": {
                    "hardwareProfile": {"vmSize": net.vm_size},
                    "storageProfile": {
                        "imageReference": {"id": image_id},
                        "osDisk": {"name": names.os_disk, "createOption": "FromImage", "deleteOption": "Delete",
                                   "caching": "ReadWrite", "managedDisk": {"storageAccountType": "Standard_LRS"}},
                    },
                    "osProfile": {
                        "computerName": names.vm[:64],
                        "adminUsername": user,
                        "linuxConfiguration": {
                            "disablePasswordAuthentication": True,
                            "ssh": {"publicKeys": [{"path": f"/home/{user}/.ssh/authorized_keys",
                                                    "keyData": ssh_public_key(f"bakery-smoke-{names.base}")}]},
                        },
                    },
                    "networkProfile": {"networkInterfaces": [
                        {"id": nic.id, "properties": {"primary": True, "deleteOption": "Delete"}}]},
                },
            }
            if plan is not None:  # the image's source carried a Marketplace plan: Azure wants it again
                vm_body["plan"] = plan.to_dict()
            vm = az.compute.virtual_machines.begin_create_or_update(rg, names.vm, vm_body).result()
            if text(vm.provisioning_state).lower() != "succeeded":
                raise AzureTargetError(f"smoke test: VM {names.vm} ended {text(vm.provisioning_state)}")
            if net.mode == "public":
                address = az.network.public_ip_addresses.get(rg, names.public_ip).ip_address
            else:
                nic = az.network.network_interfaces.get(rg, names.nic)
                address = nic.ip_configurations[0].private_ip_address
            if not address:
                raise AzureTargetError(f"smoke test: VM {names.vm} has no {net.mode} IP address")
            log(f"smoke test: VM {names.vm} is up after {time.time() - created:.1f}s at {address} ({net.mode})")
            return {"vm_id": vm.id, "address": address, "mode": net.mode, "created_at": created,
                    "names": names.base, "url": f"http://{address}:{check.port}{check.path}"}
        except BaseException as exc:
            log(f"smoke test: setting up the VM failed ({error_text(exc)}); deleting what was created")
            try:
                self.smoke_teardown(record, log)
            except Exception as cleanup_exc:  # noqa: BLE001 - the original error is the one to raise
                log(f"smoke test: cleanup after the failure failed too: {error_text(cleanup_exc)}")
            raise

    def _vm_alive(self, names: SmokeNames) -> Callable[[], bool]:
        az, rg = self.az, self.cfg.smoke_test.resource_group
        state = {"checked": time.monotonic(), "alive": True}

        def alive() -> bool:
            if time.monotonic() - state["checked"] < self.alive_interval:
                return state["alive"]
            state["checked"] = time.monotonic()
            try:
                view = az.compute.virtual_machines.instance_view(rg, names.vm)
            except AzureError as exc:
                state["alive"] = not is_not_found(exc)  # a transient ARM error is not a dead VM
                return state["alive"]
            codes = [str(s.code or "") for s in (view.statuses or [])]
            state["alive"] = not any(c.startswith(("PowerState/stopped", "PowerState/deallocated",
                                                   "ProvisioningState/failed")) for c in codes)
            return state["alive"]

        return alive

    def smoke_check(self, record: BakeRecord, info: dict[str, Any], check: SmokeCheck, log: Log) -> SmokeResult:
        """Poll the VM's HTTP answer until it is the expected one or the deadline passes."""
        names = SmokeNames(info["names"])
        since_create = max(0.0, time.time() - float(info.get("created_at") or time.time()))
        log(f"smoke test: checking {info['url']} (expect HTTP {check.expect_status} with {check.expect_text!r}, "
            f"within {check.timeout_seconds}s)")
        result = poll_http(info["url"], check, log=log, started=time.monotonic(), alive=self._vm_alive(names))
        result.seconds = round(result.seconds + since_create, 2)  # from the VM's creation, like the local target's boot
        return result

    def smoke_teardown(self, record: BakeRecord, log: Log, *, quiet: bool = False,
                       delete_image: bool = False) -> list[str]:
        """Delete every smoke-test resource of the record's image version (by name and by tag).

        Idempotent (404 = already gone). Raises, after trying everything, if something could not be
        deleted or is still there. With ``delete_image`` also the bake's managed image (a failed bake).
        """
        rg = self.cfg.smoke_test.resource_group
        names = SmokeNames.of(record.image, record.version)
        deleted, failures, found = self._delete_smoke(rg, names, log)
        if delete_image:
            img_rg, img_name = self.cfg.managed_image_resource_group, managed_image_name(record.image, record.version)
            try:
                if delete_found(self.az.compute.images.begin_delete, img_rg, img_name):
                    deleted.append(f"images/{img_name}")
            except AzureError as exc:
                failures.append(f"managed image {img_name}: {error_text(exc)}")
        return self._teardown_done(rg, names, deleted, failures, found, f"{record.image} {record.version}", log, quiet)

    def delete_smoke_group(self, resource_group: str, smoke_id: str, log: Log) -> list[str]:
        """Delete the smoke-test resources tagged ``smoke_id`` (and named after it) in ``resource_group``:
        what the janitor does with a dead bake's leftovers. Same order, idempotency and errors as
        :meth:`smoke_teardown`."""
        names = SmokeNames(smoke_id)
        deleted, failures, found = self._delete_smoke(resource_group, names, log)
        return self._teardown_done(resource_group, names, deleted, failures, found, f"smoke group {smoke_id}", log,
                                   True)

    def _teardown_done(self, rg: str, names: SmokeNames, deleted: list[str], failures: list[str], found: bool,
                       what: str, log: Log, quiet: bool) -> list[str]:
        if not failures and found:
            try:
                left = [f"{r.type}/{r.name}" for r in self._tagged(rg, names)]
            except AzureError as exc:
                left = [] if is_not_found(exc) else [f"(could not list: {error_text(exc)})"]
            failures += [f"{x}: still there after its delete" for x in left]
        if failures:
            raise AzureTargetError(f"smoke teardown of {what} in resource group {rg} "
                                   "left resources behind:\n  - " + "\n  - ".join(failures))
        if deleted or not quiet:
            log(f"smoke teardown: {len(deleted)} resource(s) deleted in {rg}"
                + (f": {', '.join(deleted)}" if deleted else " (nothing was there)"))
        return deleted

    def _delete_smoke(self, rg: str, names: SmokeNames, log: Log) -> tuple[list[str], list[str], bool]:
        """Delete the smoke resources of ``names`` in ``rg``, VM first: (deleted, failures, found any)."""
        compute, network = self.az.compute, self.az.network
        deleters: dict[str, Callable[..., Any]] = {  # (name, **SDK call options) -> poller
            "microsoft.compute/virtualmachines": lambda n, **kw: compute.virtual_machines.begin_delete(rg, n, **kw),
            "microsoft.network/networkinterfaces": lambda n, **kw: network.network_interfaces.begin_delete(rg, n, **kw),
            "microsoft.network/publicipaddresses": (
                lambda n, **kw: network.public_ip_addresses.begin_delete(rg, n, **kw)),
            "microsoft.network/networksecuritygroups": (
                lambda n, **kw: network.network_security_groups.begin_delete(rg, n, **kw)),
            "microsoft.compute/disks": lambda n, **kw: compute.disks.begin_delete(rg, n, **kw),
        }
        label = {"microsoft.compute/virtualmachines": "virtualMachines", "microsoft.compute/disks": "disks",
                 "microsoft.network/networkinterfaces": "networkInterfaces",
                 "microsoft.network/publicipaddresses": "publicIPAddresses",
                 "microsoft.network/networksecuritygroups": "networkSecurityGroups"}
        order = list(deleters)  # the VM first (it holds the NIC and the disk), then the NIC (it holds IP + NSG)
        getters: dict[str, tuple[str, Callable[[], Any]]] = {
            "microsoft.compute/virtualmachines": (names.vm, lambda: compute.virtual_machines.get(rg, names.vm)),
            "microsoft.network/networkinterfaces": (names.nic, lambda: network.network_interfaces.get(rg, names.nic)),
            "microsoft.network/publicipaddresses": (
                names.public_ip, lambda: network.public_ip_addresses.get(rg, names.public_ip)),
            "microsoft.network/networksecuritygroups": (
                names.nsg, lambda: network.network_security_groups.get(rg, names.nsg)),
            "microsoft.compute/disks": (names.os_disk, lambda: compute.disks.get(rg, names.os_disk)),
        }
        wanted: dict[str, set[str]] = {}
        try:
            for res in self._tagged(rg, names):
                wanted.setdefault(str(res.type).lower(), set()).add(res.name)
            for rtype, (name, get) in getters.items():  # by name too: the OS disk carries no tags
                if name not in wanted.get(rtype, set()):
                    try:
                        get()
                    except Exception as exc:
                        if is_not_found(exc):
                            continue
                        raise
                    wanted.setdefault(rtype, set()).add(name)
        except Exception as exc:
            if is_not_found(exc) and "resourcegroup" in error_text(exc).lower():
                log(f"smoke teardown: resource group {rg} does not exist: nothing to delete")
                wanted = {}
            else:
                raise
        deleted: list[str] = []
        failures: list[str] = []
        for rtype in order + sorted(set(wanted) - set(order)):
            for name in sorted(wanted.get(rtype, ())):
                delete = deleters.get(rtype)
                if delete is None:
                    failures.append(f"{rtype} {name}: tagged as a smoke-test resource but of a type the bakery never "
                                    "creates; delete it by hand")
                    continue
                try:
                    if not delete_found(delete, name):
                        continue  # gone meanwhile (204): nothing was deleted
                except AzureError as exc:
                    failures.append(f"{label[rtype]} {name}: {error_text(exc)}")
                    continue
                deleted.append(f"{label[rtype]}/{name}")
        return deleted, failures, bool(wanted)

    def _tagged(self, rg: str, names: SmokeNames) -> list[Any]:
        """The resources of ``rg`` tagged ``smoke_id=<names.base>``. Listed without a $filter and matched
        here: ARM leaves the tags out of a list filtered by tag name and value, so the answer to such a
        filter cannot be checked, and reading tags from it finds nothing."""
        return [r for r in self.az.resource.resources.list_by_resource_group(rg)
                if tags_of(r).get("smoke_id") == names.base]

    def smoke_plan(self, record: BakeRecord, log: Log) -> PurchasePlan | None:
        """The purchase plan the smoke-test VM must send: the one ``prepare`` resolved from the template's
        plan_* variables (``record.extra["purchase_plan"]``), else the gallery image definition's
        ``purchasePlan`` (which the infrastructure check keeps equal to the base image's)."""
        if "purchase_plan" in record.extra:
            return PurchasePlan.of(record.extra["purchase_plan"])
        definition = self._definition()
        plan = PurchasePlan.of(getattr(definition, "purchase_plan", None)) if definition is not None else None
        _, g_name, g_def = self._gallery()
        log(f"smoke test: the bake record names no purchase plan: using the one of gallery image definition "
            f"{g_name}/{g_def}: {plan_text(plan)}")
        return plan
