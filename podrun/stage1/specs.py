"""From the pod manifest and pod.json to what stage1 does: cgroup resources and AppSpecs.

stage1 reads only the pod's own files (``pod``, ``pod.json``): the apps' full App
sections were written there by stage0, so no image manifest is parsed here.

Paths in the AppSpecs are in the pod init's view after it pivoted into the stage1
rootfs (see sandbox.py): the pod dir at ``/opt/podrun/pod``, trees at
``/opt/podrun/trees/<key>``, host volumes at ``/opt/podrun/volumes/<name>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from podrun.errors import PodError

if TYPE_CHECKING:
    from podrun.stage2.app import AppSpec
    from podrun.stage2.cgroups import Resources

POD_IN = "/opt/podrun/pod"
TREES_IN = "/opt/podrun/trees"
VOLUMES_IN = "/opt/podrun/volumes"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PIDS_LIMIT = "podrun.io/pids-limit"
SETID_CAPS = frozenset({6, 7})  # CAP_SETGID, CAP_SETUID


def isolators(app: dict[str, Any]) -> dict[str, Any]:
    return {i["name"]: i.get("value") for i in app.get("isolators", [])}


def app_resources(app: dict[str, Any]) -> Resources:
    from podrun.appc.types import parse_quantity, parse_quantity_milli
    from podrun.stage2.cgroups import Resources

    iso = isolators(app)
    mem = (iso.get("resource/memory") or {}).get("limit")
    cpu = (iso.get("resource/cpu") or {}).get("limit")
    shares = iso.get("os/linux/cpu-shares")
    anns = {a["name"]: a["value"] for a in app.get("annotations", [])}
    pids = anns.get(PIDS_LIMIT)
    return Resources(
        memory_limit=parse_quantity(mem) if mem is not None else None,
        cpu_quota_millis=parse_quantity_milli(cpu) if cpu is not None else None,
        cpu_shares=int(shares) if shares is not None else None,
        pids_limit=int(pids) if pids else None,
    )


def app_env(name: str, app: dict[str, Any]) -> dict[str, str]:
    env = {e["name"]: e["value"] for e in app.get("environment", [])}
    env.setdefault("PATH", DEFAULT_PATH)
    env["AC_APP_NAME"] = name
    env["container"] = "podrun"
    return env


def caps_and_seccomp(app: dict[str, Any]) -> tuple[set[int], Any, bool]:
    """(capability set, seccomp filter, no_new_privs) from an app's isolators."""
    from podrun.stage2 import caps as capmod
    from podrun.stage2 import seccomp

    iso = isolators(app)
    retain = (iso.get("os/linux/capabilities-retain-set") or {}).get("set")
    remove = (iso.get("os/linux/capabilities-remove-set") or {}).get("set")
    try:
        caps = capmod.resolve(retain, remove)
    except ValueError as err:
        raise PodError(f"capabilities: {err}") from None
    try:
        if "os/linux/seccomp-retain-set" in iso:
            v = iso["os/linux/seccomp-retain-set"]
            filt = seccomp.build_filter("retain", v["set"], v.get("errno"))
        elif "os/linux/seccomp-remove-set" in iso:
            v = iso["os/linux/seccomp-remove-set"]
            filt = seccomp.build_filter("remove", v["set"], v.get("errno"))
        else:
            filt = seccomp.default_profile({capmod.cap_name(c) for c in caps})
    except ValueError as err:
        raise PodError(f"seccomp: {err}") from None
    nnp = bool(iso.get("os/linux/no-new-privileges"))
    if not SETID_CAPS <= caps:
        # A setuid/setgid file must give nothing the isolators did not grant (DESIGN):
        # an app that cannot change its own ids may not gain them by exec either.
        nnp = True
    return caps, filt, nnp


@dataclass
class View:
    """Where the pod's pieces are, as seen by the process that launches the apps."""

    pod: str = POD_IN
    trees: str | None = TREES_IN      # None: the trees' own (host) paths from pod.json
    volumes: str | None = VOLUMES_IN  # None: host volumes at their host source

    def tree(self, info_app: dict[str, Any]) -> str:
        if self.trees is None:
            return f"{info_app['tree']}/rootfs"
        return f"{self.trees}/{info_app['tree_key']}/rootfs"

    def volume(self, vol: dict[str, Any]) -> str:
        return vol["source"] if self.volumes is None else f"{self.volumes}/{vol['name']}"


