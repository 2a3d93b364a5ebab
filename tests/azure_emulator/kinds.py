"""The emulated resource types: one :class:`Kind` per ARM type, registered in ``KINDS``.

:class:`Kind` is the generic behaviour (store the body, keep server-owned properties on update,
refuse changes to immutable properties, render with id/name/type); subclasses only add what the
type's resource provider really does differently: validation, defaults, references to other
resources, side effects (a VM's OS disk, its "nginx"), delete guards and computed back-references.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import uuid
from collections.abc import Callable
from typing import Any

from . import regions
from .arm import (
    Arm,
    ArmError,
    Ctx,
    Operation,
    Resource,
    iso_now,
    not_found,
    rg_not_found,
)

_MISSING = object()


def get_path(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return _MISSING
        data = data[part]
    return data


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    return a == b


def _ref(value: Any) -> str | None:
    """The ``id`` of a ``{"id": ...}`` sub-resource reference, if any."""
    return value.get("id") if isinstance(value, dict) and value.get("id") else None


def invalid_reference(ref: str, by: str) -> ArmError:
    return ArmError(400, "InvalidResourceReference",
                    f"Resource {ref} referenced by resource {by} was not found. Please make sure that the "
                    "referenced resource exists, and that both resources are in the same region.",
                    details=[{"code": "NotFound", "message": f"Resource {ref} not found."}])


def required(path: str, target: str | None = None) -> ArmError:
    return ArmError(400, "InvalidParameter", f"Required parameter '{path}' is missing (null).",
                    target=target or path)


class Kind:
    """Generic ARM resource type behaviour; override the hooks for type-specific behaviour."""

    tracked = True  # has a location (and tags)
    lro_put = True  # PUT answers with a non-terminal provisioningState + Azure-AsyncOperation
    created_status_201 = True
    polls_setting = "lro"  # "replication": the LRO takes emulator.replication_polls polls
    is_resource_group = False
    not_found_code = "ResourceNotFound"
    busy_code = "OperationNotAllowed"
    preserve: tuple[str, ...] = ()  # server-owned properties kept across PUTs
    immutable: tuple[tuple[str, str], ...] = ()  # (dotted path in body, name ARM reports)
    name_pattern: str | None = None
    name_rule = ""
    etag = False
    operations_segment = "operations"  # where the async operation lives (galleries: capsOperations)

    def __init__(self, type_: str) -> None:
        self.type = type_
        namespace, *segments = type_.split("/")
        self.namespace, self.segments = namespace, segments
        self.actions: dict[str, Callable[[Arm, Ctx, Resource], Any]] = {}

    # --- request hooks ----------------------------------------------------------------------------
    def validate_name(self, ctx: Ctx, name: str) -> None:
        if self.name_pattern and not re.fullmatch(self.name_pattern, name):
            raise ArmError(400, "InvalidParameter", self.name_rule.format(name=name), target="name")

    def not_found_error(self, ctx: Ctx) -> ArmError:
        if self.not_found_code == "NotFound":
            return ArmError(404, "NotFound", f"Resource {ctx.rid} not found.")
        provider_path = ctx.rid.split("/providers/", 1)[-1]
        return not_found(provider_path.rsplit("/", 1)[0], ctx.names[-1], ctx.resource_group or "")

    def busy_error(self, arm: Arm, res: Resource, ctx: Ctx) -> ArmError:
        return ArmError(409, self.busy_code,
                        f"Operation '{ctx.method}' is not allowed on resource '{res.name}' while another operation "
                        f"is in progress (provisioningState '{res.provisioning_state}'). Retry after it completes.")

    def build(self, arm: Arm, ctx: Ctx, body: dict, existing: Resource | None) -> dict:
        stored = {k: v for k, v in body.items() if k not in ("id", "name", "type", "etag")}
        props = stored.get("properties")
        if props is None:
            stored["properties"] = props = {}
        if not isinstance(props, dict):
            raise ArmError(400, "InvalidRequestContent", "The 'properties' member must be a JSON object.")
        props.pop("provisioningState", None)
        if not self.tracked:
            stored.pop("location", None)
        if existing is not None:
            for key in self.preserve:
                if key in existing.properties and key not in props:
                    props[key] = copy.deepcopy(existing.properties[key])
            for path, reported in self.immutable:
                old, new = get_path(existing.body, path), get_path(stored, path)
                if old is not _MISSING and new is not _MISSING and not _same(old, new):
                    raise ArmError(409, "PropertyChangeNotAllowed", f"Changing property '{reported}' is not allowed.",
                                   target=reported)
        return self.prepare(arm, ctx, stored, existing)

    def prepare(self, arm: Arm, ctx: Ctx, stored: dict, existing: Resource | None) -> dict:
        return stored

    def pending_state(self, is_new: bool) -> str:
        return "Creating" if is_new else "Updating"

    def after_put(self, arm: Arm, res: Resource, ctx: Ctx, is_new: bool) -> None:
        pass

    def on_succeeded(self, arm: Arm, res: Resource) -> None:
        pass

    def on_failed(self, arm: Arm, res: Resource, op: Operation) -> None:
        pass

    def check_delete(self, arm: Arm, res: Resource, ctx: Ctx) -> None:
        pass

    def on_deleted(self, arm: Arm, res: Resource) -> None:
        pass

    # --- rendering --------------------------------------------------------------------------------
    def render(self, arm: Arm, res: Resource, ctx: Ctx | None) -> dict:
        out: dict[str, Any] = {"name": res.name, "id": res.id, "type": res.type}
        if self.etag:
            out["etag"] = 'W/"{}"'.format(res.meta.setdefault("etag", str(uuid.uuid4())))
        for key, value in res.body.items():
            if key != "properties":
                out[key] = copy.deepcopy(value)
        out["properties"] = copy.deepcopy(res.body.get("properties", {}))
        self.decorate(arm, res, out, ctx)
        return out

    def decorate(self, arm: Arm, res: Resource, out: dict, ctx: Ctx | None) -> None:
        pass


def insert(arm: Arm, kind: Kind, sub: str, rg: str, names: list[str], body: dict, **meta: Any) -> Resource:
    """Create a resource as a side effect of another one (a VM's OS disk, NICs): no LRO of its own."""
    rid = arm.make_id(sub, rg, kind, names)
    body = copy.deepcopy(body)
    body.setdefault("properties", {})["provisioningState"] = "Succeeded"
    res = Resource(id=rid, kind=kind, name=names[-1], subscription=sub, resource_group=rg,
                   parent_id=rid.rsplit("/", 2)[0] if len(names) > 1 else None, body=body, meta=dict(meta))
    arm.store.put(res)
    arm.store.history.append(("create", res.id, res.type))
    return res


# === Microsoft.Resources ==============================================================================
class ResourceGroupKind(Kind):
    lro_put = False
    is_resource_group = True
    not_found_code = "ResourceGroupNotFound"
    name_pattern = r"[-\w._()]{0,89}[-\w_()]"
    name_rule = ("Resource group '{name}' is invalid. Resource group names can contain only alphanumeric, "
                 "underscore, parentheses, hyphen and period (except at the end) characters.")

    def __init__(self) -> None:
        super().__init__("Microsoft.Resources/resourceGroups")
        self.namespace = "Microsoft.Resources"

    def not_found_error(self, ctx: Ctx) -> ArmError:
        return rg_not_found(ctx.names[-1])

    def busy_error(self, arm: Arm, res: Resource, ctx: Ctx) -> ArmError:
        return ArmError(409, "ResourceGroupBeingDeleted",
                        f"The resource group '{res.name}' is in deprovisioning state and cannot perform this operation.")

    def validate_name(self, ctx: Ctx, name: str) -> None:
        if not re.fullmatch(self.name_pattern or "", name):
            raise ArmError(400, "InvalidResourceGroupName", self.name_rule.format(name=name))

    def render(self, arm: Arm, res: Resource, ctx: Ctx | None) -> dict:
        out = {"id": res.id, "name": res.name, "type": res.type, "location": res.location}
        if res.body.get("managedBy"):
            out["managedBy"] = res.body["managedBy"]
        if res.tags:
            out["tags"] = dict(res.tags)
        out["properties"] = {"provisioningState": res.provisioning_state}
        return out


# === Microsoft.Compute ================================================================================
class ManagedImageKind(Kind):
    """A managed image. Captured from a VM (``sourceVirtualMachine``) it takes that VM's OS type,
    Hyper-V generation and purchase plan (kept internally as ``meta["plan"]``: ARM does not show it,
    but a VM made from the image must send it, see marketplace.py)."""

    preserve = ("sourceVirtualMachine",)

    def prepare(self, arm, ctx, stored, existing):
        props = stored["properties"]
        vm_ref = _ref(props.get("sourceVirtualMachine"))
        storage = props.setdefault("storageProfile", {})
        if vm_ref and existing is None:
            vm = arm.resource(vm_ref)
            if vm is None or vm.type != VIRTUAL_MACHINE.type:
                raise ArmError(404, "NotFound", f"Resource {vm_ref} not found.")
            storage.setdefault("osDisk", {
                "osType": get_path(vm.body, "properties.storageProfile.osDisk.osType") or "Linux",
                "osState": "Generalized",
            })
            props.setdefault("hyperVGeneration", vm.meta.get("hyper_v_generation") or "V1")
            stored["__meta__"] = {"plan": copy.deepcopy(vm.body.get("plan")) or None}
        os_disk = storage.get("osDisk")
        if not isinstance(os_disk, dict):
            raise required("storageProfile.osDisk")
        for key in ("osType", "osState"):
            if not os_disk.get(key):
                raise required(f"storageProfile.osDisk.{key}")
        os_disk.setdefault("caching", "ReadWrite")
        os_disk.setdefault("storageAccountType", "Standard_LRS")
        os_disk.setdefault("diskSizeGB", 30)
        storage.setdefault("dataDisks", [])
        props.setdefault("hyperVGeneration", "V1")
        return stored

    def after_put(self, arm, res, ctx, is_new):
        meta = res.body.pop("__meta__", None)
        if meta is not None and is_new:
            res.meta["plan"] = meta.get("plan")


class GalleryKind(Kind):
    operations_segment = "capsOperations"
    preserve = ("identifier",)
    name_pattern = r"[A-Za-z0-9](?:[A-Za-z0-9_.]{0,78}[A-Za-z0-9])?"
    name_rule = ("The gallery name '{name}' is invalid. The name can contain only alphanumeric characters, "
                 "underscores and periods. The name cannot start or end with an underscore or period, and can be "
                 "up to 80 characters.")

    def prepare(self, arm, ctx, stored, existing):
        stored["properties"].setdefault("identifier", {"uniqueName": f"{ctx.subscription}-{ctx.names[-1].upper()}"})
        return stored

    def check_delete(self, arm, res, ctx):
        if arm.store.of_type(GALLERY_IMAGE.type, parent_id=res.id):
            raise cannot_delete_nested()


def cannot_delete_nested() -> ArmError:
    return ArmError(409, "CannotDeleteResource", "Can not delete resource before nested resources are deleted.")


class GalleryImageKind(Kind):
    operations_segment = "capsOperations"
    immutable = tuple(
        (f"properties.{p}", f"galleryImage.properties.{p}")
        for p in ("osType", "osState", "hyperVGeneration", "identifier.publisher", "identifier.offer",
                  "identifier.sku", "architecture", "purchasePlan.name", "purchasePlan.product",
                  "purchasePlan.publisher")
    )
    name_pattern = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,78}[A-Za-z0-9])?"
    name_rule = ("The gallery image name '{name}' is invalid. The name can contain only alphanumeric characters, "
                 "underscores, hyphens and periods, must start and end with an alphanumeric character, and can be "
                 "up to 80 characters.")

    def prepare(self, arm, ctx, stored, existing):
        props = stored["properties"]
        for key in ("osType", "osState", "identifier"):
            if not props.get(key):
                raise required(key, f"galleryImage.properties.{key}")
        for key in ("publisher", "offer", "sku"):
            if not props["identifier"].get(key):
                raise required(f"identifier.{key}", f"galleryImage.properties.identifier.{key}")
        props.setdefault("hyperVGeneration", "V1")
        props.setdefault("architecture", "x64")
        return stored

    def check_delete(self, arm, res, ctx):
        if arm.store.of_type(GALLERY_IMAGE_VERSION.type, parent_id=res.id):
            raise cannot_delete_nested()


