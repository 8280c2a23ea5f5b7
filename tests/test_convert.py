"""Docker/OCI → ACI conversion against the real tools: umoci builds, skopeo pushes,
Debian's docker-registry serves, and ``umoci unpack`` is the oracle for every image.

Test images (one OCI layout, built once per module):

* ``base``: busybox-static rootfs (umoci repack; umoci writes a ``.`` root entry);
* ``multi``: ``base`` + a layer deleting a file (``umoci insert --whiteout``) + one
  deleting a directory + one making a directory opaque (``umoci insert --opaque``) +
  a hand-made layer with a hardlink into a lower layer and inside itself, a char
  device, a fifo, xattrs, setuid and owners, a ``.`` entry with mode 0750, and a
  file replacing a directory;
* ``app``: ``base`` with a user name, volumes, ports, labels, env, workdir,
  entrypoint and cmd;
* ``amd64``/``arm64`` and ``multiarch``: an OCI index over two images.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PodrunEnv
from tests.registry import (
    Registry,
    TarEntry,
    add_index,
    add_layer,
    busybox_fill,
    config_set,
    diff_facts,
    layer_tar,
    manifest_digest,
    push,
    run,
    tree_facts,
    umoci_image,
    umoci_rootfs,
)

pytestmark = pytest.mark.root

INSECURE = "--insecure-options=image,http"
ORACLE_TAGS = ("base", "multi", "app")


def _fill_multi_base(rootfs: Path) -> None:
    busybox_fill(rootfs)
    (rootfs / "victim").write_text("to be deleted\n")
    (rootfs / "gone/sub").mkdir(parents=True)
    (rootfs / "gone/sub/f").write_text("in a deleted dir\n")
    (rootfs / "opq/old").mkdir(parents=True)
    (rootfs / "opq/old/x").write_text("hidden by opaque\n")
    (rootfs / "opq/keep").write_text("hidden too\n")
    (rootfs / "data/shared").mkdir(parents=True)
    (rootfs / "data/shared/file").write_text("shared inode\n")
    (rootfs / "becomes-file").mkdir()
    (rootfs / "becomes-file/child").write_text("replaced\n")


def _build(layout: Path, work: Path) -> None:
    umoci_image(layout, "base", work, busybox_fill)
    umoci_image(layout, "multi", work, _fill_multi_base)
    run("umoci", "insert", "--image", f"{layout}:multi", "--whiteout", "/victim")
    run("umoci", "insert", "--image", f"{layout}:multi", "--whiteout", "/gone")
    newopq = work / "newopq"
    (newopq / "fresh").mkdir(parents=True)
    (newopq / "fresh/y").write_text("new content of an opaque dir\n")
    run("umoci", "insert", "--image", f"{layout}:multi", "--opaque", newopq, "/opq")
    add_layer(layout, "multi", layer_tar([
        TarEntry(".", tarfile.DIRTYPE, mode=0o750),
        TarEntry("data", tarfile.DIRTYPE, mode=0o711, uid=5, gid=6),
        TarEntry("data/hard-to-lower", tarfile.LNKTYPE, linkname="data/shared/file"),
        TarEntry("data/own", data=b"owned\n", mode=0o4755, uid=1000, gid=1000,
                 xattrs={"user.podrun": "test-value"}),
        TarEntry("data/own-link", tarfile.LNKTYPE, linkname="data/own"),
        TarEntry("dev", tarfile.DIRTYPE, mode=0o755),
        TarEntry("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
        TarEntry("dev/fifo", tarfile.FIFOTYPE, mode=0o600),
        TarEntry("becomes-file", data=b"now a file\n"),
        TarEntry("implicit/parent/file", data=b"parents made by the extractor\n"),
    ]))
    add_layer(layout, "base", layer_tar([TarEntry("derived", data=b"on top of base\n")]),
              new_tag="derived")
    umoci_image(layout, "app", work, busybox_fill)
    config_set(layout, "app", "--config.user", "user", "--config.volume", "/var/data",
               "--config.volume", "/cache", "--config.exposedports", "8080/tcp",
               "--config.exposedports", "53/udp", "--config.label", "org.example.role=web",
               "--config.label", "Maintainer=Someone", "--config.env", "GREETING=hello",
               "--config.workingdir", "/tmp", "--config.entrypoint", "/bin/sh",
               "--config.cmd", "-c", "--config.cmd", "echo $GREETING from $(pwd) as $(id -u)")
    for arch in ("amd64", "arm64"):
        umoci_image(layout, arch, work, busybox_fill)
        marker = work / f"marker-{arch}"
        marker.write_text(arch + "\n")
        run("umoci", "insert", "--image", f"{layout}:{arch}", marker, "/arch")
        config_set(layout, arch, "--architecture", arch)
    add_index(layout, "multiarch", {"amd64": ("linux", "amd64"), "arm64": ("linux", "arm64")})
    add_index(layout, "foreign", {"arm64": ("linux", "arm64")})


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("oci")
    _build(root / "layout", root)
    return root / "layout"


@pytest.fixture(scope="module")
def oracle(layout: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    out = {}
    root = tmp_path_factory.mktemp("umoci")
    for tag in (*ORACLE_TAGS, "amd64"):
        out[tag] = tree_facts(umoci_rootfs(layout, tag, root / tag))
    shutil.rmtree(root)
    return out


@pytest.fixture(scope="module")
def registry(layout: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp("registry")).start()
    try:
        for tag in (*ORACLE_TAGS, "amd64", "derived"):
            push(layout, tag, reg, f"test/{tag}", dest_tag="v1")
        push(layout, "multiarch", reg, "test/multiarch", all_platforms=True, dest_tag="v1")
        push(layout, "foreign", reg, "test/foreign", all_platforms=True, dest_tag="v1")
        yield reg
    finally:
        reg.stop()


def rendered(env: PodrunEnv, image_id: str, dest: Path) -> dict:
    env.run("image", "render", "--rootfs-only", image_id, dest, check=True)
    return tree_facts(dest)


def images(env: PodrunEnv) -> list[dict]:
    return json.loads(env.run("image", "list", "--format=json", check=True).stdout)


def assert_same(ours: dict, theirs: dict) -> None:
    diff = diff_facts(ours, theirs)
    assert not diff, "\n".join(diff[:40])


# --- the oracle, on every image, from every source -------------------------------------

@pytest.mark.parametrize("tag", ORACLE_TAGS)
def test_registry_fetch_matches_umoci(podrun: PodrunEnv, registry: Registry, oracle: dict,
                                      tag: str, tmp_path: Path) -> None:
    r = podrun.run(INSECURE, "fetch", f"docker://{registry.host}/test/{tag}:v1", check=True)
    image_id = r.stdout.strip()
    assert_same(rendered(podrun, image_id, tmp_path / "r"), oracle[tag])


@pytest.mark.parametrize("tag", ORACLE_TAGS)
def test_layered_fetch_matches_umoci(podrun: PodrunEnv, registry: Registry, oracle: dict,
                                     tag: str, tmp_path: Path) -> None:
    proc = subprocess.run([*_cli(), INSECURE, "fetch", "--no-squash",
                           f"docker://{registry.host}/test/{tag}:v1"],
                          env=podrun.env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    image_id = proc.stdout.strip()
    listed = images(podrun)
    assert len(listed) > 1  # the layers are images of their own
    assert_same(rendered(podrun, image_id, tmp_path / "r"), oracle[tag])


def _cli() -> list[str]:
    import sys

    return [sys.executable, "-m", "podrun"]


@pytest.mark.parametrize("form", ["dir", "tar"])
def test_oci_layout_convert_matches_umoci(podrun: PodrunEnv, layout: Path, oracle: dict,
                                          form: str, tmp_path: Path) -> None:
    src = layout
    if form == "tar":
        src = tmp_path / "layout.tar"
        with tarfile.open(src, "w") as tf:
            tf.add(layout, arcname=".")
    out = tmp_path / "multi.aci"
    r = podrun.run("convert", f"oci:{src}:multi", "-o", out, check=True)
    image_id, path = r.stdout.split()
    assert Path(path) == out
    assert subprocess.run(["actool", "validate", str(out)], capture_output=True).returncode == 0
    assert podrun.run("--insecure-options=image", "fetch", out, check=True).stdout.strip() \
        == image_id
    assert_same(rendered(podrun, image_id, tmp_path / "r"), oracle["multi"])


def test_convert_no_squash_files_chain(podrun: PodrunEnv, layout: Path, oracle: dict,
                                       tmp_path: Path) -> None:
    out = tmp_path / "multi.aci"
    r = podrun.run("convert", "--no-squash", f"oci:{layout}:multi", "-o", out, check=True)
    lines = [line.split() for line in r.stdout.splitlines()]
    names = [Path(p).name for _, p in lines]
    assert names[-1] == "multi.aci" and names[0] == "multi-layer00.aci"
    assert len(names) == 6  # five layers and the image
    for _, p in lines:
        assert subprocess.run(["actool", "validate", p], capture_output=True).returncode == 0
    ids = [podrun.run("--insecure-options=image", "fetch", p, check=True).stdout.strip()
           for _, p in lines]
    assert ids == [i for i, _ in lines]
    assert_same(rendered(podrun, ids[-1], tmp_path / "r"), oracle["multi"])


def test_docker_archive_with_symlinked_layers(podrun: PodrunEnv, layout: Path, oracle: dict,
                                              tmp_path: Path) -> None:
    archive = tmp_path / "multi.tar"
    run("skopeo", "copy", "--quiet", f"oci:{layout}:multi",
        f"docker-archive:{archive}:example.com/test/multi:v2")
    out = tmp_path / "a.aci"
    image_id = podrun.run("convert", f"docker-archive:{archive}", "-o", out,
                          check=True).stdout.split()[0]
    manifest = json.loads(subprocess.run(["actool", "cat-manifest", str(out)],
                                         capture_output=True, text=True, check=True).stdout)
    assert manifest["name"] == "example.com/test/multi"
    assert {"name": "version", "value": "v2"} in manifest["labels"]
    podrun.run("--insecure-options=image", "fetch", out, check=True)
    assert_same(rendered(podrun, image_id, tmp_path / "r"), oracle["multi"])
    # docker save's legacy layout: <id>/layer.tar entries that are symlinks to the blobs.
    legacy = tmp_path / "legacy.tar"
    _symlink_layers(archive, legacy)
    out2 = tmp_path / "b.aci"
    image_id2 = podrun.run("convert", f"docker-archive:{legacy}", "-o", out2,
                           check=True).stdout.split()[0]
    assert image_id2 != ""
    podrun.run("--insecure-options=image", "fetch", out2, check=True)
    assert_same(rendered(podrun, image_id2, tmp_path / "r2"), oracle["multi"])


def _symlink_layers(src: Path, dest: Path) -> None:
    with tarfile.open(src) as tin, tarfile.open(dest, "w") as tout:
        manifest = json.loads(tin.extractfile("manifest.json").read())  # type: ignore[union-attr]
        new_layers = []
        for i, layer in enumerate(manifest[0]["Layers"]):
            ti = tin.getmember(layer)
            tout.addfile(ti, tin.extractfile(ti))
            d = tarfile.TarInfo(f"legacy{i}")
            d.type = tarfile.DIRTYPE
            tout.addfile(d)
            link = tarfile.TarInfo(f"legacy{i}/layer.tar")
            link.type, link.linkname = tarfile.SYMTYPE, f"../{layer}"
            tout.addfile(link)
            new_layers.append(f"legacy{i}/layer.tar")
        manifest[0]["Layers"] = new_layers
        for m in tin.getmembers():
            if m.name not in ("manifest.json", *[x for x in new_layers]) and m.isreg() \
                    and m.name.endswith(".json"):
                tout.addfile(m, tin.extractfile(m))
        data = json.dumps(manifest).encode()
        ti = tarfile.TarInfo("manifest.json")
        ti.size = len(data)
        import io

        tout.addfile(ti, io.BytesIO(data))


# --- manifest mapping ------------------------------------------------------------------------

def test_app_config_mapping(podrun: PodrunEnv, registry: Registry) -> None:
    ref = f"docker://{registry.host}/test/app:v1"
    image_id = podrun.run(INSECURE, "fetch", ref, check=True).stdout.strip()
    m = json.loads(podrun.run("image", "cat-manifest", image_id, check=True).stdout)
    host = registry.host.replace(":", "-")
    assert m["name"] == f"{host}/test/app"
    assert {"name": "version", "value": "v1"} in m["labels"]
    assert {"name": "os", "value": "linux"} in m["labels"]
    assert {"name": "arch", "value": "amd64"} in m["labels"]
    app = m["app"]
    assert app["exec"] == ["/bin/sh", "-c", "echo $GREETING from $(pwd) as $(id -u)"]
    assert app["user"] == "user" and app["group"] == "1000"  # primary group from /etc/passwd
    assert {"name": "GREETING", "value": "hello"} in app["environment"]
    assert app["workingDirectory"] == "/tmp"
    assert app["ports"] == [{"name": "53-udp", "protocol": "udp", "port": 53},
                            {"name": "8080-tcp", "protocol": "tcp", "port": 8080}]
    assert app["mountPoints"] == [{"name": "volume-cache", "path": "/cache"},
                                  {"name": "volume-var-data", "path": "/var/data"}]
    notes = {a["name"]: a["value"] for a in m["annotations"]}
    assert notes["org.example.role"] == "web" and notes["maintainer"] == "Someone"
    assert notes["appc.io/docker/registryurl"] == registry.host
    assert notes["appc.io/docker/repository"] == "test/app"
    assert notes["appc.io/docker/tag"] == "v1"
    assert notes["appc.io/docker/originalname"] == ref
    assert json.loads(notes["appc.io/docker/entrypoint"]) == ["/bin/sh"]
    assert notes["appc.io/docker/imageid"].startswith("sha256:")
    assert notes["appc.io/docker/manifesthash"].startswith("sha256:")


def test_same_input_same_image_id(podrun: PodrunEnv, layout: Path, tmp_path: Path) -> None:
    a = podrun.run("convert", f"oci:{layout}:multi", "-o", tmp_path / "a.aci", check=True)
    b = podrun.run("convert", f"oci:{layout}:multi", "-o", tmp_path / "b.aci", check=True)
    assert a.stdout.split()[0] == b.stdout.split()[0]


# --- platforms -----------------------------------------------------------------------------

def test_index_platform_selection(podrun: PodrunEnv, registry: Registry, layout: Path,
                                  tmp_path: Path) -> None:
    ref = f"docker://{registry.host}/test/multiarch:v1"
    out = tmp_path / "x.aci"
    podrun.run(INSECURE, "convert", ref, "-o", out, check=True)
    podrun.run(INSECURE, "convert", ref, "--arch", "arm64", "-o", tmp_path / "y.aci", check=True)
    for path, arch, label in ((out, "amd64", "amd64"), (tmp_path / "y.aci", "arm64", "aarch64")):
        m = json.loads(subprocess.run(["actool", "cat-manifest", str(path)], capture_output=True,
                                      text=True, check=True).stdout)
        assert {"name": "arch", "value": label} in m["labels"]
        content = subprocess.run(["tar", "-xzOf", str(path), "rootfs/arch"], capture_output=True,
                                 text=True, check=True).stdout
        assert content == arch + "\n"
    # the same from the OCI layout's index
    podrun.run("convert", f"oci:{layout}:multiarch", "--arch", "arm64", "-o", tmp_path / "z.aci",
               check=True)
    content = subprocess.run(["tar", "-xzOf", str(tmp_path / "z.aci"), "rootfs/arch"],
                             capture_output=True, text=True, check=True).stdout
    assert content == "arm64\n"


# --- signatures and pull policy ---------------------------------------------------------------

def test_tag_needs_insecure_image_digest_does_not(podrun: PodrunEnv, registry: Registry,
                                                  layout: Path) -> None:
    ref = f"docker://{registry.host}/test/base:v1"
    r = podrun.run("--insecure-options=http", "fetch", ref)
    assert r.returncode == 254 and "no signature" in r.stderr and r.stderr.count("\n") == 1
    assert images(podrun) == []
    digest = manifest_digest(layout, "base")
    pinned = f"docker://{registry.host}/test/base@{digest}"
    r = podrun.run("--insecure-options=http", "fetch", pinned)
    assert r.returncode == 0, r.stderr
    assert [i["id"] for i in images(podrun)] == [r.stdout.strip()]


def test_shared_layers_downloaded_once(podrun: PodrunEnv, registry: Registry) -> None:
    r1 = podrun.run(INSECURE, "--debug", "fetch", f"docker://{registry.host}/test/base:v1",
                    check=True)
    assert r1.stderr.count("fetching docker://") == 1
    # "derived" is base plus one layer: only that layer is downloaded
    r2 = podrun.run(INSECURE, "--debug", "fetch", f"docker://{registry.host}/test/derived:v1",
                    check=True)
    assert r2.stderr.count("fetching docker://") == 1 and ": layer 1 (" in r2.stderr
    # pull policy "new": a second fetch does not even ask the registry
    r3 = podrun.run(INSECURE, "--debug", "fetch", f"docker://{registry.host}/test/base:v1",
                    check=True)
    assert r3.stdout == r1.stdout and "registry " not in r3.stderr
    r4 = podrun.run(INSECURE, "--debug", "fetch", "--pull-policy=update",
                    f"docker://{registry.host}/test/base:v1", check=True)
    assert r4.stdout == r1.stdout and "fetching docker://" not in r4.stderr
    assert "registry " in r4.stderr and "manifest unchanged" in r4.stderr


def test_layered_images_share_layer_acis(podrun: PodrunEnv, registry: Registry) -> None:
    for tag in ("base", "derived"):
        proc = subprocess.run([*_cli(), INSECURE, "fetch", "--no-squash",
                               f"docker://{registry.host}/test/{tag}:v1"],
                              env=podrun.env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    names = sorted(i["name"] for i in images(podrun))
    layers = [n for n in names if n.startswith("docker-layer/")]
    assert len(names) == 4 and len(layers) == 2  # base's layer ACI is shared


def test_convert_signed_fetch_and_run(podrun: PodrunEnv, layout: Path, gpg_keys: dict,
                                      tmp_path: Path, test_parent: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    key = gpg_keys["alice"]
    out = tmp_path / "app.aci"
    env = dict(podrun.env, GNUPGHOME=str(key.home))
    proc = subprocess.run([*_cli(), "convert", f"oci:{layout}:app", "-o", str(out), "--sign",
                           key.fingerprint], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert Path(str(out) + ".asc").is_file()
    assert subprocess.run(["actool", "validate", str(out)], capture_output=True).returncode == 0
    r = podrun.run("fetch", out)
    assert r.returncode == 254 and images(podrun) == []  # not trusted yet
    podrun.run("trust", "--prefix", "layout", "--skip-fingerprint-review", key.pubkey_path,
               check=True)
    image_id = podrun.run("fetch", out, check=True).stdout.strip()
    monkeypatch.setenv("PODRUN_CGROUP_PARENT", test_parent)
    r = podrun.run("run", out)
    assert r.returncode == 0, r.stderr
    assert "hello from /tmp as 1000" in r.stdout
    assert [i["id"] for i in images(podrun) if i["name"] == "layout"] == [image_id]


# --- run end to end -------------------------------------------------------------------------

def test_run_docker_image(podrun: PodrunEnv, registry: Registry, test_parent: str,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODRUN_CGROUP_PARENT", test_parent)
    r = podrun.run(INSECURE, "run", f"docker://{registry.host}/test/app:v1")
    assert r.returncode == 0, r.stderr
    assert "hello from /tmp as 1000" in r.stdout


def test_fetch_and_run_from_an_oci_layout(podrun: PodrunEnv, layout: Path, oracle: dict,
                                          tmp_path: Path, test_parent: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`podrun fetch oci:…` converts like a registry image; unsigned, so it needs
    --insecure-options=image; and the result runs."""
    r = podrun.run("fetch", f"oci:{layout}:multi")
    assert r.returncode == 254 and "insecure-options=image" in r.stderr
    image_id = podrun.run(INSECURE, "fetch", f"oci:{layout}:multi", check=True).stdout.strip()
    assert_same(rendered(podrun, image_id, tmp_path / "r"), oracle["multi"])
    monkeypatch.setenv("PODRUN_CGROUP_PARENT", test_parent)
    r = podrun.run("run", image_id, "--exec", "/bin/sh", "--", "-c", "echo ran")
    assert r.returncode == 0 and r.stdout == "ran\n", r.stderr


def test_adopted_blobs_hash_to_their_ids(podrun: PodrunEnv, registry: Registry) -> None:
    """Converted images are adopted into the store without a second read: their blobs
    must still be exactly the bytes their IDs name."""
    import hashlib

    from podrun.store.store import Store

    podrun.run(INSECURE, "fetch", "--no-squash", f"docker://{registry.host}/test/base:v1",
               check=True)
    store = Store(podrun.data_dir)
    recs = store.images()
    assert len(recs) >= 2
    for rec in recs:
        blob = store.blob_path(rec.id).read_bytes()
        assert "sha512-" + hashlib.sha512(blob).hexdigest() == rec.id
    assert list(store.tmp.iterdir()) == []
