#!/usr/bin/env bash
# podrun demo on a fresh Debian 12 machine, as root: install everything, build a
# busybox ACI, sign it with a new gpg key, trust the key, fetch, list and render the
# image, then run a two-app pod. Everything lives in ./demo-work (removed first), and
# the pod's cgroups go below a demo parent cgroup that the script creates and removes.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
PODRUN=(.venv/bin/podrun)
work=$PWD/demo-work
rm -rf "$work"
mkdir -p "$work"
export PODRUN_DIR=$work/data PODRUN_LOCAL_CONFIG=$work/etc PODRUN_SYSTEM_CONFIG=$work/lib
export GNUPGHOME=$work/gnupg
mkdir -m 700 "$GNUPGHOME"

parent=podrun-demo-$$
cleanup() {
  gpgconf --kill all 2>/dev/null || true
  for h in memory cpu pids freezer unified; do
    [ -d "/sys/fs/cgroup/$h/$parent" ] && rmdir "/sys/fs/cgroup/$h/$parent" 2>/dev/null || true
  done
}
trap cleanup EXIT
for h in memory cpu pids freezer unified; do
  [ -d "/sys/fs/cgroup/$h" ] && mkdir -p "/sys/fs/cgroup/$h/$parent"
done
[ -f /sys/fs/cgroup/cgroup.controllers ] && mkdir -p "/sys/fs/cgroup/$parent"
export PODRUN_CGROUP_PARENT=/$parent

echo "== build a busybox ACI"
src=$work/hello
mkdir -p "$src/rootfs/bin" "$src/rootfs/etc" "$src/rootfs/tmp"
cp /bin/busybox "$src/rootfs/bin/"
for a in sh echo cat hostname id ls sleep ps; do ln -s busybox "$src/rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$src/rootfs/etc/passwd"
echo 'root:x:0:' > "$src/rootfs/etc/group"
cat > "$src/manifest" <<'JSON'
{
  "acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/hello",
  "labels": [{"name": "version", "value": "1.0.0"}, {"name": "os", "value": "linux"},
             {"name": "arch", "value": "amd64"}],
  "app": {"exec": ["/bin/sh", "-c", "echo Hello from $AC_APP_NAME in pod $(hostname); id"],
          "user": "0", "group": "0"}
}
JSON
"${PODRUN[@]}" image build "$src" "$work/hello.aci"

echo "== sign it with a new key and trust that key for example.com"
gpg --batch --quiet --pinentry-mode loopback --passphrase '' \
    --quick-gen-key "podrun demo <demo@example.com>" ed25519 sign never
gpg --batch --quiet --armor --export demo@example.com > "$work/demo.pub"
gpg --batch --quiet --pinentry-mode loopback --passphrase '' --armor --detach-sign \
    --output "$work/hello.aci.asc" "$work/hello.aci"
"${PODRUN[@]}" trust --prefix example.com --skip-fingerprint-review "$work/demo.pub"

echo "== fetch (signature verified), list, render"
id=$("${PODRUN[@]}" fetch "$work/hello.aci")
echo "image ID: $id"
"${PODRUN[@]}" image list
"${PODRUN[@]}" image render "$id" "$work/rendered"
ls "$work/rendered" "$work/rendered/rootfs"

echo "== run a pod of two apps"
"${PODRUN[@]}" run example.com/hello example.com/hello --name=second \
    --exec /bin/sh -- -c 'echo second app sees: ; ps' ---
echo "== pods"
"${PODRUN[@]}" list
"${PODRUN[@]}" gc --grace-period=0s
echo "demo done (state in $work)"