_INT32_MAX = 2 ** 31 - 1


class GalleryImageVersionKind(Kind):
    operations_segment = "capsOperations"
    polls_setting = "replication"
    preserve = ("safetyProfile",)
    immutable = (("properties.storageProfile.source.id", "galleryImageVersion.properties.storageProfile.source.id"),
                 ("properties.storageProfile.source.virtualMachineId",
                  "galleryImageVersion.properties.storageProfile.source.virtualMachineId"))

    def validate_name(self, ctx, name):
        parts = name.split(".")
        if not (len(parts) == 3 and all(p.isdigit() and int(p) <= _INT32_MAX for p in parts)):
            raise ArmError(400, "InvalidParameter",
                           f"The gallery image version name '{name}' is invalid. It must follow the format "
                           "Major(int32).Minor(int32).Patch(int32), e.g. 1.0.0 or 2018.12.1.",
                           target="galleryImageVersionName")

    def prepare(self, arm, ctx, stored, existing):
        props = stored["properties"]
        storage = props.get("storageProfile")
        source = (storage or {}).get("source") or {}
        source_id = source.get("id") or source.get("virtualMachineId")
        if not source_id:
            raise required("storageProfile.source", "galleryImageVersion.properties.storageProfile.source")
        location = stored["location"]
        if existing is None:
            src = arm.resource(source_id)
            if src is None or src.type not in (MANAGED_IMAGE.type, VIRTUAL_MACHINE.type, GALLERY_IMAGE_VERSION.type):
                raise ArmError(404, "NotFound", f"The Image '{source_id}' cannot be found in '{location}' region.",
                               target="galleryImageVersion.properties.storageProfile.source.id")
            size = get_path(src.body, "properties.storageProfile.osDisk.diskSizeGB")
            storage.setdefault("osDiskImage", {"sizeInGB": size if size is not _MISSING else 30,
                                               "hostCaching": "ReadWrite"})
            storage.setdefault("dataDiskImages", [])
        else:
            for key in ("osDiskImage", "dataDiskImages"):
                if key in existing.properties.get("storageProfile", {}):
                    storage.setdefault(key, copy.deepcopy(existing.properties["storageProfile"][key]))

        profile = props.setdefault("publishingProfile", {})
        replica_count = profile.setdefault("replicaCount", 1)
        account_type = profile.setdefault("storageAccountType", "Standard_LRS")
        profile.setdefault("excludeFromLatest", False)
        targets = profile.get("targetRegions") or [{"name": location}]
        normalized, seen = [], set()
        for target in targets:
            name = target.get("name") if isinstance(target, dict) else None
            key = regions.normalize(name)
            if key is None:
                raise ArmError(400, "InvalidParameter", f"The target region '{name}' is not a valid Azure region.",
                               target="galleryImageVersion.properties.publishingProfile.targetRegions")
            if key in seen:
                raise ArmError(400, "InvalidParameter", f"The target region '{name}' is specified more than once.",
                               target="galleryImageVersion.properties.publishingProfile.targetRegions")
            seen.add(key)
            item = dict(target)
            item["name"] = regions.display(key)
            item.setdefault("regionalReplicaCount", replica_count)
            item.setdefault("storageAccountType", account_type)
            normalized.append(item)
        profile["targetRegions"] = normalized
        safety = props.setdefault("safetyProfile", {})
        safety.setdefault("allowDeletionOfReplicatedLocations", True)
        safety.setdefault("reportedForPolicyViolation", False)
        if existing is None:
            profile["publishedDate"] = iso_now()
        else:
            old_profile = existing.properties.get("publishingProfile", {})
            profile["publishedDate"] = old_profile.get("publishedDate") or iso_now()
            old_regions = {t["name"] for t in old_profile.get("targetRegions", [])}
            removed = old_regions - {t["name"] for t in normalized}
            if removed and existing.properties.get("safetyProfile", {}).get("allowDeletionOfReplicatedLocations") is False:
                raise ArmError(409, "OperationNotAllowed",
                               f"Removing replicated regions {sorted(removed)} from gallery image version "
                               f"'{existing.name}' is not allowed because safetyProfile."
                               "allowDeletionOfReplicatedLocations is false.")
        return stored

    def after_put(self, arm, res, ctx, is_new):
        src_id = get_path(res.body, "properties.storageProfile.source.id")
        if is_new:
            image = arm.resource(src_id if src_id is not _MISSING else None)
            if image is not None and image.type == GALLERY_IMAGE_VERSION.type:
                res.meta["source_image"] = image.meta.get("source_image")
            elif image is not None:
                plan = image.meta.get("plan") if image.type == MANAGED_IMAGE.type else image.body.get("plan")
                res.meta["source_image"] = {"name": image.name, "tags": dict(image.tags),
                                            "osType": get_path(image.body, "properties.storageProfile.osDisk.osType"),
                                            "plan": copy.deepcopy(plan) or None}
            res.meta["replicated"] = []

    def on_succeeded(self, arm, res):
        res.meta["replicated"] = [t["name"] for t in res.properties["publishingProfile"]["targetRegions"]]

    def check_delete(self, arm, res, ctx):
        props = res.properties
        safety = props.get("safetyProfile", {})
        targets = props.get("publishingProfile", {}).get("targetRegions", [])
        if (arm.block_replicated_version_delete and safety.get("allowDeletionOfReplicatedLocations") is False
                and len(targets) > 1):
            raise ArmError(409, "OperationNotAllowed",
                           f"Gallery image version '{res.name}' cannot be deleted because it is replicated to "
                           f"{len(targets)} regions and safetyProfile.allowDeletionOfReplicatedLocations is false. "
                           "Remove the replicated regions first, or allow their deletion.")
        eol = props.get("publishingProfile", {}).get("endOfLifeDate")
        if safety.get("blockDeletionBeforeEndOfLife") and eol:
            try:
                eol_time = dt.datetime.fromisoformat(str(eol))
            except ValueError:
                eol_time = None
            if eol_time is not None and eol_time > dt.datetime.now(dt.UTC):
                raise ArmError(409, "OperationNotAllowed",
                               f"Gallery image version '{res.name}' cannot be deleted before its end of life date "
                               f"'{eol}' because safetyProfile.blockDeletionBeforeEndOfLife is true.")

    def decorate(self, arm, res, out, ctx):
        expand = (ctx.q("$expand") if ctx is not None else None) or ""
        if expand.lower() != "replicationstatus":
            return
        targets = [t["name"] for t in res.properties.get("publishingProfile", {}).get("targetRegions", [])]
        done = set(res.meta.get("replicated", []))
        state = res.provisioning_state
        summary = []
        if res.op is not None and res.op.method in ("PUT", "PATCH"):
            pending = [t for t in targets if t not in done]
            progress = res.op.fraction(arm.clock()) * len(pending)
            for target in targets:
                if target in done:
                    summary.append(_region(target, "Completed", 100))
                else:
                    pct = int(max(0.0, min(1.0, progress - pending.index(target))) * 100)
                    summary.append(_region(target, "Completed" if pct >= 100 else "Replicating", pct))
            aggregated = "InProgress"
        elif state == "Failed":
            message = (res.meta.get("error") or {}).get("message", "Replication failed.")
            for target in targets:
                ok = target in done
                summary.append(_region(target, "Completed" if ok else "Failed", 100 if ok else 0,
                                       "" if ok else message))
            aggregated = "Failed"
        else:
            summary = [_region(t, "Completed", 100) for t in targets]
            aggregated = "Completed"
        out["properties"]["replicationStatus"] = {"aggregatedState": aggregated, "summary": summary}

    def on_failed(self, arm, res, op):
        res.meta["error"] = op.error


