#!/usr/bin/env bash
# CheckTrade through h2load (nghttp2's load generator, Debian: nghttp2-client): riskgate against
# a plain tonic server (examples/plain_tonic_server.rs: one Mutex<HashMap> lookup), side by side
# in one run, servers pinned to the last core and h2load to the first, alternating rounds.
#
#   benches/h2load.sh                       # 5 rounds of 5 s per pattern
#   ROUNDS=3 SECONDS_PER_RUN=3 benches/h2load.sh
#   SESSION=1 benches/h2load.sh             # and TradeSession through benches/loadgen.rs
#   BASELINE=/tmp/riskgate-before benches/h2load.sh   # and another build of riskgate, run as
#                                           # the quick start runs it, in the same rounds
#
# Patterns: -c1 -m16 (one connection, 16 streams: one bot's channel), -c8 -m8, -c1 -m1.
# riskgate runs three ways: as the quick start runs it (SQLite store, no metrics, no auth), and
# as production runs it (a metrics listener on, token auth on, h2load sending the token).
# Prints each run, then per pattern the means (min-max) and riskgate's ratios to the plain server.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}

command -v h2load >/dev/null || { echo "h2load is not installed (Debian: nghttp2-client)" >&2; exit 1; }
command -v taskset >/dev/null || { echo "taskset is not installed (util-linux)" >&2; exit 1; }
cargo build --release --bin riskgate --example plain_tonic_server

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

cores=$(nproc)
server_core=$((cores - 1))
load_core=0

# One gRPC message: not compressed, 7 bytes long, CheckTradeRequest{account_id: "ACC-1"}.
printf '\x00\x00\x00\x00\x07\x0a\x05ACC-1' >"$work/check.bin"

token=h2load-bench-token
digest=$(printf '%s\n' "$token" | target/release/riskgate hash-token)
cat >"$work/production.toml" <<EOF
[metrics]
listen = "127.0.0.1:0"
[auth]
mode = "token"
[[auth.principals]]
name = "bench-bot"
roles = ["bot"]
token_sha256 = "$digest"
gate_calls_per_sec = 100000000
EOF

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
  for _ in $(seq 200); do
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on $1" >&2
  exit 1
}

declare -A port
port[plain]=$(free_port)
taskset -c "$server_core" target/release/examples/plain_tonic_server "127.0.0.1:${port[plain]}" &
pids+=($!)
port[riskgate]=$(free_port)
RISKGATE__SERVER__LISTEN="127.0.0.1:${port[riskgate]}" RISKGATE__STORE__PATH="$work/data" \
  RISKGATE__LOG__LEVEL=warn RISKGATE__CONSOLE__LISTEN= taskset -c "$server_core" target/release/riskgate serve &
pids+=($!)
port[production]=$(free_port)
metrics_port=$(free_port)
sed -i "s/127.0.0.1:0/127.0.0.1:$metrics_port/" "$work/production.toml"
RISKGATE__SERVER__LISTEN="127.0.0.1:${port[production]}" RISKGATE__STORE__PATH="$work/data-production" \
  RISKGATE__LOG__LEVEL=warn taskset -c "$server_core" target/release/riskgate serve --config "$work/production.toml" &
pids+=($!)
names=(plain riskgate production)
if [ -n "${BASELINE:-}" ]; then
  port[baseline]=$(free_port)
  RISKGATE__SERVER__LISTEN="127.0.0.1:${port[baseline]}" RISKGATE__STORE__PATH="$work/data-baseline" \
    RISKGATE__LOG__LEVEL=warn RISKGATE__CONSOLE__LISTEN= taskset -c "$server_core" "$BASELINE" serve &
  pids+=($!)
  names+=(baseline)
fi
for name in "${names[@]}"; do wait_port "${port[$name]}"; done
sleep 0.5

# Prints calls/s of one h2load run against $1 with $2 connections and $3 streams each.
run() {
  local name=$1 connections=$2 streams=$3 auth=()
  if [ "$name" = production ]; then auth=(-H "authorization: Bearer $token"); fi
  taskset -c "$load_core" h2load -c "$connections" -m "$streams" -D "$SECONDS_PER_RUN" \
    -H 'content-type: application/grpc' -H 'te: trailers' "${auth[@]}" -d "$work/check.bin" \
    "http://127.0.0.1:${port[$name]}/riskgate.v1.GateService/CheckTrade" 2>/dev/null \
    | awk '/^finished in/ { gsub(",", "", $4); print $4 } /^requests:/ { if ($10 + 0 > 0 || $12 + 0 > 0) print "h2load saw failed requests" > "/dev/stderr" }'
}

