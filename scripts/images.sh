#!/usr/bin/env bash
# Build, tag and push the platform's images (serving, Dagster, MLflow) to a registry, with
# docker buildx or podman, whichever is installed. `make images` runs it.
#
#   FISH_IMAGE_REGISTRY=cr.yandex/<registry id> scripts/images.sh
#
# Environment:
#   FISH_IMAGE_REGISTRY    registry prefix (default: localhost:5001 for FISH_OVERLAY=local, the
#                          terraform output registry_url for FISH_OVERLAY=yandex)
#   IMAGE_TAG              default: the commit (12 hex digits), "-dirty-<hash>" with local changes
#   FISH_TF_VARIANT        cpu (default) or gpu: also build fish-dagster:<tag>-gpu with the CUDA
#                          build of TensorFlow (build argument TF_VARIANT)
#   FISH_CONTAINER_ENGINE  docker or podman (default: docker if `docker buildx` works, else podman)
#   FISH_IMAGES_PUSH       1 (default) pushes; 0 only builds into the local engine
#   FISH_PLATFORM          target platform (default linux/amd64, the node groups' architecture)
#
# Tags are immutable: an image whose tag already exists in the registry is not built or pushed
# again (the same commit is the same content); a tag is never overwritten.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=scripts/image-lib.sh
. "$here/image-lib.sh"

die() { echo "images: $*" >&2; exit 1; }

engine=$(container_engine) || die "no container engine: install docker (with buildx) or podman"
overlay=${FISH_OVERLAY:-local}
registry=${FISH_IMAGE_REGISTRY:-}
if [ -z "$registry" ]; then
  case "$overlay" in
    local) registry=localhost:5001 ;;
    yandex) registry=$(terraform -chdir="$root/infra" output -raw registry_url) ;;
    *) die "unknown overlay '$overlay'; set FISH_IMAGE_REGISTRY" ;;
  esac
fi
tag=${IMAGE_TAG:-$(image_tag "$root")}
push=${FISH_IMAGES_PUSH:-1}
platform=${FISH_PLATFORM:-linux/amd64}
variant=${FISH_TF_VARIANT:-cpu}
case "$variant" in cpu|gpu) ;; *) die "FISH_TF_VARIANT must be cpu or gpu, not '$variant'" ;; esac
revision=$(git -C "$root" rev-parse HEAD)

build() {  # name dockerfile tag [build args...]
  local name=$1 dockerfile=$2 image_tag=$3 ref
  shift 3
  ref="$registry/$name:$image_tag"
  if [ "$push" = 1 ] && image_exists "$engine" "$ref"; then
    echo "images: $ref exists; tags are immutable, not building it again"
    return 0
  fi
  local args=(-f "$root/$dockerfile" -t "$ref" --platform "$platform"
    --label "org.opencontainers.image.revision=$revision" "$@")
  echo "images: building $ref ($engine)"
  if [ "$engine" = docker ]; then
    if [ "$push" = 1 ]; then args+=(--push); else args+=(--load); fi
    docker buildx build "${args[@]}" "$root"
  else
    podman build "${args[@]}" "$root"
    if [ "$push" = 1 ]; then
      local tls=()
      is_plain_http_registry "$ref" && tls=(--tls-verify=false)
      podman push "${tls[@]}" "$ref"
    fi
  fi
  return 0
}

for entry in "${FISH_IMAGES[@]}"; do
  read -r name dockerfile <<<"$entry"
  if [ "$name" = fish-dagster ]; then
    build "$name" "$dockerfile" "$tag" --build-arg TF_VARIANT=cpu
    [ "$variant" = gpu ] && build "$name" "$dockerfile" "$tag-gpu" --build-arg TF_VARIANT=gpu
  else
    build "$name" "$dockerfile" "$tag"
  fi
done
echo "images: $registry/{fish-serving,fish-dagster,fish-mlflow}:$tag"
echo "IMAGE_TAG=$tag"
