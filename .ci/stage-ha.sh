#!/usr/bin/env bash
# CI stage "ha": PostgreSQL high availability (issue 22). Runs after the README's test command,
# inside its virtual environment (.ci/run calls it).
# - Debian's patroni, etcd-server, etcd-client, postgresql-15 and haproxy: tests/ha starts 3 etcd
#   members, 3 Patroni nodes each running a PostgreSQL 15 (as the postgres user: PostgreSQL refuses
#   root) and HAProxy with Patroni's /primary check, all on 127.0.0.1, and the embedded broker.
# - Under order and deposit load, every hsepay role its own process, on the libpq multi-host URL and
#   behind HAProxy: a switchover, a kill -9 of the leader node (back as a replica), the loss of the
#   etcd quorum; then an asynchronous failover that loses acknowledged writes, which the audit
#   against the topics names and repairs. Verdict and audit after each run.
# HSEPAY_TEST_REQUIRE_HA=1 runs tests/ha (skipped without it: the README's pytest never runs them)
# and turns a missing binary into a failure. Each run's figures (503 window, time to settle after
# the new primary, lost counts) go to .ci/ha-reports/, one line each here.
# Budget: ~15 minutes on the 2-core box, apt included.
set -eo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS

missing=()
command -v patroni >/dev/null || missing+=(patroni)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v etcdctl >/dev/null || missing+=(etcd-client)
[[ -x /usr/lib/postgresql/15/bin/postgres ]] || missing+=(postgresql-15)
command -v haproxy >/dev/null || missing+=(haproxy)
if ((${#missing[@]})); then
    echo "ci: installing ${missing[*]} (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The packages' own services must not start: the tests run their own, on free ports.
    policy=/usr/sbin/policy-rc.d
    [[ -e $policy ]] || { printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && trap 'rm -f $policy' EXIT; }
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
install_secs=$((SECONDS - t0))
echo "ci: $(patroni --version 2>&1 | head -1); $(etcd --version | head -1); $(/usr/lib/postgresql/15/bin/postgres --version); $(haproxy -v | head -1)"

reports="$PWD/.ci/ha-reports"
rm -rf "$reports"
rc=0
HSEPAY_TEST_REQUIRE_HA=1 HSEPAY_CHAOS_REPORT_DIR="$reports" \
    pytest tests/ha -p no:cacheprovider -rA -s || rc=$?
python3 - "$reports" <<'EOF' || true
import json, pathlib, sys
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    r = json.loads(path.read_text())
    for f in r["faults"]:
        u = f.get("unavailable") or {}
        print(
            f"ci: {path.stem:28} {f['fault']:16} 503 window {u.get('seconds', 0):5}s ({u.get('answers', 0)} answers, "
            f"slowest {u.get('slowest_s', 0)}s), settled {f['after_return_s']}s after the new primary, "
            f"orders lost {len(r['missing'])}, deposits lost {len((r.get('deposits') or {}).get('lost', []))} "
            f"[{f['detail']}]"
        )
EOF
echo "ci: ha stage $((SECONDS - t0))s (apt ${install_secs}s)"
exit $rc
