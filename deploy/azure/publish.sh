#!/usr/bin/env bash
# Stage the skycrawl function app and publish it:  deploy/azure/publish.sh <function-app-name>
#
# `func azure functionapp publish` uploads one folder whose root holds host.json,
# requirements.txt and function_app.py; skycrawl's code lives in packages beside them. This
# script copies exactly that (core/, adapters/ without other clouds, functions/azure, the
# tenant template) into a temporary folder and publishes it with a remote build, which
# installs requirements.txt. Needs Azure Functions Core Tools 4 and `az login`.
set -euo pipefail

app="${1:?usage: deploy/azure/publish.sh <function-app-name>}"
repo="$(cd "$(dirname "$0")/../.." && pwd)"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT

cp "$repo/functions/azure/host.json" "$repo/functions/azure/requirements.txt" "$stage/"
cp "$repo/functions/azure/function_app.py" "$stage/function_app.py"
mkdir -p "$stage/adapters" "$stage/functions" "$stage/deploy/azure"
cp -r "$repo/core" "$stage/core"
cp "$repo/adapters/__init__.py" "$repo/adapters/py.typed" "$stage/adapters/"
cp -r "$repo/adapters/azure" "$stage/adapters/azure"
cp "$repo/functions/__init__.py" "$stage/functions/"
cp -r "$repo/functions/azure" "$stage/functions/azure"
cp "$repo/deploy/azure/tenant.json" "$stage/deploy/azure/"
find "$stage" -name '__pycache__' -prune -exec rm -rf {} +
printf '.venv\n__pycache__\n' > "$stage/.funcignore"

cd "$stage"
func azure functionapp publish "$app" --python --build remote
