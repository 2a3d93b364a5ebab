"""The bake steps as plain functions (no Airflow import): the operators only adapt context.

    prepare -> (packer validate) -> (packer build) -> smoke_test -> publish -> prune

The Azure target splits the smoke test in three steps for the DAG (setup, check, teardown: the
teardown is an Airflow teardown task and runs whatever happened); ``smoke_test`` still does all three.
Every step takes an optional ready ``target`` (the operators build the Azure one with SDK clients
from the connection); without one, ``get_target`` makes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from bakery.catalogue import ImageSpec
from bakery.channels import CANDIDATE, STABLE, Actor, Change, ChannelError, plan_promote, plan_rollback
from bakery.digest import tree_digest
from bakery.packages.inputs import Inputs, resolve_inputs
from bakery.packages.manifest import MANIFEST_NAME, Manifest, parse_capture
from bakery.packages.pool import PackagePool, PooledPackage, PoolIndex, default_pool
from bakery.paths import bakery_home, work_root
from bakery.record import BakeRecord
from bakery.targets.base import Log, SmokeCheck, Target
from bakery.versioning import version_for_run

PACKAGE_LIST = "packages.tsv"  # what the guest's capture-packages.sh wrote (Packer downloads it)
PENDING_INDEX = "pool-index.json"  # the version's pool index, committed when it is published
TEMPLATE_DIR = "packer"  # the run's rendered Packer folder, in its work folder (bakery.templates)
TEMPLATE_STORE = "templates"  # $BAKERY_HOME/templates/sha256/<hex>: the rendered folders runs used, by digest


def get_target(name: str, spec: ImageSpec | None = None, *, clients: Any = None) -> Target:
    """The target ``name``. Azure needs the image's spec (its catalogue azure block) and SDK clients
    (``bakery.azure_clients.AzureClients``, or a zero-argument factory of them, called when needed)."""
    if name == "local":
        from bakery.targets.local import LocalTarget

        return LocalTarget()
    if name == "azure":
        from bakery.targets.azure import AzureTarget

        if spec is None:
            raise ValueError("the azure target needs the image's catalogue spec")
        return AzureTarget(spec, clients)
    raise ValueError(f"unknown target {name!r} (known: local, azure)")


def work_dir(image: str, version: str) -> Path:
    return work_root() / image / version


def template_digest(folder: Path) -> str:
    """Digest of a rendered Packer folder (``bakery.templates.render``): every file Packer reads for
    the build, shared scripts included, since the folder holds its own copies."""
    return tree_digest(Path(folder))


def keep_template(folder: Path, digest: str) -> Path:
    """A copy of a rendered Packer folder under ``$BAKERY_HOME/templates/<algorithm>/<hex>``, by its
    digest: the run's work folder goes when the version is published, this stays, so the template
    of any version (its ``template_digest``, in metadata.json or the Azure tags) can be read later.
    Identical templates are stored once (a nightly that did not change its template adds nothing)."""
    algorithm, _, hexdigest = digest.partition(":")
    kept = bakery_home() / TEMPLATE_STORE / algorithm / hexdigest
    if not kept.is_dir():
        kept.parent.mkdir(parents=True, exist_ok=True)
        tmp = kept.with_name(f".{hexdigest}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(folder, tmp)
        try:
            os.rename(tmp, kept)
        except OSError:  # another run kept the same template meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    return kept


def variables_digest(variables: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(variables, sort_keys=True).encode()).hexdigest()


def prepare(
    spec: ImageSpec,
    *,
    run_type: str,
    logical_date: datetime | None,
    run_after: datetime | None,
    dag_run_id: str | None,
    accelerator: str = "auto",
    allow_current_inputs: bool = False,
    log: Log,
    target: Target | None = None,
    pool: PackagePool | None = None,
    now: datetime | None = None,
    triggered_by: str | None = None,
) -> dict[str, Any]:
    """Name the version, decide where its packages come from, render and digest the template, get
    the target's Packer variables ready.

    First the cheap checks of the bake's inputs (``bakery.preflight``: tools on PATH, catalogue
    variables the template declares), then the inputs (``bakery.packages.inputs``: a backfill of a
    date the bakery cannot rebuild fails here, before anything is built), then the image family's
    Packer folder, rendered from the shared sources into the run's work folder
    (``<work>/<image>/<version>/packer``, ``bakery.templates``; also kept by digest,
    ``keep_template``), then the target's own preparation (base image build, Azure infrastructure
    check, which reads the rendered folder), long before Packer builds anything.

    Returns ``{"record": BakeRecord dict, "packer_variables": {...}, "template_dir": the rendered
    folder}`` (no secrets in it); ``validate`` and ``build`` run Packer on ``template_dir``.
    """
    from bakery import preflight, templates

    preflight.run(spec, log)
    version = version_for_run(run_type=run_type, logical_date=logical_date, run_after=run_after)
    pool = pool or default_pool()
    inputs = resolve_inputs(
        image=spec.name, version=version, run_type=run_type, logical_date=logical_date,
        now=now or datetime.now(timezone.utc), mirrors=spec.packages.mirrors, pool=pool,
        retention_days=spec.packages.retention_days, allow_current_inputs=allow_current_inputs,
    )
    if inputs.kind == "pool":
        index = pool.index(spec.name, version)
        install = str(spec.variables.get("packages", ""))
        if index is not None and index.install != install:
            raise preflight.PreflightError(
                f"{spec.name} {version} was baked installing {index.install or '(the template default)'!r}; the "
                f"catalogue now says {install or '(the template default)'!r}: an exact rebuild needs the same list. "
                "Restore it in the catalogue, or bake a new version.")
    if spec.target != "local" and inputs.kind != "current":
        raise preflight.PreflightError(
            f"{spec.name} {version}: inputs {inputs.label} need the bakery's package server, which only the "
            "local target's build VM can reach; an Azure build installs from its distribution's live "
            "repositories. Trigger the backfill with allow_current_inputs=true to rebuild with today's packages.")
    wd = work_dir(spec.name, version)
    wd.mkdir(parents=True, exist_ok=True)
    rendered = templates.render(spec, wd / TEMPLATE_DIR)
    digest = template_digest(rendered)
    kept = keep_template(rendered, digest)
    record = BakeRecord(
        image=spec.name,
        version=version,
        target=spec.target,
        template_digest=digest,
        dag_run_id=dag_run_id,
        run_type=run_type,
        inputs=inputs.to_dict(),
        packages={"list": str(wd / PACKAGE_LIST)},
        variables_digest=variables_digest(spec.variables),
        extra={"template": {"family": spec.template, "dir": str(rendered), "kept": str(kept)},
               # the channel it is published into (None: the image has no channels) and who asked for it
               "channel": CANDIDATE if spec.channels else None, "triggered_by": triggered_by or "scheduler"},
    )
    target = target or get_target(spec.target, spec)
    # the target reads the template it builds (Azure: the base image and plan) from the rendered folder
    variables, base_digest = target.prepare(replace(spec, template_dir=rendered), record, wd, accelerator=accelerator,
                                            log=log, inputs=inputs, pool=pool)  # may fill record.extra
    record = replace(record, base_digest=base_digest)
    log(f"{spec.name}: version {version} ({run_type} run {dag_run_id}), template {spec.template} rendered into "
        f"{rendered} ({digest}; kept as {kept}), packages from {inputs.label}")
    return {"record": record.to_dict(), "template_dir": str(rendered),
            "packer_variables": {**spec.variables, **variables, "package_list_path": str(wd / PACKAGE_LIST)}}


# ---- the package manifest and the pool index of a build ---------------------------------------
@contextlib.contextmanager
def package_server(spec: ImageSpec, inputs: Inputs, *, log: Log, pool: PackagePool | None = None):
    """The package server of a build (None when the image lists no mirrors: the guest then uses
    its own sources and nothing is pooled)."""
    from bakery.packages.server import PackageServer

    pool = pool or default_pool()
    if inputs.kind == "pool":
        index = pool.index(spec.name, inputs.ref)
        if index is None:
            raise FileNotFoundError(f"the pool index of {spec.name} {inputs.ref} disappeared since prepare")
        with PackageServer(pool, replay=index, log=log) as srv:
            yield srv
    elif inputs.mirror_urls:
        # a dated snapshot archive never changes; the live mirrors by the catalogue's rule (indexcache)
        max_age = math.inf if inputs.kind == "snapshot" else spec.packages.index_max_age_hours * 3600
        with PackageServer(pool, mirrors=inputs.mirror_urls, log=log, index_max_age=max_age) as srv:
            yield srv
    else:
        yield None


def check_exact_rebuild(record: BakeRecord, manifest: Manifest, *, log: Log, pool: PackagePool | None = None) -> None:
    """A rebuild from the pool must have installed exactly the packages of the version's index."""
    if (record.inputs or {}).get("kind") != "pool":
        return
    index = (pool or default_pool()).index(record.image, record.version)
    if index is None:
        return
    have = {(p.name, p.arch): p.version for p in manifest.packages}
    wrong = [f"{p.name} {p.version} -> {have.get((p.name, p.arch), 'absent')}" for p in index.packages
             if have.get((p.name, p.arch)) != p.version]
    if wrong:
        raise RuntimeError(f"the rebuild of {record.image} {record.version} from the pool did not install the "
                           f"version's packages: {'; '.join(wrong[:10])}")
    same = " (the same manifest digest)" if manifest.digest == index.manifest_digest else \
        f" (manifest digest {manifest.digest}, the original {index.manifest_digest})"
    log(f"exact rebuild: all {len(index.packages)} packages of {record.version}'s pool index installed as recorded{same}")