def _region(name: str, state: str, progress: int, details: str = "") -> dict:
    return {"region": name, "state": state, "details": details, "progress": progress}


class DiskKind(Kind):
    operations_segment = "diskOperations"
    preserve = ("diskState", "timeCreated", "uniqueId", "osType")

    def prepare(self, arm, ctx, stored, existing):
        props = stored["properties"]
        if existing is None and not props.get("creationData"):
            raise required("creationData", "disk.properties.creationData")
        props.setdefault("diskState", "Unattached")
        props.setdefault("timeCreated", iso_now())
        props.setdefault("uniqueId", str(uuid.uuid4()))
        stored.setdefault("sku", {"name": "Standard_LRS", "tier": "Standard"})
        if existing is not None and existing.body.get("managedBy"):
            stored["managedBy"] = existing.body["managedBy"]
        return stored

    def check_delete(self, arm, res, ctx):
        if res.body.get("managedBy"):
            raise ArmError(409, "OperationNotAllowed",
                           f"Disk {res.name} is attached to VM {res.body['managedBy']}.")


class VirtualMachineKind(Kind):
    preserve = ("vmId", "timeCreated", "storageProfile", "networkProfile", "osProfile")

    def __init__(self) -> None:
        super().__init__("Microsoft.Compute/virtualMachines")
        self.actions["instanceview"] = lambda arm, ctx, res: _response(200, self.instance_view(arm, res))

    def prepare(self, arm, ctx, stored, existing):
        props = stored["properties"]
        if existing is not None:  # updates: hardware and tags may change, the rest stays as created
            for key in ("storageProfile", "networkProfile", "osProfile", "vmId", "timeCreated"):
                if key in existing.properties:
                    props[key] = copy.deepcopy(existing.properties[key])
            return stored
        vm_name, location = ctx.names[-1], stored["location"]
        storage = props.get("storageProfile") or {}
        image_ref = storage.get("imageReference") or {}
        image_id = image_ref.get("id")
        source: dict | None = None
        required_plan: dict | None = None  # the purchase plan the image needs in the VM's body
        generation = "V1"
        if image_id:
            image = arm.resource(image_id)
            if image is not None and image.type == GALLERY_IMAGE.type:
                image = latest_version(arm, image)
            if image is None or image.type not in (MANAGED_IMAGE.type, GALLERY_IMAGE_VERSION.type):
                raise ArmError(404, "NotFound", f"The Image '{image_id}' cannot be found in '{location}' region.",
                               target="imageReference")
            if image.type == GALLERY_IMAGE_VERSION.type:
                if image.provisioning_state != "Succeeded":
                    raise ArmError(409, "OperationNotAllowed",
                                   f"The gallery image version '{image.id}' is in provisioning state "
                                   f"'{image.provisioning_state}' and cannot be used to create a VM yet.")
                regions_ = {regions.normalize(t["name"]) for t in
                            image.properties.get("publishingProfile", {}).get("targetRegions", [])}
                if location not in regions_:
                    raise ArmError(404, "NotFound",
                                   f"The gallery image version '{image.id}' is not available in '{location}' region. "
                                   "Replicate it to this region or change the requested region.",
                                   target="imageReference")
                source = image.meta.get("source_image") or {}
                definition = arm.resource(image.parent_id) if image.parent_id else None
                os_type = get_path(definition.body, "properties.osType") if definition else None
                definition_plan = get_path(definition.body, "properties.purchasePlan") if definition else None
                required_plan = (definition_plan if isinstance(definition_plan, dict) and definition_plan
                                 else source.get("plan"))
                generation = (get_path(definition.body, "properties.hyperVGeneration") if definition else None) or "V1"
            else:
                source = {"name": image.name, "tags": dict(image.tags)}
                os_type = get_path(image.body, "properties.storageProfile.osDisk.osType")
                required_plan = image.meta.get("plan")
                generation = image.properties.get("hyperVGeneration") or "V1"
            disk_size = 30
        elif image_ref.get("publisher") and image_ref.get("offer") and image_ref.get("sku"):
            from . import marketplace

            offer, exact = marketplace.resolve(image_ref, arm.marketplace)  # 404 "Artifact: VMImage was not found."
            # ARM shows the version a VM was made from (``latest`` resolved) as imageReference.exactVersion
            storage = dict(storage, imageReference={**image_ref, "exactVersion": exact})
            os_type, disk_size = offer.os_type, 30  # a marketplace image: nothing of ours listens on it
            required_plan, generation = offer.plan, offer.hyper_v_generation
        else:
            raise required("imageReference", "storageProfile.imageReference")

        os_disk = dict(storage.get("osDisk") or {})
        disk_name = os_disk.get("name") or f"{vm_name}_OsDisk_1_{uuid.uuid4().hex}"
        from .marketplace import check_plan

        check_plan(required_plan, stored.get("plan"), disk_name)
        disk_id = arm.make_id(ctx.subscription, ctx.resource_group or "", DISK, [disk_name])
        if arm.resource(disk_id) is not None:
            raise ArmError(409, "ConflictingUserInput",
                           f"Disk {disk_name} already exists in resource group {ctx.resource_group}. "
                           "Only CreateOption.Attach is supported.", target="/disks/" + disk_name)
        managed = dict(os_disk.get("managedDisk") or {})
        managed.setdefault("storageAccountType", "Standard_LRS")
        managed["id"] = disk_id
        os_disk.update({
            "osType": os_disk.get("osType") or (os_type if isinstance(os_type, str) else "Linux"),
            "name": disk_name, "createOption": os_disk.get("createOption", "FromImage"),
            "caching": os_disk.get("caching", "ReadWrite"), "managedDisk": managed,
            "deleteOption": os_disk.get("deleteOption", "Detach"),
            "diskSizeGB": os_disk.get("diskSizeGB", disk_size),
        })
        storage = dict(storage, osDisk=os_disk, dataDisks=storage.get("dataDisks") or [])
        props["storageProfile"] = storage

        network = props.get("networkProfile") or {}
        nic_refs = network.get("networkInterfaces") or []
        configs = network.get("networkInterfaceConfigurations") or []
        if not nic_refs and not configs:
            raise required("networkProfile", "properties.networkProfile")
        for ref in nic_refs:
            nic = arm.resource(_ref(ref))
            if nic is None or nic.type != NETWORK_INTERFACE.type:
                raise invalid_reference(str(_ref(ref)), ctx.rid)
            user = attached_vm(arm, nic.id)
            if user is not None:
                raise ArmError(400, "NicInUse", f"Network Interface {nic.id} is used by existing resource {user.id}. "
                                                "A network interface can be attached to one virtual machine only.")
        for config in configs:
            if not config.get("name"):
                raise required("networkInterfaceConfigurations.name", "properties.networkProfile")
            ip_configs = get_path(config, "properties.ipConfigurations")
            for ipc in ip_configs if isinstance(ip_configs, list) else []:
                subnet = _ref(get_path(ipc, "properties.subnet"))
                if subnet is None or arm.resource(subnet) is None:
                    raise invalid_reference(str(subnet), ctx.rid)
        os_profile = dict(props.get("osProfile") or {})
        os_profile.pop("adminPassword", None)
        os_profile.pop("customData", None)  # ARM never returns it
        os_profile.setdefault("computerName", vm_name)
        os_profile.setdefault("secrets", [])
        os_profile.setdefault("allowExtensionOperations", True)
        props["osProfile"] = os_profile
        props.setdefault("hardwareProfile", {"vmSize": "Standard_DS1_v2"})
        props["vmId"] = str(uuid.uuid4())
        props["timeCreated"] = iso_now()
        ctx_meta = {"source_image": source, "image_id": image_id, "hyper_v_generation": generation}
        stored.setdefault("__meta__", {}).update(ctx_meta)
        return stored

    def after_put(self, arm, res, ctx, is_new):
        meta = res.body.pop("__meta__", {})
        if not is_new:
            return
        res.meta.update(meta)
        res.meta["power"] = "starting"
        sub, rg = res.subscription, res.resource_group or ""
        os_disk = res.properties["storageProfile"]["osDisk"]
        insert(arm, DISK, sub, rg, [os_disk["name"]], {
            "location": res.location, "managedBy": res.id,
            "sku": {"name": os_disk["managedDisk"]["storageAccountType"], "tier": "Standard"},
            "properties": {"osType": os_disk["osType"], "hyperVGeneration": meta.get("hyper_v_generation") or "V1",
                           "creationData": {"createOption": "FromImage",
                                            **({"imageReference": {"id": meta["image_id"]}} if meta.get("image_id") else {})},
                           "diskSizeGB": os_disk["diskSizeGB"], "diskState": "Attached",
                           "timeCreated": iso_now(), "uniqueId": str(uuid.uuid4())},
        })
        network = res.properties["networkProfile"]
        refs = network.setdefault("networkInterfaces", [])
        for config in network.get("networkInterfaceConfigurations") or []:
            nic = create_nic_from_config(arm, res, config)
            config_props = config.get("properties") or {}
            refs.append({"id": nic.id, "properties": {"primary": config_props.get("primary") is True,
                                                       "deleteOption": config_props.get("deleteOption") or "Detach"}})

    def on_succeeded(self, arm, res):
        res.meta["power"] = "running"
        if res.id.lower() in arm.vm_servers:
            return
        reservations = []
        for nic in vm_nics(arm, res):
            nic.meta.setdefault("mac", "00-0D-3A-" + "-".join(f"{b:02X}" for b in uuid.uuid4().bytes[:3]))
            for ipc in nic.properties.get("ipConfigurations", []):
                reservation = nic.meta.get("reservations", {}).get(ipc["name"])
                if reservation is not None:
                    reservations.append(reservation)
                pip = arm.resource(_ref(get_path(ipc, "properties.publicIPAddress")))
                if pip is not None:
                    if pip.meta.get("reservation") is None:
                        pip.meta["reservation"] = arm.pool.reserve()
                        pip.meta["dynamic"] = True
                    reservations.append(pip.meta["reservation"])
        source = res.meta.get("source_image")
        if source is None or not reservations:
            return
        from .vmhttp import VmHttpServer

        behaviour = arm.behaviour_for(source.get("name", ""), source.get("tags") or {})
        server = VmHttpServer(res.name, reservations, behaviour)
        server.start()
        arm.vm_servers[res.id.lower()] = server

    def on_failed(self, arm, res, op):
        res.meta["power"] = None
        res.meta["error"] = op.error

    def on_deleted(self, arm, res):
        server = arm.vm_servers.pop(res.id.lower(), None)
        dynamic = []
        for nic in vm_nics(arm, res):
            nic.meta.pop("mac", None)
            for ipc in nic.properties.get("ipConfigurations", []):
                pip = arm.resource(_ref(get_path(ipc, "properties.publicIPAddress")))
                if pip is not None and pip.meta.get("dynamic") and pip.meta.get("reservation") is not None:
                    dynamic.append(pip.meta.pop("reservation"))
                    pip.meta["dynamic"] = False
        if server is not None:
            server.stop(release=dynamic)
        else:
            for reservation in dynamic:
                reservation.close()
        os_disk = get_path(res.body, "properties.storageProfile.osDisk")
        disk = arm.resource(get_path(os_disk, "managedDisk.id") if isinstance(os_disk, dict) else None)
        if disk is not None:
            if str(os_disk.get("deleteOption", "Detach")).lower() == "delete":
                arm.remove(disk)
            else:
                disk.body.pop("managedBy", None)
                disk.properties["diskState"] = "Unattached"
        for ref in get_path(res.body, "properties.networkProfile.networkInterfaces") or []:
            nic = arm.resource(_ref(ref))
            if nic is not None and str(get_path(ref, "properties.deleteOption")).lower() == "delete":
                arm.remove(nic)

    def instance_view(self, arm: Arm, res: Resource) -> dict:
        state = res.provisioning_state or "Succeeded"
        now = iso_now()
        statuses = []
        if state == "Failed":
            error = res.meta.get("error") or {}
            statuses.append({"code": f"ProvisioningState/failed/{error.get('code', 'InternalExecutionError')}",
                             "level": "Error", "displayStatus": "Provisioning failed",
                             "message": error.get("message", ""), "time": now})
        else:
            display = "Provisioning succeeded" if state == "Succeeded" else state
            statuses.append({"code": f"ProvisioningState/{state.lower()}", "level": "Info",
                             "displayStatus": display, "time": now})
        power = res.meta.get("power")
        if power:
            statuses.append({"code": f"PowerState/{power}", "level": "Info", "displayStatus": f"VM {power}"})
        os_disk = get_path(res.body, "properties.storageProfile.osDisk") or {}
        view = {
            "computerName": get_path(res.body, "properties.osProfile.computerName"),
            "osName": "debian", "osVersion": "12",
            "hyperVGeneration": res.meta.get("hyper_v_generation") or "V1",
            "disks": [{"name": os_disk.get("name"), "statuses": [{
                "code": "ProvisioningState/succeeded", "level": "Info",
                "displayStatus": "Provisioning succeeded", "time": now}]}],
            "statuses": statuses,
        }
        if power == "running":
            view["vmAgent"] = {"vmAgentVersion": "2.2.49.2", "statuses": [{
                "code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Ready",
                "message": "Guest Agent is running", "time": now}]}
        return view

    def decorate(self, arm, res, out, ctx):
        expand = (ctx.q("$expand") if ctx is not None else None) or ""
        if expand.lower() == "instanceview":
            out["properties"]["instanceView"] = self.instance_view(arm, res)


