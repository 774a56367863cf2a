#!/usr/bin/env bash
# `make image`: minibroker's image without any container registry.
#   1. the base image from Debian's packages (docker/build-base.sh; cached),
#   2. wheels of the project and its runtime dependencies, built on this host for the
#      base image's Python (asked of the image itself), into build/wheels,
#   3. `docker build` on that base, pip installing from those wheels only (--no-index).
#
#   IMAGE=minibroker:latest BASE_IMAGE=minibroker-base:bookworm PYTHON=python3 docker/build-image.sh
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${IMAGE:-minibroker:latest}"
BASE_IMAGE="${BASE_IMAGE:-minibroker-base:bookworm}"
PYTHON="${PYTHON:-python3}"
WHEELS=build/wheels

docker/build-base.sh "$BASE_IMAGE"

# The interpreter the wheels are for: the base image's, whatever the host runs.
read -r PYVER MACHINE GLIBC < <(docker run --rm --entrypoint python3 "$BASE_IMAGE" -c \
    'import platform, sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}", platform.machine(), platform.libc_ver()[1])')
ABI="cp${PYVER/./}"
echo "wheels for CPython $PYVER ($ABI) on $MACHINE, glibc $GLIBC"

rm -rf "$WHEELS"
mkdir -p "$WHEELS"
# The project's own wheel, from a clean copy of the sources (setuptools' build/ folder in
# the work tree could carry modules deleted since).
SRC="$(mktemp -d "${TMPDIR:-/tmp}/minibroker-src.XXXXXX")"
trap 'rm -rf "$SRC"' EXIT
tar -c --exclude=__pycache__ --exclude='*.pyc' pyproject.toml README.md broker chaos client coordinator proto \
    | tar -x -C "$SRC"
# A fixed timestamp makes the wheel byte-identical when the sources are, so docker's layer
# cache holds across runs.
SOURCE_DATE_EPOCH=315532800 "$PYTHON" -m pip wheel --quiet --disable-pip-version-check \
    --no-deps -w "$WHEELS" "$SRC"

# Its dependencies as binary wheels for that interpreter and every manylinux the base's
# glibc runs (pip does not expand a manylinux platform tag to the older ones by itself).
platforms=()
for ((minor = 5; minor <= ${GLIBC#*.}; minor++)); do
    platforms+=(--platform "manylinux_2_${minor}_${MACHINE}")
done
platforms+=(--platform "manylinux2014_${MACHINE}" --platform "manylinux2010_${MACHINE}"
    --platform "manylinux1_${MACHINE}")
"$PYTHON" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
    --python-version "$PYVER" --implementation cp --abi "$ABI" "${platforms[@]}" \
    -d "$WHEELS" "$WHEELS"/minibroker-*.whl
echo "$(find "$WHEELS" -name "*.whl" | wc -l) wheels in $WHEELS"

docker build --quiet --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "WHEELS=$WHEELS" \
    -t "$IMAGE" . >/dev/null
echo "built $IMAGE on $BASE_IMAGE"