def capture_manifest(record: dict[str, Any] | BakeRecord, log: Log) -> tuple[Manifest, dict[str, Any]]:
    """Read the package list the guest wrote, save the version's manifest next to it; return it
    and the record's ``packages`` entry (small: paths, digest, count)."""
    rec = record if isinstance(record, BakeRecord) else BakeRecord.from_dict(record)
    listing = Path((rec.packages or {}).get("list") or work_dir(rec.image, rec.version) / PACKAGE_LIST)
    if not listing.is_file():
        raise FileNotFoundError(
            f"the build of {rec.image} {rec.version} left no package list at {listing}: the template must run "
            "include/packer/shared/capture-packages.sh and download /tmp/bakery-packages.tsv to var.package_list_path")
    manifest = parse_capture(listing.read_text(), where=str(listing))
    path = manifest.save(listing.with_name(MANIFEST_NAME))
    log(f"package manifest: {len(manifest)} {manifest.family} packages ({manifest.os_id} {manifest.os_version}), "
        f"digest {manifest.digest}")
    return manifest, {**(rec.packages or {}), "manifest": str(path), "digest": manifest.digest,
                      "count": len(manifest), "family": manifest.family}


def write_pending_index(record: dict[str, Any] | BakeRecord, manifest: Manifest, served: Iterable[Any],
                        *, install: str, base_image: str | None, log: Log) -> Path:
    """The version's pool index (committed by publish): every package of the manifest that the
    package server handed to the guest, by content. Packages of the base image that the build did
    not replace come with the base image, which the index names by digest."""
    rec = record if isinstance(record, BakeRecord) else BakeRecord.from_dict(record)
    wanted = {(p.name, p.arch, p.version) for p in manifest.packages}
    packages = [PooledPackage(s.name, s.version, s.arch, s.sha256, s.size, s.filename)
                for s in served if (s.name, s.arch, s.version) in wanted]
    unused = sum(1 for s in served if (s.name, s.arch, s.version) not in wanted)
    index = PoolIndex(
        image=rec.image, version=rec.version, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        base_digest=rec.base_digest, inputs=rec.inputs or {}, install=install, packages=packages,
        manifest_digest=manifest.digest, extra={"base_image": base_image} if base_image else {},
    )
    path = index.save(work_dir(rec.image, rec.version) / PENDING_INDEX)
    log(f"pool index of {rec.image} {rec.version}: {len(packages)} packages fetched by this build "
        f"({sum(p.size for p in packages) / 1e6:.1f} MB){f', {unused} fetched but not installed' if unused else ''}; "
        f"the other {len(manifest) - len(packages)} come with base image {rec.base_digest}")
    return path


