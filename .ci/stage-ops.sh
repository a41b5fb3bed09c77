#!/usr/bin/env bash
# CI stage "ops": the operations tests with every binary they need present, so none may skip.
# Runs after the README's test command, inside its virtual environment (.ci/run calls it).
# - Debian's prometheus (prometheus + promtool): a real server scrapes `hsepay up` and evaluates
#   every query of the Grafana dashboard; promtool checks the scrape config.
# - Debian's docker-compose (v1): `docker-compose config` validates docker-compose.yml (no engine).
# - Debian's chromium: Swagger UI rendered headless with no network (tests/ops/test_swagger_browser.py).
# - npm (on the machine): the vendored Swagger UI files match npm's swagger-ui-dist they came from.
# HSEPAY_TEST_REQUIRE_* turn "skipped: binary missing" into a failure, so this stage fails if a
# test fails or would be skipped.
set -eo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS

missing=()
{ command -v prometheus && command -v promtool; } >/dev/null || missing+=(prometheus)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v chromium >/dev/null || missing+=(chromium fonts-dejavu-core)
if ((${#missing[@]})); then
    echo "ci: installing ${missing[*]} (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "ci: $(prometheus --version 2>&1 | head -1); $(docker-compose version --short 2>/dev/null || docker-compose --version); $(chromium --version)"
tools/vendor-swagger-ui.sh --check

HSEPAY_TEST_REQUIRE_PROMETHEUS=1 HSEPAY_TEST_REQUIRE_COMPOSE=1 HSEPAY_TEST_REQUIRE_CHROMIUM=1 \
    pytest tests/ops -p no:cacheprovider -rs
echo "ci: ops stage $((SECONDS - t0))s"
