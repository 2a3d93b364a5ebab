"""The janitor: finds what dead bakes left behind on this machine and removes it after a TTL.

Plain Python, no Airflow import (the ``bakery_janitor`` DAG calls ``sweep`` through
``bakery.operators.janitor.JanitorOperator``).

Design: a list of **sweepers**. Each one knows one kind of leftover and yields ``Finding``s (what
it is, how old, how to tell whether something still uses it, how to remove it); ``sweep`` first
collects the findings of all sweepers (ages are taken then, before anything is touched), then
applies the policy the same way to all of them, in sweeper order:

- younger than the TTL: kept (it may belong to a bake in progress);
- in use (a live owner, a held lock): kept, whatever its age. This is asked again right before
  removing, so that what only a leftover removed just before used (the temporary folder of an
  orphaned QEMU, the work folder of a leftover Packer) goes in the same sweep; a dry run reports
  such things as in use;
- otherwise: reported as ``would remove`` in a dry run, removed otherwise.

It returns a JSON-able report. The local sweepers (``local_sweepers``):

==================  ==========================================================================
``packer``          Packer runs recorded in ``<work>/<image>/<version>/packer.pid.json`` that are
                    still alive while no build holds the work folder's lock (the task that
                    started them was killed hard): stopped like ``terminate()`` does
                    (``bakery.processes.stop``), verified by start time / token, never a reused pid.
``qemu``            QEMU processes the bakery started (``-name bakery-...`` from ``bakery.qemu``
                    **and** one of the bakery's folders on the command line) whose owner is gone
                    (re-parented to init). A QEMU without both marks is never touched.
``work``            version work folders (``$BAKERY_HOME/work/<image>/<version>``) not modified
                    for the TTL and not locked by a build / smoke test / publish.
``gallery``         ``.staging-*`` / ``.trash-*`` / ``.latest-*`` entries of the local gallery
                    left by a killed publish or prune; removed under the image lock (skipped
                    while a publish or prune holds it).
``temp``            the bakery's private temporary folders (``bakery-packer-*`` var-files,
                    ``bakery-key-*`` ephemeral SSH keys, ``bakery-qemu-*`` snapshot overlays) of
                    killed tasks, unless a live process still refers to them.
==================  ==========================================================================

The Azure sweeper (``AzureSweeper``, one per connection and subscription of the catalogue's azure
images) finds what carries the bakery's tags (``managed_by=image-bakery``) and is older than the TTL
by its ``created_at`` tag (else ARM's ``createdTime``; of unknown age: kept and reported):

==================  ==========================================================================
``smoke-test``      a smoke-test VM and its NIC, public IP, NSG and OS disk (tags ``purpose=smoke-test``,
                    ``smoke_id``) in the images' smoke resource groups: deleted together, VM first,
                    like the teardown does (``AzureTarget.delete_smoke_group``)
``managed-image``   managed images in the images' ``managed_image_resource_group`` that are the source of
                    no gallery image version of the catalogue's galleries (an unpublished bake); never
                    one tagged ``pinned=true`` or of an image with ``keep_failed_image``; checked again
                    right before the delete
``packer-group``    Packer's temporary resource groups ``pkr-Resource-Group-*`` of the catalogue's images
                    (tags ``managed_by``, ``image``; age from ``created_at`` or the resources in it)
==================  ==========================================================================

Whatever the TTL, nothing younger than the longest a bake of those images may still use it (build
timeout + smoke-test timeout + 1 h) is removed: a short TTL cannot pull a build's group from under it.

The package: ``policy`` (``Finding``, ``Busy``, ``Sweeper``, ``sweep``), ``local`` (the five local
sweepers, ``local_sweepers``), ``azure`` (``AzureSweeper``, ``azure_sweepers``); all of them are
importable from ``bakery.janitor`` (``bakery.janitor:local_sweepers``, ``bakery.janitor.sweep``,
``bakery.janitor.azure_sweepers``).

Another target adds its own sweepers: write a factory returning a list of objects with ``name``
and ``find()`` and append its import path to the operator's ``sweepers``.
"""

from bakery.janitor.azure import AzureSweeper, azure_sweepers
from bakery.janitor.local import (
    TEMP_PREFIXES,
    GallerySweeper,
    PackerRunSweeper,
    QemuSweeper,
    TempSweeper,
    WorkFolderSweeper,
    local_sweepers,
)
from bakery.janitor.policy import Busy, Finding, Log, Sweeper, sweep

__all__ = [
    "TEMP_PREFIXES",
    "AzureSweeper",
    "Busy",
    "Finding",
    "GallerySweeper",
    "Log",
    "PackerRunSweeper",
    "QemuSweeper",
    "Sweeper",
    "TempSweeper",
    "WorkFolderSweeper",
    "azure_sweepers",
    "local_sweepers",
    "sweep",
]