def record_with_build(record: dict[str, Any], build_result: dict[str, Any], target: Target | None = None) -> BakeRecord:
    """Fold the Packer build's result (artifacts, manifest entry) into the bake record."""
    rec = BakeRecord.from_dict(record)
    artifacts = build_result.get("artifacts") or []
    if not artifacts:
        raise ValueError("the Packer build reported no artifact")
    art = artifacts[0]
    files = list(art.get("files") or [])
    target = target or get_target(rec.target, _spec_of(rec))
    return replace(
        rec,
        packer_run_uuid=build_result.get("packer_run_uuid"),
        artifact_id=target.artifact_id(art),
        artifact_files=files,
        packages=build_result.get("packages") or rec.packages,
    )


def _spec_of(rec: BakeRecord) -> ImageSpec | None:
    if rec.target == "local":
        return None
    from bakery.catalogue import get_image

    return get_image(rec.image)


def smoke_test(rec: BakeRecord, check: SmokeCheck, log: Log, target: Target | None = None) -> BakeRecord:
    result = (target or get_target(rec.target, _spec_of(rec))).smoke_test(rec, check, log)
    return replace(rec, smoke=result.to_dict())


def smoke_setup(rec: BakeRecord, check: SmokeCheck, log: Log, target: Target) -> BakeRecord:
    """The smoke test's setup (Azure: the VM); the record's ``extra["smoke_vm"]`` says where it answers."""
    info = target.smoke_setup(rec, check, log)
    return replace(rec, extra={**rec.extra, "smoke_vm": info})