def check_isolators(name: str, app: dict[str, Any]) -> None:
    """Capability and syscall names must exist (checked by stage0 before the pod runs)."""
    from podrun.stage2 import caps as capmod
    from podrun.stage2 import seccomp

    iso = isolators(app)
    retain = (iso.get("os/linux/capabilities-retain-set") or {}).get("set")
    remove = (iso.get("os/linux/capabilities-remove-set") or {}).get("set")
    try:
        if retain is not None or remove is not None:
            capmod.resolve(retain, remove)
        for mode in ("retain", "remove"):
            value = iso.get(f"os/linux/seccomp-{mode}-set")
            if value:
                seccomp.build_filter(mode, value["set"], value.get("errno"))  # type: ignore[arg-type]
    except ValueError as err:
        raise PodError(f"app {name}: {err}") from None


def app_specs(manifest: dict[str, Any], info: dict[str, Any], *,
              etc_files: dict[str, str], view: View | None = None) -> list[AppSpec]:
    from podrun.stage2.app import AppSpec, MountSpec

    view = view or View()
    volumes = {v["name"]: v for v in manifest.get("volumes", [])}
    seeds = info.get("seed_volumes", {})
    specs = []
    for rapp in manifest["apps"]:
        name = rapp["name"]
        app = rapp["app"]
        mps = {mp["path"].rstrip("/"): mp for mp in app.get("mountPoints", [])}
        mounts = []
        for m in rapp.get("mounts", []):
            vol = volumes[m["volume"]]
            mp_ro = bool(mps.get(m["path"].rstrip("/"), {}).get("readOnly"))
            ro = bool(vol.get("readOnly")) or mp_ro
            if vol["kind"] == "host":
                mounts.append(MountSpec(target=m["path"], source=view.volume(vol),
                                        kind="bind", read_only=ro,
                                        recursive=vol.get("recursive", True) is not False))
            else:
                seed = seeds.get(vol["name"])
                mounts.append(MountSpec(
                    target=m["path"], source=f"{view.pod}/volumes/{vol['name']}", kind="bind",
                    read_only=ro, recursive=False,
                    seed_from_image=bool(seed and seed["app"] == name),
                    mode=int(vol["mode"], 8) if vol.get("mode") else None,
                    uid=vol.get("uid"), gid=vol.get("gid")))
        caps, filt, nnp = caps_and_seccomp(app)
        iso = isolators(app)
        specs.append(AppSpec(
            name=name,
            lower=view.tree(info["apps"][name]),
            app_dir=f"{view.pod}/apps/{name}",
            exec=list(app["exec"]),
            env=app_env(name, app),
            user=str(app.get("user") or "0"),
            group=str(app.get("group") or "0"),
            supplementary_gids=list(app.get("supplementaryGIDs", [])),
            working_dir=app.get("workingDirectory") or "/",
            read_only_rootfs=bool(rapp.get("readOnlyRootFS")),
            overlay=bool(info.get("overlay", True)),
            mounts=mounts,
            hostname=None,
            etc_files=dict(etc_files),
            caps=caps,
            no_new_privs=nnp,
            seccomp=filt,
            oom_score_adj=iso.get("os/linux/oom-score-adj"),
        ))
    return specs


def handler_spec(spec: AppSpec, exec_: list[str]) -> AppSpec:
    """The spec of an event handler: the app's own, running ``exec_`` instead."""
    import dataclasses

    return dataclasses.replace(spec, exec=list(exec_))


def sysctls(manifest: dict[str, Any]) -> dict[str, str]:
    for iso in manifest.get("isolators", []):
        if iso.get("name") == "os/unix/sysctl":
            return {str(k): str(v) for k, v in (iso.get("value") or {}).items()}
    return {}


NAMESPACED_SYSCTLS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                      "kernel.shmall", "kernel.shmmax", "kernel.shmmni",
                      "kernel.shm_rmid_forced")


def check_sysctl(name: str, net: str) -> None:
    """Only sysctls that live in the pod's own namespaces may be set (runc's rule)."""
    if name in NAMESPACED_SYSCTLS:
        return
    if name.startswith("fs.mqueue."):
        return
    if name.startswith("net."):
        if net == "host":
            raise PodError(f"sysctl {name}: the pod shares the host's network (--net=host)")
        return
    raise PodError(f"sysctl {name} is not namespaced: it would change the host")
