#!/usr/bin/env python3
"""A test double of the ``packer`` executable for azure-arm templates (stdlib only).

``bin/packer`` (next to this file) runs it. It is a stand-in for HashiCorp's binary, never for our
code: product code runs it exactly as it would run the real one.

* ``packer build [-machine-readable] [-force] [-var k=v] [-var-file f] [-only ...] TEMPLATE`` of an
  HCL2 template with ``source "azure-arm" ...``: evaluates the source's settings with the REAL
  packer's ``console`` (so ``var.*``, ``local.*``, PKR_VAR_* variables, var files and functions mean
  what they mean to Packer), then does what the azure-arm builder does at the ARM API of the emulator:
  with client_id + client_secret + tenant_id it first gets a token from the emulator's Entra ID token
  endpoint (a refused secret fails the build like Packer: "error fetching service principal token");
  creates a temporary resource group ``pkr-Resource-Group-<random>`` (or uses
  ``build_resource_group_name``), deploys a virtual network, a NIC and the build VM from the source's
  Marketplace image (``image_publisher/offer/sku/version``) with its ``plan_info`` as the VM's purchase
  plan (the emulator refuses a plan image without it, as Azure does), "provisions", captures the
  managed image ``managed_image_name`` into ``managed_image_resource_group_name`` from the build VM
  (``sourceVirtualMachine``: the image keeps the VM's generation and plan) with ``azure_tags``, deletes
  the temporary resource group (or the build VM and its network), prints Packer's machine-readable (or human) output - artifact
  builder-id ``Azure.ResourceManagement.VMImage`` with the managed image id - and writes the
  ``manifest`` post-processor's file like Packer 1.6 does (appending builds, ``last_run_uuid``).
* Like Packer, ``build`` runs as a wrapper and a child: the wrapper makes the run's ``PACKER_RUN_UUID``,
  starts the child with it in its environment and passes SIGTERM/SIGINT on; the manifest post-processor
  records that uuid.
* Templates without an azure-arm source, ``validate``, ``inspect``, ``console``, ``fmt``, ... and
  ``version`` are handed to the real packer (``BAKERY_FAKE_PACKER_REAL``, else the first ``packer``
  on PATH that is not this fake).

Environment:
  BAKERY_FAKE_PACKER_ARM_ENDPOINT   the emulator, e.g. https://127.0.0.1:PORT/ (required for builds)
  BAKERY_FAKE_PACKER_CA_BUNDLE      PEM file to trust for it
  BAKERY_FAKE_PACKER_SUBSCRIPTION_ID  used when the source sets no subscription_id
                                    (then ARM_SUBSCRIPTION_ID / AZURE_SUBSCRIPTION_ID)
  BAKERY_FAKE_PACKER_FAIL           "" (succeed) | "provision" | "deploy" | "capture": fail that step
  BAKERY_FAKE_PACKER_FAIL_MESSAGE   the error text of that failure
  BAKERY_FAKE_PACKER_BUILD_SECONDS  time spent "provisioning" (to test cancelling with SIGTERM)
  BAKERY_FAKE_PACKER_LOG            append one JSON line per invocation (argv, cwd, PKR_VAR_*)
  BAKERY_FAKE_PACKER_REAL           the real packer binary
  BAKERY_FAKE_PACKER_MAX_POLL_SECONDS  cap on Retry-After waits (default 1)
  BAKERY_FAKE_PACKER_NGINX_VERSION  the nginx version the "guest" has installed (default: AlmaLinux 9's
                                    1:1.20.1-14.el9_2.1, Ubuntu 24.04's 1.24.0-2ubuntu7.1): a test
                                    changes it to get a changed package manifest
Provisioners run in order against a small model of the build VM: a shell provisioner running
``capture-packages.sh`` writes the guest's package list (the script's format, a realistic AlmaLinux 9
rpm set or Ubuntu 24.04 dpkg set, by the base image's publisher) to ``/tmp/bakery-packages.tsv``; a
``file`` provisioner with ``direction = "download"`` copies a guest file to its destination (an error
like Packer's if the guest has no such file); a shell script that runs ``waagent -deprovision+user``
deletes the build user: a provisioner after it fails to connect, and so does Packer's own clean-up of
the script unless ``skip_clean`` is true.
SIGTERM/SIGINT during a build: "Cancelling build after receiving terminated", the temporary resource
group is deleted, exit 1 - like Packer.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fnmatch
import glob
import json
import os
import random
import re
import shutil
import signal
import ssl
import string
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

BUILDER_ID = "Azure.ResourceManagement.VMImage"
API_RESOURCES = "2021-04-01"
API_COMPUTE = "2022-08-01"
API_NETWORK = "2023-09-01"
FALLBACK_VERSION = "1.6.6"


def real_packer() -> str | None:
    """BAKERY_FAKE_PACKER_REAL, else the first ``packer`` on PATH outside this fake's own bin/ folder."""
    real = os.environ.get("BAKERY_FAKE_PACKER_REAL")
    if real:
        return real if os.path.isfile(real) and os.access(real, os.X_OK) else None
    fake_bin = Path(__file__).resolve().parent / "bin"
    path = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and Path(d).resolve() != fake_bin]
    return shutil.which("packer", path=os.pathsep.join(path))


# === Packer's UI ======================================================================================
def escape(value: str) -> str:
    return str(value).replace(",", "%!(PACKER_COMMA)").replace("\r", "\\r").replace("\n", "\\n")


class Ui:
    """Packer's output: ``timestamp,target,type,data...`` lines with -machine-readable, else text."""

    def __init__(self, machine: bool) -> None:
        self.machine_readable = machine

    def machine(self, target: str, type_: str, *data: str) -> None:
        if self.machine_readable:
            fields = [str(int(time.time())), target, type_] + [escape(d) for d in data]
            print(",".join(fields), flush=True)

    def say(self, message: str) -> None:
        if self.machine_readable:
            self.machine("", "ui", "say", message)
        else:
            print(message, flush=True)

    def message(self, message: str) -> None:
        if self.machine_readable:
            self.machine("", "ui", "message", message)
        else:
            print(message, flush=True)

    def error(self, message: str) -> None:
        if self.machine_readable:
            self.machine("", "ui", "error", message)
        else:
            print(message, file=sys.stderr, flush=True)


