"""Bad Docker/OCI input: one clear line, exit 254, nothing stored — against a real registry.

Blobs are tampered with and truncated in the registry's own storage dir, so the
registry really serves the wrong bytes; manifests with unsupported media types are
PUT through the registry's API.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import PodrunEnv
from tests.registry import (
    Registry,
    TarEntry,
    add_index,
    add_layer,
    busybox_fill,
    layer_tar,
    push,
    umoci_image,
)

pytestmark = pytest.mark.root

INSECURE = "--insecure-options=image,http"


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("oci")
    lay = root / "layout"
    umoci_image(lay, "base", root, busybox_fill)
    add_layer(lay, "base", layer_tar([TarEntry("extra", data=b"x" * 5000)]), new_tag="two")
    add_index(lay, "foreign", {"base": ("linux", "s390x"), "two": ("windows", "amd64")})
    return lay


@pytest.fixture
def registry(layout: Path, tmp_path: Path) -> Iterator[Registry]:
    reg = Registry(tmp_path / "registry").start()
    try:
        push(layout, "base", reg, "test/base", dest_tag="v1")
        push(layout, "two", reg, "test/two", dest_tag="v1")
        push(layout, "foreign", reg, "test/foreign", all_platforms=True, dest_tag="v1")
        yield reg
    finally:
        reg.stop()


def images(env: PodrunEnv) -> list[dict]:
    return json.loads(env.run("image", "list", "--format=json", check=True).stdout)


def fails(env: PodrunEnv, *args: str | Path, says: str) -> str:
    r = env.run(*args)
    assert r.returncode == 254, (r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if "warning:" not in line]
    assert len(lines) == 1, r.stderr
    assert says in lines[0], lines[0]
    assert images(env) == []
    return lines[0]


def _manifest(reg: Registry, repo: str) -> tuple[dict, str]:
    r = requests.get(f"http://{reg.host}/v2/{repo}/manifests/v1", timeout=10,
                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                                        "application/vnd.docker.distribution.manifest.v2+json"})
    r.raise_for_status()
    return r.json(), r.headers["Content-Type"]


def test_unknown_tag_and_repo(podrun: PodrunEnv, registry: Registry) -> None:
    line = fails(podrun, INSECURE, "fetch", f"docker://{registry.host}/test/base:nope",
                 says="manifest not found")
    assert "MANIFEST_UNKNOWN" in line
    fails(podrun, INSECURE, "fetch", f"docker://{registry.host}/no/such:v1",
          says="not found")


def test_tampered_blob_is_refused(podrun: PodrunEnv, registry: Registry) -> None:
    m, _ = _manifest(registry, "test/two")
    digest = m["layers"][-1]["digest"]
    data = registry.blob_data_path(digest)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    fails(podrun, INSECURE, "fetch", f"docker://{registry.host}/test/two:v1",
          says="digest mismatch")
    assert not list((podrun.data_dir / "cas/docker/layers/sha256").iterdir())[1:]


def test_truncated_blob_in_registry(podrun: PodrunEnv, registry: Registry) -> None:
    m, _ = _manifest(registry, "test/two")
    data = registry.blob_data_path(m["layers"][-1]["digest"])
    raw = data.read_bytes()
    data.write_bytes(raw[: len(raw) // 2])
    fails(podrun, INSECURE, "fetch", f"docker://{registry.host}/test/two:v1",
          says=m["layers"][-1]["digest"])


def test_truncated_layer_with_matching_digest(podrun: PodrunEnv, layout: Path,
                                              tmp_path: Path) -> None:
    """A blob whose digest matches the manifest but whose gzip stream stops early."""
    lay = tmp_path / "layout"
    shutil.copytree(layout, lay)
    tar = layer_tar([TarEntry("big", data=bytes(range(256)) * 400)])
    blob = gzip.compress(tar, mtime=0)[:-200]
    _append_raw_layer(lay, "base", blob, hashlib.sha256(tar).hexdigest(),
                      "application/vnd.oci.image.layer.v1.tar+gzip")
    fails(podrun, "convert", f"oci:{lay}:base", "-o", tmp_path / "x.aci",
          says="truncated layer")
    assert not (tmp_path / "x.aci").exists()


def test_unsupported_layer_media_type(podrun: PodrunEnv, layout: Path, tmp_path: Path) -> None:
    lay = tmp_path / "layout"
    shutil.copytree(layout, lay)
    tar = layer_tar([TarEntry("f", data=b"f")])
    _append_raw_layer(lay, "base", tar, hashlib.sha256(tar).hexdigest(),
                      "application/vnd.example.weird")
    fails(podrun, "convert", f"oci:{lay}:base", "-o", tmp_path / "x.aci",
          says="unsupported media type 'application/vnd.example.weird'")


def test_unsupported_media_type_from_registry(podrun: PodrunEnv, registry: Registry) -> None:
    m, ctype = _manifest(registry, "test/base")
    m["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd"
    r = requests.put(f"http://{registry.host}/v2/test/base/manifests/zstd", data=json.dumps(m),
                     headers={"Content-Type": ctype}, timeout=10)
    assert r.status_code == 201, r.text
    fails(podrun, INSECURE, "fetch", f"docker://{registry.host}/test/base:zstd",
          says="unsupported media type")


def test_index_without_host_platform(podrun: PodrunEnv, registry: Registry) -> None:
    line = fails(podrun, INSECURE, "fetch", f"docker://{registry.host}/test/foreign:v1",
                 says="no image for platform linux/")
    assert "linux/s390x" in line and "windows/amd64" in line


def test_plain_http_needs_insecure_http(podrun: PodrunEnv, registry: Registry) -> None:
    fails(podrun, "--insecure-options=image", "fetch", f"docker://{registry.host}/test/base:v1",
          says="--insecure-options=http")


def test_bad_references(podrun: PodrunEnv) -> None:
    fails(podrun, INSECURE, "fetch", "docker://Bad/Name", says="repository component")
    fails(podrun, INSECURE, "fetch", "docker://x/y@sha256:abc", says="digest")
    fails(podrun, "convert", "oci:/nonexistent/layout", "-o", "/tmp/never.aci",
          says="not found")


def _append_raw_layer(lay: Path, tag: str, blob: bytes, diff_hex: str, media_type: str) -> None:
    index = json.loads((lay / "index.json").read_text())
    desc = next(m for m in index["manifests"]
                if m["annotations"]["org.opencontainers.image.ref.name"] == tag)
    blobs = lay / "blobs/sha256"
    manifest = json.loads((blobs / desc["digest"].split(":")[1]).read_bytes())
    config = json.loads((blobs / manifest["config"]["digest"].split(":")[1]).read_bytes())
    config["rootfs"]["diff_ids"].append("sha256:" + diff_hex)

    def put(data: bytes) -> str:
        h = hashlib.sha256(data).hexdigest()
        (blobs / h).write_bytes(data)
        return "sha256:" + h

    cdata = json.dumps(config).encode()
    manifest["config"].update(digest=put(cdata), size=len(cdata))
    manifest["layers"].append({"mediaType": media_type, "digest": put(blob), "size": len(blob)})
    mdata = json.dumps(manifest).encode()
    desc.update(digest=put(mdata), size=len(mdata))
    (lay / "index.json").write_text(json.dumps(index))


def test_hostile_layer_names(podrun: PodrunEnv, layout: Path, tmp_path: Path) -> None:
    lay = tmp_path / "layout"
    shutil.copytree(layout, lay)
    add_layer(lay, "base", layer_tar([TarEntry("../escape", data=b"x")]))
    fails(podrun, "convert", f"oci:{lay}:base", "-o", tmp_path / "x.aci", says="'..'")


def test_hardlink_to_missing_target(podrun: PodrunEnv, layout: Path, tmp_path: Path) -> None:
    lay = tmp_path / "layout"
    shutil.copytree(layout, lay)
    add_layer(lay, "base", layer_tar([TarEntry("l", tarfile.LNKTYPE, linkname="nowhere")]))
    fails(podrun, "convert", f"oci:{lay}:base", "-o", tmp_path / "x.aci",
          says="target is missing")
