"""vSphere side of the VM orchestrator (pyvmomi).

What it does, for one run: connect to vCenter with verified TLS; find each
guest's template and baseline snapshot; make a linked clone tagged with the
run id and an expiry; power it on; wait for VMware Tools and a guest IP;
revert it; power it off and destroy it.  A janitor destroys leftovers of
crashed runs, and a pre-flight check reports on the lab before a run starts.

Every failure is an ``InfrastructureError`` subclass (``harness.vm.errors``)
whose ``phase`` says which step broke, so the orchestrator can retry it and
never report it as a product failure.

Tagging (how the janitor recognises clones)
-------------------------------------------
Clones are tagged in the clone spec itself, so the tag exists from the moment
the clone does (a crash between "clone" and "tag" cannot leave an untagged
clone).  The machine-readable tags are VMX ``extraConfig`` entries:

* ``guestinfo.wfp.run_id``   the orchestrator's run id
* ``guestinfo.wfp.expires``  ISO 8601 UTC time after which any janitor may destroy it
* ``guestinfo.wfp.guest``    the guest-matrix entry it was cloned for

The VM annotation (Notes) carries the same facts for humans; it is not read
back (vcsim ignores the annotation of a clone spec).  Custom fields are not
used: they need extra vCenter privileges and a field definition per vCenter.
The janitor only looks inside the configured placement folder and never
touches templates or VMs without ``guestinfo.wfp.run_id``.

Credentials come from the environment variables named in the config; they
are never logged or put into exception text.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import http.client
import ipaddress
import logging
import os
import re
import secrets
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

from harness.vm import redact
from harness.vm.config import Guest, LabConfig, VCenterConfig, parse_openssh_public_key
from harness.vm.errors import (
    CloneError, ConnectError, CredentialsError, DestroyError, HostKeyError, InfrastructureError,
    InventoryError, IpTimeout, PowerError, SnapshotError, TlsError, ToolsTimeout,
)

log = logging.getLogger(__name__)

TAG_RUN_ID = "guestinfo.wfp.run_id"
TAG_EXPIRES = "guestinfo.wfp.expires"
TAG_GUEST = "guestinfo.wfp.guest"

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$")

# Faults worth waiting out: the connection or the host hiccupped, or the VM
# is briefly busy (e.g. right after a revert).  Anything else is reported.
_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError, http.client.HTTPException, vmodl.fault.HostCommunication,
    vim.fault.TaskInProgress, vim.fault.InvalidState,
)


# ---------------------------------------------------------------------------
# TLS


class _PinnedSSLSocket(ssl.SSLSocket):
    """Checks the server certificate's SHA-256 against the pin on EVERY
    handshake (pyvmomi opens new connections at will; its own ``thumbprint``
    option switches the shared context to CERT_NONE after the first one)."""

    _pin: str = ""

    def do_handshake(self, block: bool = False) -> None:  # noqa: D401 - ssl API
        super().do_handshake(block)
        der = self.getpeercert(binary_form=True) or b""
        got = hashlib.sha256(der).hexdigest()
        if not hmac.compare_digest(got, self._pin):
            self.close()
            err = ssl.SSLCertVerificationError(
                1, "server certificate does not match the pinned SHA-256 thumbprint")
            err.verify_message = "pinned thumbprint mismatch"
            raise err


def build_ssl_context(vc: VCenterConfig) -> ssl.SSLContext:
    """The TLS context for vCenter: CA bundle and/or pinned thumbprint; never
    unverified unless the config says ``insecure_skip_tls_verify = true``."""
    if vc.insecure_skip_tls_verify:
        log.warning("TLS verification of %s is OFF (insecure_skip_tls_verify = true in the lab config)", vc.url)
        return ssl._create_unverified_context()  # the user opted out by name
    if vc.ca_bundle is not None:
        try:
            ctx = ssl.create_default_context(cafile=str(vc.ca_bundle))
        except (ssl.SSLError, OSError) as e:
            raise TlsError(f"cannot load CA bundle {vc.ca_bundle}: {e}") from None
    else:
        # Pin only: the pin IS the identity check (self-signed vCenters).
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if vc.thumbprint_sha256:
        pin = vc.thumbprint_sha256.replace(":", "").lower()
        ctx.sslsocket_class = type("PinnedSSLSocket", (_PinnedSSLSocket,), {"_pin": pin})
    return ctx


# ---------------------------------------------------------------------------
# Results


@dataclass
class Clone:
    """A test clone.  ``ip`` is cleared by every revert and power-off: always
    re-read it through ``wait_ready``."""

    name: str
    guest: Guest
    run_id: str
    expires: _dt.datetime
    vm: Any = field(repr=False)
    ip: str | None = None

    @property
    def moid(self) -> str:
        return self.vm._moId


@dataclass
class TemplateReport:
    guest: str
    template: str
    snapshot: str
    found: bool = False
    snapshot_found: bool = False
    is_template: bool | None = None
    firmware: str | None = None
    secure_boot: bool | None = None
    secure_boot_expected: bool | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class PreflightReport:
    vcenter_url: str
    tls: str
    vcenter_version: str = ""
    api_version: str = ""
    datastore: str = ""
    datastore_free_gb: float | None = None
    datastore_capacity_gb: float | None = None
    min_free_gb: float = 0.0
    templates: list[TemplateReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not any(t.problems for t in self.templates)

    def all_problems(self) -> list[str]:
        return self.problems + [p for t in self.templates for p in t.problems]

    def to_dict(self) -> dict:
        import dataclasses
        d = dataclasses.asdict(self)
        d["ok"] = self.ok
        return d


@dataclass
class JanitorReport:
    destroyed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# Helpers


def _fault_text(fault: Any) -> str:
    name = getattr(fault, "_wsdlName", None) or type(fault).__name__
    msg = getattr(fault, "msg", None) or ""
    return f"{name}: {msg}" if msg and msg != name else name


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _parse_time(s: str) -> _dt.datetime | None:
    try:
        t = _dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)


def usable_ip(addresses: Iterable[str]) -> str | None:
    """First address an SSH client can use: IPv4 preferred; never link-local or unspecified."""
    v6 = None
    for a in addresses:
        try:
            ip = ipaddress.ip_address(a.split("%")[0])
        except ValueError:
            continue
        if ip.is_link_local or ip.is_unspecified or ip.is_multicast:
            continue
        if ip.version == 4:
            return str(ip)
        v6 = v6 or str(ip)
    return v6


class VSphere:
    """A connection to vCenter for one lab config.  Use as a context manager."""

    def __init__(self, lab: LabConfig, *, env: Mapping[str, str] | None = None,
                 poll_interval: float = 0.25, max_poll_interval: float = 5.0,
                 secrets_registry: "redact.SecretRegistry | None" = None) -> None:
        self.lab = lab
        self._env = os.environ if env is None else env
        # The password joins the run's redaction list, so logs and reports
        # written by other parts of the harness are scrubbed of it too.
        self._registry = redact.default_registry if secrets_registry is None else secrets_registry
        self._poll = poll_interval
        self._max_poll = max_poll_interval
        self.si: Any = None
        self._secrets: tuple[str, ...] = ()

    # -- connection -----------------------------------------------------------

    def __enter__(self) -> "VSphere":
        if self.si is None:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _scrub(self, text: str) -> str:
        for s in self._secrets:
            if s:
                text = text.replace(s, "***")
        return text

    def connect(self) -> None:
        vc = self.lab.vcenter
        user = self._env.get(vc.user_env, "")
        pwd = self._env.get(vc.password_env, "")
        for name, value in ((vc.user_env, user), (vc.password_env, pwd)):
            if not value:
                raise CredentialsError(
                    f"environment variable {name} (named in the lab config) is not set or empty")
        self._secrets = (pwd,)
        try:
            self._registry.add(pwd)
        except ValueError:
            pass  # too short to redact without shredding every log line; we never log it anyway
        ctx = build_ssl_context(vc)
        log.info("connecting to %s (TLS: %s)", vc.url, self.tls_mode)
        try:
            self.si = SmartConnect(host=vc.host, port=vc.port, path=vc.path, user=user, pwd=pwd,
                                   sslContext=ctx, httpConnectionTimeout=60)
        except ssl.SSLCertVerificationError as e:
            why = getattr(e, "verify_message", None) or getattr(e, "reason", None) or str(e)
            raise TlsError(f"{vc.url}: server certificate rejected ({self._scrub(str(why))}); "
                           f"check vcenter.ca_bundle / vcenter.thumbprint_sha256") from None
        except ssl.SSLError as e:
            raise TlsError(f"{vc.url}: TLS handshake failed: {self._scrub(str(e))}") from None
        except vim.fault.InvalidLogin:
            raise ConnectError(f"{vc.url}: login refused for the user in ${vc.user_env} "
                               f"(password from ${vc.password_env})") from None
        except (OSError, http.client.HTTPException) as e:
            raise ConnectError(f"{vc.url}: unreachable: {type(e).__name__}: {self._scrub(str(e))}") from None
        except vmodl.MethodFault as e:
            raise ConnectError(f"{vc.url}: {self._scrub(_fault_text(e))}") from None
        except Exception as e:  # pyvmomi raises bare Exception for "not a VIM server"
            raise ConnectError(f"{vc.url}: {type(e).__name__}: {self._scrub(str(e))}") from None
        about = self.si.content.about
        log.info("connected to %s: %s (API %s)", vc.url, about.fullName, about.apiVersion)

    @property
    def tls_mode(self) -> str:
        vc = self.lab.vcenter
        if vc.insecure_skip_tls_verify:
            return "insecure (verification off by config)"
        return "+".join(m for m, on in (("ca_bundle", vc.ca_bundle), ("thumbprint", vc.thumbprint_sha256)) if on)

    def close(self) -> None:
        if self.si is not None:
            try:
                Disconnect(self.si)
            except Exception as e:  # logout failures must not hide the run's result
                log.debug("disconnect failed: %s", type(e).__name__)
            self.si = None

    @property
    def content(self) -> Any:
        if self.si is None:
            raise ConnectError("not connected to vCenter")
        return self.si.content

    # -- inventory ------------------------------------------------------------

    def _view(self, root: Any, kind: Any) -> list:
        view = self.content.viewManager.CreateContainerView(root, [kind], True)
        try:
            return list(view.view)
        finally:
            view.Destroy()

    def _props(self, objs: list, kind: Any, paths: list[str]) -> dict[Any, dict[str, Any]]:
        """Read several properties of several objects in one round trip."""
        if not objs:
            return {}
        pc = self.content.propertyCollector
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=o, skip=False) for o in objs],
            propSet=[vmodl.query.PropertyCollector.PropertySpec(type=kind, pathSet=paths, all=False)])
        out: dict[Any, dict[str, Any]] = {}
        result = pc.RetrievePropertiesEx([spec], vmodl.query.PropertyCollector.RetrieveOptions())
        while result is not None:
            for oc in result.objects:
                out[oc.obj] = {p.name: p.val for p in (oc.propSet or [])}
            result = pc.ContinueRetrievePropertiesEx(result.token) if result.token else None
        return out

    def datacenter(self) -> Any:
        name = self.lab.placement.datacenter
        found = [d for d in self._view(self.content.rootFolder, vim.Datacenter) if d.name == name]
        if not found:
            raise InventoryError(f"datacenter {name!r} not found (placement.datacenter)")
        return found[0]

    def folder(self) -> Any:
        dc = self.datacenter()
        f = dc.vmFolder
        path = self.lab.placement.folder
        for part in [p for p in (path or "").split("/") if p]:
            nxt = [c for c in f.childEntity if isinstance(c, vim.Folder) and c.name == part]
            if not nxt:
                raise InventoryError(f"VM folder {path!r} not found under {dc.name}/vm (placement.folder)")
            f = nxt[0]
        return f

    def resource_pool(self) -> Any:
        p = self.lab.placement
        dc = self.datacenter()
        computes = [c for c in self._view(dc.hostFolder, vim.ComputeResource)]
        if p.resource_pool:
            parts = [x for x in p.resource_pool.split("/") if x]
            cr = [c for c in computes if c.name == parts[0]]
            if not cr:
                raise InventoryError(f"cluster {parts[0]!r} of resource pool {p.resource_pool!r} not found "
                                     f"(placement.resource_pool)")
            pool = cr[0].resourcePool
            rest = parts[1:]
            if rest and rest[0] == pool.name:  # the root pool ("Resources") may be spelt out
                rest = rest[1:]
            for part in rest:
                nxt = [c for c in pool.resourcePool if c.name == part]
                if not nxt:
                    raise InventoryError(f"resource pool {p.resource_pool!r} not found (placement.resource_pool)")
                pool = nxt[0]
            return pool
        cr = [c for c in computes if c.name == p.cluster]
        if not cr:
            raise InventoryError(f"cluster {p.cluster!r} not found in {dc.name} (placement.cluster)")
        return cr[0].resourcePool

    def datastore(self) -> Any:
        name = self.lab.placement.datastore
        dc = self.datacenter()
        found = [d for d in dc.datastore if d.name == name]
        if not found:
            raise InventoryError(f"datastore {name!r} not found in {dc.name} (placement.datastore)")
        return found[0]

    def find_vm(self, name: str) -> Any | None:
        dc = self.datacenter()
        found = [v for v in self._view(dc.vmFolder, vim.VirtualMachine) if v.name == name]
        if len(found) > 1:
            raise InventoryError(f"{len(found)} VMs are named {name!r} in {dc.name}; names must be unique", vm=name)
        return found[0] if found else None

    def template(self, guest: Guest) -> Any:
        vm = self.find_vm(guest.template)
        if vm is None:
            raise InventoryError(f"template {guest.template!r} of guest {guest.name!r} not found",
                                 vm=guest.template)
        return vm

    @staticmethod
    def _find_snapshots(tree: Iterable[Any], name: str) -> list:
        out = []
        for node in tree or []:
            if node.name == name:
                out.append(node.snapshot)
            out.extend(VSphere._find_snapshots(node.childSnapshotList, name))
        return out

    def snapshot(self, vm: Any, name: str) -> Any:
        snap = vm.snapshot
        found = self._find_snapshots(snap.rootSnapshotList if snap else [], name)
        if not found:
            raise SnapshotError(f"snapshot {name!r} not found", vm=vm.name)
        if len(found) > 1:
            raise SnapshotError(f"{len(found)} snapshots are named {name!r}; the baseline must be unique",
                                vm=vm.name)
        return found[0]

    def extra_config(self, vm: Any) -> dict[str, str]:
        props = self._props([vm], vim.VirtualMachine, ["config.extraConfig"]).get(vm, {})
        return {o.key: str(o.value) for o in props.get("config.extraConfig") or []}

    # -- tasks and waits ------------------------------------------------------

    def _sleep(self, attempt: int) -> None:
        time.sleep(min(self._poll * (1.5 ** min(attempt, 20)), self._max_poll))

    def _wait_task(self, task: Any, timeout: float, err: type[InfrastructureError], what: str,
                   vm: str | None) -> Any:
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            try:
                # Only the fields we need: reading all of task.info also decodes
                # info.entity, which vcsim sets to a snapshot for reverts (govmomi #2281).
                info = self._props([task], vim.Task, ["info.state", "info.error", "info.result"]).get(task, {})
            except ssl.SSLCertVerificationError:
                raise TlsError(f"{what}: vCenter certificate no longer verifies", vm=vm) from None
            except _TRANSIENT as e:
                log.debug("%s: transient %s while polling task", what, type(e).__name__)
                info = {}
            state = info.get("info.state")
            if state == vim.TaskInfo.State.success:
                return info.get("info.result")
            if state == vim.TaskInfo.State.error:
                raise err(f"{what} failed: {_fault_text(info.get('info.error'))}", vm=vm)
            if time.monotonic() >= deadline:
                try:
                    task.CancelTask()
                except Exception:  # best effort; the timeout is what we report
                    pass
                raise err(f"{what} did not finish within {timeout:g} s", vm=vm)
            self._sleep(attempt)
            attempt += 1

    def _call(self, err: type[InfrastructureError], what: str, vm: str | None, fn: Callable[[], Any]) -> Any:
        """Start a vSphere call; faults raised by the call itself become ``err``."""
        try:
            return fn()
        except vmodl.MethodFault as e:
            raise err(f"{what} refused: {_fault_text(e)}", vm=vm) from None
        except (OSError, http.client.HTTPException) as e:
            raise err(f"{what}: connection to vCenter failed: {type(e).__name__}", vm=vm) from None

    # -- clone lifecycle ------------------------------------------------------

    def clone_name(self, guest: Guest, run_id: str) -> str:
        # vSphere names are at most 80 characters; the suffix keeps parallel runs apart.
        base = f"{self.lab.run.clone_prefix}-{guest.name}-{run_id}"[:72]
        return f"{base}-{secrets.token_hex(3)}"

    def clone(self, guest: Guest, run_id: str, *, ttl_hours: float | None = None,
              name: str | None = None) -> Clone:
        """Linked clone of ``guest``'s template at its baseline snapshot, tagged with run id and expiry."""
        if not _RUN_ID.match(run_id):
            raise ValueError(f"run id {run_id!r}: letters, digits, '.', '_' and '-', at most 48 characters")
        ttl = self.lab.run.clone_ttl_hours if ttl_hours is None else ttl_hours
        expires = (_utcnow() + _dt.timedelta(hours=ttl)).replace(microsecond=0)
        name = name or self.clone_name(guest, run_id)
        template = self.template(guest)
        snap = self.snapshot(template, guest.snapshot)
        folder, pool, ds = self.folder(), self.resource_pool(), self.datastore()
        note = (f"WFP harness test clone of {guest.template}@{guest.snapshot} for guest {guest.name}\n"
                f"run id: {run_id}\nexpires: {expires.isoformat()}\n"
                f"Destroyed by the harness janitor after expiry.")
        spec = vim.vm.CloneSpec(
            location=vim.vm.RelocateSpec(pool=pool, datastore=ds,
                                         diskMoveType="createNewChildDiskBacking"),  # linked clone
            snapshot=snap, powerOn=False, template=False,
            config=vim.vm.ConfigSpec(annotation=note, extraConfig=[
                vim.option.OptionValue(key=TAG_RUN_ID, value=run_id),
                vim.option.OptionValue(key=TAG_EXPIRES, value=expires.isoformat()),
                vim.option.OptionValue(key=TAG_GUEST, value=guest.name),
            ]))
        log.info("cloning %s@%s -> %s (run %s, expires %s)", guest.template, guest.snapshot, name,
                 run_id, expires.isoformat())
        task = self._call(CloneError, f"clone of {guest.template}", name,
                          lambda: template.CloneVM_Task(folder=folder, name=name, spec=spec))
        vm = self._wait_task(task, self.lab.timeouts.clone, CloneError, f"clone of {guest.template}", name)
        if vm is None:
            raise CloneError(f"clone of {guest.template} returned no VM", vm=name)
        tags = self.extra_config(vm)
        if tags.get(TAG_RUN_ID) != run_id:
            # An untagged clone would escape the janitor: remove it now.
            self._destroy_vm(vm, name)
            raise CloneError("clone was created without its run-id tag; destroyed it", vm=name)
        return Clone(name=name, guest=guest, run_id=run_id, expires=expires, vm=vm)

    def power_state(self, clone: Clone) -> str:
        return str(clone.vm.runtime.powerState)

    def power_on(self, clone: Clone) -> None:
        clone.ip = None
        if self.power_state(clone) == vim.VirtualMachinePowerState.poweredOn:
            return
        log.info("powering on %s", clone.name)
        task = self._call(PowerError, "power on", clone.name, clone.vm.PowerOnVM_Task)
        self._wait_task(task, self.lab.timeouts.power_on, PowerError, "power on", clone.name)

    def power_off(self, clone: Clone) -> None:
        clone.ip = None
        self._power_off_vm(clone.vm, clone.name)

    def _power_off_vm(self, vm: Any, name: str) -> None:
        if str(vm.runtime.powerState) == vim.VirtualMachinePowerState.poweredOff:
            return
        log.info("powering off %s", name)
        task = self._call(PowerError, "power off", name, vm.PowerOffVM_Task)
        try:
            self._wait_task(task, self.lab.timeouts.power_off, PowerError, "power off", name)
        except PowerError:
            # Raced with another power-off (or the guest shut down): fine if it is off now.
            if str(vm.runtime.powerState) != vim.VirtualMachinePowerState.poweredOff:
                raise

    def _guest_state(self, vm: Any) -> dict[str, Any]:
        return self._props([vm], vim.VirtualMachine, [
            "runtime.powerState", "guest.toolsRunningStatus", "guest.ipAddress", "guest.net",
        ]).get(vm, {})

    def _poll_guest(self, clone: Clone, timeout: float, what: str, err: type[InfrastructureError],
                    done: Callable[[dict[str, Any]], Any]) -> Any:
        deadline = time.monotonic() + timeout
        attempt, last, last_fault = 0, {}, None
        while True:
            try:
                last = self._guest_state(clone.vm)
            except vmodl.fault.ManagedObjectNotFound:
                raise err(f"VM vanished while waiting for {what}", vm=clone.name) from None
            except ssl.SSLCertVerificationError:
                # Never "transient": the server's identity changed under us.
                raise TlsError("vCenter certificate no longer verifies", vm=clone.name) from None
            except _TRANSIENT as e:
                last_fault = type(e).__name__  # tolerated: vCenter or the host is busy
                log.debug("%s: transient %s while waiting for %s", clone.name, last_fault, what)
            else:
                if last.get("runtime.powerState") != vim.VirtualMachinePowerState.poweredOn:
                    raise PowerError(f"VM is {last.get('runtime.powerState')} while waiting for {what}",
                                     vm=clone.name)
                value = done(last)
                if value:
                    return value
            if time.monotonic() >= deadline:
                seen = f"tools={last.get('guest.toolsRunningStatus')}, ip={last.get('guest.ipAddress')}"
                extra = f", last transient fault {last_fault}" if last_fault else ""
                raise err(f"no {what} within {timeout:g} s ({seen}{extra})", vm=clone.name)
            self._sleep(attempt)
            attempt += 1

    def wait_tools(self, clone: Clone, timeout: float | None = None) -> None:
        t = self.lab.timeouts.tools if timeout is None else timeout
        self._poll_guest(clone, t, "VMware Tools running", ToolsTimeout,
                         lambda s: s.get("guest.toolsRunningStatus") == "guestToolsRunning")
        log.info("%s: VMware Tools running", clone.name)

    def wait_ip(self, clone: Clone, timeout: float | None = None) -> str:
        t = self.lab.timeouts.ip if timeout is None else timeout

        def ip_of(s: dict[str, Any]) -> str | None:
            if s.get("guest.toolsRunningStatus") != "guestToolsRunning":
                return None  # an IP reported without Tools may be stale
            addrs = [a for nic in s.get("guest.net") or [] for a in (nic.ipAddress or [])]
            if s.get("guest.ipAddress"):
                addrs.insert(0, s["guest.ipAddress"])
            return usable_ip(addrs)

        clone.ip = self._poll_guest(clone, t, "guest IP address", IpTimeout, ip_of)
        log.info("%s: guest IP %s", clone.name, clone.ip)
        return clone.ip

    def wait_ready(self, clone: Clone) -> str:
        """Tools running, then a fresh guest IP (the old one is never reused)."""
        clone.ip = None
        self.wait_tools(clone)
        return self.wait_ip(clone)

    def start(self, clone: Clone) -> str:
        self.power_on(clone)
        return self.wait_ready(clone)

    def snapshot_clone(self, clone: Clone, name: str) -> None:
        task = self._call(SnapshotError, f"snapshot {name!r}", clone.name,
                          lambda: clone.vm.CreateSnapshot_Task(name=name, description="WFP harness",
                                                               memory=False, quiesce=False))
        self._wait_task(task, self.lab.timeouts.revert, SnapshotError, f"snapshot {name!r}", clone.name)

    def revert(self, clone: Clone, snapshot: str) -> str:
        """Revert to a snapshot, power on if the snapshot left it off, and
        re-read Tools and the IP (the IP may change across a revert)."""
        snap = self.snapshot(clone.vm, snapshot)
        clone.ip = None
        log.info("reverting %s to %r", clone.name, snapshot)
        task = self._call(SnapshotError, f"revert to {snapshot!r}", clone.name, snap.RevertToSnapshot_Task)
        self._wait_task(task, self.lab.timeouts.revert, SnapshotError, f"revert to {snapshot!r}", clone.name)
        self.power_on(clone)
        return self.wait_ready(clone)

    def _destroy_vm(self, vm: Any, name: str) -> None:
        try:
            self._power_off_vm(vm, name)
            task = self._call(DestroyError, "destroy", name, vm.Destroy_Task)
            self._wait_task(task, self.lab.timeouts.destroy, DestroyError, "destroy", name)
        except vmodl.fault.ManagedObjectNotFound:
            pass  # already gone: destroy is idempotent
        except InfrastructureError as e:
            if "ManagedObjectNotFound" in e.message:
                return
            raise
        log.info("destroyed %s", name)

    def destroy(self, clone: Clone) -> None:
        clone.ip = None
        self._destroy_vm(clone.vm, clone.name)

    # -- host key (out of band) ----------------------------------------------

    def host_key(self, clone: Clone) -> str:
        """The guest's pinned SSH host key as an OpenSSH public key line."""
        src = clone.guest.host_key
        if src.literal:
            return src.literal
        if src.file:
            return src.file.read_text(encoding="utf-8").strip()
        # Recorded in the TEMPLATE's extraConfig by the template build (vm-templates:
        # the builder generates the host key and sets configuration_parameters),
        # so every linked clone shares it.  Read from the template only: a clone
        # is a running guest, and a guest must never choose its own pin.
        line = self.extra_config(self.template(clone.guest)).get(src.guestinfo)
        if not line:
            raise HostKeyError(f"{src.guestinfo} is not set in the extraConfig of the template "
                               f"{clone.guest.template} (rebuild it with vm-templates)", vm=clone.name)
        try:
            parse_openssh_public_key(line)
        except ValueError as e:
            raise HostKeyError(f"{src.guestinfo} does not hold an OpenSSH public key: {e}", vm=clone.name) from None
        return line.strip()

    # -- janitor --------------------------------------------------------------

    def list_clones(self) -> list[tuple[Any, str, dict[str, str]]]:
        """(vm, name, tags) of every tagged harness clone in the placement folder."""
        vms = self._view(self.folder(), vim.VirtualMachine)
        props = self._props(vms, vim.VirtualMachine, ["name", "config.template", "config.extraConfig"])
        out = []
        for vm, p in props.items():
            if p.get("config.template"):
                continue  # never a template
            tags = {o.key: str(o.value) for o in p.get("config.extraConfig") or []
                    if o.key in (TAG_RUN_ID, TAG_EXPIRES, TAG_GUEST)}
            if TAG_RUN_ID in tags:
                out.append((vm, p.get("name", vm._moId), tags))
        return out

    def janitor(self, *, run_id: str | None = None, now: _dt.datetime | None = None,
                dry_run: bool = False) -> JanitorReport:
        """Destroy clones of ``run_id`` and every expired clone.  Errors are
        collected per VM (one stuck VM must not stop the clean-up)."""
        now = now or _utcnow()
        report = JanitorReport()
        for vm, name, tags in sorted(self.list_clones(), key=lambda x: x[1]):
            expires = _parse_time(tags.get(TAG_EXPIRES, ""))
            # An unreadable expiry on a tagged clone counts as expired: it is ours and unaccounted for.
            expired = expires is None or expires <= now
            if not ((run_id is not None and tags[TAG_RUN_ID] == run_id) or expired):
                report.kept.append(name)
                continue
            if dry_run:
                report.destroyed.append(name)
                continue
            try:
                self._destroy_vm(vm, name)
                report.destroyed.append(name)
            except InfrastructureError as e:
                report.failed[name] = str(e)
        log.info("janitor: destroyed %d, kept %d, failed %d", len(report.destroyed), len(report.kept),
                 len(report.failed))
        return report

    # -- pre-flight -----------------------------------------------------------

    def preflight(self) -> PreflightReport:
        """Report on the lab: reachable with verified TLS (we are connected),
        inventory placement, datastore space, each template, its baseline
        snapshot, firmware and Secure Boot state."""
        about = self.content.about
        r = PreflightReport(vcenter_url=self.lab.vcenter.url, tls=self.tls_mode,
                            vcenter_version=about.fullName, api_version=about.apiVersion,
                            datastore=self.lab.placement.datastore,
                            min_free_gb=self.lab.run.min_datastore_free_gb)
        for check in (self.datacenter, self.folder, self.resource_pool):
            try:
                check()
            except InfrastructureError as e:
                r.problems.append(e.message)
        try:
            ds = self.datastore()
            s = ds.summary
            r.datastore_free_gb = round(s.freeSpace / 2**30, 2)
            r.datastore_capacity_gb = round(s.capacity / 2**30, 2)
            if not s.accessible:
                r.problems.append(f"datastore {ds.name!r} is not accessible")
            if r.datastore_free_gb < r.min_free_gb:
                r.problems.append(f"datastore {ds.name!r} has {r.datastore_free_gb} GB free, "
                                  f"less than run.min_datastore_free_gb = {r.min_free_gb:g}")
        except InfrastructureError as e:
            r.problems.append(e.message)
        for g in self.lab.guests:
            t = TemplateReport(guest=g.name, template=g.template, snapshot=g.snapshot,
                               secure_boot_expected=g.secure_boot)
            r.templates.append(t)
            try:
                vm = self.template(g)
            except InfrastructureError as e:
                t.problems.append(e.message)
                continue
            t.found = True
            p = self._props([vm], vim.VirtualMachine,
                            ["config.template", "config.firmware", "config.bootOptions"]).get(vm, {})
            t.is_template = bool(p.get("config.template"))
            t.firmware = p.get("config.firmware")
            boot = p.get("config.bootOptions")
            t.secure_boot = bool(boot and boot.efiSecureBootEnabled) if t.firmware == "efi" else False
            try:
                self.snapshot(vm, g.snapshot)
                t.snapshot_found = True
            except InfrastructureError as e:
                t.problems.append(f"{g.template}: {e.message} (linked clones need it)")
            if g.secure_boot is not None and t.secure_boot != g.secure_boot:
                t.problems.append(
                    f"{g.template}: Secure Boot is {'ON' if t.secure_boot else 'OFF'} but guest {g.name!r} "
                    f"expects it {'ON' if g.secure_boot else 'OFF'}"
                    + (" (test-signed drivers will not load)" if t.secure_boot else ""))
        for prob in r.all_problems():
            log.warning("pre-flight: %s", prob)
        return r


def preflight(lab: LabConfig, *, env: Mapping[str, str] | None = None) -> PreflightReport:
    """Connect (verified TLS, credentials from the environment) and report.
    Raises ``TlsError``/``ConnectError``/``CredentialsError`` when vCenter
    cannot be reached at all."""
    with VSphere(lab, env=env) as vs:
        return vs.preflight()
