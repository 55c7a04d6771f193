#!/usr/bin/env bash
# One night of cost tracking: plan the fleet and price the night before anything starts, refuse it
# above a budget, launch it on SkyPilot, wait for its jobs, copy the results bucket, collect the
# records into the history, write the report, and check the history for regressions (exit 1 on an
# alarm: the scheduler's signal). .github/workflows/nightly.yml runs it every night; cron works too:
#   0 2 * * *  cd /path/to/infercost && NIGHTLY_INSTANCES=aws:c7i.2xlarge bash scripts/nightly.sh
#
# Settings (environment):
#   NIGHTLY_INSTANCES   price rows to measure, comma-separated (required), e.g. aws:c7i.2xlarge,gcp:g2-standard-8
#   NIGHTLY_SUITE       the suite each instance runs (default llm)
#   NIGHTLY_SPOT        1 for spot instances (default on-demand)
#   NIGHTLY_BUDGET_USD  the most a night may be estimated to cost (default 25): above it nothing launches
#   NIGHTLY_STORE       the history (default results/history/history.duckdb; a folder or s3:// prefix holds Parquet)
#   NIGHTLY_DIR         the night's plan folder (default fleet/nightly-<date>)
#   NIGHTLY_SYNC        how to copy the results bucket, {bucket} and {dir} filled in
#                       (default: aws s3 sync s3://{bucket} {dir}; on GCP: gcloud storage rsync -r gs://{bucket} {dir})
#   NIGHTLY_WAIT_H      hours to wait for the jobs (default 8)
#   NIGHTLY_DRY_RUN     1: plan and price the night, launch nothing
#   INFERCOST           the infercost command (default .venv-fleet/bin/infercost, set up here if absent)
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "nightly: $*"; }
fail() { echo "nightly: $1" >&2; exit "${2:-2}"; }

[ -n "${NIGHTLY_INSTANCES:-}" ] || fail "set NIGHTLY_INSTANCES to the price rows to measure, e.g. aws:c7i.2xlarge"
budget=${NIGHTLY_BUDGET_USD:-25}
[[ $budget =~ ^[0-9]+([.][0-9]+)?$ ]] || fail "NIGHTLY_BUDGET_USD=$budget is not an amount of dollars"
wait_h=${NIGHTLY_WAIT_H:-8}
[[ $wait_h =~ ^[0-9]+([.][0-9]+)?$ ]] || fail "NIGHTLY_WAIT_H=$wait_h is not a number of hours"
night=${NIGHTLY_DIR:-fleet/nightly-$(date -u +%Y%m%d)}
store=${NIGHTLY_STORE:-results/history/history.duckdb}
ic=${INFERCOST:-.venv-fleet/bin/infercost}
if [ -z "${INFERCOST:-}" ] && [ ! -x "$ic" ]; then
    bash scripts/setup.sh fleet
fi
py=$(dirname "$ic")/python
[ -x "$py" ] || py=python3

spot=()
[ "${NIGHTLY_SPOT:-0}" = 1 ] && spot=(--spot)
"$ic" fleet plan --instances "$NIGHTLY_INSTANCES" --suite "${NIGHTLY_SUITE:-llm}" "${spot[@]}" --out "$night"
est=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["est_usd"])' "$night/fleet.json")
if "$py" -c 'import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)' "$est" "$budget"; then
    say "the night is ESTIMATED at \$$est (budget \$$budget); plan in $night"
else
    fail "the night is ESTIMATED at \$$est, above NIGHTLY_BUDGET_USD=\$$budget: nothing launched (plan in $night)" 3
fi
if [ "${NIGHTLY_DRY_RUN:-0}" = 1 ]; then
    say "dry run: nothing launched"
    exit 0
fi

"$ic" fleet launch "$night"
deadline=$(( $(date +%s) + ${wait_h%.*} * 3600 ))
while :; do
    states=$("$ic" fleet status "$night" | grep -Eo 'PENDING|SUBMITTED|STARTING|RUNNING|RECOVERING|CANCELLING' || true)
    [ -z "$states" ] && break
    if [ "$(date +%s)" -ge "$deadline" ]; then
        say "jobs still running after ${wait_h} h: collecting what is there now"
        break
    fi
    sleep 300
done

bucket=$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["bucket"])' "$night/fleet.json")
sync=${NIGHTLY_SYNC:-"aws s3 sync s3://{bucket} {dir}"}
sync=${sync//\{bucket\}/$bucket}
sync=${sync//\{dir\}/$night/results}
say "copying the results: $sync"
mkdir -p "$night/results"
eval "$sync"
"$ic" fleet collect "$night" --history "$store"
"$ic" report "$night/collected" --history "$store" --out "$night/report"
"$ic" history check --store "$store"
