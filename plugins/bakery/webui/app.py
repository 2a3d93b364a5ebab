"""The "Image gallery" FastAPI app, mounted by Airflow's API server under ``URL_PREFIX``.

Routes (all read-only, all behind Airflow's own authentication and authorisation):

    GET /                                              the page: every image the user may read
    GET /images/{image}                                the page of one image (the ``publish`` task's link)
    GET /api/images                                    the same as JSON
    GET /api/images/{image}
    GET /images/{image}/versions/{version}/sbom.cdx.json   the version's CycloneDX SBOM

Plugin routes are public unless the app checks access itself: every route depends on Airflow's
``GetUserDep`` (a JWT as ``Authorization: Bearer`` or the UI's ``_token`` cookie; none: 401, an invalid
one: 403), and an image is shown only to a user the auth manager lets read its bake DAG
(``get_authorized_dag_ids`` for the lists, ``requires_access_dag`` for one image; else 403).
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag, requires_authenticated
from airflow.configuration import conf
from bakery.catalogue import CatalogueError, ImageSpec, load_catalogue
from bakery.gallery import ImageView, RunFacts, dag_id_of, image_view

URL_PREFIX = "/image-gallery"
BUILD_TASK = "build"


def base_url() -> str:
    """The API server's public URL (``[api] base_url``), without a trailing slash."""
    return conf.get("api", "base_url", fallback="/").rstrip("/")


def _catalogue() -> dict[str, ImageSpec]:
    try:
        return load_catalogue()
    except CatalogueError as exc:
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, f"the image catalogue cannot be read: {exc}") from None


def _readable(user: Any) -> list[ImageSpec]:
    """The catalogue's images whose bake DAG the user may read (the auth manager decides)."""
    dag_ids = get_auth_manager().get_authorized_dag_ids(user=user, method="GET")
    return [spec for name, spec in sorted(_catalogue().items()) if dag_id_of(name) in dag_ids]


def _one(image: str, request: Request, user: Any) -> ImageSpec:
    spec = _catalogue().get(image)
    if spec is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no image {image!r} in the catalogue")
    requires_access_dag("GET", param_dag_id=dag_id_of(image))(request, user)  # 403 unless the DAG is readable
    return spec


def _run_facts(session: Any, dag_id: str):
    """What Airflow recorded of a DAG's runs: run type, and the successful build task's duration."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance

    def facts(run_ids: list[str]) -> dict[str, RunFacts]:
        if not run_ids:
            return {}
        out = {run_id: RunFacts(run_type=str(getattr(run_type, "value", run_type))) for run_id, run_type in session.execute(
            select(DagRun.run_id, DagRun.run_type).where(DagRun.dag_id == dag_id, DagRun.run_id.in_(run_ids)))}
        for run_id, duration in session.execute(
                select(TaskInstance.run_id, TaskInstance.duration).where(
                    TaskInstance.dag_id == dag_id, TaskInstance.task_id == BUILD_TASK,
                    TaskInstance.run_id.in_(run_ids), TaskInstance.state == "success")):
            if duration is not None:
                out.setdefault(run_id, RunFacts()).build_seconds = round(float(duration), 1)
        return out

    return facts


def _view(spec: ImageSpec, session: Any) -> ImageView:
    from bakery.operators.bake import close_target, make_target

    try:
        target = make_target(spec)
        try:
            return image_view(spec, target, _run_facts(session, dag_id_of(spec.name)))
        finally:
            close_target(target)
    except Exception as exc:  # one unreadable target (Azure down, a bad connection) must not hide the others
        return ImageView(image=spec.name, target=spec.target, dag_id=dag_id_of(spec.name),
                         description=spec.description, error=f"{type(exc).__name__}: {exc}")


@lru_cache(maxsize=1)
def _templates():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["size"] = _size
    env.filters["seconds"] = lambda s: "" if s is None else f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    env.filters["q"] = lambda s: quote(str(s), safe="")
    env.filters["when"] = _when
    env.filters["dag"] = lambda image, kind="bake": dag_id_of(image, kind)
    return env


def _when(iso: str | None) -> str:
    """An ISO time as ``YYYY-MM-DD HH:MM:SS`` in UTC (as given, when it is not an ISO time)."""
    if not iso:
        return ""
    try:
        when = datetime.fromisoformat(str(iso))
    except ValueError:
        return str(iso)
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S")


def _size(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _page(views: list[ImageView], *, title: str) -> HTMLResponse:
    html = _templates().get_template("gallery.html").render(
        title=title, images=views, base=base_url(), prefix=base_url() + URL_PREFIX)
    return HTMLResponse(html)


def create_app() -> FastAPI:
    app = FastAPI(title="Image bakery: image gallery", dependencies=[Depends(requires_authenticated())],
                  docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/api/images")
    def list_images(user: GetUserDep, session: SessionDep) -> list[dict[str, Any]]:
        return [_view(spec, session).to_dict() for spec in _readable(user)]

    @app.get("/api/images/{image}")
    def one_image(image: str, request: Request, user: GetUserDep, session: SessionDep) -> dict[str, Any]:
        return _view(_one(image, request, user), session).to_dict()

    @app.get("/", response_class=HTMLResponse)
    def page(user: GetUserDep, session: SessionDep) -> HTMLResponse:
        return _page([_view(spec, session) for spec in _readable(user)], title="Image gallery")

    @app.get("/images/{image}", response_class=HTMLResponse)
    def image_page(image: str, request: Request, user: GetUserDep, session: SessionDep) -> HTMLResponse:
        return _page([_view(_one(image, request, user), session)], title=f"Image gallery: {image}")

    @app.get("/images/{image}/versions/{version}/sbom.cdx.json")
    def sbom(image: str, version: str, request: Request, user: GetUserDep) -> Response:
        from bakery.operators.bake import close_target, make_target
        from bakery.versioning import VersionError, parse_version

        spec = _one(image, request, user)
        try:
            parse_version(version)
        except VersionError as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
        target = make_target(spec)
        try:
            data = target.sbom(image, version)
        finally:
            close_target(target)
        if data is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"{image} {version} has no SBOM")
        return Response(data, media_type="application/vnd.cyclonedx+json", headers={
            "Content-Disposition": f'attachment; filename="{image}-{version}.cdx.json"'})

    return app
