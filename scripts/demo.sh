#!/usr/bin/env bash
# The README's first command (`make demo`): a controller on embedded SQLite under ./var/, an enrolment
# token, this machine's agent enrolled and reporting, what the controller now knows about it, and the
# demo centre's score sheet for the current month (roster in scripts/demo/roster.csv).
# Expects `counterguard` and `counterguard-agent` on PATH (the Makefile puts .venv/bin first).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${COUNTERGUARD_DEMO_DIR:-var}
LISTEN=${COUNTERGUARD_DEMO_LISTEN:-127.0.0.1:50051}
ENROLL=${COUNTERGUARD_DEMO_ENROLL:-127.0.0.1:50052}
WINDOW=${COUNTERGUARD_DEMO_WINDOW:-W01}
AGENT_DIR="$DATA/agent"
LOG="$DATA/controller.log"
mkdir -p "$DATA"
export COLUMNS=${COLUMNS:-150}  # wide enough for the score sheet when the output is not a terminal

cg() { counterguard --data-dir "$DATA" "$@"; }
agent() { counterguard-agent --state-dir "$AGENT_DIR" "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Starting the controller (SQLite at $DATA/counterguard.db, agents on $LISTEN, enrolment on $ENROLL)"
counterguard --data-dir "$DATA" serve --listen "$LISTEN" --enroll-listen "$ENROLL" >"$LOG" 2>&1 &
controller=$!
trap 'kill -TERM $controller 2>/dev/null; wait $controller 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  grep -q "listening" "$LOG" 2>/dev/null && break
  kill -0 $controller 2>/dev/null || { cat "$LOG"; echo "the controller did not start" >&2; exit 1; }
  sleep 0.1
done
grep -q "listening" "$LOG" || { cat "$LOG"; echo "the controller did not start in 10 s" >&2; exit 1; }
cat "$LOG"

step "Creating an enrolment token for window $WINDOW"
token=$(cg token create --window "$WINDOW" --expires 1d --note "demo" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
echo "token: ${token%%.*}.…"

step "Enrolling this machine's agent (key pair made locally, CSR signed by the controller's CA)"
agent enroll --controller "$ENROLL" --token "$token" --ca-cert "$DATA/pki/ca.pem" --force

step "The agent observes this machine and reports over mutual TLS"
agent run --once
agent status
agent_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["agent_id"])' "$AGENT_DIR/enrollment.json")

step "What the controller knows: the workstation"
cg agents show "$agent_id"
step "Hardware, peripherals and OS"
cg inventory show "$agent_id"
step "Installed software (the first 15; all with: counterguard software list $agent_id)"
cg software list "$agent_id" --limit 15
step "Installed software with a category hint (game, video, music, chat, stock, office)"
cg software list "$agent_id" --hinted
step "Programs running on it"
cg processes "$agent_id" --limit 25
step "Violations of this machine under the default policy ($(cg policy show --json | python3 -c 'import json,sys; d=json.load(sys.stdin); r=d["record"]; print(r["policy_id"] + "@" + r["version"])'))"
cg violations list --workstation "$agent_id"

month=$(python3 -c 'import datetime, zoneinfo; print(datetime.datetime.now(zoneinfo.ZoneInfo("Asia/Shanghai")).strftime("%Y-%m"))')
staff=$(cg staff list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["staff"]))')
if [ "$staff" = 0 ]; then
  step "The demo centre: two units, two windows with A/B posts, five staff (scripts/demo/roster.csv)"
  cg unit add zwfw 政务服务中心综合窗口 --home-department 政务服务管理办公室
  cg unit add tax 税务局 --home-department 市税务局办公室
  cg window add "$WINDOW" --unit zwfw --description 综合受理
  cg window add W02 --unit tax --description 税务登记
  cg staff import scripts/demo/roster.csv
  step "This machine's login $(id -un) belongs to S001 (张三, A post of $WINDOW)"
  cg account map "$(id -un)" --staff S001
  step "What the computer cannot see, entered by the centre's office: peer review votes, dress, a letter of praise"
  cg score import scripts/demo/entries.csv --month "$month"
fi
cg window list

step "The score sheet of $month (regulation 9: four sections, floors, ranking, the top 3 as 先进工作者)"
cg score month "$month"
