"""Preparing a pod: from ``podrun run``/``prepare`` arguments (or a pod manifest) to a pod dir.

Steps, in order, each able to fail with one clear line and no pod left behind:
1. check every flag (volumes, mounts, isolators, stage1 choice) before any fetch;
2. fetch the images (and the stage1 image), through the same Fetcher as ``podrun fetch``;
3. build the appc PodManifest — each app's full App (the image's, with the flags'
   overrides applied) is written into the manifest, so stage1 reads nothing else;
4. create the pod (embryo → prepare, locked), write ``pod`` and ``pod.json``,
   render every tree, then move it to ``prepared``. Any error removes the pod dir.

Defaults (appc/rkt rules): the app name is the last element of the image name made
a valid AC name; a mountPoint that no volume serves gets an implicit ``empty`` volume
seeded with the image's content at that path (what rkt and Docker do).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podrun.errors import PodError, UsageError
from podrun.stage0.runargs import AppArgs, RunArgs, bool_value

if TYPE_CHECKING:
    from podrun.stage0.context import Context
    from podrun.stage0.fetch import Fetcher
    from podrun.stage0.pods import Pod
    from podrun.store.store import Store

NETS = ("none", "host")
DEFAULT_STOP_TIMEOUT = 10.0
USER_ANNOTATION = "podrun.io/user-annotation/"
USER_LABEL = "podrun.io/user-label/"
PIDS_LIMIT = "podrun.io/pids-limit"


@dataclass
class PodPlan:
    """Everything prepare decided, before anything is written."""

    manifest: dict[str, Any]
    app_images: dict[str, str]                # app name → image ID
    seed_volumes: dict[str, dict[str, str]]   # volume → {"app": name, "path": in-app path}
    options: dict[str, Any] = field(default_factory=dict)


def app_name_from_image(name: str) -> str:
    """appc/rkt rule: the last path element of the image name, as a valid AC name."""
    last = name.rstrip("/").rsplit("/", 1)[-1].lower()
    last = re.sub(r"[^a-z0-9]+", "-", last).strip("-")
    return last or "app"


def parse_kv_list(text: str, flag: str) -> tuple[str | None, dict[str, str]]:
    """``NAME,k=v,k=v`` (rkt's --volume) or ``k=v,k=v`` (--mount) → (name, dict)."""
    head: str | None = None
    out: dict[str, str] = {}
    for i, part in enumerate(text.split(",")):
        if "=" not in part:
            if i == 0:
                head = part
                continue
            raise UsageError(f"{flag} {text!r}: {part!r} is not KEY=VALUE")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return head, out


def parse_volume(text: str) -> dict[str, Any]:
    name, kv = parse_kv_list(text, "--volume")
    if not name:
        raise UsageError(f"--volume {text!r}: expected NAME,kind=host|empty,…")
    kind = kv.pop("kind", None)
    if kind not in ("host", "empty"):
        raise UsageError(f"--volume {name}: kind must be host or empty")
    vol: dict[str, Any] = {"name": name, "kind": kind}
    if kind == "host":
        src = kv.pop("source", None)
        if not src:
            raise UsageError(f"--volume {name}: kind=host needs source=/host/path")
        if not os.path.isabs(src):
            raise UsageError(f"--volume {name}: source {src!r} must be an absolute path")
        if not os.path.exists(src):
            raise UsageError(f"--volume {name}: source {src} does not exist")
        vol["source"] = src
    for key in ("readOnly", "recursive"):
        if key in kv:
            vol[key] = bool_value(f"--volume {name} {key}", kv.pop(key))
    if kind == "empty":
        for key in ("mode", "uid", "gid"):
            if key in kv:
                val = kv.pop(key)
                if key == "mode":
                    if not re.fullmatch(r"0?[0-7]{3,4}", val):
                        raise UsageError(f"--volume {name}: mode {val!r} is not octal")
                    vol["mode"] = val
                else:
                    if not val.isdigit():
                        raise UsageError(f"--volume {name}: {key} {val!r} is not a number")
                    vol[key] = int(val)
    if kv:
        raise UsageError(f"--volume {name}: unknown option {next(iter(kv))!r}")
    return vol


def parse_mount(text: str) -> dict[str, str]:
    _, kv = parse_kv_list("," + text, "--mount")
    vol, target = kv.pop("volume", None), kv.pop("target", None)
    if not vol or not target:
        raise UsageError(f"--mount {text!r}: expected volume=NAME,target=/path")
    if not target.startswith("/"):
        raise UsageError(f"--mount {text!r}: target must be an absolute path")
    if kv:
        raise UsageError(f"--mount {text!r}: unknown option {next(iter(kv))!r}")
    return {"volume": vol, "path": target}


def parse_env(text: str, flag: str) -> tuple[str, str]:
    if "=" not in text or text.startswith("="):
        raise UsageError(f"{flag} {text!r}: expected NAME=VALUE")
    k, v = text.split("=", 1)
    return k, v


def read_env_file(path: str) -> list[tuple[str, str]]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise UsageError(f"--set-env-file {path}: {err.strerror}") from None
    out = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise UsageError(f"--set-env-file {path}:{n}: expected NAME=VALUE")
        k, v = line.split("=", 1)
        out.append((k.strip(), v))
    return out


def _set_isolator(isolators: list[dict[str, Any]], name: str, value: Any) -> None:
    isolators[:] = [i for i in isolators if i.get("name") != name]
    isolators.append({"name": name, "value": value})


def parse_seccomp(text: str) -> tuple[str, dict[str, Any]]:
    parts = [p for p in text.split(",") if p]
    mode, errno, syscalls = None, None, []
    for p in parts:
        if p.startswith("mode="):
            mode = p[5:]
        elif p.startswith("errno="):
            errno = p[6:]
        else:
            syscalls.append(p)
    if mode not in ("retain", "remove"):
        raise UsageError(f"--seccomp {text!r}: mode must be retain or remove")
    if not syscalls:
        raise UsageError(f"--seccomp {text!r}: no syscalls given")
    value: dict[str, Any] = {"set": syscalls}
    if errno:
        value["errno"] = errno
    return f"os/linux/seccomp-{mode}-set", value


def apply_app_flags(app: dict[str, Any], a: AppArgs, pod_env: list[tuple[str, str]]) -> None:
    """Apply one app's flags (and pod-wide env) to its App dict, in place."""
    exe = a.get("--exec")
    if exe is not None or a.args is not None:
        base = app.get("exec") or []
        if exe is not None:
            app["exec"] = [exe, *(a.args or [])]
        else:
            if not base:
                raise UsageError(f"image {a.image} has no exec: give --exec")
            app["exec"] = [base[0], *(a.args or [])]
    env = {e["name"]: e["value"] for e in app.get("environment", [])}
    for k, v in pod_env:
        env[k] = v
    for text in a.all("--environment"):
        k, v = parse_env(text, "--environment")
        env[k] = v
    if env:
        app["environment"] = [{"name": k, "value": v} for k, v in env.items()]
    for flag, key in (("--user", "user"), ("--group", "group"),
                      ("--working-dir", "workingDirectory")):
        val = a.get(flag)
        if val is not None:
            app[key] = val
    gids = a.get("--supplementary-gids")
    if gids is not None:
        try:
            app["supplementaryGIDs"] = [int(g) for g in gids.split(",") if g]
        except ValueError:
            raise UsageError(f"--supplementary-gids {gids!r}: expected numbers") from None
    isos: list[dict[str, Any]] = list(app.get("isolators", []))
    for flag in ("--memory", "--cpu"):
        if a.get(flag):
            from podrun.appc.types import quantity_value

            try:
                value = quantity_value(a.get(flag) or "")
            except ValueError as err:
                raise UsageError(f"{flag}: {err}") from None
            if value <= 0:
                raise UsageError(f"{flag} {a.get(flag)!r}: must be more than zero")
    if a.get("--memory"):
        _set_isolator(isos, "resource/memory", {"limit": a.get("--memory")})
    if a.get("--cpu"):
        _set_isolator(isos, "resource/cpu", {"limit": a.get("--cpu")})
    if a.get("--cpu-shares"):
        try:
            _set_isolator(isos, "os/linux/cpu-shares", int(a.get("--cpu-shares") or ""))
        except ValueError:
            raise UsageError(f"--cpu-shares {a.get('--cpu-shares')!r}: not a number") from None
    for flag, name in (("--caps-retain", "os/linux/capabilities-retain-set"),
                       ("--caps-remove", "os/linux/capabilities-remove-set")):
        val = a.get(flag)
        if val:
            caps = [c.strip().upper() for c in val.split(",") if c.strip()]
            caps = [c if c.startswith("CAP_") else "CAP_" + c for c in caps]
            _set_isolator(isos, name, {"set": caps})
    if a.get("--seccomp"):
        name, value = parse_seccomp(a.get("--seccomp") or "")
        isos = [i for i in isos if not i.get("name", "").startswith("os/linux/seccomp-")]
        isos.append({"name": name, "value": value})
    if a.get("--oom-score-adj") is not None:
        try:
            adj = int(a.get("--oom-score-adj") or "")
        except ValueError:
            raise UsageError("--oom-score-adj: not a number") from None
        if not -1000 <= adj <= 1000:
            raise UsageError(f"--oom-score-adj {adj}: must be between -1000 and 1000")
        _set_isolator(isos, "os/linux/oom-score-adj", adj)
    if isos:
        app["isolators"] = isos
    anns = {x["name"]: x["value"] for x in app.get("annotations", [])}
    for flag, prefix in (("--annotation", ""), ("--user-annotation", USER_ANNOTATION),
                         ("--user-label", USER_LABEL)):
        for text in a.all(flag):
            k, v = parse_env(text, flag)
            anns[prefix + k] = v
    if a.get("--pids-limit"):
        val = a.get("--pids-limit") or ""
        if not val.isdigit():
            raise UsageError(f"--pids-limit {val!r}: not a number")
        anns[PIDS_LIMIT] = val
    if anns:
        app["annotations"] = [{"name": k, "value": v} for k, v in anns.items()]


def plan_from_args(ctx: Context, ra: RunArgs, store: Store, fetcher: Fetcher) -> PodPlan:
    """Build the pod manifest from image arguments and flags."""
    from podrun import APPC_VERSION

    if not ra.apps:
        raise UsageError("no image given (podrun run IMAGE… or --pod-manifest FILE)")
    volumes = [parse_volume(v) for v in ra.all("--volume")]
    vol_names = [v["name"] for v in volumes]
    if len(set(vol_names)) != len(vol_names):
        raise UsageError("--volume: a volume name is given twice")
    pod_env: list[tuple[str, str]] = []
    for f in ra.all("--set-env-file"):
        pod_env += read_env_file(f)
    pod_env += [parse_env(t, "--set-env") for t in ra.all("--set-env")]
    # Check every app's mounts against the volumes before fetching anything.
    for a in ra.apps:
        for m in a.all("--mount"):
            mnt = parse_mount(m)
            if mnt["volume"] not in vol_names:
                raise UsageError(f"--mount {m!r} for {a.image}: no volume named "
                                 f"{mnt['volume']!r} (add --volume {mnt['volume']},kind=…)")
    apps: list[dict[str, Any]] = []
    app_images: dict[str, str] = {}
    names: set[str] = set()
    for a in ra.apps:
        if a.get("--signature"):
            fetcher.opts.signature = Path(a.get("--signature") or "")
        image_id = fetcher.fetch(a.image)
        fetcher.opts.signature = None
        rec = store.get(image_id)
        name = a.get("--name") or app_name_from_image(rec.name)
        if name in names:
            raise UsageError(f"two apps are called {name!r}: give one of them --name")
        names.add(name)
        app = json.loads(json.dumps(rec.manifest.get("app") or {}))
        apply_app_flags(app, a, pod_env)
        if not app.get("exec"):
            raise UsageError(f"image {a.image} has no app to run: give --exec")
        app.setdefault("user", "0")
        app.setdefault("group", "0")
        rapp: dict[str, Any] = {
            "name": name,
            "image": {"name": rec.name, "id": image_id,
                      "labels": [{"name": k, "value": v} for k, v in rec.labels.items()]},
            "app": app,
        }
        mounts = [parse_mount(m) for m in a.all("--mount")]
        if mounts:
            rapp["mounts"] = mounts
        ro = a.get("--readonly-rootfs")
        if ro is not None and bool_value("--readonly-rootfs", ro):
            rapp["readOnlyRootFS"] = True
        apps.append(rapp)
        app_images[name] = image_id
    manifest: dict[str, Any] = {"acVersion": APPC_VERSION, "acKind": "PodManifest",
                                "apps": apps}
    if volumes:
        manifest["volumes"] = volumes
    sysctls = {}
    for text in ra.all("--sysctl"):
        k, v = parse_env(text, "--sysctl")
        sysctls[k] = v
    if sysctls:
        manifest["isolators"] = [{"name": "os/unix/sysctl", "value": sysctls}]
    seeds = add_implicit_volumes(manifest)
    return PodPlan(manifest, app_images, seeds)


def plan_from_manifest(ctx: Context, path: str, ra: RunArgs, store: Store,
                       fetcher: Fetcher) -> PodPlan:
    """``--pod-manifest FILE``: a full appc PodManifest instead of image arguments."""
    from podrun.appc.manifest import PodManifest

    if ra.apps:
        raise UsageError("--pod-manifest cannot be combined with image arguments")
    for flag in ("--volume", "--set-env", "--set-env-file", "--sysctl"):
        if ra.all(flag):
            raise UsageError(f"{flag} cannot be combined with --pod-manifest "
                             "(put it in the manifest)")
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise UsageError(f"--pod-manifest {path}: {err.strerror}") from None
    PodManifest.from_json(raw).check_runnable()  # schema, actool's rules, runnable
    manifest = json.loads(raw)
    app_images: dict[str, str] = {}
    for i, rapp in enumerate(manifest.get("apps", [])):
        img = rapp.get("image", {})
        if img.get("id"):
            image_id = store.resolve(img["id"])
        else:
            labels = {lab["name"]: lab["value"] for lab in img.get("labels", [])}
            image_id = fetcher.fetch_name(img.get("name") or "", labels,
                                          f"apps[{i}].image {img.get('name')}")
        rec = store.get(image_id)
        if img.get("name") and img["name"] != rec.name:
            raise UsageError(f"--pod-manifest apps[{i}].image: {short(image_id)} is called "
                             f"{rec.name}, not {img['name']}")
        img["id"] = image_id
        img.setdefault("name", rec.name)
        if not rapp.get("app"):
            if not rec.manifest.get("app"):
                raise UsageError(f"--pod-manifest apps[{i}]: image {rec.name} has no app")
            rapp["app"] = json.loads(json.dumps(rec.manifest["app"]))
        app_images[rapp["name"]] = image_id
    seeds = add_implicit_volumes(manifest)
    return PodPlan(manifest, app_images, seeds)


def short(image_id: str) -> str:
    return image_id[:39]


def add_implicit_volumes(manifest: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Serve every unserved mountPoint: by a same-named volume, else an implicit one.

    Returns the implicit volumes that must be seeded from the image's content.
    """
    volumes = manifest.setdefault("volumes", [])
    by_name = {v["name"]: v for v in volumes}
    seeds: dict[str, dict[str, str]] = {}
    for rapp in manifest["apps"]:
        mounts = rapp.setdefault("mounts", [])
        served = {m["path"].rstrip("/") or "/" for m in mounts}
        for mp in (rapp.get("app") or {}).get("mountPoints", []):
            path = mp["path"].rstrip("/") or "/"
            if path in served:
                continue
            if mp["name"] in by_name:
                mounts.append({"volume": mp["name"], "path": mp["path"]})
            else:
                vname = f"{rapp['name']}-{mp['name']}"
                if vname not in by_name:
                    vol = {"name": vname, "kind": "empty"}
                    volumes.append(vol)
                    by_name[vname] = vol
                    seeds[vname] = {"app": rapp["name"], "path": mp["path"]}
                mounts.append({"volume": vname, "path": mp["path"]})
            served.add(path)
        if not mounts:
            rapp.pop("mounts")
    if not volumes:
        manifest.pop("volumes")
    return seeds


def pod_options(ctx: Context, ra: RunArgs) -> dict[str, Any]:
    """The pod-level flags, checked (stage1 reads them from pod.json)."""
    from podrun.timeutil import parse_duration

    net = ra.get("--net") or "none"
    if net not in NETS:
        raise UsageError(f"--net={net}: only none and host are available "
                         "(private networks come later)")
    hostname = ra.get("--hostname")
    if hostname is not None and not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,62})", hostname):
        raise UsageError(f"--hostname {hostname!r}: not a valid host name")
    stop_timeout = DEFAULT_STOP_TIMEOUT
    if ra.get("--stop-timeout"):
        stop_timeout = parse_duration(ra.get("--stop-timeout") or "", "--stop-timeout")
    chosen = [f for f in ("--stage1-name", "--stage1-path", "--stage1-flavor") if ra.get(f)]
    if len(chosen) > 1:
        raise UsageError(f"{chosen[0]} and {chosen[1]} conflict: choose one stage1")
    cgroup_parent = ra.get("--cgroup-parent") or os.environ.get("PODRUN_CGROUP_PARENT")
    if cgroup_parent is not None and not cgroup_parent.startswith("/"):
        raise UsageError(f"--cgroup-parent {cgroup_parent!r}: must be an absolute cgroup path")
    return {
        "net": net,
        "hostname": hostname,
        "interactive": ra.flag("--interactive"),
        "overlay": not ra.flag("--no-overlay"),
        "stop_timeout": stop_timeout,
        "cgroup_parent": cgroup_parent,
        "stage1": {f.removeprefix("--stage1-"): ra.get(f) for f in chosen},
    }


def check_sysctls(manifest: dict[str, Any], net: str) -> None:
    """Only sysctls of the pod's own namespaces (checked before any pod dir exists)."""
    from podrun.stage1.specs import check_sysctl, sysctls

    for name in sysctls(manifest):
        try:
            check_sysctl(name, net)
        except PodError as err:
            raise UsageError(str(err)) from None


def check_isolators(manifest: dict[str, Any]) -> None:
    """Capability and syscall names are known (before any pod dir exists)."""
    from podrun.stage1.specs import check_isolators as check

    for rapp in manifest["apps"]:
        try:
            check(rapp["name"], rapp["app"])
        except PodError as err:
            raise UsageError(str(err)) from None


def check_user(name: str, app: dict[str, Any], rootfs: Path) -> None:
    """User and group names must exist in the image's own /etc files (checked early)."""
    from podrun.stage2.users import resolve_user

    try:
        resolve_user(str(rootfs), str(app.get("user") or "0"), str(app.get("group") or "0"))
    except (ValueError, OSError) as err:
        raise UsageError(f"app {name}: {err}") from None


def prepare(ctx: Context, ra: RunArgs) -> Pod:
    """Prepare a pod; returns it in ``prepared/``, locked. Nothing is left on failure."""
    from podrun.fsutil import atomic_write, rmtree
    from podrun.stage0.fetch import Fetcher, FetchOptions
    from podrun.stage0.pods import PodStore
    from podrun.stage0.stage1img import resolve_stage1
    from podrun.store.store import Store

    opts = pod_options(ctx, ra)
    store = Store(ctx.data_dir, verify_on_render=not ctx.insecure.ondisk)
    fetcher = Fetcher(ctx, store, FetchOptions(pull_policy=ra.get("--pull-policy") or "new"))
    if ra.get("--pod-manifest"):
        plan = plan_from_manifest(ctx, ra.get("--pod-manifest") or "", ra, store, fetcher)
    else:
        plan = plan_from_args(ctx, ra, store, fetcher)
    if opts["interactive"] and len(plan.app_images) != 1:
        raise UsageError("--interactive needs exactly one app")
    from podrun.appc.manifest import PodManifest

    # The merged result must be valid too. Its structure is podrun's own (the images'
    # apps were schema-checked at import, --pod-manifest files above), so the schema
    # pass is skipped; every rule still runs, and what podrun needs to run it.
    PodManifest.from_json(plan.manifest, trusted=True).check_runnable()
    check_sysctls(plan.manifest, opts["net"])
    check_isolators(plan.manifest)
    stage1 = resolve_stage1(ctx, store, fetcher, opts.pop("stage1"))
    if stage1.flavor == "fly" and len(plan.app_images) != 1:
        raise UsageError("the fly stage1 runs exactly one app")
    pods = PodStore(ctx.data_dir)
    pod = pods.create()
    try:
        atomic_write(pod.path / "pod", json.dumps(plan.manifest, indent=2).encode())
        trees = {}
        apps = {a["name"]: a["app"] for a in plan.manifest["apps"]}
        for name, image_id in plan.app_images.items():
            tree = store.render(image_id)
            check_user(name, apps[name], tree.rootfs)
            trees[name] = {"image_id": image_id, "tree_key": tree.key, "tree": str(tree.path)}
        s1tree = store.render(stage1.image_id)
        keys = [t["tree_key"] for t in trees.values()] + [s1tree.key]
        info = {
            "version": 1,
            "uuid": pod.uuid,
            "created": time.time(),
            "apps": trees,
            "stage1": {**stage1.to_json(), "tree_key": s1tree.key, "tree": str(s1tree.path)},
            "seed_volumes": plan.seed_volumes,
            # stage1 holds these shared while the pod runs, so image gc keeps the trees.
            "tree_locks": [str(store.tree_lock(k).path) for k in dict.fromkeys(keys)],
            **opts,
        }
        atomic_write(pod.path / "pod.json", json.dumps(info, indent=2).encode())
        pod.move("prepared")
    except BaseException:
        rmtree(pod.path)
        pod.unlock()
        raise
    return pod


