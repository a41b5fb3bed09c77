#!/usr/bin/env bash
# CI stage "image": the Dockerfile built, `hsepay up` run in a container from it, and the README's curl
# flow driven against that container (tests/ops/test_readme_flow.py). Budget: 15 minutes, apt included.
#
# No image registry is reachable from CI, so the base image is made here: debootstrap installs a
# minimal Debian bookworm with python3 and its venv module from Debian's mirror, `podman import` makes
# it an image, and buildah builds the Dockerfile on it (--build-arg BASE=...; chroot isolation, so the
# build's RUN steps need no container runtime). pip inside the build reaches PyPI through this
# machine's CA bundle, passed as a build secret (never stored in a layer).
#
# podman runs the container with runc: Debian's default runtime, crun, fails on this machine's
# kernel/sandbox ("crun: setrlimit `RLIMIT_NOFILE`: Operation not permitted", as the sandbox has no
# CAP_SYS_RESOURCE to raise limits, then "crun: cgroups in hybrid mode not supported, drop all
# controllers from cgroupv2"); runc works with explicit limits: open files at the current hard limit,
# processes at 16384 (podman's default of 4194304 fails, and so did anything from 48000 up, with
# "runc create failed: … error setting rlimit type 6: operation not permitted"). Where a container
# still cannot start, the stage says why and runs the same image filesystem with unshare + chroot.
#
# Nothing is cached between runs: the image store is a new directory, removed at the end.
# Runs inside the README stage's virtual environment (.ci/run calls it after the ops stage).
set -eo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
MIRROR=${HSEPAY_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
BASE=localhost/hsepay-base:$SUITE
IMAGE=localhost/hsepay:ci

missing=()
for tool in podman buildah runc debootstrap curl; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
    echo "ci: installing ${missing[*]} (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
t_apt=$SECONDS

work=$(mktemp -d /var/tmp/hsepay-image.XXXXXX)
store=(--root "$work/storage" --runroot "$work/run")
limits=(--runtime runc --ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit "nproc=16384:16384")
container=""
chroot_pid=""
cleanup() {
    [[ -n "$chroot_pid" ]] && kill -INT "$chroot_pid" 2>/dev/null && sleep 3
    [[ -n "$container" ]] && podman "${store[@]}" rm -f -t 10 "$container" >/dev/null 2>&1
    [[ -n "${mounted:-}" ]] && umount -R "$mounted" 2>/dev/null
    buildah "${store[@]}" rm -a >/dev/null 2>&1 || true
    podman "${store[@]}" system reset --force >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

# 1. The base image, from Debian's packages.
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" "$work/rootfs" "$MIRROR" \
    >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log"; echo "ci: debootstrap failed" >&2; exit 1; }
tar -C "$work/rootfs" -c . | podman "${store[@]}" import --quiet - "$BASE" >/dev/null
rm -rf "$work/rootfs"
t_base=$SECONDS
echo "ci: base image $BASE from Debian $SUITE (debootstrap $((t_base - t_apt))s)"

# 2. The image, from the Dockerfile as it is.
buildah "${store[@]}" bud --quiet --isolation chroot \
    --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt \
    --build-arg BASE="$BASE" -t "$IMAGE" . >"$work/build.log" 2>&1 \
    || { tail -40 "$work/build.log"; echo "ci: the image did not build" >&2; exit 1; }
t_build=$SECONDS
echo "ci: built $IMAGE in $((t_build - t_base))s ($(podman "${store[@]}" image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%d MB", $1/1e6}'))"

# 3. `hsepay up` in a container, as `docker run -p ... hsepay` would run it (the image's own CMD).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
declare -A port=([payments]=$(free_port) [orders]=$(free_port) [gateway]=$(free_port))
urls="payments=http://127.0.0.1:${port[payments]},orders=http://127.0.0.1:${port[orders]},gateway=http://127.0.0.1:${port[gateway]}"
runner=podman
if ! probe=$(podman "${store[@]}" run --rm "${limits[@]}" "$IMAGE" --help 2>&1); then
    echo "ci: podman cannot run a container here: $probe" >&2
    runner=chroot
fi
if [[ "$runner" == podman ]]; then
    container=$(podman "${store[@]}" run -d "${limits[@]}" \
        -p "127.0.0.1:${port[payments]}:8080" -p "127.0.0.1:${port[orders]}:8081" -p "127.0.0.1:${port[gateway]}:3000" \
        "$IMAGE")
    logs() { podman "${store[@]}" logs "$container" 2>&1 | tail -40; }
else
    # The image's filesystem, its user and its command, in new PID and mount namespaces on this network.
    mounted=$(buildah "${store[@]}" mount "$(buildah "${store[@]}" from --quiet "$IMAGE")")
    mount --rbind /dev "$mounted/dev"
    unshare --pid --fork --mount --mount-proc="$mounted/proc" chroot --userspec=10001:10001 "$mounted" \
        /usr/bin/env -i PATH=/opt/hsepay/bin:/usr/bin:/bin HOME=/home/hsepay HSEPAY_DATA_DIR=/home/hsepay/data \
        HSEPAY_LOG_FORMAT=json sh -c "cd /home/hsepay && exec hsepay up --host 127.0.0.1 --no-status \
        --payments-port ${port[payments]} --orders-port ${port[orders]} --gateway-port ${port[gateway]}" \
        >"$work/up.log" 2>&1 &
    chroot_pid=$!
    logs() { tail -40 "$work/up.log"; }
fi
deadline=$((SECONDS + 180))
until curl -sf "http://127.0.0.1:${port[orders]}/health/ready" >/dev/null \
    && curl -sf "http://127.0.0.1:${port[gateway]}/health/ready" >/dev/null; do
    if ((SECONDS > deadline)); then logs; echo "ci: hsepay up in the image not ready after 180s" >&2; exit 1; fi
    sleep 1
done
t_up=$SECONDS
echo "ci: hsepay up ready in the image ($runner) after $((t_up - t_build))s"

# 4. The README's curl flow (and `hsepay up --help`'s curl) against it; the Swagger UI files came along.
curl -sf -o /dev/null "http://127.0.0.1:${port[orders]}/schema/swagger-ui/swagger-ui-bundle.js" \
    || { echo "ci: the image serves no Swagger UI files (package data missing from the wheel?)" >&2; exit 1; }
HSEPAY_TEST_FLOW_URLS="$urls" pytest tests/ops/test_readme_flow.py -p no:cacheprovider -q || { logs; exit 1; }
echo "ci: image stage $((SECONDS - t0))s (apt $((t_apt - t0))s, base $((t_base - t_apt))s, build $((t_build - t_base))s, up $((t_up - t_build))s, flow $((SECONDS - t_up))s; runner $runner)"
