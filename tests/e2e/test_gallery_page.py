"""End to end: the "Image gallery" page of the bakery's plugin in a real Airflow (``airflow standalone``
on PostgreSQL, the simple auth manager with its real login: no all-admins shortcut).

The gallery is a real local gallery: three versions published by the local target's own ``publish``
(tiny qcow2 disks made with ``qemu-img``, package manifests from which it writes ``packages.json`` and the
SBOM), one of them pinned the way the README says (``"pinned": true`` in its metadata.json), one a
backfill's rebuild. Nothing is baked (no Packer, no VM). The page is read through the API server:
its JSON, its HTML, its SBOM download; without a token (401) and with a forged one (403); and in headless
Chromium (Debian's package, driven through the DevTools protocol) after signing in on Airflow's login
page, inside the Airflow UI (the navigation entry frames it). A screenshot is kept in the test's folder.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from bakery.channels import Actor, plan_promote
from bakery.packages.manifest import Package, manifest_of
from bakery.record import BakeRecord
from bakery.targets.local import LocalTarget

from tests.airflow_stack import AirflowStandalone, PostgresServer

REPO = Path(__file__).resolve().parents[2]
IMAGE = "debian12-nginx"
DAG = "bake_debian12_nginx"
VERSIONS = ("2026.1101.200000", "2026.1102.200000", "2026.1103.200000")
NGINX = {"2026.1101.200000": "1.22.1-9", "2026.1102.200000": "1.22.1-9+deb12u1", "2026.1103.200000": "1.22.1-9+deb12u2"}
RUNS = {"2026.1101.200000": ("scheduled__2026-11-01T02:00:00+00:00", "scheduled"),
        "2026.1102.200000": ("manual__2026-11-02T09:15:00+00:00", "manual"),
        "2026.1103.200000": ("backfill__2026-11-03T02:00:00+00:00", "backfill")}
INPUTS = {"2026.1101.200000": "current@2026-11-01T02:00:03Z", "2026.1102.200000": "snapshot@20261102T000000Z",
          "2026.1103.200000": "pool@2026.1103.200000"}
PROMOTE_RUN = "manual__2026-11-04T08:00:00+00:00"
SMOKE_SECONDS = {"2026.1101.200000": 41.5, "2026.1102.200000": 38.25, "2026.1103.200000": 52.0}

pytestmark = pytest.mark.needs_tools("qemu-img", "chromium")


def publish_gallery(home: Path, work: Path) -> LocalTarget:
    """Three versions, published by the local target as a bake would (smoke verdict, inputs, manifest)."""
    target = LocalTarget(home / "gallery")
    for i, version in enumerate(VERSIONS):
        disk = work / f"{version}.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), f"{16 + 16 * i}M"], check=True)
        manifest = manifest_of([Package("nginx", "amd64", NGINX[version], "nginx", NGINX[version]),
                                Package("base-files", "amd64", "12.4+deb12u8")]
                               + ([Package("curl", "amd64", "7.88.1-10+deb12u8")] if i >= 1 else []))
        path = manifest.save(work / f"{version}-packages.json")
        run_id, run_type = RUNS[version]
        record = BakeRecord(image=IMAGE, version=version, target="local", template_digest="sha256:" + "ab" * 32,
                            dag_run_id=run_id, run_type=run_type, packer_run_uuid=f"uuid-{i}", artifact_id=str(disk),
                            smoke={"passed": True, "seconds": SMOKE_SECONDS[version], "status": 200, "detail": "ok"},
                            inputs={"kind": INPUTS[version].split("@")[0], "label": INPUTS[version]},
                            packages={"manifest": str(path), "digest": manifest.digest, "count": len(manifest)},
                            # the first from before the image had channels; the others published as candidates
                            extra={"channel": "candidate" if i else None, "triggered_by": "scheduler"})
        target.publish(record, lambda _line: None)
    # alice promotes the middle one (what promote_debian12_nginx does): stable and latest; the newest waits
    target.change_channels(IMAGE, lambda states: plan_promote(states, Actor("alice", datetime.now(UTC), PROMOTE_RUN),
                                                              soak_hours=0, version=VERSIONS[1]), lambda _line: None)
    meta = home / "gallery" / IMAGE / VERSIONS[0] / "metadata.json"  # pinned by hand, as the README says
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "pinned": True}))
    return target


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("gallery")
    home, work = root / "bakery", root / "work"
    home.mkdir()
    work.mkdir()
    publish_gallery(home, work)
    entry = yaml.safe_load((REPO / "include" / "catalogue.yaml").read_text())["images"][IMAGE]
    entry["channels"] = {"soak_hours": 24, "promote_schedule": None}
    catalogue = root / "catalogue.yaml"
    catalogue.write_text(yaml.safe_dump({"version": 1, "images": {IMAGE: entry}}))
    env = {"BAKERY_HOME": str(home), "BAKERY_CATALOGUE": str(catalogue),
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False"}
    with PostgresServer() as pg, AirflowStandalone(root / "airflow", env={
            **env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg.url}) as af:
        af.login()
        af.wait_dag(DAG)
        af.root = root
        af.gallery = home / "gallery" / IMAGE
        yield af


def fetch(af: AirflowStandalone, path: str, token: str | None) -> tuple[int, bytes, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(af.url + path, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


PATHS = ["/image-gallery/", "/image-gallery/api/images", f"/image-gallery/api/images/{IMAGE}",
         f"/image-gallery/images/{IMAGE}", f"/image-gallery/images/{IMAGE}/versions/{VERSIONS[1]}/sbom.cdx.json"]


@pytest.mark.guarantee("security-defaults")
def test_the_gallery_refuses_requests_without_a_valid_airflow_token(stack):
    for path in PATHS:
        status, body, _ = fetch(stack, path, None)
        assert status == 401, (path, status, body[:300])
        forged = stack.token[:-4] + ("AAAA" if not stack.token.endswith("AAAA") else "BBBB")
        status, body, _ = fetch(stack, path, forged)
        assert status == 403, (path, status, body[:300])
        status, body, _ = fetch(stack, path, stack.token)  # the same path is there for a signed-in user
        assert status == 200, (path, status, body[:300])


def test_the_gallery_json_and_page_list_the_versions_of_the_local_gallery(stack):
    status, body, ctype = fetch(stack, "/image-gallery/api/images", stack.token)
    assert status == 200 and ctype.startswith("application/json")
    (image,) = json.loads(body)
    assert (image["image"], image["target"], image["dag_id"], image["error"]) == (IMAGE, "local", DAG, None)
    assert [v["version"] for v in image["versions"]] == list(VERSIONS)
    rows = {v["version"]: v for v in image["versions"]}
    for version, row in rows.items():
        meta = json.loads((stack.gallery / version / "metadata.json").read_text())
        assert row["created"] == meta["created"]
        assert (row["dag_run_id"], row["run_type"]) == RUNS[version]
        assert row["inputs"] == INPUTS[version]
        assert (row["smoke_passed"], row["smoke_seconds"]) == (True, SMOKE_SECONDS[version])
        assert row["size_bytes"] == (stack.gallery / version / "disk.qcow2").stat().st_size
        assert row["published_id"] == str(stack.gallery / version)
        assert row["has_sbom"] is True
        assert row["build_seconds"] is None  # no build task ran in this Airflow: nothing recorded
    assert [rows[v]["pinned"] for v in VERSIONS] == [True, False, False]
    rebuilt = json.loads((stack.gallery / VERSIONS[2] / "metadata.json").read_text())["rebuilt_at"]
    assert rows[VERSIONS[2]]["protected_until"] > rebuilt and rows[VERSIONS[0]]["protected_until"] is None
    assert [rows[v]["package_count"] for v in VERSIONS] == [2, 3, 3]
    assert rows[VERSIONS[0]]["diff_from"] is None
    assert (rows[VERSIONS[1]]["diff_from"], rows[VERSIONS[1]]["diff_summary"]) == (
        VERSIONS[0], "1 added, 0 removed, 1 upgraded, 0 downgraded")
    assert rows[VERSIONS[1]]["diff_lines"] == ["+ curl 7.88.1-10+deb12u8 (amd64)",
                                               "^ nginx 1.22.1-9 -> 1.22.1-9+deb12u1 (amd64)"]
    assert rows[VERSIONS[2]]["diff_summary"] == "0 added, 0 removed, 1 upgraded, 0 downgraded"
    # channels: what each version is in, what latest resolves to, and every change with who and which run
    assert [(rows[v]["channel"], rows[v]["is_latest"], rows[v]["is_stable"]) for v in VERSIONS] == [
        (None, False, False), ("stable", True, True), ("candidate", False, False)]
    assert os.readlink(stack.gallery / "latest") == VERSIONS[1]
    assert image["channels"] is True and image["soak_hours"] == 24
    assert [(h["version"], h["channel"], h["action"], h["by"], h["run_id"]) for h in image["history"]] == [
        (VERSIONS[1], "stable", "promote", "alice", PROMOTE_RUN),
        (VERSIONS[2], "candidate", "publish", "scheduler", RUNS[VERSIONS[2]][0]),
        (VERSIONS[1], "candidate", "publish", "scheduler", RUNS[VERSIONS[1]][0])]

    status, body, _ = fetch(stack, f"/image-gallery/api/images/{IMAGE}", stack.token)
    assert status == 200 and json.loads(body) == image
    assert fetch(stack, "/image-gallery/api/images/no-such-image", stack.token)[0] == 404

    # the SBOM download is the version's sbom.cdx.json
    status, body, ctype = fetch(stack, PATHS[-1], stack.token)
    assert status == 200 and ctype.startswith("application/vnd.cyclonedx+json")
    assert body == (stack.gallery / VERSIONS[1] / "sbom.cdx.json").read_bytes()
    assert json.loads(body)["bomFormat"] == "CycloneDX"
    assert fetch(stack, f"/image-gallery/images/{IMAGE}/versions/2026.1231.200000/sbom.cdx.json", stack.token)[0] == 404

    status, body, ctype = fetch(stack, "/image-gallery/", stack.token)
    html = body.decode()
    assert status == 200 and ctype.startswith("text/html")
    for version in VERSIONS:
        assert f'id="v-{version}"' in html and RUNS[version][0] in html and INPUTS[version] in html

    # the navigation entry and the app, as Airflow lists its plugins
    (plugin,) = [p for p in stack.get("/api/v2/plugins")["plugins"] if p["name"] == "image_bakery"]
    assert [(v["name"], v["href"], v["url_route"], v["destination"]) for v in plugin["external_views"]] == [
        ("Image gallery", "/image-gallery/", "image-gallery", "nav")]
    assert [a["url_prefix"] for a in plugin["fastapi_apps"]] == ["/image-gallery"]


# --- headless Chromium --------------------------------------------------------------------------------
class Chromium:
    """Debian's headless Chromium with the DevTools protocol on loopback (one page, its own profile)."""

    def __init__(self, profile: Path) -> None:
        self.profile = profile
        self.proc: subprocess.Popen | None = None
        self.ws = None
        self._id = 0

    def __enter__(self) -> Chromium:
        from websockets.sync.client import connect

        argv = [shutil.which("chromium") or "chromium", "--headless=new", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}", "--window-size=1500,950", "about:blank"]
        if os.geteuid() == 0:
            argv.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self.log = open(self.profile.parent / "chromium.log", "ab")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            assert self.proc.poll() is None, f"chromium exited with {self.proc.returncode}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as resp:
            (page,) = [t for t in json.load(resp) if t["type"] == "page"]
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30))
        self.send("Page.enable")
        self.send("Runtime.enable")
        return self

    def __exit__(self, *exc) -> None:
        if self.ws is not None:
            self._stack.close()
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
            self.log.close()

    def send(self, method: str, **params):
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=120))
            if msg.get("id") == self._id:
                assert "error" not in msg, f"{method}: {msg['error']}"
                return msg.get("result", {})

    def js(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_js(self, expression: str, what: str, timeout: float = 120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; page text: {self.js('document.body ? document.body.innerText.slice(0, 2000) : null')}")

    def type_into(self, selector: str, text: str) -> None:
        self.js(f"document.querySelector({json.dumps(selector)}).focus()")
        self.send("Input.insertText", text=text)

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))
        return path


