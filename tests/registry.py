"""Docker/OCI test parts: a real registry, real test images, and the umoci oracle.

* :class:`Registry` runs Debian's ``docker-registry`` on 127.0.0.1 (a free port)
  with its own config and storage dir: open, htpasswd basic auth (bcrypt hash from
  the system's crypt(3)), or token auth, for which :class:`TokenIssuer` is the
  token service (RS256 JWTs signed with ``openssl dgst`` by a test key whose
  self-signed certificate is the registry's ``auth.token.rootcertbundle`` and is
  sent in the JWT's ``x5c`` header). Optionally HTTPS with a test CA.
* Image builders make OCI layouts with ``umoci`` from busybox-static, plus
  hand-made layers (:func:`add_layer`) for what umoci cannot produce on demand
  (hardlinks into a lower layer, devices, xattrs, a ``.`` root entry, owners).
  :func:`push` copies a layout image to a registry with ``skopeo copy``.
* The oracle :func:`tree_facts` describes a rootfs by path: type, mode, owner,
  size, content hash, link target, device numbers, and hardlink group (the
  sorted paths sharing an inode). Comparing podrun's rendered rootfs with
  ``umoci unpack``'s (:func:`umoci_rootfs`) is the conversion's correctness test.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import tarfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUSYBOX = Path("/bin/busybox")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(*args: str | os.PathLike[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed: {proc.stderr.strip()}")
    return proc


def bcrypt_hash(password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --------------------------------------------------------------------------- token service

@dataclass
class TokenIssuer:
    """A token service for the registry's ``auth.token``: basic-auth in, JWT out."""

    directory: Path
    users: dict[str, str]
    service: str = "podrun-test-registry"
    issuer: str = "podrun-test-issuer"
    port: int = 0
    requests: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.key = self.directory / "token.key"
        self.cert = self.directory / "token.pem"
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key,
            "-out", self.cert, "-days", "2", "-subj", "/CN=podrun-test-token")
        der = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
                             capture_output=True, check=True).stdout
        self.x5c = base64.b64encode(der).decode()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = (_b64url(json.dumps(header).encode()) + "."
                         + _b64url(json.dumps(claims).encode()))
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                             input=signing_input.encode(), capture_output=True, check=True).stdout
        return signing_input + "." + _b64url(sig)

    def token_for(self, user: str, scope: str) -> str:
        now = int(time.time())
        access = []
        for item in scope.split(" "):
            parts = item.split(":")
            if len(parts) == 3:
                access.append({"type": parts[0], "name": parts[1],
                               "actions": parts[2].split(",")})
        return self.sign({"iss": self.issuer, "sub": user, "aud": self.service,
                          "exp": now + 600, "nbf": now - 60, "iat": now,
                          "jti": hashlib.sha256(os.urandom(16)).hexdigest(),
                          "access": access})

    def start(self) -> TokenIssuer:
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                from urllib.parse import parse_qs, urlparse

                q = parse_qs(urlparse(self.path).query)
                issuer.requests.append(self.path)
                auth = self.headers.get("Authorization", "")
                user = None
                if auth.startswith("Basic "):
                    u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
                    if issuer.users.get(u) == p:
                        user = u
                if user is None:
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"token": issuer.token_for(user, " ".join(q.get("scope", [])))})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------- registry

