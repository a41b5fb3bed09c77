#!/usr/bin/env bash
# CI stage "netfault" (issue 22): network faults between every hsepay role and PostgreSQL or the broker,
# under order load, and a short soak whose resource series must stay flat. Runs after the README's
# test command, inside its virtual environment (.ci/run calls it); budget 15 minutes.
#
# Toxiproxy is built here from the Go module proxy (`go install`, GOPATH and caches under
# .ci/netfault/, never committed); Go itself is Debian's golang-go when none is on PATH.
# HSEPAY_TEST_REQUIRE_TOXIPROXY=1 turns "skipped: no toxiproxy" into a failure. The figures of each
# run go to .ci/netfault/reports/ (docs/RELIABILITY.md quotes them).
set -eo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
TOXIPROXY_MODULE=github.com/Shopify/toxiproxy/v2
TOXIPROXY_VERSION=v2.5.0  # the newest the Go module proxy serves (it lists v2.3.0 and v2.5.0)
here="$PWD/.ci/netfault"
mkdir -p "$here"

if ! command -v go >/dev/null; then
    echo "ci: installing golang-go (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends golang-go >/dev/null
fi
export GOPATH="$here/go" GOMODCACHE="$here/go/pkg/mod" GOCACHE="$here/go/cache" GOBIN="$here/bin"
export GOFLAGS=-modcacherw GOTOOLCHAIN=local GOPROXY=https://proxy.golang.org GOSUMDB=sum.golang.org
stamp="$here/bin/.built-$TOXIPROXY_VERSION"
if [[ ! -x "$here/bin/server" || ! -f "$stamp" ]]; then
    rm -rf "$here/bin"
    build_log=$(mktemp)
    { go install "$TOXIPROXY_MODULE/cmd/server@$TOXIPROXY_VERSION" \
        && go install "$TOXIPROXY_MODULE/cmd/cli@$TOXIPROXY_VERSION"; } >"$build_log" 2>&1 \
        || { cat "$build_log"; echo "ci: building toxiproxy $TOXIPROXY_VERSION failed" >&2; exit 1; }
    rm -f "$build_log"
    touch "$stamp"
fi
build_secs=$((SECONDS - t0))
echo "ci: $(go version); toxiproxy $TOXIPROXY_VERSION built in ${build_secs}s"

# The black-hole tests drop packets on loopback with iptables (root): required wherever it answers.
blackhole=0
if command -v iptables >/dev/null && iptables -w -L INPUT -n >/dev/null 2>&1; then
    blackhole=1
    echo "ci: iptables usable: the black-hole tests run"
else
    echo "ci: no usable iptables (root needed): the black-hole tests skip"
fi

t1=$SECONDS
rm -rf "$here/reports"
status=0
HSEPAY_TOXIPROXY="$here/bin/server" HSEPAY_TEST_REQUIRE_TOXIPROXY=1 HSEPAY_CHAOS_REPORT_DIR="$here/reports" \
    HSEPAY_TEST_REQUIRE_BLACKHOLE=$blackhole pytest tests/netfault -p no:cacheprovider -rA -s || status=$?
echo "ci: netfault stage $((SECONDS - t0))s (toxiproxy build ${build_secs}s, tests $((SECONDS - t1))s)"
if [[ $status -ne 0 ]]; then
    echo "ci: netfault stage failed (figures in $here/reports/)" >&2
fi
exit $status  # .ci/run stops on it (set -e)