def _response(status: int, body: Any):
    from .arm import Response

    return Response(status, body)


def latest_version(arm: Arm, image: Resource) -> Resource | None:
    """The version a VM gets from a gallery image id: the highest not excluded from latest."""
    candidates = [v for v in arm.store.of_type(GALLERY_IMAGE_VERSION.type, parent_id=image.id)
                  if v.provisioning_state == "Succeeded"
                  and not v.properties.get("publishingProfile", {}).get("excludeFromLatest")]
    if not candidates:
        return None
    return max(candidates, key=lambda v: tuple(int(p) for p in v.name.split(".")))


def vm_nics(arm: Arm, vm: Resource) -> list[Resource]:
    nics = []
    for ref in get_path(vm.body, "properties.networkProfile.networkInterfaces") or []:
        nic = arm.resource(_ref(ref))
        if nic is not None:
            nics.append(nic)
    return nics


def attached_vm(arm: Arm, nic_id: str) -> Resource | None:
    for vm in arm.store.of_type(VIRTUAL_MACHINE.type):
        for ref in get_path(vm.body, "properties.networkProfile.networkInterfaces") or []:
            if _same(_ref(ref), nic_id):
                return vm
    return None


def create_nic_from_config(arm: Arm, vm: Resource, config: dict) -> Resource:
    """A NIC (and public IPs) the VM API creates from ``networkInterfaceConfigurations``."""
    sub, rg = vm.subscription, vm.resource_group or ""
    props = config.get("properties") or {}
    ipcs = []
    for index, ipc in enumerate(props.get("ipConfigurations") or []):
        ipc_props = dict(ipc.get("properties") or {})
        pip_config = ipc_props.pop("publicIPAddressConfiguration", None)
        if pip_config:
            pip_props = pip_config.get("properties") or {}
            pip = insert(arm, PUBLIC_IP, sub, rg, [pip_config["name"]], {
                "location": vm.location, "sku": pip_config.get("sku") or {"name": "Standard", "tier": "Regional"},
                "properties": {"publicIPAllocationMethod": pip_props.get("publicIPAllocationMethod", "Static"),
                               "publicIPAddressVersion": "IPv4", "idleTimeoutInMinutes": 4,
                               "resourceGuid": str(uuid.uuid4())},
            }, delete_with_nic=str(pip_props.get("deleteOption", "Detach")).lower() == "delete")
            PUBLIC_IP.after_put(arm, pip, None, True)  # type: ignore[arg-type]
            ipc_props["publicIPAddress"] = {"id": pip.id}
        ipcs.append({"name": ipc.get("name") or f"ipconfig{index + 1}", "properties": ipc_props})
    body = {"location": vm.location, "properties": {"ipConfigurations": ipcs}}
    if props.get("networkSecurityGroup"):
        body["properties"]["networkSecurityGroup"] = props["networkSecurityGroup"]
    nic = insert(arm, NETWORK_INTERFACE, sub, rg, [config["name"]], body)
    nic.body = NETWORK_INTERFACE.prepare(arm, None, nic.body, None)  # type: ignore[arg-type]
    nic.properties["provisioningState"] = "Succeeded"
    NETWORK_INTERFACE.after_put(arm, nic, None, True)  # type: ignore[arg-type]
    return nic


