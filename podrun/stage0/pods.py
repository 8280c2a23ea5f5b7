"""The pod lifecycle on disk: pod directories, their states, locks and gc.

A pod is ``<data>/pods/<dir>/<uuid>/``; its state is the directory it sits in plus
whether its lock is held (docs/pods.md). The lock is ``flock(2)`` on an
``O_DIRECTORY`` fd of the pod dir; every transition is one ``rename(2)`` of the pod
dir between state dirs, done while holding that lock. No daemon: a ``run/`` pod
whose lock is free has exited, whatever killed it.

This is a library (a long-running front end may call it): it never prints; it
raises :mod:`podrun.errors` and reports through the ``log`` callbacks it is given.

Design notes (where docs/pods.md is silent):

- The state of a pod is probed with ``LOCK_EX|LOCK_NB`` on a *new* fd (a new open
  file description, so it also conflicts with a lock this process holds through
  another fd) and released at once. Only ``prepare/`` and ``run/`` are probed: in
  the other dirs the lock carries no meaning, and not probing them keeps a ``list``
  from making a concurrent ``run-prepared`` lock attempt fail spuriously.
- A pod can move while we look at it. Opening a vanished path re-locates the pod by
  UUID across the state dirs; after a blocking lock we re-locate by inode, so the
  Pod's ``path`` is where the locked directory is now.
- Times: ``created`` is ``pod.json``'s ``created`` (written by :meth:`PodStore.create`;
  keep it when rewriting pod.json, e.g. through :meth:`Pod.update_info`), else the
  mtime of the ``pod`` manifest; ``started`` is ``runtime.json``'s ``started``. The
  time a pod entered ``prepared/`` is the ctime of its dir (rename(2) sets it and
  nothing writes into a prepared pod); the time gc marked a pod is in ``gc.json``.
- Embryos (a creator died between mkdir and rename, a window of microseconds) older
  than :data:`EMBRYO_EXPIRY` seconds are moved to ``garbage/`` by gc.
- gc sweeps with the stage1 gc entrypoint, called in-process
  (:func:`podrun.stage1.gc.gc_pod`); ``PodStore.gc``'s ``teardown`` argument is the
  seam for running a third-party stage1's gc entrypoint instead.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid as uuidlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from podrun.errors import AmbiguousError, NotFoundError, PodError
from podrun.fsutil import atomic_write, fsync_dir, rmtree
from podrun.stage1.status import app_exit_code, pod_exit_code

if TYPE_CHECKING:
    from podrun.appc.manifest import PodManifest

STATE_DIRS = ("embryo", "prepare", "prepared", "run", "exited-garbage", "garbage")

#: states as :meth:`Pod.state` reports them
EMBRYO = "embryo"
PREPARING = "preparing"
ABORTED_PREPARE = "aborted-prepare"
PREPARED = "prepared"
RUNNING = "running"
EXITED = "exited"
EXITED_GARBAGE = "exited-garbage"
GARBAGE = "garbage"

#: seconds after which gc treats a leftover embryo as garbage
EMBRYO_EXPIRY = 60.0

MANIFEST_FILE = "pod"
INFO_FILE = "pod.json"
RUNTIME_FILE = "runtime.json"
GC_FILE = "gc.json"

Log = Callable[[str], None]
Teardown = Callable[[Path], None]


def write_json(path: Path, obj: Any) -> None:
    """Write *obj* as JSON to *path* atomically (readers see old or new, never half)."""
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def _read_json(path: Path) -> Any | None:
    """The JSON in *path*, or None if it does not exist (or is being replaced)."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise PodError(f"cannot read {path}: {e}") from e


def _open_dir(path: Path, cloexec: bool = True) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    if not cloexec:  # Python opens every fd non-inheritable (PEP 446)
        os.set_inheritable(fd, True)
    return fd


def _flock(fd: int, blocking: bool) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def _is_uuid(name: str) -> bool:
    try:
        return str(uuidlib.UUID(name)) == name
    except ValueError:
        return False