# gRPC errors travel in a 200 response, which h2load counts as a success: one call first,
# verbose, must not carry a grpc-status other than 0 (a wrong token, say).
verify() {
  local name=$1 auth=()
  if [ "$name" = production ]; then auth=(-H "authorization: Bearer $token"); fi
  if h2load -n 1 -c 1 -v -H 'content-type: application/grpc' -H 'te: trailers' "${auth[@]}" \
    -d "$work/check.bin" "http://127.0.0.1:${port[$name]}/riskgate.v1.GateService/CheckTrade" 2>&1 \
    | grep -E 'grpc-status: [1-9]'; then
    echo "$name answers CheckTrade with an error: not measured" >&2
    exit 1
  fi
}
for name in "${names[@]}"; do verify "$name"; done

declare -A rates round_rate
patterns=("1 16" "8 8" "1 1")
for pattern in "${patterns[@]}"; do
  read -r c m <<<"$pattern"
  for round in $(seq "$ROUNDS"); do
    # Alternate the order each round: drift over time falls on both.
    if [ $((round % 2)) = 1 ]; then order="${names[*]}"; else order=$(printf '%s\n' "${names[@]}" | tac | xargs); fi
    for name in $order; do
      rate=$(run "$name" "$c" "$m")
      rates["$pattern,$name"]+="$rate "
      round_rate["$pattern,$name,$round"]=$rate
      echo "-c$c -m$m round $round $name: $rate req/s"
    done
  done
done

echo
echo "h2load CheckTrade, ${ROUNDS} alternating rounds of ${SECONDS_PER_RUN} s, servers on core $server_core, h2load on core $load_core"
printf '%-10s %-28s %-28s %-28s %-9s %-9s\n' pattern "plain tonic" "riskgate" "riskgate (metrics+token)" ratio "ratio(p)"
stats() { tr ' ' '\n' | awk 'NF { s += $1; n++; if (min == "" || $1 < min) min = $1; if ($1 > max) max = $1 } END { printf "%.0f (%.0f-%.0f)", s / n, min, max }'; }
mean() { tr ' ' '\n' | awk 'NF { s += $1; n++ } END { print s / n }'; }
for pattern in "${patterns[@]}"; do
  read -r c m <<<"$pattern"
  plain=$(echo "${rates["$pattern,plain"]}" | mean)
  riskgate=$(echo "${rates["$pattern,riskgate"]}" | mean)
  production=$(echo "${rates["$pattern,production"]}" | mean)
  printf '%-10s %-28s %-28s %-28s %-9s %-9s\n' "-c$c -m$m" \
    "$(echo "${rates["$pattern,plain"]}" | stats)" \
    "$(echo "${rates["$pattern,riskgate"]}" | stats)" \
    "$(echo "${rates["$pattern,production"]}" | stats)" \
    "$(awk -v a="$riskgate" -v b="$plain" 'BEGIN { printf "%.2fx", a / b }')" \
    "$(awk -v a="$production" -v b="$plain" 'BEGIN { printf "%.2fx", a / b }')"
  if [ -n "${BASELINE:-}" ]; then
    baseline=$(echo "${rates["$pattern,baseline"]}" | mean)
    printf '%-10s baseline %s: %s, ratio %s; riskgate/baseline %s\n' "-c$c -m$m" "$BASELINE" \
      "$(echo "${rates["$pattern,baseline"]}" | stats)" \
      "$(awk -v a="$baseline" -v b="$plain" 'BEGIN { printf "%.2fx", a / b }')" \
      "$(awk -v a="$riskgate" -v b="$baseline" 'BEGIN { printf "%.2fx", a / b }')"
  fi
done

# Ratios of the runs of one round (run next to each other, so the machine's drift over the
# whole run does not enter), median over the rounds.
median_ratio() {
  local pattern=$1 a=$2 b=$3
  for round in $(seq "$ROUNDS"); do
    awk -v a="${round_rate["$pattern,$a,$round"]}" -v b="${round_rate["$pattern,$b,$round"]}" 'BEGIN { print a / b }'
  done | sort -g | awk '{ v[NR] = $1 } END { printf "%.2fx", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
echo
echo "Medians of the ratios within each round:"
printf '%-10s %-16s %-16s %-22s\n' pattern riskgate/plain production/plain production/riskgate
for pattern in "${patterns[@]}"; do
  read -r c m <<<"$pattern"
  printf '%-10s %-16s %-16s %-22s\n' "-c$c -m$m" "$(median_ratio "$pattern" riskgate plain)" \
    "$(median_ratio "$pattern" production plain)" "$(median_ratio "$pattern" production riskgate)"
done

if [ "${SESSION:-0}" = 1 ]; then
  echo
  echo "TradeSession, through benches/loadgen.rs (riskgate against its trivial server):"
  cargo bench --bench loadgen -- --mode session
fi