def human_duration(seconds: float) -> str:
    """Like Packer's durations: "1 minute 3 seconds 20 milliseconds"."""
    micro = round(seconds * 1_000_000)
    units = [("hour", 3_600_000_000), ("minute", 60_000_000), ("second", 1_000_000), ("millisecond", 1000),
             ("microsecond", 1)]
    parts = []
    for name, size in units:
        count, micro = divmod(micro, size)
        if count:
            parts.append(f"{count} {name}{'' if count == 1 else 's'}")
    return " ".join(parts[:2]) or "0 seconds"


# === a small HCL reader (enough to find blocks and the text of attribute expressions) ===============
class HclError(Exception):
    pass


class _Scanner:
    def __init__(self, text: str) -> None:
        self.s, self.i, self.n = text, 0, len(text)

    def _skip_comment(self) -> bool:
        s, i = self.s, self.i
        if s.startswith("#", i) or s.startswith("//", i):
            end = s.find("\n", i)
            self.i = self.n if end < 0 else end
            return True
        if s.startswith("/*", i):
            end = s.find("*/", i + 2)
            self.i = self.n if end < 0 else end + 2
            return True
        return False

    def _skip_space(self, newlines: bool) -> None:
        while self.i < self.n:
            c = self.s[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self.i += 1
            elif not self._skip_comment():
                return

    def _string_end(self, i: int) -> int:
        """Index just past the string literal starting at ``i`` (handles escapes and ${...})."""
        s, i, depth = self.s, i + 1, 0
        while i < self.n:
            c = s[i]
            if c == "\\":
                i += 2
                continue
            if depth == 0 and c == '"':
                return i + 1
            if s.startswith("${", i) or s.startswith("%{", i):
                depth += 1
                i += 2
                continue
            if depth and c == "}":
                depth -= 1
            elif depth and c == '"':
                i = self._string_end(i)
                continue
            i += 1
        raise HclError("unterminated string")

    def body(self, nested: bool) -> list:
        items: list = []
        while True:
            self._skip_space(True)
            if self.i >= self.n:
                if nested:
                    raise HclError("unexpected end of file: missing '}'")
                return items
            if self.s[self.i] == "}":
                if not nested:
                    raise HclError("unexpected '}'")
                self.i += 1
                return items
            m = re.compile(r"[A-Za-z_][\w-]*").match(self.s, self.i)
            if not m:
                raise HclError(f"unexpected {self.s[self.i]!r} at offset {self.i}")
            name = m.group(0)
            self.i = m.end()
            self._skip_space(False)
            if self.s.startswith("=", self.i) and not self.s.startswith("==", self.i):
                self.i += 1
                items.append(("attr", name, self.expression()))
                continue
            labels = []
            while self.i < self.n and self.s[self.i] != "{":
                if self.s[self.i] == '"':
                    end = self._string_end(self.i)
                    labels.append(json.loads(self.s[self.i:end]))
                    self.i = end
                else:
                    lm = re.compile(r"[A-Za-z_][\w-]*").match(self.s, self.i)
                    if not lm:
                        raise HclError(f"bad block header for {name!r}")
                    labels.append(lm.group(0))
                    self.i = lm.end()
                self._skip_space(False)
            self.i += 1
            items.append(("block", name, labels, self.body(True)))

    def expression(self) -> str:
        """The expression's text on one line (newlines inside objects become commas)."""
        out: list[str] = []
        stack: list[str] = []
        self._skip_space(False)
        while self.i < self.n:
            c = self.s[self.i]
            if c == '"':
                end = self._string_end(self.i)
                out.append(self.s[self.i:end])
                self.i = end
                continue
            if self.s.startswith("<<", self.i):
                m = re.compile(r"<<-?([A-Za-z_]\w*)[ \t]*\n").match(self.s, self.i)
                if m:
                    lines, j = [], m.end()
                    while j < self.n:
                        end = self.s.find("\n", j)
                        end = self.n if end < 0 else end
                        line = self.s[j:end]
                        j = end + 1
                        if line.strip() == m.group(1):
                            break
                        lines.append(line)
                    out.append(json.dumps("\n".join(lines) + "\n"))
                    self.i = j - 1
                    continue
            if c == "#" or self.s.startswith("//", self.i) or self.s.startswith("/*", self.i):
                self._skip_comment()
                continue
            if c in "([{":
                stack.append(c)
            elif c in ")]}":
                if not stack:
                    break
                stack.pop()
            elif c == "\n":
                if not stack:
                    break
                out.append("," if stack[-1] == "{" else " ")
                self.i += 1
                continue
            out.append(c)
            self.i += 1
        text = "".join(out).strip()
        for pattern, repl in ((r"\{\s*,", "{"), (r",\s*,", ","), (r",\s*\}", "}"), (r"\[\s*,", "["), (r",\s*\]", "]")):
            previous = None
            while previous != text:
                previous, text = text, re.sub(pattern, repl, text)
        return text


def parse_hcl(text: str) -> list:
    return _Scanner(text).body(False)


def blocks(items: list, type_: str) -> list:
    return [it for it in items if it[0] == "block" and it[1] == type_]


def attrs(items: list) -> dict[str, str]:
    return {it[1]: it[2] for it in items if it[0] == "attr"}


# === evaluating expressions ===========================================================================
class Evaluator:
    """Evaluates HCL expressions of a template the way Packer does, through ``packer console``."""

    def __init__(self, template: str, var_args: list[str], files: list[Path]) -> None:
        self.template, self.var_args, self.files = template, var_args, files

    def evaluate(self, expressions: list[str]) -> list[Any]:
        if not expressions:
            return []
        real = real_packer()
        if real is None:
            return [self._simple(e) for e in expressions]
        line = "jsonencode([" + ", ".join(f"({e})" for e in expressions) + "])\n"
        proc = subprocess.run([real, "console", *self.var_args, self.template], input=line, check=False,
                              capture_output=True, text=True, timeout=60)
        out = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        if proc.returncode != 0 or not out:
            raise HclError((proc.stderr or proc.stdout).strip() or "packer console failed")
        return json.loads(out[-1])

    def sensitive(self, expr: str) -> Any:
        """The value of a sensitive variable the expression refers to (``var.x``, or ``c ? "" : var.x``), taken
        from the variables Packer would read (PKR_VAR_*, -var, var files): real Packer reads them the same way,
        only its console refuses to print them."""
        names = re.findall(r"var\.(\w+)", expr)
        if not names:
            return None
        return self._variables().get(names[-1])

    # a fallback without a real packer: literals, var.x, "${var.x}" and objects of those
    def _variables(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for path in self.files:
            for block in blocks(parse_hcl(path.read_text()), "variable"):
                default = attrs(block[3]).get("default")
                if default is not None:
                    values[block[2][0]] = self._literal(default, values)
        for key, value in os.environ.items():
            if key.startswith("PKR_VAR_"):
                values[key[8:]] = value
        args = list(self.var_args)
        for flag, value in zip(args[::2], args[1::2]):
            if flag == "-var-file":
                text = Path(value).read_text()
                if value.endswith(".json"):
                    values.update(json.loads(text))
                else:
                    for name, expr in attrs(parse_hcl(text)).items():
                        values[name] = self._literal(expr, values)
            elif flag == "-var" and "=" in value:
                name, raw = value.split("=", 1)
                values[name] = raw
        return values

    def _simple(self, expr: str) -> Any:
        return self._literal(expr, self._variables())

    def _literal(self, expr: str, variables: dict) -> Any:
        expr = expr.strip()
        if expr.startswith('"'):
            return re.sub(r"\$\{\s*var\.(\w+)\s*\}", lambda m: str(variables.get(m.group(1), "")), json.loads(expr))
        if expr.startswith("var."):
            return variables.get(expr[4:])
        if expr.startswith("{") and expr.endswith("}"):
            out = {}
            for item in re.split(r",(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)", expr[1:-1]):
                if "=" in item or ":" in item:
                    key, value = re.split(r"\s*[=:]\s*", item.strip(), maxsplit=1)
                    out[key.strip().strip('"')] = self._literal(value, variables)
            return out
        if expr in ("true", "false"):
            return expr == "true"
        try:
            return json.loads(expr)
        except ValueError:
            return expr


# === talking to the (emulated) ARM API =================================================================
class ArmClient:
    def __init__(self, endpoint: str, ca_bundle: str | None, subscription: str) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.subscription = subscription
        self.token = "fake-packer-token"  # Azure CLI / managed identity: nothing to ask for
        self.context = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else ssl.create_default_context()
        self.max_wait = float(os.environ.get("BAKERY_FAKE_PACKER_MAX_POLL_SECONDS", "1"))

    def request(self, method: str, url: str, body: Any = None) -> tuple[int, dict, Any]:
        if not url.startswith("https://"):
            url = self.endpoint + url
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(8):
            req = urllib.request.Request(url, data=data, method=method, headers={
                "Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
                "User-Agent": "packer/1.6.6 (fake) azure-arm"})
            try:
                with urllib.request.urlopen(req, context=self.context, timeout=60) as resp:
                    raw = resp.read()
                    return resp.status, dict(resp.headers.items()), json.loads(raw) if raw else None
            except urllib.error.HTTPError as err:
                raw = err.read()
                payload = json.loads(raw) if raw else None
                if err.code in (429, 500, 502, 503, 504) and attempt < 7:
                    self.sleep(err.headers.get("Retry-After"), 0.2 * (attempt + 1))
                    continue
                return err.code, dict(err.headers.items()), payload
        raise RuntimeError("unreachable")

    def login(self, tenant: str, client_id: str, client_secret: str) -> None:
        """Client-credentials grant at the emulator's Entra ID token endpoint (like the azure-arm builder
        does at login.microsoftonline.com); raises BuildError with Entra ID's message when refused."""
        form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": client_id,
                                       "client_secret": client_secret, "scope": self.endpoint + "/.default"})
        req = urllib.request.Request(f"{self.endpoint}/{tenant}/oauth2/v2.0/token", data=form.encode(),
                                     method="POST", headers={"Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(req, context=self.context, timeout=60) as resp:
                self.token = json.loads(resp.read())["access_token"]
        except urllib.error.HTTPError as err:
            body = json.loads(err.read() or b"{}")
            raise BuildError(f"error fetching service principal token: {body.get('error')}: "
                             f"{body.get('error_description')}") from None

    def sleep(self, retry_after: str | None, default: float) -> None:
        try:
            delay = float(retry_after) if retry_after is not None else default
        except ValueError:
            delay = default
        time.sleep(min(max(delay, 0.05), self.max_wait))

    def wait(self, status: int, headers: dict) -> tuple[bool, Any]:
        """Follow an LRO (Azure-AsyncOperation first, else Location) to its end: (succeeded, error)."""
        lower = {k.lower(): v for k, v in headers.items()}
        async_url, location = lower.get("azure-asyncoperation"), lower.get("location")
        if status not in (201, 202) or not (async_url or location):
            return status < 300, None
        retry = lower.get("retry-after")
        while True:
            self.sleep(retry, 0.2)
            if async_url:
                code, hdrs, body = self.request("GET", async_url)
                if code != 200:
                    return False, body
                state = (body or {}).get("status", "")
                if state in ("Succeeded", "Failed", "Canceled"):
                    return state == "Succeeded", (body or {}).get("error")
            else:
                code, hdrs, body = self.request("GET", location)
                if code != 202:
                    return code < 300, (body or {}).get("error") if isinstance(body, dict) else None
            retry = {k.lower(): v for k, v in hdrs.items()}.get("retry-after", retry)

    def rg_path(self, rg: str) -> str:
        return f"/subscriptions/{self.subscription}/resourcegroups/{rg}?api-version={API_RESOURCES}"

    def image_path(self, rg: str, name: str) -> str:
        return (f"/subscriptions/{self.subscription}/resourceGroups/{rg}/providers/Microsoft.Compute/images/"
                f"{name}?api-version={API_COMPUTE}")

    def resource_path(self, rg: str, type_path: str, name: str, api: str = API_COMPUTE) -> str:
        return (f"/subscriptions/{self.subscription}/resourceGroups/{rg}/providers/{type_path}/{name}"
                f"?api-version={api}")

    def put_and_wait(self, path: str, body: dict) -> dict:
        """PUT a resource and follow its LRO; its final body, or BuildError with ARM's message."""
        code, headers, answer = self.request("PUT", path, body)
        if code not in (200, 201):
            raise BuildError(arm_message(answer))
        ok, err = self.wait(code, headers)
        if not ok:
            raise BuildError(arm_message(err))
        code, _, answer = self.request("GET", path)
        if code != 200:
            raise BuildError(arm_message(answer))
        return answer

    def delete_and_wait(self, path: str) -> tuple[bool, Any]:
        code, headers, body = self.request("DELETE", path)
        if code == 404:
            return True, None
        return self.wait(code, headers) if code < 300 else (False, body)


def arm_message(body: Any) -> str:
    err = (body or {}).get("error", body) if isinstance(body, dict) else body
    if isinstance(err, dict):
        return f"Code=\"{err.get('code')}\" Message=\"{err.get('message')}\""
    return str(err)


# === the build ========================================================================================
class Cancelled(Exception):
    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


class BuildError(Exception):
    pass


def _random_name(n: int = 10) -> str:
    return "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def parse_build_args(args: list[str]) -> tuple[dict, list[str], str | None]:
    opts: dict[str, Any] = {"machine": False, "force": False, "only": [], "except": []}
    var_args: list[str] = []
    template = None
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.lstrip("-").partition("=")
        if not arg.startswith("-"):
            template = arg
        elif name in ("var", "var-file"):
            if not eq:
                i += 1
                value = args[i] if i < len(args) else ""
            var_args += [f"-{name}", value]
        elif name == "machine-readable":
            opts["machine"] = True
        elif name == "force":
            opts["force"] = True
        elif name in ("only", "except"):
            if not eq:
                i += 1
                value = args[i] if i < len(args) else ""
            opts[name] = [v for v in value.split(",") if v]
        i += 1
    return opts, var_args, template


def template_files(template: str) -> list[Path]:
    path = Path(template)
    if path.is_dir():
        return sorted(Path(p) for p in glob.glob(str(path / "*.pkr.hcl")))
    return [path]


def build(args: list[str]) -> int:
    opts, var_args, template = parse_build_args(args)
    real = real_packer()
    if template is None:
        return delegate(["build", *args])
    files = template_files(template)
    if not files or any(f.suffix == ".json" for f in files):
        return delegate(["build", *args])  # legacy JSON templates: not emulated
    items: list = []
    try:
        for path in files:
            items += parse_hcl(path.read_text())
    except (HclError, OSError) as exc:
        return delegate(["build", *args]) if real else _fatal(Ui(opts["machine"]), f"Error: {exc}")
    sources = {f"{b[2][0]}.{b[2][1]}": b for b in blocks(items, "source") if len(b[2]) == 2}
    azure = [name for name in sources if name.startswith("azure-arm.")]
    if not azure:
        return delegate(["build", *args])
    ui = Ui(opts["machine"])
    evaluator = Evaluator(template, var_args, files)

    builds = blocks(items, "build") or [("block", "build", [], [])]
    wanted: list[tuple[str, dict, list, list]] = []  # (build name, source attrs, build items, source items)
    for build_block in builds:
        refs = []
        battrs = attrs(build_block[3])
        if "sources" in battrs:
            refs += re.findall(r"source\.([\w-]+\.[\w-]+)", battrs["sources"])
        refs += [b[2][0].removeprefix("source.") for b in blocks(build_block[3], "source") if b[2]]
        for ref in refs:
            if ref in azure:
                wanted.append((ref, attrs(sources[ref][3]), build_block[3], sources[ref][3]))
    if opts["only"]:
        wanted = [w for w in wanted if any(fnmatch.fnmatch(w[0], p) for p in opts["only"])]
    if opts["except"]:
        wanted = [w for w in wanted if not any(fnmatch.fnmatch(w[0], p) for p in opts["except"])]

    interesting = ("managed_image_name", "managed_image_resource_group_name", "location", "azure_tags",
                   "subscription_id", "os_type", "build_resource_group_name", "temp_resource_group_name",
                   "image_publisher", "image_offer", "image_sku", "image_version", "use_azure_cli_auth",
                   "client_id", "client_secret", "tenant_id", "vm_size")
    plans = []
    try:
        for name, source_attrs, build_items, source_items in wanted:
            keys = [k for k in interesting if k in source_attrs]
            values = dict(zip(keys, evaluator.evaluate([source_attrs[k] for k in keys])))
            for key in keys:  # `packer console` prints sensitive values as "<sensitive>"
                if values[key] == "<sensitive>":
                    values[key] = evaluator.sensitive(source_attrs[key])
            for plan_block in blocks(source_items, "plan_info")[:1]:  # the base image's purchase plan
                plan_attrs = attrs(plan_block[3])
                pkeys = [k for k in ("plan_name", "plan_product", "plan_publisher") if k in plan_attrs]
                values["plan_info"] = dict(zip(pkeys, evaluator.evaluate([plan_attrs[k] for k in pkeys])))
            manifests = []
            pp_blocks = blocks(build_items, "post-processor")
            for group in blocks(build_items, "post-processors"):
                pp_blocks += blocks(group[3], "post-processor")
            for pp in pp_blocks:
                if pp[2] and pp[2][0] == "manifest":
                    pp_attrs = attrs(pp[3])
                    pkeys = [k for k in ("output", "custom_data") if k in pp_attrs]
                    manifests.append(dict(zip(pkeys, evaluator.evaluate([pp_attrs[k] for k in pkeys]))))
            plans.append((name, values, manifests, provisioner_settings(build_items, evaluator)))
    except HclError as exc:
        return _fatal(ui, str(exc))

    errors: dict[str, str] = {}
    artifacts: list[tuple[str, dict]] = []
    interrupted: list[str] = []

    def on_signal(signum: int, frame: Any) -> None:
        name = "terminated" if signum == signal.SIGTERM else "interrupt"
        if not interrupted:
            interrupted.append(name)
            ui.error(f"Cancelling build after receiving {name}")
            raise Cancelled(name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    for name, values, manifests, provisioners in plans:
        t0 = time.monotonic()
        try:
            artifact = run_azure_build(ui, name, values, provisioners, opts["force"])
            for manifest in manifests:
                ui.say(f"==> {name}: Running post-processor:  (type manifest)")
                write_manifest(manifest, name, artifact)
            artifacts.append((name, dict(artifact, post_processors=len(manifests))))
            ui.say(f"Build '{name}' finished after {human_duration(time.monotonic() - t0)}.")
        except Cancelled:
            errors[name] = "Build was cancelled."
            ui.error(f"Build '{name}' errored after {human_duration(time.monotonic() - t0)}: Build was cancelled.")
            break
        except BuildError as exc:
            errors[name] = str(exc)
            ui.error(f"Build '{name}' errored after {human_duration(time.monotonic() - t0)}: {exc}")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)

    ui.say(f"\n==> Wait completed after {human_duration(time.monotonic() - started)}")
    if interrupted:
        ui.say("Cleanly cancelled builds after being interrupted.")
        return 1
    if errors:
        ui.machine("", "error-count", str(len(errors)))
        ui.error("\n==> Some builds didn't complete successfully and had errors:")
        for name, message in errors.items():
            ui.machine(name, "error", message)
            ui.error(f"--> {name}: {message}")
    if artifacts:
        ui.say("\n==> Builds finished. The artifacts of successful builds are:")
        for name, artifact in artifacts:
            count = 1 + artifact["post_processors"]
            ui.machine(name, "artifact-count", str(count))
            for index in range(count):
                ui.machine(name, "artifact", str(index), "builder-id", BUILDER_ID)
                ui.machine(name, "artifact", str(index), "id", artifact["id"])
                ui.machine(name, "artifact", str(index), "string", artifact["string"])
                ui.machine(name, "artifact", str(index), "files-count", "0")
                ui.machine(name, "artifact", str(index), "end")
                ui.say(f"--> {name}: {artifact['string']}")
    else:
        ui.say("\n==> Builds finished but no artifacts were created.")
    return 1 if errors else 0


def _fatal(ui: Ui, message: str) -> int:
    ui.error(message if message.startswith("Error") else f"Error: {message}")
    return 1


# === the build VM's side of the provisioners ==========================================================
PACKAGE_LIST_IN_GUEST = "/tmp/bakery-packages.tsv"  # where capture-packages.sh writes by default
_PROVISIONER_KEYS = ("script", "skip_clean", "direction", "source", "destination")
_DEPROVISION = re.compile(r"^[^#\n]*\bwaagent\b[^\n]*-deprovision", re.MULTILINE)

# What `rpm -qa` / `dpkg-query -W` list on the Marketplace images after the bake's update + nginx
# (a realistic subset): (name, version as capture-packages.sh prints it, arch, source package).
ALMALINUX_9 = [
    ("almalinux-release", "9.4-1.el9", "x86_64", "almalinux-release"),
    ("bash", "5.1.8-9.el9", "x86_64", "bash"),
    ("ca-certificates", "2023.2.60_v7.0.306-90.1.el9_2", "noarch", "ca-certificates"),
    ("cloud-init", "23.4-7.el9_4.alma.1", "noarch", "cloud-init"),
    ("curl", "7.76.1-29.el9_4", "x86_64", "curl"),
    ("dnf", "4.14.0-9.el9", "noarch", "dnf"),
    ("glibc", "2.34-100.el9_4.2", "x86_64", "glibc"),
    ("glibc-common", "2.34-100.el9_4.2", "x86_64", "glibc"),
    ("kernel-core", "5.14.0-427.13.1.el9_4", "x86_64", "kernel"),
    ("libcurl", "7.76.1-29.el9_4", "x86_64", "curl"),
    ("nginx", "{nginx}", "x86_64", "nginx"),
    ("nginx-core", "{nginx}", "x86_64", "nginx"),
    ("nginx-filesystem", "{nginx}", "noarch", "nginx"),
    ("openssh-server", "8.7p1-38.el9", "x86_64", "openssh"),
    ("openssl", "1:3.0.7-27.el9", "x86_64", "openssl"),
    ("openssl-libs", "1:3.0.7-27.el9", "x86_64", "openssl"),
    ("systemd", "252-32.el9_4", "x86_64", "systemd"),
    ("tzdata", "2024a-1.el9", "noarch", "tzdata"),
    ("WALinuxAgent", "2.7.0.6-9.el9", "noarch", "WALinuxAgent"),
]
UBUNTU_2404 = [
    ("apt", "2.7.14build2", "amd64", "apt"),
    ("base-files", "13ubuntu10.1", "amd64", "base-files"),
    ("bash", "5.2.21-2ubuntu4", "amd64", "bash"),
    ("ca-certificates", "20240203", "all", "ca-certificates"),
    ("cloud-init", "24.2-0ubuntu1~24.04.2", "all", "cloud-init"),
    ("curl", "8.5.0-2ubuntu10.4", "amd64", "curl"),
    ("libc6", "2.39-0ubuntu8.3", "amd64", "glibc"),
    ("libcurl4t64", "8.5.0-2ubuntu10.4", "amd64", "curl"),
    ("libssl3t64", "3.0.13-0ubuntu3.4", "amd64", "openssl"),
    ("linux-azure", "6.8.0.1015.16", "amd64", "linux-meta-azure"),
    ("nginx", "{nginx}", "amd64", "nginx"),
    ("nginx-common", "{nginx}", "all", "nginx"),
    ("openssh-server", "1:9.6p1-3ubuntu13.5", "amd64", "openssh"),
    ("openssl", "3.0.13-0ubuntu3.4", "amd64", "openssl"),
    ("systemd", "255.4-1ubuntu8.4", "amd64", "systemd"),
    ("tzdata", "2024a-3ubuntu1.1", "all", "tzdata"),
    ("walinuxagent", "2.9.1.1-0ubuntu5", "amd64", "walinuxagent"),
]
GUESTS = {  # base image publisher -> (family, os id, os version, packages, default nginx version)
    "almalinux": ("rpm", "almalinux", "9.4", ALMALINUX_9, "1:1.20.1-14.el9_2.1"),
    "canonical": ("deb", "ubuntu", "24.04", UBUNTU_2404, "1.24.0-2ubuntu7.1"),
}


def package_list(values: dict) -> str:
    """What capture-packages.sh writes in the build VM of this source's base image."""
    publisher = str(values.get("image_publisher") or "").lower()
    if publisher not in GUESTS:
        raise BuildError(f"fake packer: no package list for base images of publisher {publisher!r} "
                         f"(known: {', '.join(GUESTS)})")
    family, os_id, os_version, packages, nginx = GUESTS[publisher]
    nginx = os.environ.get("BAKERY_FAKE_PACKER_NGINX_VERSION") or nginx
    lines = ["format\tbakery-packages/1", f"family\t{family}", f"os\t{os_id}\t{os_version}"]
    for pkg, version, arch, source in packages:
        version = version.format(nginx=nginx)
        lines.append(f"pkg\t{pkg}\t{version}\t{arch}\t{source}\t{version}")
    return "\n".join(lines) + "\n"


def provisioner_settings(build_items: list, evaluator: Evaluator) -> list[dict]:
    """Each provisioner of the build, in order: its type and the settings the fake acts on, evaluated
    as Packer does (one ``packer console`` call for all of them)."""
    found, exprs = [], []
    for block in blocks(build_items, "provisioner"):
        if not block[2]:
            continue
        battrs = attrs(block[3])
        keys = [k for k in _PROVISIONER_KEYS if k in battrs]
        found.append((block[2][0], keys))
        exprs += [battrs[k] for k in keys]
    values = iter(evaluator.evaluate(exprs))
    return [{"type": type_, **{k: next(values) for k in keys}} for type_, keys in found]


class Guest:
    """The build VM as the provisioners see it: a few files, and whether the build user still exists."""

    def __init__(self, values: dict) -> None:
        self.values = values
        self.files: dict[str, str] = {}
        self.deprovisioned = False

    def run_script(self, script: str) -> list[str]:
        """Run a shell provisioner's script "in the guest": its effects on the model, its output lines."""
        out = []
        if Path(script).name == "capture-packages.sh":
            listing = package_list(self.values)
            self.files[PACKAGE_LIST_IN_GUEST] = listing
            count = sum(1 for line in listing.splitlines() if line.startswith("pkg\t"))
            out.append(f"capture-packages: {count} packages listed in {PACKAGE_LIST_IN_GUEST}")
        try:
            text = Path(script).read_text(errors="replace") if script else ""
        except OSError:
            text = ""
        if _DEPROVISION.search(text):
            self.deprovisioned = True
            if f"rm -f {PACKAGE_LIST_IN_GUEST}" in text:
                self.files.pop(PACKAGE_LIST_IN_GUEST, None)
            out.append("deprovisioning (waagent): removes the build user, SSH host keys, DHCP leases; generalises")
        return out


def run_provisioners(ui: Ui, name: str, values: dict, provisioners: list[dict], fail: str,
                     fail_message: str | None) -> None:
    say = lambda text: ui.say(f"==> {name}: {text}")
    guest = Guest(values)
    for i, prov in enumerate(provisioners or [{"type": "shell"}]):
        if guest.deprovisioned:  # the build user is gone: Packer cannot log in any more
            raise BuildError("Error uploading / running over SSH: ssh: handshake failed: ssh: unable to authenticate, "
                             "attempted methods [none publickey], no supported methods remain")
        kind = prov["type"]
        if kind == "file":
            src, dst = prov.get("source") or "", prov.get("destination") or ""
            if (prov.get("direction") or "upload") != "download":
                say(f"Uploading {src} => {dst}")
                continue
            say(f"Downloading {src} => {dst}")
            if src not in guest.files:
                raise BuildError(f"Error downloading {src}: Process exited with status 1: scp: {src}: "
                                 "No such file or directory")
            Path(dst).parent.mkdir(parents=True, exist_ok=True)
            Path(dst).write_text(guest.files[src])
            continue
        script = prov.get("script") or ""
        shown = script or f"/tmp/packer-shell{random.randint(10**8, 10**9)}"
        say(f"Provisioning with {'shell script: ' + shown if kind == 'shell' else kind} ...")
        if i == 0:  # the update + install: the long part of a real build
            ui.message(f"    {name}: Reading package lists...")
            delay = float(os.environ.get("BAKERY_FAKE_PACKER_BUILD_SECONDS", "0") or 0)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
            if fail == "provision":
                ui.error(f"==> {name}: E: Unable to locate package nginx")
                say("Provisioning step had errors: Running the cleanup provisioner, if present...")
                raise BuildError(fail_message or
                                 "Script exited with non-zero exit status: 100.Allowed exit codes are: [0]")
        if kind == "shell":
            for line in guest.run_script(script):
                ui.message(f"    {name}: {line}")
            if guest.deprovisioned and not prov.get("skip_clean"):
                raise BuildError(f"Error removing temporary script at /tmp/script_{random.randint(1000, 9999)}.sh: "
                                 "ssh: handshake failed: ssh: unable to authenticate, attempted methods [none "
                                 "publickey], no supported methods remain")


def run_azure_build(ui: Ui, name: str, values: dict, provisioners: list[dict], force: bool) -> dict:
    endpoint = os.environ.get("BAKERY_FAKE_PACKER_ARM_ENDPOINT")
    if not endpoint:
        raise BuildError("BAKERY_FAKE_PACKER_ARM_ENDPOINT is not set: the fake packer needs the ARM emulator")
    subscription = (values.get("subscription_id") or os.environ.get("BAKERY_FAKE_PACKER_SUBSCRIPTION_ID")
                    or os.environ.get("ARM_SUBSCRIPTION_ID") or os.environ.get("AZURE_SUBSCRIPTION_ID"))
    if not subscription:
        raise BuildError("subscription_id is not set and could not be determined from the environment")
    image_name = values.get("managed_image_name")
    image_rg = values.get("managed_image_resource_group_name")
    if not image_name or not image_rg:
        raise BuildError("this fake packer only builds managed images: set managed_image_name and "
                         "managed_image_resource_group_name")
    location = values.get("location") or ""
    tags = values.get("azure_tags") or {}
    os_type = values.get("os_type") or "Linux"
    arm = ArmClient(endpoint, os.environ.get("BAKERY_FAKE_PACKER_CA_BUNDLE"), subscription)
    fail = os.environ.get("BAKERY_FAKE_PACKER_FAIL", "").strip().lower()
    fail_message = os.environ.get("BAKERY_FAKE_PACKER_FAIL_MESSAGE")
    say = lambda text: ui.say(f"==> {name}: {text}")

    say("Running builder ...")
    if values.get("client_id") and values.get("client_secret") and values.get("tenant_id"):
        say("Getting tokens using client secret")
        arm.login(values["tenant_id"], values["client_id"], values["client_secret"])
    else:
        say("Getting tokens using Azure CLI" if values.get("use_azure_cli_auth") else "Getting tokens using Managed Identity")
    code, _, body = arm.request("GET", arm.rg_path(image_rg))
    if code == 404:
        raise BuildError(f"Cannot locate the managed image resource group {image_rg}.")
    code, headers, body = arm.request("GET", arm.image_path(image_rg, image_name))
    if code == 200:
        if not force:
            raise BuildError(f"the managed image named {image_name} already exists in the resource group "
                             f"{image_rg}, use the -force option to automatically delete it.")
        say(f"the managed image named {image_name} already exists, but deleting it due to -force flag")
        code, headers, body = arm.request("DELETE", arm.image_path(image_rg, image_name))
        ok, err = arm.wait(code, headers)
        if not ok:
            raise BuildError(f"failed to delete the managed image {image_name}: {arm_message(err or body)}")

    temp_rg = values.get("build_resource_group_name")
    if temp_rg and not location:  # azure-arm builds in the existing group's region
        code, _, body = arm.request("GET", arm.rg_path(temp_rg))
        if code != 200:
            raise BuildError(f"Cannot locate the build resource group {temp_rg}: {arm_message(body)}")
        location = body.get("location") or ""
    created_rg = None
    deployed: list[str] = []
    vm_name = "pkrvm" + _random_name()
    deployment = "pkrdp" + _random_name()
    try:
        if not temp_rg:
            temp_rg = values.get("temp_resource_group_name") or "pkr-Resource-Group-" + _random_name()
            say("Creating resource group ...")
            say(f" -> ResourceGroupName : '{temp_rg}'")
            say(f" -> Location          : '{location}'")
            say(" -> Tags              :")
            for key, value in sorted(tags.items()):
                say(f" ->> {key} : {value}")
            code, _, body = arm.request("PUT", arm.rg_path(temp_rg), {"location": location, "tags": tags})
            if code not in (200, 201):
                raise BuildError(arm_message(body))
            created_rg = temp_rg
        else:
            say(f"Using existing resource group ...\n -> ResourceGroupName : '{temp_rg}'")
        say("Validating deployment template ...")
        say(f" -> ResourceGroupName : '{temp_rg}'")
        say(f" -> DeploymentName    : '{deployment}'")
        say("Deploying deployment template ...")
        say(f" -> ResourceGroupName : '{temp_rg}'")
        say(f" -> DeploymentName    : '{deployment}'")
        if fail == "deploy":
            raise BuildError(fail_message or (
                "Code=\"DeploymentFailed\" Message=\"At least one resource deployment operation failed. Please "
                "list deployment operations for details. Please see https://aka.ms/DeployOperations for usage "
                "details.\" Details=[{\"code\":\"SkuNotAvailable\",\"message\":\"The requested size for resource "
                f"'{vm_name}' is currently not available in location '{location}'.\"}}]"))
        deployed = deploy_build_vm(arm, temp_rg, location, vm_name, values, tags)
        vm_id = deployed[0]
        say("Getting the VM's IP address ...")
        say(f" -> ResourceGroupName   : '{temp_rg}'")
        say(f" -> PublicIPAddressName : 'pkrip{_random_name()}'")
        say(" -> NicName             : 'pkrni" + _random_name() + "'")
        say(" -> Network Connection  : 'PublicEndpoint'")
        say(" -> IP Address          : '20.0.0.4'")
        say("Waiting for SSH to become available...")
        say("Connected to SSH!")
        run_provisioners(ui, name, values, provisioners, fail, fail_message)
        say("Querying the machine's properties ...")
        say(f" -> ResourceGroupName : '{temp_rg}'")
        say(f" -> ComputeName       : '{vm_name}'")
        say(" -> Managed OSDisk    : '/subscriptions/" + subscription + "/resourceGroups/" + temp_rg
            + "/providers/Microsoft.Compute/disks/pkros" + _random_name() + "'")
        say("Querying the machine's additional disks properties ...")
        say("Powering off machine ...")
        say("Capturing image ...")
        say(f" -> Compute ResourceGroupName : '{temp_rg}'")
        say(f" -> Compute Name              : '{vm_name}'")
        say(f" -> Compute Location          : '{location}'")
        say(f" -> Image ResourceGroupName   : '{image_rg}'")
        say(f" -> Image Name                : '{image_name}'")
        say(f" -> Image Location            : '{location}'")
        if fail == "capture":
            raise BuildError(fail_message or "Code=\"OperationNotAllowed\" Message=\"The operation 'Capture' is not "
                                              "allowed since the VM is not generalized.\"")
        # azure-arm captures a managed image from the generalized build VM (its OS disk, Hyper-V generation
        # and, out of sight, the base image's purchase plan go with it)
        code, headers, body = arm.request("PUT", arm.image_path(image_rg, image_name), {
            "location": location, "tags": tags,
            "properties": {"sourceVirtualMachine": {"id": vm_id}},
        })
        if code not in (200, 201):
            raise BuildError(arm_message(body))
        ok, err = arm.wait(code, headers)
        if not ok:
            raise BuildError(arm_message(err))
        code, _, image = arm.request("GET", arm.image_path(image_rg, image_name))
        if code != 200:
            raise BuildError(arm_message(image))
        say(f"Removing the created Deployment object: '{deployment}'")
    finally:
        if deployed and not created_rg:  # an existing build group: delete what the deployment made in it
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            say("Deleting the build VM and its network ...")
            for path in deployed[1:]:
                ok, err = arm.delete_and_wait(path)
                if not ok:
                    ui.error(f"==> {name}: Error deleting {path.split('?')[0]}: {arm_message(err)}")
        if created_rg:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # clean up even when told twice
            say("Deleting resource group ...")
            say(f" -> ResourceGroupName : '{created_rg}'")
            say("")
            say("The resource group was created by Packer, deleting ...")
            code, headers, body = arm.request("DELETE", arm.rg_path(created_rg))
            ok, err = arm.wait(code, headers)
            if not ok:
                ui.error(f"==> {name}: Error deleting resource group.  Please delete it manually.\n\n"
                         f"Name: {created_rg}\nError: {arm_message(err or body)}")

    image_id = image["id"]
    text = (f"{BUILDER_ID}:\n\nOSType: {os_type}\nManagedImageResourceGroupName: {image_rg}\n"
            f"ManagedImageName: {image_name}\nManagedImageId: {image_id}\nManagedImageLocation: {location}\n")
    return {"id": image_id, "string": text, "name": name.split(".", 1)[1], "builder_type": "azure-arm"}


def deploy_build_vm(arm: ArmClient, rg: str, location: str, vm_name: str, values: dict, tags: dict) -> list[str]:
    """What azure-arm's deployment makes: a virtual network, a NIC and the build VM from the Marketplace base
    image, with the source's ``plan_info`` as the VM's purchase plan (an all-empty plan_info is no plan).
    Returns [vm id, then the paths to delete, VM first] (the OS disk and NIC go with the VM)."""
    suffix = vm_name.removeprefix("pkrvm")
    vnet, subnet, nic = "pkrvn" + suffix, "pkrsn" + suffix, "pkrni" + suffix
    vnet_path = arm.resource_path(rg, "Microsoft.Network/virtualNetworks", vnet, API_NETWORK)
    vnet_body = arm.put_and_wait(vnet_path, {
        "location": location, "tags": tags,
        "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
                       "subnets": [{"name": subnet, "properties": {"addressPrefix": "10.0.0.0/24"}}]}})
    subnet_id = f"{vnet_body['id']}/subnets/{subnet}"
    nic_path = arm.resource_path(rg, "Microsoft.Network/networkInterfaces", nic, API_NETWORK)
    nic_body = arm.put_and_wait(nic_path, {
        "location": location, "tags": tags,
        "properties": {"ipConfigurations": [{"name": "ipconfig", "properties": {"subnet": {"id": subnet_id}}}]}})
    plan = values.get("plan_info") or {}
    vm: dict[str, Any] = {
        "location": location, "tags": tags,
        "properties": {
            "hardwareProfile": {"vmSize": values.get("vm_size") or "Standard_D2s_v5"},
            "storageProfile": {
                "imageReference": {"publisher": values.get("image_publisher"), "offer": values.get("image_offer"),
                                   "sku": values.get("image_sku"), "version": values.get("image_version") or "latest"},
                "osDisk": {"name": "pkros" + suffix, "createOption": "FromImage", "deleteOption": "Delete",
                           "osType": values.get("os_type") or "Linux"}},
            "osProfile": {"computerName": vm_name, "adminUsername": "packer",
                          "linuxConfiguration": {"disablePasswordAuthentication": True}},
            "networkProfile": {"networkInterfaces": [{"id": nic_body["id"],
                                                      "properties": {"deleteOption": "Delete"}}]},
        },
    }
    if any(plan.get(k) for k in ("plan_name", "plan_product", "plan_publisher")):
        vm["plan"] = {"name": plan.get("plan_name"), "product": plan.get("plan_product"),
                      "publisher": plan.get("plan_publisher")}
    vm_path = arm.resource_path(rg, "Microsoft.Compute/virtualMachines", vm_name)
    code, headers, answer = arm.request("PUT", vm_path, vm)
    if code not in (200, 201):
        arm.delete_and_wait(nic_path)
        arm.delete_and_wait(vnet_path)
        err = (answer or {}).get("error", {}) if isinstance(answer, dict) else {}
        raise BuildError(
            "Code=\"DeploymentFailed\" Message=\"At least one resource deployment operation failed. Please list "
            "deployment operations for details. Please see https://aka.ms/DeployOperations for usage details.\" "
            f"Details=[{json.dumps({'code': err.get('code'), 'message': err.get('message')})}]")
    ok, err = arm.wait(code, headers)
    if not ok:
        for path in (vm_path, vnet_path):
            arm.delete_and_wait(path)
        raise BuildError(arm_message(err))
    return [answer["id"], vm_path, vnet_path]


def write_manifest(settings: dict, build_name: str, artifact: dict) -> None:
    path = Path(settings.get("output") or "packer-manifest.json")
    run_uuid = os.environ.get("PACKER_RUN_UUID") or str(uuid.uuid4())  # the wrapper's, as Packer records it
    data = {"builds": [], "last_run_uuid": ""}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except ValueError:
            pass
    data.setdefault("builds", []).append({
        "name": artifact["name"], "builder_type": artifact["builder_type"], "build_time": int(time.time()),
        "files": None, "artifact_id": artifact["id"], "packer_run_uuid": run_uuid,
        "custom_data": settings.get("custom_data") or None,
    })
    data["last_run_uuid"] = run_uuid
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def delegate(args: list[str]) -> int:
    real = real_packer()
    if real is None:
        if args and args[0] == "version":
            print(f"Packer v{os.environ.get('BAKERY_FAKE_PACKER_VERSION', FALLBACK_VERSION)}")
            return 0
        print(f"fake packer: no real packer to run '{' '.join(args)}' (set BAKERY_FAKE_PACKER_REAL)",
              file=sys.stderr)
        return 1
    sys.stdout.flush()
    env = {k: v for k, v in os.environ.items() if k not in ("PACKER_RUN_UUID", "BAKERY_FAKE_PACKER_WRAPPED")}
    os.execve(real, [real, *args], env)  # the real Packer makes its own run uuid
    return 1  # not reached


def log_invocation(argv: list[str]) -> None:
    path = os.environ.get("BAKERY_FAKE_PACKER_LOG")
    if not path:
        return
    record = {"argv": argv, "cwd": os.getcwd(), "time": _dt.datetime.now(_dt.UTC).isoformat(),
              "pkr_vars": {k[8:]: v for k, v in os.environ.items() if k.startswith("PKR_VAR_")}}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def run_wrapped(argv: list[str]) -> int:
    """Like Packer's wrapper (panicwrap): generate this run's PACKER_RUN_UUID and run the real work in a
    child process with it in its environment (where the bakery's runner reads it, and what the manifest
    post-processor records); signals to the wrapper are passed on to the child."""
    env = dict(os.environ, PACKER_RUN_UUID=str(uuid.uuid4()), BAKERY_FAKE_PACKER_WRAPPED="1")
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), *argv], env=env)

    def forward(signum: int, frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return child.wait()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "build":
        if not os.environ.get("BAKERY_FAKE_PACKER_WRAPPED"):
            log_invocation(argv)
            return run_wrapped(argv)
        return build(argv[1:])
    log_invocation(argv)
    return delegate(argv)


if __name__ == "__main__":
    sys.exit(main())
