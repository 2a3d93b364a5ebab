"""The bakery's Airflow plugin: the "Image gallery" page in the Airflow UI.

A FastAPI app the API server mounts at ``/image-gallery`` (``bakery.webui.app``: every route behind
Airflow's own authentication and authorisation) and a navigation entry (``external_views``, category
Browse) that shows it inside the UI at ``/plugin/image-gallery``.

Every Airflow component loads this file (scheduler, DAG processor, workers), so it imports nothing heavy:
the app (FastAPI, the bakery's targets) is built on the first request the API server routes to it.

The operators' extra links need no plugin entry: Airflow 3 stores the links an operator declares
(``operator_extra_links``, ``bakery.operators.links``) in XCom when its task ends, and the API server
reads them back from there.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/image-gallery"  # bakery.webui.app.URL_PREFIX (not imported: that module is the heavy part)


class _LazyGalleryApp:
    """An ASGI app that builds ``bakery.webui.app.create_app()`` on its first request."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            from bakery.webui.app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


def _href() -> str:
    """The page's path on the API server, under ``[api] base_url``'s path (the UI frames it)."""
    path = urlsplit(conf.get("api", "base_url", fallback="/")).path.rstrip("/")
    return f"{path}{URL_PREFIX}/"


class ImageBakeryPlugin(AirflowPlugin):
    name = "image_bakery"
    fastapi_apps = [{"app": _LazyGalleryApp(), "url_prefix": URL_PREFIX, "name": "Image gallery"}]
    external_views = [{"name": "Image gallery", "href": _href(), "url_route": "image-gallery",
                       "destination": "nav", "category": "browse"}]