class Registry:
    """Debian's docker-registry on 127.0.0.1 with its own config and storage."""

    def __init__(self, directory: Path, *, users: dict[str, str] | None = None,
                 token: TokenIssuer | None = None, tls: tuple[Path, Path] | None = None) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.storage = self.dir / "storage"
        self.users = users
        self.token = token
        self.tls = tls
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _config(self) -> str:
        lines = ["version: 0.1", "log:", "  level: error", "  accesslog:", "    disabled: true",
                 "storage:", "  filesystem:", f"    rootdirectory: {self.storage}",
                 "  delete:", "    enabled: true", "http:", f"  addr: 127.0.0.1:{self.port}",
                 "  secret: podrun-test-secret"]
        if self.tls:
            lines += ["  tls:", f"    certificate: {self.tls[0]}", f"    key: {self.tls[1]}"]
        if self.users is not None and self.token is None:
            htpasswd = self.dir / "htpasswd"
            htpasswd.write_text("".join(f"{u}:{bcrypt_hash(p)}\n" for u, p in self.users.items()))
            lines += ["auth:", "  htpasswd:", "    realm: podrun-test",
                      f"    path: {htpasswd}"]
        if self.token is not None:
            lines += ["auth:", "  token:", f"    realm: {self.token.realm}",
                      f"    service: {self.token.service}", f"    issuer: {self.token.issuer}",
                      f"    rootcertbundle: {self.token.cert}"]
        return "\n".join(lines) + "\n"

    def start(self) -> Registry:
        cfg = self.dir / "config.yml"
        cfg.write_text(self._config())
        self.log = open(self.dir / "registry.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("docker-registry exited: "
                                   + (self.dir / "registry.log").read_text()[-2000:])
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("docker-registry did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def blob_data_path(self, digest: str) -> Path:
        hexd = digest.split(":")[1]
        return (self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data")

    def creds_args(self) -> list[str]:
        if not self.users:
            return []
        user, pw = next(iter(self.users.items()))
        return ["--dest-creds", f"{user}:{pw}"]


def push(layout: Path, tag: str, reg: Registry, repo: str, *, all_platforms: bool = False,
         dest_tag: str | None = None) -> None:
    args = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", *reg.creds_args()]
    if all_platforms:
        args.append("--all")
    run(*args, f"oci:{layout}:{tag}", f"docker://{reg.host}/{repo}:{dest_tag or tag}")


# --------------------------------------------------------------------------- images

def umoci_image(layout: Path, tag: str, work: Path, fill: Callable[[Path], None]) -> None:
    """A new image ``layout:tag`` whose first layer is what ``fill(rootfs)`` lays out."""
    if not (layout / "oci-layout").exists():
        run("umoci", "init", "--layout", layout)
    run("umoci", "new", "--image", f"{layout}:{tag}")
    bundle = work / f"bundle-{tag}"
    run("umoci", "unpack", "--image", f"{layout}:{tag}", bundle)
    fill(bundle / "rootfs")
    run("umoci", "repack", "--image", f"{layout}:{tag}", bundle)
    shutil.rmtree(bundle)


def busybox_fill(rootfs: Path) -> None:
    from tests.images import busybox_rootfs

    busybox_rootfs(rootfs)


def _index(layout: Path) -> dict[str, Any]:
    return json.loads((layout / "index.json").read_text())


def _put_blob(layout: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (layout / "blobs/sha256" / digest.split(":")[1]).write_bytes(data)
    return digest


def _get_blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs/sha256" / digest.split(":")[1]).read_bytes()


def _descriptor(layout: Path, tag: str) -> dict[str, Any]:
    for m in _index(layout)["manifests"]:
        if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag:
            return m
    raise KeyError(tag)


def _set_ref(layout: Path, tag: str, desc: dict[str, Any]) -> None:
    index = _index(layout)
    desc = dict(desc, annotations={"org.opencontainers.image.ref.name": tag})
    index["manifests"] = [m for m in index["manifests"]
                          if (m.get("annotations") or {}).get(
                              "org.opencontainers.image.ref.name") != tag] + [desc]
    (layout / "index.json").write_text(json.dumps(index))


@dataclass
class TarEntry:
    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    linkname: str = ""
    dev: tuple[int, int] = (0, 0)
    xattrs: dict[str, str] = field(default_factory=dict)


def layer_tar(entries: list[TarEntry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            ti = tarfile.TarInfo(e.name)
            ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = e.type, e.mode, e.uid, e.gid, 1_600_000_000
            ti.linkname = e.linkname
            ti.devmajor, ti.devminor = e.dev
            ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in e.xattrs.items()}
            if e.type == tarfile.REGTYPE:
                ti.size = len(e.data)
                tf.addfile(ti, io.BytesIO(e.data))
            else:
                tf.addfile(ti)
    return buf.getvalue()


def add_layer(layout: Path, tag: str, tar_bytes: bytes, *, compress: bool = True,
              new_tag: str | None = None) -> None:
    """Append a hand-made layer to ``layout:tag`` (manifest, config diff_ids, index)."""
    desc = _descriptor(layout, tag)
    manifest = json.loads(_get_blob(layout, desc["digest"]))
    config = json.loads(_get_blob(layout, manifest["config"]["digest"]))
    blob = gzip.compress(tar_bytes, mtime=0) if compress else tar_bytes
    ldigest = _put_blob(layout, blob)
    config["rootfs"]["diff_ids"].append("sha256:" + hashlib.sha256(tar_bytes).hexdigest())
    config.setdefault("history", []).append({"created_by": "podrun test layer"})
    cdata = json.dumps(config).encode()
    manifest["config"] = dict(manifest["config"], digest=_put_blob(layout, cdata),
                              size=len(cdata))
    mt = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else "")
    manifest["layers"].append({"mediaType": mt, "digest": ldigest, "size": len(blob)})
    mdata = json.dumps(manifest).encode()
    _set_ref(layout, new_tag or tag, {"mediaType": desc["mediaType"],
                                      "digest": _put_blob(layout, mdata), "size": len(mdata)})


def add_index(layout: Path, tag: str, platforms: dict[str, tuple[str, str]]) -> None:
    """An OCI index ``tag`` over images ``{image_tag: (os, arch)}`` of the layout."""
    entries = []
    for t, (os_, arch) in platforms.items():
        d = _descriptor(layout, t)
        entries.append({"mediaType": d["mediaType"], "digest": d["digest"], "size": d["size"],
                        "platform": {"os": os_, "architecture": arch}})
    doc = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
           "manifests": entries}
    data = json.dumps(doc).encode()
    _set_ref(layout, tag, {"mediaType": doc["mediaType"], "digest": _put_blob(layout, data),
                           "size": len(data)})


def config_set(layout: Path, tag: str, *args: str) -> None:
    run("umoci", "config", "--image", f"{layout}:{tag}", *args)


def manifest_digest(layout: Path, tag: str) -> str:
    return str(_descriptor(layout, tag)["digest"])


# --------------------------------------------------------------------------- the oracle

def umoci_rootfs(layout: Path, tag: str, dest: Path) -> Path:
    run("umoci", "unpack", "--image", f"{layout}:{tag}", dest)
    return dest / "rootfs"


def tree_facts(root: Path) -> dict[str, tuple[Any, ...]]:
    """path → (type, mode, uid, gid, size, sha256, link target, rdev, hardlink group, xattrs)."""
    facts: dict[str, tuple[Any, ...]] = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    stats: dict[str, os.stat_result] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            stats[rel] = st
            if not stat.S_ISDIR(st.st_mode):
                inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
    root_st = os.lstat(root)
    facts["."] = ("dir", oct(stat.S_IMODE(root_st.st_mode)), root_st.st_uid, root_st.st_gid)
    for rel, st in stats.items():
        p = os.path.join(root, rel)
        kind = stat.S_IFMT(st.st_mode)
        size = digest = target = rdev = None
        group: tuple[str, ...] = ()
        if stat.S_ISREG(kind):
            size = st.st_size
            with open(p, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        elif stat.S_ISLNK(kind):
            target = os.readlink(p)
        elif stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
            rdev = (os.major(st.st_rdev), os.minor(st.st_rdev))
        if not stat.S_ISDIR(kind):
            paths = inodes[(st.st_dev, st.st_ino)]
            group = tuple(sorted(paths)) if len(paths) > 1 else ()
        facts[rel] = (kind, oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid, size, digest,
                      target, rdev, group, _xattrs(p))
    return facts


def _xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    return tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False)) for n in names
                        if n != "security.selinux"))


def diff_facts(ours: dict[str, tuple[Any, ...]], theirs: dict[str, tuple[Any, ...]]) -> list[str]:
    """Human-readable differences (empty when the trees agree)."""
    out = []
    for p in sorted(set(ours) | set(theirs)):
        a, b = ours.get(p), theirs.get(p)
        if a != b:
            out.append(f"{p}: podrun {a} != umoci {b}")
    return out
