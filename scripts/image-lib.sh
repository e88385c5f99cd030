# shellcheck shell=bash
# Shared by scripts/images.sh (build and push) and k8s/deploy.sh (check before applying): the
# container engine, the image tag, and whether an image exists in its registry.

# The platform's images: name in the registry, Dockerfile (paths from the repository root).
# shellcheck disable=SC2034 # used by the scripts that source this file
FISH_IMAGES=(
  "fish-serving serving/Dockerfile"
  "fish-dagster k8s/images/dagster.Dockerfile"
  "fish-mlflow k8s/images/mlflow.Dockerfile"
)

# docker with buildx, else podman (FISH_CONTAINER_ENGINE=docker|podman to choose).
container_engine() {
  case "${FISH_CONTAINER_ENGINE:-}" in
    docker|podman) echo "$FISH_CONTAINER_ENGINE"; return 0 ;;
    "") ;;
    *) echo "FISH_CONTAINER_ENGINE must be docker or podman, not '$FISH_CONTAINER_ENGINE'" >&2; return 1 ;;
  esac
  if command -v docker >/dev/null 2>&1 && docker buildx version >/dev/null 2>&1; then
    echo docker
  elif command -v podman >/dev/null 2>&1; then
    echo podman
  else
    return 1
  fi
}

# The immutable tag of what is checked out: the commit (12 hex digits). A work tree with
# uncommitted changes to tracked files gets <commit>-dirty-<hash of the diff>, so two different
# builds never share a tag.
image_tag() {  # repository root
  local root=$1 commit diff_hash
  commit=$(git -C "$root" rev-parse --short=12 HEAD)
  if git -C "$root" diff --quiet HEAD --; then
    echo "$commit"
  else
    diff_hash=$(git -C "$root" diff HEAD -- | sha256sum | cut -c1-8)
    echo "$commit-dirty-$diff_hash"
  fi
}

# 0 when the image reference exists in its registry (nothing is pulled).
image_exists() {  # engine ref
  local engine=$1 ref=$2 tls=()
  is_plain_http_registry "$ref" && tls=(--tls-verify=false)
  case "$engine" in
    docker) docker buildx imagetools inspect "$ref" >/dev/null 2>&1 ;;
    podman)
      if command -v skopeo >/dev/null 2>&1; then
        skopeo inspect "${tls[@]}" "docker://$ref" >/dev/null 2>&1
      else
        podman manifest inspect "${tls[@]}" "$ref" >/dev/null 2>&1
      fi
      ;;
    *) return 2 ;;
  esac
}

# A registry on localhost (the local cluster's) speaks plain HTTP.
is_plain_http_registry() {  # ref
  case "$1" in
    localhost:*|127.0.0.1:*) return 0 ;;
    *) return 1 ;;
  esac
}