# === Microsoft.Network ================================================================================
class NetworkKind(Kind):
    busy_code = "AnotherOperationInProgress"
    etag = True
    preserve = ("resourceGuid",)

    def pending_state(self, is_new):
        return "Updating"

    def build(self, arm, ctx, body, existing):
        stored = super().build(arm, ctx, body, existing)
        stored["properties"].setdefault("resourceGuid", str(uuid.uuid4()))
        return stored


def _check_refs(arm: Arm, refs: list[str | None], by: str, expected_type: str | None = None) -> None:
    for ref in refs:
        if ref is None:
            continue
        target = arm.resource(ref)
        if target is None or (expected_type and target.type != expected_type):
            raise invalid_reference(ref, by)


class VirtualNetworkKind(NetworkKind):
    def prepare(self, arm, ctx, stored, existing):
        props = stored["properties"]
        props.setdefault("addressSpace", {"addressPrefixes": ["10.0.0.0/16"]})
        subnets = props.pop("subnets", None) or []
        for subnet in subnets:
            if not subnet.get("name"):
                raise required("subnets.name", "properties.subnets.name")
            _check_refs(arm, [_ref(get_path(subnet, "properties.networkSecurityGroup"))], ctx.rid + "/subnets/"
                        + subnet["name"], NETWORK_SECURITY_GROUP.type)
        if existing is not None:  # ARM replaces the subnet list: subnets left out are deleted
            wanted = {s["name"].lower() for s in subnets}
            for child in arm.store.of_type(SUBNET.type, parent_id=existing.id):
                if child.name.lower() not in wanted:
                    SUBNET.check_delete(arm, child, ctx)
        stored["__subnets__"] = subnets
        return stored

    def after_put(self, arm, res, ctx, is_new):
        subnets = res.body.pop("__subnets__", [])
        wanted = {s["name"].lower() for s in subnets}
        for child in arm.store.of_type(SUBNET.type, parent_id=res.id):
            if child.name.lower() not in wanted:
                arm.remove(child)
        for subnet in subnets:
            rid = f"{res.id}/subnets/{subnet['name']}"
            props = {k: v for k, v in (subnet.get("properties") or {}).items() if k != "provisioningState"}
            child = arm.resource(rid)
            if child is None:
                insert(arm, SUBNET, res.subscription, res.resource_group or "",
                       [res.name, subnet["name"]], {"properties": props})
            else:
                child.body["properties"] = dict(props, provisioningState="Succeeded")

    def check_delete(self, arm, res, ctx):
        for child in arm.store.of_type(SUBNET.type, parent_id=res.id):
            SUBNET.check_delete(arm, child, ctx)

    def decorate(self, arm, res, out, ctx):
        out["properties"]["subnets"] = [SUBNET.render(arm, s, None)
                                        for s in arm.store.of_type(SUBNET.type, parent_id=res.id)]


