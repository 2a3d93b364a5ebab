"""The Azure target: managed image from Packer -> smoke-test VM -> Azure Compute Gallery version.

No Airflow import: it is given ready SDK clients (``bakery.azure_clients.AzureClients``) or a
zero-argument factory of them (the Airflow hook's ``clients``), used only when Azure is needed.
:class:`AzureTarget` is made of one part per job (all names deterministic, see docs/azure.md):

==============  ==========================================================================================
``infra``       ``prepare``: the resource groups, gallery image definition, smoke subnet and SBOM container
                exist, and the definition fits what the template builds (OS state, Hyper-V generation of
                the Marketplace base, purchase plan); Packer's variables; the bake's purchase plan; the
                Marketplace base version (``latest`` resolved), the record's ``base_digest``
``smoke``       the smoke-test VM: setup (locked-down NSG, IP, NIC, VM with the image's purchase plan),
                HTTP check, teardown by name and by tag; the janitor's smoke-group delete
``publish``     the gallery image version with its tags, replication progress, SBOM and package manifest
                in Blob Storage, the package diff; what the gallery says of published versions
``gallery``     reading the published versions for the gallery page: one listing with their tags, the SBOM
``prune``       the prune policy (:func:`plan_prune`, never Azure's ``latest``) and its application,
                intermediate managed images included
``common``      errors, names, tags, ARM helpers (``delete_found``: did a DELETE delete anything), clients
==============  ==========================================================================================
"""

from __future__ import annotations

from bakery.targets.azure.common import (
    BUILDER_ID,
    IMAGE_ID,
    IMAGE_READY,
    IN_PROGRESS,
    MANAGED_BY,
    TAG_BASE,
    TAG_DIGEST,
    TAG_INPUTS,
    TAG_MANIFEST,
    TAG_PACKER,
    TAG_PINNED,
    TAG_REBUILT,
    TAG_RUN,
    TAG_SMOKE,
    TAG_VALUE_MAX,
    TAG_VARIABLES,
    AzureTargetError,
    VersionFacts,
    delete_found,
    error_text,
    image_ready,
    is_not_found,
    managed_image_name,
)
from bakery.targets.azure.gallery import GalleryReadSteps
from bakery.targets.azure.infra import (
    BuildSource,
    InfraSteps,
    PurchasePlan,
    base_digest_of,
    build_source,
    latest_marketplace_version,
    template_defaults,
)
from bakery.targets.azure.channels import ChannelSteps
from bakery.targets.azure.prune import PRUNE_CONCURRENCY, PrunePlan, PruneSteps, latest_of, plan_prune
from bakery.targets.azure.publish import DIFF_LOOKBACK, PublishSteps, blob_names
from bakery.targets.azure.smoke import SmokeNames, SmokeSteps, ssh_public_key
from bakery.targets.base import Target

# the names other modules used when this was one file
_is_not_found = is_not_found
_error_text = error_text


class AzureTarget(InfraSteps, SmokeSteps, PublishSteps, PruneSteps, GalleryReadSteps, ChannelSteps, Target):
    """The bakery's ``Target`` for Azure (see :mod:`bakery.targets.base`); its steps are in the parts."""

    name = "azure"


__all__ = [
    "BUILDER_ID",
    "DIFF_LOOKBACK",
    "IMAGE_ID",
    "IMAGE_READY",
    "IN_PROGRESS",
    "MANAGED_BY",
    "PRUNE_CONCURRENCY",
    "TAG_BASE",
    "TAG_DIGEST",
    "TAG_INPUTS",
    "TAG_MANIFEST",
    "TAG_PACKER",
    "TAG_PINNED",
    "TAG_REBUILT",
    "TAG_RUN",
    "TAG_SMOKE",
    "TAG_VALUE_MAX",
    "TAG_VARIABLES",
    "AzureTarget",
    "AzureTargetError",
    "BuildSource",
    "PrunePlan",
    "PurchasePlan",
    "SmokeNames",
    "VersionFacts",
    "base_digest_of",
    "blob_names",
    "build_source",
    "delete_found",
    "image_ready",
    "is_not_found",
    "latest_marketplace_version",
    "latest_of",
    "managed_image_name",
    "plan_prune",
    "ssh_public_key",
    "template_defaults",
]