FRAME_TEXT = "(() => { const f = document.querySelector('iframe'); const d = f && f.contentDocument; " \
             "return d && d.body ? d.body.innerText : null })()"


def test_signed_in_in_chromium_the_airflow_ui_shows_the_gallery_rows(stack, tmp_path):
    with Chromium(tmp_path / "chromium-profile") as browser:
        # Airflow's own sign-in page (the simple auth manager's), then on to the page's navigation entry
        browser.send("Page.navigate", url=f"{stack.url}/auth/login?next={stack.url}/plugin/image-gallery")
        browser.wait_js("!!document.querySelector('input[name=password]')", "the sign-in form")
        browser.type_into("input[name=username]", "admin")
        browser.type_into("input[name=password]", stack.admin_password())
        browser.wait_js("!document.querySelector('button[type=submit]').disabled", "the sign-in button")
        browser.js("document.querySelector('button[type=submit]').click()")
        text = browser.wait_js(f"(() => {{ const t = {FRAME_TEXT}; return t && t.includes({json.dumps(VERSIONS[2])}) ? t : null }})()",
                               "the gallery rows inside the Airflow UI")
        time.sleep(1)  # let the frame's layout settle for the screenshot
        shot = browser.screenshot(tmp_path / "gallery-in-airflow-ui.png")
        print(f"\nscreenshot of the gallery in the Airflow UI: {shot}")
        assert browser.js("location.pathname").startswith("/plugin/image-gallery")  # the UI's page of the entry
        assert browser.js("document.querySelector('iframe').getAttribute('src')") == "/image-gallery/"  # the entry's href
        for version in VERSIONS:
            assert version in text and RUNS[version][0] in text and INPUTS[version] in text
        rows = browser.js("Array.from(document.querySelector('iframe').contentDocument"
                          ".querySelectorAll('tr.version')).map(r => r.dataset.version)")
        assert rows == list(reversed(VERSIONS))  # newest first
        assert text.count("passed") >= 3
        assert f"vs {VERSIONS[0]}: 1 added, 0 removed, 1 upgraded, 0 downgraded" in text
        assert "sbom.cdx.json" in text
        channels = browser.js("Array.from(document.querySelector('iframe').contentDocument"
                              ".querySelectorAll('tr.version td.channel-cell')).map(c => c.innerText.trim())")
        assert channels == ["candidate", "stable latest", ""]  # newest first
        assert "Channel changes (3)" in text and "alice" in text and PROMOTE_RUN in text
        # the page itself, signed in by the same cookie
        browser.send("Page.navigate", url=f"{stack.url}/image-gallery/images/{IMAGE}")
        browser.wait_js(f"document.body && document.body.innerText.includes({json.dumps(VERSIONS[0])})", "the image's page")
        browser.screenshot(tmp_path / "gallery-page.png")
        assert browser.js("document.title") == f"Image gallery: {IMAGE}"
    assert shot.stat().st_size > 10_000