class SubnetKind(NetworkKind):
    tracked = False
    not_found_code = "NotFound"

    def prepare(self, arm, ctx, stored, existing):
        _check_refs(arm, [_ref(stored["properties"].get("networkSecurityGroup"))], ctx.rid,
                    NETWORK_SECURITY_GROUP.type)
        return stored

    def users(self, arm: Arm, subnet_id: str) -> list[str]:
        out = []
        for nic in arm.store.of_type(NETWORK_INTERFACE.type):
            for ipc in nic.properties.get("ipConfigurations", []):
                if _same(_ref(get_path(ipc, "properties.subnet")), subnet_id):
                    out.append(f"{nic.id}/ipConfigurations/{ipc['name']}")
        return out

    def check_delete(self, arm, res, ctx):
        users = self.users(arm, res.id)
        if users:
            raise ArmError(400, "InUseSubnetCannotBeDeleted",
                           f"Subnet {res.name} is in use by {users[0]} and cannot be deleted. In order to delete the "
                           "subnet, delete all the resources within the subnet. See aka.ms/deletesubnet.")

    def decorate(self, arm, res, out, ctx):
        users = self.users(arm, res.id)
        if users:
            out["properties"]["ipConfigurations"] = [{"id": u} for u in users]


class NetworkInterfaceKind(NetworkKind):
    def prepare(self, arm, ctx, stored, existing):
        props = stored["properties"]
        nic_id = ctx.rid if ctx is not None else None
        ipcs = props.get("ipConfigurations") or []
        if not ipcs:
            raise ArmError(400, "InvalidRequestFormat",
                           f"Network interface {nic_id} must have one or more IP configurations.")
        old = {c["name"]: c for c in (existing.properties.get("ipConfigurations", []) if existing else [])}
        for index, ipc in enumerate(ipcs):
            ipc.setdefault("name", f"ipconfig{index + 1}")
            ipc_props = ipc.setdefault("properties", {})
            if ctx is not None:
                subnet = _ref(ipc_props.get("subnet"))
                if subnet is None:
                    raise required("ipConfigurations.properties.subnet", "properties.ipConfigurations.subnet")
                _check_refs(arm, [subnet], nic_id, SUBNET.type)
                _check_refs(arm, [_ref(ipc_props.get("publicIPAddress"))], nic_id, PUBLIC_IP.type)
            ipc_props.pop("provisioningState", None)
            ipc_props.setdefault("privateIPAllocationMethod", "Dynamic")
            ipc_props.setdefault("privateIPAddressVersion", "IPv4")
            ipc_props.setdefault("primary", index == 0)
            if ipc["name"] in old and "privateIPAddress" in old[ipc["name"]].get("properties", {}):
                ipc_props["privateIPAddress"] = old[ipc["name"]]["properties"]["privateIPAddress"]
        if ctx is not None:
            _check_refs(arm, [_ref(props.get("networkSecurityGroup"))], nic_id, NETWORK_SECURITY_GROUP.type)
        return stored

    def after_put(self, arm, res, ctx, is_new):
        reservations = res.meta.setdefault("reservations", {})
        for ipc in res.properties.get("ipConfigurations", []):
            ipc["id"] = f"{res.id}/ipConfigurations/{ipc['name']}"
            if ipc["name"] not in reservations:
                reservations[ipc["name"]] = arm.pool.reserve()
            ipc["properties"]["privateIPAddress"] = reservations[ipc["name"]].address

    def check_delete(self, arm, res, ctx):
        vm = attached_vm(arm, res.id)
        if vm is not None:
            raise ArmError(400, "NicInUse",
                           f"Network Interface {res.id} is used by existing resource {vm.id}. In order to delete the "
                           "network interface, it must be dissociated from the resource. To learn more, see "
                           "aka.ms/deletenic.")

    def on_deleted(self, arm, res):
        for reservation in res.meta.pop("reservations", {}).values():
            reservation.close()
        for ipc in res.properties.get("ipConfigurations", []):
            pip = arm.resource(_ref(get_path(ipc, "properties.publicIPAddress")))
            if pip is not None and pip.meta.get("delete_with_nic"):
                arm.remove(pip)

    def decorate(self, arm, res, out, ctx):
        props = out["properties"]
        for ipc in props.get("ipConfigurations", []):
            ipc["id"] = f"{res.id}/ipConfigurations/{ipc['name']}"
            ipc.setdefault("type", "Microsoft.Network/networkInterfaces/ipConfigurations")
            ipc["properties"]["provisioningState"] = props.get("provisioningState")
        vm = attached_vm(arm, res.id)
        if vm is not None:
            props["virtualMachine"] = {"id": vm.id}
            if res.meta.get("mac"):
                props["macAddress"] = res.meta["mac"]
        props.setdefault("primary", True) if vm is not None else None


