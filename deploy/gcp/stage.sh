#!/usr/bin/env bash
# Stage the Cloud Functions source: the packages the functions import, a root main.py that
# re-exports the entry points, and requirements.txt from pyproject.toml (base + [gcp]).
#   deploy/gcp/stage.sh [OUT]        (default OUT: build/gcp-function)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${1:-$ROOT/build/gcp-function}"
rm -rf "$OUT"
mkdir -p "$OUT/adapters" "$OUT/functions"
cp -r "$ROOT/core" "$OUT/core"
cp "$ROOT/adapters/__init__.py" "$ROOT/adapters/py.typed" "$OUT/adapters/"
cp -r "$ROOT/adapters/gcp" "$OUT/adapters/gcp"
cp "$ROOT/functions/__init__.py" "$OUT/functions/"
cp -r "$ROOT/functions/gcp" "$OUT/functions/gcp"
find "$OUT" -name __pycache__ -prune -exec rm -rf {} +
cat > "$OUT/main.py" <<'PY'
"""Cloud Functions entry module: the functions live in functions/gcp/main.py."""

from functions.gcp.main import api, conductor

__all__ = ["api", "conductor"]
PY
python3 - "$ROOT/pyproject.toml" > "$OUT/requirements.txt" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["gcp"]))
PY
echo "staged $OUT"
