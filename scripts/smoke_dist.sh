#!/usr/bin/env bash
# Install the built wheel and sdist, each into a fresh venv outside the repository, and run a
# smoke test: the version, the typed marker, the embedded data set and one small CLI job.
# Usage: scripts/smoke_dist.sh TORCH_REQUIREMENT DIST_DIR
set -euo pipefail
torch_req=$1
dist=$(cd "$2" && pwd)
version=$(cd "$(dirname "$0")/.." && python3 -c "import re;print(re.search(r'__version__ = \"(.+?)\"', open('src/ntkdr/__init__.py').read())[1])")
# One venv for both artifacts (the torch install dominates the time): the wheel first, then the
# sdist built and reinstalled over it.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$torch_req"
for artifact in "$dist"/ntkdr-*.whl "$dist"/ntkdr-*.tar.gz; do
  "$work/venv/bin/pip" install -q --force-reinstall --no-deps "$artifact"
  "$work/venv/bin/pip" install -q "$artifact"  # its dependencies (already there after the first)
  (
    cd "$work"
    test "$("$work/venv/bin/ntkdr" --version)" = "ntkdr $version"
    "$work/venv/bin/python" - <<'PY'
import importlib.resources as r
import ntkdr
from ntkdr import load_dataset, two_layer_ntk
assert r.files("ntkdr").joinpath("py.typed").is_file()
assert "site-packages" in ntkdr.__file__, ntkdr.__file__  # the installed copy, not the checkout
ds = load_dataset("mnist", n_train=50, n_test=10)
H = two_layer_ntk(ds.X_train)
assert H.shape == (50, 50) and abs(H[0, 0] - 0.5) < 1e-12, H[0, 0]
PY
    "$work/venv/bin/ntkdr" kernel --dataset digits --n-train 40 --n-test 10 --out "$work/k.npy" --quiet
    "$work/venv/bin/python" -c "import numpy as np; K = np.load('$work/k.npy'); assert K.shape == (50, 50)"
  )
  echo "smoke test passed: $(basename "$artifact")"
done