def smoke_check(rec: BakeRecord, check: SmokeCheck, log: Log, target: Target) -> BakeRecord:
    """The smoke test's check (Azure: HTTP to the VM made by ``smoke_setup``)."""
    result = target.smoke_check(rec, rec.extra["smoke_vm"], check, log)
    return replace(rec, smoke=result.to_dict())


def smoke_teardown(rec: BakeRecord, log: Log, target: Target, *, delete_image: bool = False) -> list[str]:
    """The smoke test's teardown (Azure: the VM and everything made with it, and a failed bake's image)."""
    return target.smoke_teardown(rec, log, delete_image=delete_image)


def publish(rec: BakeRecord, log: Log, target: Target | None = None, *, replace_existing: bool = False) -> BakeRecord:
    target = target or get_target(rec.target, _spec_of(rec))
    published_id = target.publish(rec, log, replace_existing=replace_existing)
    return done_publishing(rec, published_id, log)


def done_publishing(rec: BakeRecord, published_id: str, log: Log) -> BakeRecord:
    """After the target published ``rec``: the run's work folder goes; the record with its published id."""
    wd = work_dir(rec.image, rec.version)
    if wd.is_dir():
        shutil.rmtree(wd)
        log(f"removed the work folder {wd}")
    with contextlib.suppress(OSError):
        wd.parent.rmdir()  # the image's work folder, when no other version is in flight
    return replace(rec, published_id=published_id)


def prune(spec: ImageSpec, keep: int, dry_run: bool, log: Log, target: Target | None = None, *,
          protect: Iterable[str] = (), pool: PackagePool | None = None) -> list[str]:
    """Keep the ``keep`` newest versions (never one in ``protect``, the highest, ``latest``, pinned
    ones, nor a backfill's rebuild younger than the catalogue's ``backfill.protect_days``). The pool
    keeps the index of each deleted version for ``packages.retention_days`` more: a backfill can
    rebuild it exactly."""
    target = target or get_target(spec.target, spec)
    deleted = target.prune(spec.name, keep, protect=set(protect), dry_run=dry_run, log=log,
                           backfill_protect_days=spec.backfill_protect_days)
    if not dry_run and deleted:
        pool = pool or default_pool()
        kept = [v for v in deleted if pool.mark_pruned(spec.name, v)]
        if kept:
            log(f"pool: the indexes of {', '.join(kept)} are kept for {spec.packages.retention_days:g} more days "
                "(a backfill of their dates rebuilds them exactly)")
    return deleted


# ---- channels: promote and rollback (bakery.channels) ------------------------------------------------
def promote(spec: ImageSpec, actor: Actor, log: Log, target: Target | None = None, *,
            version: str | None = None) -> list[Change]:
    """Make ``version`` (or the newest candidate that has soaked the catalogue's ``channels.soak_hours``)
    stable, and ``latest`` resolve to it, after the target's own check of it (``check_promotable``)."""
    return _change_channels(spec, "promote", actor, log, target, lambda states: plan_promote(
        states, actor, soak_hours=_channels_of(spec).soak_hours, version=version or None))


def rollback(spec: ImageSpec, version: str, actor: Actor, log: Log, target: Target | None = None) -> list[Change]:
    """Make the older ``version`` stable and what ``latest`` resolves to, until the next promotion."""
    _channels_of(spec)
    return _change_channels(spec, "rollback", actor, log, target,
                            lambda states: plan_rollback(states, actor, version=version))


def _channels_of(spec: ImageSpec):
    if spec.channels is None:
        raise ChannelError(f"{spec.name} has no channels: add a channels block to its catalogue entry "
                           f"({spec.catalogue_path or 'include/catalogue.yaml'}) to publish candidates and promote them")
    return spec.channels


def _change_channels(spec: ImageSpec, action: str, actor: Actor, log: Log, target: Target | None, plan) -> list[Change]:
    target = target or get_target(spec.target, spec)

    def checked(states):
        changes, summary = plan(states)
        chosen = next((c.version for c in changes if c.channel == STABLE), None)
        if chosen is not None:
            problems = target.check_promotable(spec.name, chosen, log)
            if problems:
                raise ChannelError(f"cannot {action} {spec.name} {chosen}: {'; '.join(problems)}")
        return changes, summary

    return target.change_channels(spec.name, checked, log)


