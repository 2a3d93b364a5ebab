"""Operator extra links (buttons on a task instance in the Airflow UI), resolved from the task's XCom.

Airflow 3 calls ``get_link`` in the worker when the task ends (``finalize``, whatever the state) and
stores the URL in XCom under the link's ``xcom_key``; the API server reads it back from there
(``/api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}/links``). An empty string: no link (the task
produced nothing to link to, e.g. it failed before its XCom).

=====================  ===============================================================================
``build``              *Packer log*: this try's task log (Packer's output is streamed into it, masked);
                       *Packer artifact*: Azure: the managed image in the Azure portal; local: the version
                       on the gallery page (the qcow2 becomes that version's disk when it is published)
``publish``            *Image gallery*: the version on the gallery page; *Azure portal*: the gallery image
                       version in the Azure portal (Azure only)
=====================  ===============================================================================
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

GALLERY_PREFIX = "/image-gallery"  # bakery.webui.app.URL_PREFIX (that module imports the API server)
PORTAL = "https://portal.azure.com/#resource"  # + an ARM resource id: the resource's page in the portal
ARM_ID_PREFIX = "/subscriptions/"


def _base_url() -> str:
    from airflow.sdk.configuration import conf

    return conf.get("api", "base_url", fallback="/").rstrip("/")


def _xcom(ti_key: Any) -> Any:
    """The task's return value (None when it has none)."""
    from airflow.sdk.execution_time.xcom import XCom

    return XCom.get_value(ti_key=ti_key, key="return_value")


def gallery_url(image: str, version: str | None = None) -> str:
    url = f"{_base_url()}{GALLERY_PREFIX}/images/{quote(image, safe='')}"
    return f"{url}#v-{version}" if version else url


def portal_url(resource_id: str | None) -> str:
    rid = str(resource_id or "")
    return f"{PORTAL}{rid}" if rid.lower().startswith(ARM_ID_PREFIX) else ""


class PackerLogLink(BaseOperatorLink):
    """The task log of this try of the Packer task (every line of Packer's output is in it)."""

    name = "Packer log"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        run_id = quote(ti_key.run_id, safe="")
        try_number = getattr(ti_key, "try_number", None)
        query = f"?try_number={try_number}" if try_number else ""
        return f"{_base_url()}/dags/{ti_key.dag_id}/runs/{run_id}/tasks/{ti_key.task_id}{query}"


class PackerArtifactLink(BaseOperatorLink):
    """What the build made: Azure's managed image in the portal; a local disk: its version on the gallery page."""

    name = "Packer artifact"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        built = _xcom(ti_key) or {}
        artifacts = built.get("artifacts") or []
        if built.get("command") != "build" or not artifacts:
            return ""
        artifact_id = str(artifacts[0].get("id") or "")
        if artifact_id.lower().startswith(ARM_ID_PREFIX):
            return portal_url(artifact_id)
        record = _prepared(operator, ti_key)
        return gallery_url(record["image"], record.get("version")) if record.get("image") else ""


def _prepared(operator: Any, ti_key: Any) -> dict[str, Any]:
    """The bake record (image, version) the run's prepare task made."""
    from airflow.sdk.execution_time.xcom import XCom

    value = XCom.get_one(key="return_value", task_id="prepare",
                         dag_id=ti_key.dag_id, run_id=ti_key.run_id)
    record = value.get("record") if isinstance(value, dict) else None
    return record if isinstance(record, dict) else {}


class GalleryVersionLink(BaseOperatorLink):
    """The published version on the bakery's gallery page."""

    name = "Image gallery"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        published = _xcom(ti_key) or {}
        if not published.get("image") or not published.get("published_id"):
            return ""
        return gallery_url(published["image"], published.get("version"))


class AzurePortalVersionLink(BaseOperatorLink):
    """The published gallery image version in the Azure portal (Azure images only)."""

    name = "Azure portal"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        published = _xcom(ti_key) or {}
        if published.get("target") != "azure":
            return ""
        return portal_url(published.get("published_id"))


BUILD_LINKS = (PackerLogLink(), PackerArtifactLink())
PUBLISH_LINKS = (GalleryVersionLink(), AzurePortalVersionLink())