class PublicIpKind(NetworkKind):
    def prepare(self, arm, ctx, stored, existing):
        props = stored["properties"]
        sku = stored.setdefault("sku", {"name": "Standard", "tier": "Regional"})
        props.setdefault("publicIPAllocationMethod", "Static" if sku.get("name") == "Standard" else "Dynamic")
        props.setdefault("publicIPAddressVersion", "IPv4")
        props.setdefault("idleTimeoutInMinutes", 4)
        props.pop("ipAddress", None)
        return stored

    def after_put(self, arm, res, ctx, is_new):
        static = str(res.properties.get("publicIPAllocationMethod")).lower() == "static"
        if static and res.meta.get("reservation") is None:
            res.meta["reservation"] = arm.pool.reserve()
            res.meta["dynamic"] = False

    def users(self, arm: Arm, pip_id: str) -> list[str]:
        out = []
        for nic in arm.store.of_type(NETWORK_INTERFACE.type):
            for ipc in nic.properties.get("ipConfigurations", []):
                if _same(_ref(get_path(ipc, "properties.publicIPAddress")), pip_id):
                    out.append(f"{nic.id}/ipConfigurations/{ipc['name']}")
        return out

    def check_delete(self, arm, res, ctx):
        users = self.users(arm, res.id)
        if users:
            raise ArmError(400, "PublicIPAddressCannotBeDeleted",
                           f"Public IP address {res.id} can not be deleted since it is still allocated to resource "
                           f"{users[0]}. In order to delete the public IP, disassociate/detach the Public IP address "
                           "from the resource.  To learn how to do this, see aka.ms/deletepublicip.")

    def on_deleted(self, arm, res):
        if res.meta.get("reservation") is not None:
            res.meta.pop("reservation").close()

    def decorate(self, arm, res, out, ctx):
        reservation = res.meta.get("reservation")
        if reservation is not None:
            out["properties"]["ipAddress"] = reservation.address
        users = self.users(arm, res.id)
        if users:
            out["properties"]["ipConfiguration"] = {"id": users[0]}


