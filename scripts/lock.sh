#!/usr/bin/env bash
# Refresh constraints.txt, the exact versions CI and the README install with (pip-tools):
#   pip install pip-tools && bash scripts/lock.sh          (then run the tests, and commit both)
# Versions already pinned are kept unless a new requirement needs another one; to move one on,
# pass pip-compile's own flags, e.g.  bash scripts/lock.sh --upgrade-package fastapi  (or --upgrade).
# torch stays at the CPU build's version this project is tested with (a GPU host installs its CUDA
# build of the same version); the project itself (named by its `engine` extra) is never pinned.
set -euo pipefail
cd "$(dirname "$0")/.."
pip-compile -q --strip-extras --no-emit-index-url --no-emit-find-links --extra server --extra engine --extra test \
    --upgrade-package 'torch==2.13.0' -o constraints.txt "$@" pyproject.toml
# a local build label (2.13.0+cpu) would refuse a CUDA build of the same release; the project's own line goes
sed -i -e 's/^torch==\([0-9.]*\)+[a-z0-9]*$/torch==\1/' -e '/^modelapi @ /,/^[a-z]/{/^modelapi @ /d;/^    #/d}' constraints.txt
