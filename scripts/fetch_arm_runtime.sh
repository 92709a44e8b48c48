#!/usr/bin/env bash
# Unpack the aarch64 TVM runtime libraries (libtvm_runtime.so, libtvm_ffi.so) from the
# aarch64 wheels of the apache-tvm and apache-tvm-ffi versions installed here, into the
# folder autonl looks in (AUTONL_TVM_RUNTIME_AARCH64, else
# ~/.cache/autonl/tvm-runtime-aarch64/<apache-tvm version>). Set-up time only: it downloads
# two wheels from PyPI; autonl itself never downloads anything.
# Usage: scripts/fetch_arm_runtime.sh [PYTHON]   (default: .venv/bin/python, else python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
DEST="$("$PY" -c 'from autonl.backends.tvm.remote import runtime_dir; print(runtime_dir())')"
if [ -f "$DEST/libtvm_runtime.so" ] && [ -f "$DEST/libtvm_ffi.so" ]; then
  echo "aarch64 TVM runtime already in $DEST"; exit 0
fi
TVM_V="$("$PY" -c 'from importlib.metadata import version; print(version("apache-tvm"))')"
FFI_V="$("$PY" -c 'from importlib.metadata import version; print(version("apache-tvm-ffi"))')"
PYV="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_28_aarch64 \
  --python-version "$PYV" -d "$TMP" "apache-tvm==$TVM_V" "apache-tvm-ffi==$FFI_V"
"$PY" - "$TMP" "$DEST" <<'PYEOF'
import glob, os, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
os.makedirs(dest, exist_ok=True)
want = {"tvm/lib/libtvm_runtime.so": "libtvm_runtime.so", "tvm_ffi/lib/libtvm_ffi.so": "libtvm_ffi.so"}
for whl in glob.glob(os.path.join(tmp, "*.whl")):
    with zipfile.ZipFile(whl) as z:
        for member, name in want.items():
            if member in z.namelist():
                part = os.path.join(dest, name + ".part")
                with z.open(member) as src, open(part, "wb") as out:
                    out.write(src.read())
                os.replace(part, os.path.join(dest, name))
missing = [n for n in want.values() if not os.path.exists(os.path.join(dest, n))]
if missing:
    sys.exit(f"error: the aarch64 wheels held no {', '.join(missing)}")
PYEOF
echo "aarch64 TVM runtime $TVM_V (ffi $FFI_V) in $DEST"
