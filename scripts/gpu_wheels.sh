#!/usr/bin/env bash
# Wheels of what the lent GPU machine's image lacks (math-verify and the dependencies of it that the image does not
# hold; sympy and mpmath it has, with torch) for its Python 3.12, into .whl/ (git-ignored). A device call carries
# the folder (`carry: [".whl"]`) and benchmarks/gpu_check.sh installs from it. Pinned to the versions CI tests;
# all are pure-Python wheels, ~1 MB together.
#   PYTHON  the pip to download with (default python3; any version: the target is given)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.whl
pkgs=("math-verify==0.9.0" "latex2sympy2_extended==1.11.0" "antlr4-python3-runtime==4.13.2")
mkdir -p "$dest"
"${PYTHON:-python3}" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp --abi cp312 --platform manylinux_2_28_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d "$dest" "${pkgs[@]}"
# One version of each: two would stop the install there.
dupes="$(ls "$dest"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z-' 'a-z_' | sort | uniq -d)"
[ -z "$dupes" ] || { echo "several versions of: $dupes (remove the old ones from $dest)"; exit 1; }
ls -l "$dest"
du -sh "$dest"
