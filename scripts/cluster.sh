#!/usr/bin/env bash
# A local 3-broker Cairn cluster in one command.
#
#   scripts/cluster.sh start    build the release binary, start brokers 1-3, wait until all three
#                               are alive and a controller is elected
#   scripts/cluster.sh status   which brokers run, and `cairn cluster info`
#   scripts/cluster.sh stop     SIGTERM every broker and wait for it to exit
#
# Broker N (1-3) listens on 127.0.0.1:<port N>, keeps its data in cluster-data/broker-N/, its
# pid in cluster-data/broker-N.pid and its log in cluster-data/broker-N.log (all under the
# repository root). Every broker is a Raft voter. Stopping keeps the data: `start` again brings
# the same cluster back; `rm -rf cluster-data` after `stop` starts afresh.
#
# Environment:
#   CAIRN_CLUSTER_PORTS    three ports, comma-separated      [9092,9093,9094]
#   CAIRN_CLUSTER_HOST     address to listen on              [127.0.0.1]
#   CAIRN_CLUSTER_DIR      where data, pids and logs go      [cluster-data]
#   CAIRN_CLUSTER_CONFIG   a TOML file passed to every broker as --config   [none]
#   CAIRN_CLUSTER_TIMEOUT  seconds `start` waits for the cluster to form    [90]
#   CAIRN_BIN              a cairn binary to use instead of building target/release/cairn
#   CAIRN_LOG              broker log level                  [info]
set -euo pipefail
cd "$(dirname "$0")/.."

IFS=, read -r -a ports <<<"${CAIRN_CLUSTER_PORTS:-9092,9093,9094}"
host="${CAIRN_CLUSTER_HOST:-127.0.0.1}"
dir="${CAIRN_CLUSTER_DIR:-cluster-data}"
timeout="${CAIRN_CLUSTER_TIMEOUT:-90}"
bin="${CAIRN_BIN:-${CARGO_TARGET_DIR:-target}/release/cairn}"

if [[ ${#ports[@]} -ne 3 ]]; then
  echo "CAIRN_CLUSTER_PORTS must name three ports, got '${CAIRN_CLUSTER_PORTS}'" >&2
  exit 2
fi

ids=(1 2 3)
brokers="$host:${ports[0]},$host:${ports[1]},$host:${ports[2]}"
voters="1@$host:${ports[0]},2@$host:${ports[1]},3@$host:${ports[2]}"

pid_of() { # prints the pid of broker $1 if it runs
  local file="$dir/broker-$1.pid"
  [[ -f $file ]] && kill -0 "$(cat "$file")" 2>/dev/null && cat "$file"
}

# Prints "<brokers alive> <controller id>" from `cairn cluster info` asked of broker $1
# (host:port), or nothing if it does not answer. Reads the text tables: the CONTROLLER row, and
# the STATUS column of BROKERS.
cluster_state() {
  "$bin" cluster info --brokers "$1" 2>/dev/null | awk '
    $1 == "CONTROLLER" { controller = $2 }
    $1 == "ID" && $3 == "STATUS" { table = 1; next }
    table && $3 == "ALIVE" { alive++ }
    END { if (controller != "") print alive + 0, controller }'
}

start() {
  local pid
  if [[ -z ${CAIRN_BIN:-} ]]; then
    echo "building the release binary (cargo build --release -p cairn-server)"
    cargo build --release -p cairn-server
  fi
  mkdir -p "$dir"
  local config=()
  if [[ -n ${CAIRN_CLUSTER_CONFIG:-} ]]; then
    config=(--config "$CAIRN_CLUSTER_CONFIG")
  fi
  for i in "${ids[@]}"; do
    if pid=$(pid_of "$i"); then
      echo "broker $i already runs (pid $pid)"
      continue
    fi
    local port="${ports[$((i - 1))]}"
    CAIRN_LOG="${CAIRN_LOG:-info}" nohup "$bin" serve --node-id "$i" \
      --listen "$host:$port" --data-dir "$dir/broker-$i" --voters "$voters" "${config[@]}" \
      >>"$dir/broker-$i.log" 2>&1 </dev/null &
    echo $! >"$dir/broker-$i.pid"
    echo "broker $i: $host:$port, pid $!, data $dir/broker-$i, log $dir/broker-$i.log"
  done

  echo "waiting up to ${timeout}s for 3 live brokers and a controller"
  local deadline=$((SECONDS + timeout)) state=""
  while ((SECONDS < deadline)); do
    for i in "${ids[@]}"; do
      if ! pid_of "$i" >/dev/null; then
        echo "broker $i exited; the end of $dir/broker-$i.log:" >&2
        tail -n 20 "$dir/broker-$i.log" >&2
        exit 1
      fi
    done
    # Every broker must answer on its own with three live brokers and the same controller.
    state=""
    local ready=1 first=""
    for port in "${ports[@]}"; do
      local s
      s=$(cluster_state "$host:$port" || true)
      state+="${state:+; }$host:$port: ${s:-no answer}"
      if [[ ! $s =~ ^3\ [1-9][0-9]*$ ]] || [[ -n $first && $s != "$first" ]]; then
        ready=0
      fi
      first="${first:-$s}"
    done
    if ((ready)); then
      "$bin" cluster info --brokers "$brokers"
      echo
      echo "ready: export CAIRN_BROKERS=$brokers"
      return 0
    fi
    sleep 0.5
  done
  echo "the cluster did not form within ${timeout}s (brokers alive, controller: $state)" >&2
  echo "logs: $dir/broker-{1,2,3}.log; stop with: $0 stop" >&2
  exit 1
}

stop() {
  local pid
  local pids=()
  for i in "${ids[@]}"; do
    if pid=$(pid_of "$i"); then
      kill -TERM "$pid"
      pids+=("$i:$pid")
    fi
  done
  local failed=0
  for entry in "${pids[@]}"; do
    local i="${entry%%:*}" pid="${entry#*:}" waited=0
    while kill -0 "$pid" 2>/dev/null && ((waited < 300)); do
      sleep 0.1
      waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "broker $i (pid $pid) did not exit within 30s; see $dir/broker-$i.log" >&2
      failed=1
    else
      echo "broker $i stopped"
      rm -f "$dir/broker-$i.pid"
    fi
  done
  if [[ ${#pids[@]} -eq 0 ]]; then
    echo "no broker runs"
  fi
  return "$failed"
}

status() {
  local pid
  local running=0
  for i in "${ids[@]}"; do
    if pid=$(pid_of "$i"); then
      echo "broker $i: running, pid $pid, $host:${ports[$((i - 1))]}"
      running=$((running + 1))
    else
      echo "broker $i: not running"
    fi
  done
  if ((running > 0)); then
    echo
    "$bin" cluster info --brokers "$brokers"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