class Pod:
    """One pod directory. Cheap to make; every query reads the disk afresh."""

    def __init__(self, pods_dir: Path, uuid: str, dir_state: str) -> None:
        if dir_state not in STATE_DIRS:
            raise ValueError(f"unknown pod state dir {dir_state!r}")
        self.pods_dir = pods_dir
        self.uuid = uuid
        self.dir_state = dir_state
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"Pod({self.uuid}, {self.dir_state})"

    @property
    def path(self) -> Path:
        return self.pods_dir / self.dir_state / self.uuid

    # -- locating ---------------------------------------------------------------

    def relocate(self) -> None:
        """Find the pod again after it moved (by UUID); NotFoundError if it is gone."""
        for d in STATE_DIRS:
            if (self.pods_dir / d / self.uuid).is_dir():
                self.dir_state = d
                return
        raise NotFoundError(f"pod {self.uuid} no longer exists")

    def _relocate_by_inode(self, fd: int) -> None:
        st = os.fstat(fd)
        for d in (self.dir_state, *STATE_DIRS):
            try:
                cand = os.stat(self.pods_dir / d / self.uuid)
            except FileNotFoundError:
                continue
            if (cand.st_dev, cand.st_ino) == (st.st_dev, st.st_ino):
                self.dir_state = d
                return
        raise NotFoundError(f"pod {self.uuid} was removed while waiting for its lock")

    def _open(self, cloexec: bool = True) -> int:
        for _ in range(len(STATE_DIRS) + 1):
            try:
                return _open_dir(self.path, cloexec)
            except FileNotFoundError:
                self.relocate()
        raise NotFoundError(f"pod {self.uuid} keeps moving; try again")

    # -- locking ----------------------------------------------------------------

    @property
    def lock_fd(self) -> int | None:
        return self._fd

    def lock(self, *, blocking: bool = True, cloexec: bool = True) -> bool:
        """Take the pod's exclusive lock; False if not *blocking* and someone holds it.

        The lock lives on an ``O_DIRECTORY`` fd of the pod dir (``O_CLOEXEC`` unless
        *cloexec* is False, for handing it to stage1 across exec). After a wait the
        pod may have moved: ``path`` is re-pointed at the locked directory.
        """
        if self._fd is not None:
            return True
        fd = self._open(cloexec)
        try:
            if not _flock(fd, blocking):
                os.close(fd)
                return False
            self._relocate_by_inode(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def unlock(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only fd of the description drops the flock
            self._fd = None

    def is_locked(self) -> bool:
        """True if anyone (this process included, through another fd) holds the lock."""
        if self._fd is not None:
            return True
        fd = self._open()
        try:
            if _flock(fd, blocking=False):
                fcntl.flock(fd, fcntl.LOCK_UN)
                return False
            return True
        finally:
            os.close(fd)

    def __enter__(self) -> Pod:
        self.lock()
        return self

    def __exit__(self, *exc: object) -> None:
        self.unlock()

    # -- state ------------------------------------------------------------------

    def state(self) -> str:
        """embryo, preparing, aborted-prepare, prepared, running, exited,
        exited-garbage or garbage (see docs/pods.md)."""
        for _ in range(len(STATE_DIRS)):
            d = self.dir_state
            if d not in ("prepare", "run"):
                break
            locked = self.is_locked()  # may re-locate the pod if it moved meanwhile
            if self.dir_state != d:
                continue
            if d == "prepare":
                return PREPARING if locked else ABORTED_PREPARE
            return RUNNING if locked else EXITED
        return {"embryo": EMBRYO, "prepared": PREPARED, "exited-garbage": EXITED_GARBAGE,
                "garbage": GARBAGE, "prepare": ABORTED_PREPARE, "run": EXITED}[self.dir_state]

    def move(self, to: str) -> None:
        """rename(2) the pod dir into state dir *to*; fsync both state dirs.

        The caller holds the lock where the transition needs it; a held lock fd stays
        valid (the flock is on the inode, which does not change).
        """
        if to not in STATE_DIRS:
            raise ValueError(f"unknown pod state dir {to!r}")
        src_parent = self.pods_dir / self.dir_state
        dst_parent = self.pods_dir / to
        dst_parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(self.path, dst_parent / self.uuid)
        except OSError as e:
            raise PodError(f"cannot move pod {self.uuid} from {self.dir_state}/ to {to}/: "
                           f"{e.strerror}") from e
        self.dir_state = to
        fsync_dir(dst_parent)
        if src_parent != dst_parent:
            fsync_dir(src_parent)

    # -- content ----------------------------------------------------------------

    def manifest_json(self) -> dict[str, Any]:
        """The pod manifest as raw JSON (no validation); NotFoundError if not written yet."""
        data = _read_json(self.path / MANIFEST_FILE)
        if data is None:
            raise NotFoundError(f"pod {self.uuid} has no manifest (yet)")
        return data

    def manifest_bytes(self) -> bytes:
        try:
            return (self.path / MANIFEST_FILE).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"pod {self.uuid} has no manifest (yet)") from None

    def manifest(self) -> PodManifest:
        from podrun.appc.manifest import PodManifest

        return PodManifest.from_json(self.manifest_bytes(), trusted=True)

    def app_names(self) -> list[str]:
        """App names in manifest order ([] while the manifest is not written)."""
        try:
            data = self.manifest_json()
        except NotFoundError:
            return []
        return [a.get("name", "") for a in data.get("apps") or []]

    def info(self) -> dict[str, Any]:
        """pod.json ({} if not written yet)."""
        return _read_json(self.path / INFO_FILE) or {}

    def update_info(self, **fields: Any) -> None:
        """Merge *fields* into pod.json (atomically; the caller holds the lock)."""
        info = self.info()
        info.update(fields)
        write_json(self.path / INFO_FILE, info)

    def runtime(self) -> dict[str, Any] | None:
        """runtime.json, written by stage1; None before the pod has started."""
        return _read_json(self.path / RUNTIME_FILE)

    def gc_info(self) -> dict[str, Any] | None:
        return _read_json(self.path / GC_FILE)

    def app_status(self, name: str) -> dict[str, Any] | None:
        return _read_json(self.path / "apps" / name / "status.json")

    def app_statuses(self) -> dict[str, dict[str, Any] | None]:
        """Per app, in manifest order: its status.json, or None while it has not finished."""
        return {name: self.app_status(name) for name in self.app_names()}

    def exit_code(self) -> int | None:
        """The pod's exit code by ``podrun run``'s rule; None while an app is unfinished.

        One app: its own code (128+N if killed by signal N). Several: the first
        non-zero code in manifest order, else 0.
        """
        statuses = self.app_statuses()
        return pod_exit_code(list(statuses.values())) if statuses else None

    @property
    def created(self) -> float | None:
        created = self.info().get("created")
        if isinstance(created, int | float):
            return float(created)
        try:
            return (self.path / MANIFEST_FILE).stat().st_mtime
        except FileNotFoundError:
            return None

    @property
    def started(self) -> float | None:
        rt = self.runtime()
        started = rt.get("started") if rt else None
        return float(started) if isinstance(started, int | float) else None

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for ``list``/``status`` (and any front end).

        Keys: uuid, state, created, started, finished (latest app end, once all ended),
        pid (stage1's, -1 if never started), exited, exit_code (the pod's, or None),
        apps: [{name, image_name, image_version?, image_id, and once the app ended:
        exit_code (128+N if killed by signal N), signal (N or None), oom_killed,
        started, finished}].
        """
        state = self.state()
        rt = self.runtime() or {}
        try:
            manifest = self.manifest_json()
        except NotFoundError:
            manifest = {}
        apps, finished = [], []
        for app in manifest.get("apps") or []:
            image = app.get("image") or {}
            entry: dict[str, Any] = {"name": app.get("name", ""),
                                     "image_name": image.get("name") or "",
                                     "image_id": image.get("id") or ""}
            version = _label(image.get("labels"), "version")
            if version:
                entry["image_version"] = version
            st = self.app_status(entry["name"])
            if st is not None:
                entry.update(exit_code=app_exit_code(st), signal=st.get("signal") or None,
                             oom_killed=bool(st.get("oom_killed")),
                             started=st.get("started"), finished=st.get("finished"))
                if isinstance(st.get("finished"), int | float):
                    finished.append(float(st["finished"]))
            apps.append(entry)
        exit_code = self.exit_code()
        pid = rt.get("pid")
        return {
            "uuid": self.uuid,
            "state": state,
            "created": self.created,
            "started": self.started,
            "finished": max(finished) if exit_code is not None and finished else None,
            "pid": pid if isinstance(pid, int) else -1,
            "exited": state in (EXITED, EXITED_GARBAGE) or (
                state == GARBAGE and bool(rt)),
            "exit_code": exit_code,
            "network": rt.get("net") or self.info().get("net"),
            "hostname": rt.get("hostname"),
            "apps": apps,
        }

    def state_since(self) -> float:
        """When the pod entered its current state dir (ctime of the dir: rename sets it)."""
        return self.path.stat().st_ctime


def _label(labels: object, name: str) -> str | None:
    for item in labels if isinstance(labels, list) else []:
        if isinstance(item, dict) and item.get("name") == name:
            return str(item.get("value"))
    return None


class PodStore:
    """All pods under ``<data_dir>/pods``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.pods_dir = self.data_dir / "pods"

    def _ensure_dirs(self) -> None:
        for d in STATE_DIRS:
            (self.pods_dir / d).mkdir(parents=True, exist_ok=True)

    def create(self) -> Pod:
        """A new pod: mkdir in ``embryo/``, lock, record ``created``, move to ``prepare/``.

        Returns the pod locked (state preparing); the caller prepares it, then moves it
        to ``prepared/`` (or ``run/``) and unlocks, or moves it to ``garbage/`` on failure.
        """
        self._ensure_dirs()
        while True:
            pod = Pod(self.pods_dir, str(uuidlib.uuid4()), "embryo")
            try:
                os.mkdir(pod.path, 0o750)
            except FileExistsError:  # pragma: no cover - a uuid4 collision
                continue
            break
        pod.lock()
        try:
            write_json(pod.path / INFO_FILE, {"uuid": pod.uuid, "created": time.time()})
            pod.move("prepare")
        except BaseException:
            pod.unlock()
            raise
        return pod

    def _scan(self) -> list[Pod]:
        pods = []
        for d in STATE_DIRS:
            try:
                names = os.listdir(self.pods_dir / d)
            except FileNotFoundError:
                continue
            pods += [Pod(self.pods_dir, n, d) for n in names if _is_uuid(n)]
        return pods

    def list(self) -> list[Pod]:
        """Every pod in every state, oldest first (by creation time)."""
        pods = self._scan()
        seen: dict[str, Pod] = {}
        for p in pods:  # a pod caught mid-rename may show twice: keep one
            seen.setdefault(p.uuid, p)

        def key(p: Pod) -> tuple[float, str]:
            try:
                return (p.created or 0.0, p.uuid)
            except (PodError, OSError):
                return (0.0, p.uuid)

        return sorted(seen.values(), key=key)

    def get(self, ref: str) -> Pod:
        """The pod whose UUID is *ref* or starts with *ref* (unique prefix)."""
        ref = ref.strip().lower()
        if not ref:
            raise NotFoundError("empty pod UUID")
        matches: dict[str, Pod] = {}
        for p in self._scan():
            if p.uuid.startswith(ref):
                matches.setdefault(p.uuid, p)
        if not matches:
            raise NotFoundError(f"no pod matches {ref!r}")
        if len(matches) > 1:
            shown = ", ".join(sorted(matches)[:5])
            raise AmbiguousError(f"pod {ref!r} is ambiguous: it matches {shown}"
                                 + (" …" if len(matches) > 5 else ""))
        return next(iter(matches.values()))

    # -- gc ---------------------------------------------------------------------

    def gc(self, grace_period: float, expire_prepared: float, *, mark_only: bool = False,
           log: Log = lambda s: None,
           on_error: Callable[[str, str], None] = lambda uuid, msg: None,
           teardown: Teardown | None = None) -> list[str]:
        """Two-phase garbage collection; returns the UUIDs of the pods removed.

        Mark: exited pods (``run/``, unlocked) → ``exited-garbage/`` with gc.json;
        aborted prepares, prepared pods older than *expire_prepared* seconds and stale
        embryos → ``garbage/``. Sweep (unless *mark_only*): ``exited-garbage/`` pods
        marked more than *grace_period* seconds ago and every ``garbage/`` pod are
        locked, torn down (stage1 gc) and deleted. A pod that cannot be torn down or
        deleted stays for the next gc; it is reported through *on_error* (and *log*)
        and gc goes on with the others.
        """
        now = time.time()
        for pod in self._scan():
            try:
                self._mark(pod, now, expire_prepared, log)
            except (PodError, OSError) as e:
                log(f"pod {pod.uuid}: cannot mark: {e}")
                on_error(pod.uuid, f"cannot mark: {e}")
        if mark_only:
            return []
        removed = []
        now = time.time()
        for pod in self._scan():
            if pod.dir_state == "garbage" or (
                    pod.dir_state == "exited-garbage"
                    and now - self._marked_at(pod) >= grace_period):
                try:
                    if self._sweep(pod, log, teardown):
                        removed.append(pod.uuid)
                except (PodError, OSError) as e:
                    log(f"pod {pod.uuid}: not removed: {e}")
                    on_error(pod.uuid, str(e))
        return removed

    def _mark(self, pod: Pod, now: float, expire_prepared: float, log: Log) -> None:
        d = pod.dir_state
        if d == "run":
            target = "exited-garbage"
        elif d == "prepare":
            target = "garbage"
        elif d == "prepared" and now - pod.state_since() >= expire_prepared:
            target = "garbage"
        elif d == "embryo" and now - pod.state_since() >= EMBRYO_EXPIRY:
            target = "garbage"
        else:
            return
        if not pod.lock(blocking=False):
            return  # running, preparing, or being started: not garbage
        try:
            if pod.dir_state != d:
                return  # moved while we looked
            self._mark_locked(pod, target)
            log(f"pod {pod.uuid}: moved from {d}/ to {target}/")
        finally:
            pod.unlock()

    @staticmethod
    def _mark_locked(pod: Pod, target: str) -> None:
        write_json(pod.path / GC_FILE, {"marked": time.time(), "from": pod.dir_state})
        pod.move(target)

    @staticmethod
    def _marked_at(pod: Pod) -> float:
        try:
            marked = (pod.gc_info() or {}).get("marked")
            if isinstance(marked, int | float):
                return float(marked)
            return pod.state_since()
        except (PodError, OSError):
            return 0.0

    def _sweep(self, pod: Pod, log: Log, teardown: Teardown | None) -> bool:
        """Lock, tear down and delete a garbage pod; False if someone holds it."""
        if not pod.lock(blocking=False):
            log(f"pod {pod.uuid}: busy, left for the next gc")
            return False
        try:
            if pod.dir_state not in ("garbage", "exited-garbage"):
                return False
            self._sweep_locked(pod, log, teardown)
            return True
        finally:
            pod.unlock()

    @staticmethod
    def _sweep_locked(pod: Pod, log: Log, teardown: Teardown | None) -> None:
        if teardown is None:
            from podrun.stage0.launch import call_entrypoint

            def teardown(path: Path) -> None:
                call_entrypoint(path, "gc", [path.name])
        try:
            teardown(pod.path)
        except Exception as e:
            raise PodError(f"teardown of pod {pod.uuid} failed: {e}") from e
        try:
            rmtree(pod.path)
        except OSError as e:
            where = e.filename or pod.path
            raise PodError(f"cannot delete pod {pod.uuid}: {where}: {e.strerror}") from e
        fsync_dir(pod.path.parent)
        log(f"pod {pod.uuid}: removed")

    def remove(self, pod: Pod, *, log: Log = lambda s: None,
               teardown: Teardown | None = None) -> None:
        """``rm``: mark then sweep at once (no grace period).

        Exited, prepared, aborted-prepare and garbage pods go; a running pod (or one
        being prepared) raises PodError. A failed teardown leaves the pod in
        ``garbage/``/``exited-garbage/`` for gc and raises PodError naming it.
        """
        if not pod.lock(blocking=False):
            what = {"run": "is running (stop it first)",
                    "prepare": "is being prepared"}.get(pod.dir_state, "is busy (locked)")
            raise PodError(f"pod {pod.uuid} {what}")
        try:
            target = {"run": "exited-garbage", "prepare": "garbage", "prepared": "garbage",
                      "embryo": "garbage"}.get(pod.dir_state)
            if target:
                self._mark_locked(pod, target)
            self._sweep_locked(pod, log, teardown)
        finally:
            pod.unlock()