# ---- skip when nothing changed --------------------------------------------------------------------
def check_changes(spec: ImageSpec, prepared: dict[str, Any], *, force_rebuild: bool = False,
                  replace_existing: bool = False, log: Log, target: Target | None = None,
                  pool: PackagePool | None = None) -> dict[str, Any]:
    """Decide whether this run bakes at all; the decision and its reasons go to the run's XCom.

    * the run's version is already published: nothing to do (unless ``replace_existing``);
    * backfills and ``force_rebuild``: always bake;
    * otherwise compare with the latest published version: template digest, base image digest,
      catalogue variables, and pending package updates (its manifest against the mirrors' current
      indices, ``bakery.packages.updates``; no VM). Equal everywhere: skip.
    """
    from bakery.packages.updates import UpdateCheckError, pending_updates

    rec = BakeRecord.from_dict(prepared["record"])
    target = target or get_target(rec.target, spec)

    def decide(build: bool, reasons: list[str], **more: Any) -> dict[str, Any]:
        for r in reasons:
            log(f"check_changes: {r}")
        log(f"check_changes: {'BUILD' if build else 'SKIP (build, smoke test and publish are skipped)'} "
            f"{rec.image} {rec.version}")
        return {"build": build, "version": rec.version, "reasons": reasons, "inputs": (rec.inputs or {}).get("label"),
                **more}

    existing = target.published(rec.image, rec.version)
    if existing is not None:
        who = f"published {existing.get('created', '?')} by run {existing.get('dag_run_id')!r}"
        if replace_existing:
            return decide(True, [f"version {rec.version} is already in the gallery ({who}); replace_existing is set: "
                                 "rebuilding it"])
        return decide(False, [f"version {rec.version} is already in the gallery ({who}, inputs "
                              f"{(existing.get('inputs') or {}).get('label', 'unrecorded')}): kept as it is; set the "
                              "Param replace_existing to rebuild it"], existing=True)
    if rec.run_type == "backfill":
        return decide(True, [f"backfill of {rec.version}: always rebuilt (packages from {(rec.inputs or {}).get('label')})"])
    if force_rebuild:
        return decide(True, ["force_rebuild is set"])
    versions = target.list_versions(rec.image)
    if not versions:
        return decide(True, [f"{rec.image} has no published version yet"])
    latest = versions[-1].version
    meta = target.published(rec.image, latest) or {}
    reasons = []
    for key, label in (("template_digest", "template"), ("base_digest", "base image"),
                       ("variables_digest", "catalogue variables")):
        if meta.get(key) != getattr(rec, key):
            reasons.append(f"{label} changed since {latest}: {meta.get(key) or '(not recorded)'} -> {getattr(rec, key)}")
    compared = {"template": rec.template_digest, "base": rec.base_digest, "variables": rec.variables_digest}
    manifest = target.manifest(rec.image, latest)
    pending: list[str] = []
    if manifest is None:
        reasons.append(f"{latest} has no package manifest to compare with")
    elif not spec.packages.mirrors:
        reasons.append("the catalogue lists no package mirrors for this image, so pending updates cannot be checked")
    else:
        try:
            check = pending_updates(manifest, spec.packages.mirrors, pool or default_pool(), arch=spec.packages.arch,
                                    family=spec.packages.family, log=log)
        except UpdateCheckError as exc:
            # when in doubt, bake: a mirror this worker cannot read (down, unreachable, zstd metadata) must not
            # stop the nightly patch-rebake (the build VM installs through its own repositories)
            reasons.append(f"pending package updates could not be checked, so the run bakes: {exc}")
            compared["update_check_error"] = str(exc)
        else:
            pending = check.lines(limit=50)
            compared["indices"] = check.indices
            if check.pending:
                reasons.append(f"{len(check.pending)} package update(s) pending on the mirrors since {latest}: "
                               + "; ".join(check.lines(limit=10)))
    if reasons:
        return decide(True, reasons, compared_with=latest, pending=pending, compared=compared)
    return decide(False, [f"nothing changed since {latest}: same template ({_short(rec.template_digest)}), base image "
                          f"({_short(rec.base_digest)}), catalogue variables, and none of its "
                          f"{len(manifest or ())} packages has a newer version on "
                          f"{', '.join(m.url for m in spec.packages.mirrors)}"],
                  compared_with=latest, pending=[], compared=compared)


def _short(digest: str | None) -> str:
    """A sha256 digest shortened for a log line; anything else (Azure's ``marketplace:<urn>``) in full."""
    if not digest:
        return "none"
    return f"{digest[:19]}..." if digest.startswith("sha256:") and len(digest) > 19 else digest