_DEFAULT_RULES = [
    ("AllowVnetInBound", "Inbound", "Allow", 65000, "VirtualNetwork", "VirtualNetwork"),
    ("AllowAzureLoadBalancerInBound", "Inbound", "Allow", 65001, "AzureLoadBalancer", "*"),
    ("DenyAllInBound", "Inbound", "Deny", 65500, "*", "*"),
    ("AllowVnetOutBound", "Outbound", "Allow", 65000, "VirtualNetwork", "VirtualNetwork"),
    ("AllowInternetOutBound", "Outbound", "Allow", 65001, "*", "Internet"),
    ("DenyAllOutBound", "Outbound", "Deny", 65500, "*", "*"),
]


class NetworkSecurityGroupKind(NetworkKind):
    def prepare(self, arm, ctx, stored, existing):
        rules = stored["properties"].setdefault("securityRules", [])
        for rule in rules:
            if not rule.get("name"):
                raise required("securityRules.name", "properties.securityRules.name")
            rule.setdefault("properties", {}).pop("provisioningState", None)
        return stored

    def users(self, arm: Arm, nsg_id: str) -> tuple[list[str], list[str]]:
        nics = [n.id for n in arm.store.of_type(NETWORK_INTERFACE.type)
                if _same(_ref(n.properties.get("networkSecurityGroup")), nsg_id)]
        subnets = [s.id for s in arm.store.of_type(SUBNET.type)
                   if _same(_ref(s.properties.get("networkSecurityGroup")), nsg_id)]
        return nics, subnets

    def check_delete(self, arm, res, ctx):
        nics, subnets = self.users(arm, res.id)
        if nics or subnets:
            raise ArmError(400, "InUseNetworkSecurityGroupCannotBeDeleted",
                           f"Network security group {res.id} cannot be deleted because it is in use by the following "
                           f"resources: {', '.join(nics + subnets)}. In order to delete the Network security group, "
                           "remove the association with the resource(s). To learn how to do this, see "
                           "aka.ms/deletensg.")

    def decorate(self, arm, res, out, ctx):
        props = out["properties"]
        for rule in props.get("securityRules", []):
            rule["id"] = f"{res.id}/securityRules/{rule['name']}"
            rule.setdefault("type", "Microsoft.Network/networkSecurityGroups/securityRules")
            rule["properties"]["provisioningState"] = props.get("provisioningState")
        props["defaultSecurityRules"] = [{
            "name": name, "id": f"{res.id}/defaultSecurityRules/{name}",
            "type": "Microsoft.Network/networkSecurityGroups/defaultSecurityRules",
            "properties": {"description": name, "protocol": "*", "sourcePortRange": "*",
                           "destinationPortRange": "*", "sourceAddressPrefix": src,
                           "destinationAddressPrefix": dst, "access": access, "priority": prio,
                           "direction": direction, "provisioningState": "Succeeded"},
        } for name, direction, access, prio, src, dst in _DEFAULT_RULES]
        nics, subnets = self.users(arm, res.id)
        if nics:
            props["networkInterfaces"] = [{"id": n} for n in nics]
        if subnets:
            props["subnets"] = [{"id": s} for s in subnets]


# === the table ========================================================================================
RESOURCE_GROUP = ResourceGroupKind()
MANAGED_IMAGE = ManagedImageKind("Microsoft.Compute/images")
GALLERY = GalleryKind("Microsoft.Compute/galleries")
GALLERY_IMAGE = GalleryImageKind("Microsoft.Compute/galleries/images")
GALLERY_IMAGE_VERSION = GalleryImageVersionKind("Microsoft.Compute/galleries/images/versions")
DISK = DiskKind("Microsoft.Compute/disks")
VIRTUAL_MACHINE = VirtualMachineKind()
VIRTUAL_NETWORK = VirtualNetworkKind("Microsoft.Network/virtualNetworks")
SUBNET = SubnetKind("Microsoft.Network/virtualNetworks/subnets")
NETWORK_INTERFACE = NetworkInterfaceKind("Microsoft.Network/networkInterfaces")
PUBLIC_IP = PublicIpKind("Microsoft.Network/publicIPAddresses")
NETWORK_SECURITY_GROUP = NetworkSecurityGroupKind("Microsoft.Network/networkSecurityGroups")

KINDS: dict[str, Kind] = {k.type.lower(): k for k in (
    MANAGED_IMAGE, GALLERY, GALLERY_IMAGE, GALLERY_IMAGE_VERSION, DISK, VIRTUAL_MACHINE,
    VIRTUAL_NETWORK, SUBNET, NETWORK_INTERFACE, PUBLIC_IP, NETWORK_SECURITY_GROUP,
)}
