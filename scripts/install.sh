#!/usr/bin/env bash
# Install everything podrun and its test suite need on a Debian 12 machine (as root):
# the Debian packages (gpg, busybox-static, appc-spec's actool, libseccomp, skopeo,
# umoci, docker-registry, CNI plugins, runc/crun for the benchmarks) and a virtualenv
# in .venv with podrun installed editable plus its test extra. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
pkgs=(python3 python3-venv python3-dev gcc libc6-dev gnupg busybox-static appc-spec libseccomp2
      libseccomp-dev skopeo umoci docker-registry containernetworking-plugins runc crun
      iptables iproute2 bzip2 xz-utils tar util-linux procps openssl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check \
  --config-settings editable_mode=compat -e '.[test]' 2>&1 \
  | grep -v -E "^WARNING: Location .* is ignored" || true
.venv/bin/python -c 'import podrun, cffi, gnupg, requests, jsonschema, pyroute2, tqdm, setproctitle, pytest'
# Byte-compile podrun so each `podrun run` does not recompile it (PYTHONDONTWRITEBYTECODE
# environments never write .pyc files themselves).
.venv/bin/python -m compileall -q podrun >/dev/null
