#!/bin/bash
# SPDX-License-Identifier: MIT
# sim-load.sh: registrations per second, latency and peak RSS of dps-sim under 1,000 concurrent TLS devices
#
# Generates throw-away credentials, starts dps-sim on loopback (port 0, ready
# file) with throttling off, no assigning polls and retry-after 0, runs
# dps-loadgen against it, reads dps-sim's peak RSS (VmHWM), then stops
# dps-sim by its pid. Prints the figures; asserts only that every device was
# assigned and that dps-sim exited cleanly. Goal on a 2-core machine:
# >= 500 registrations/s (DPS itself allows 1,000 per minute per instance).

set -euo pipefail

prog=${0##*/}
here=$(cd "$(dirname "$0")" && pwd)
src=${DPSD_SOURCE_ROOT:-$(dirname "$here")}
build=${DPSD_BUILD_ROOT:-$src/build}
devices=1000
concurrency=
timeout=60
events=
keep=0

usage() {
        cat <<EOF
Usage: $prog [--devices N] [--concurrency N] [--timeout S] [--events FILE] [--keep]

Runs dps-loadgen with N devices (default $devices) against a fresh dps-sim and
prints registrations/s, p50/p99 latency and dps-sim's peak RSS.
Uses \$DPSD_BUILD_ROOT (default $src/build) for dps-sim and dps-loadgen.
EOF
}

while (( $# > 0 )); do
        case $1 in
        --devices|-n) devices=$2; shift 2 ;;
        --concurrency|-c) concurrency=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        --events) events=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "$prog: unknown argument '$1' (see --help)" >&2; exit 2 ;;
        esac
done

sim=$build/sim/dps-sim
loadgen=$build/bench/dps-loadgen
for b in "$sim" "$loadgen"; do
        [[ -x $b ]] || { echo "$prog: $b is not built (ninja -C $build)" >&2; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/dpsd-sim-load.XXXXXX")
sim_pid=
cleanup() {
        if [[ -n $sim_pid ]] && kill -0 "$sim_pid" 2>/dev/null; then
                kill -TERM "$sim_pid" 2>/dev/null || true
                for _ in $(seq 50); do kill -0 "$sim_pid" 2>/dev/null || break; sleep 0.1; done
                kill -KILL "$sim_pid" 2>/dev/null || true
        fi
        if (( keep )); then echo "kept $tmp" >&2; else rm -rf -- "$tmp"; fi
}
trap cleanup EXIT

# Both processes hold one descriptor per device.
hard=$(ulimit -Hn)
if [[ $hard == unlimited ]] || (( hard > 65536 )); then hard=65536; fi
ulimit -n "$hard"

"$src/sim/dps-sim-certs" "$tmp" --group-sas grp-load >/dev/null

cat >"$tmp/dps-sim.conf" <<EOF
# SPDX-License-Identifier: MIT
# dps-sim config for sim-load.sh: throttling off, answers as fast as it can.
id-scope = "0ne00000A0A";
tls = { certificate = "server.crt"; key = "server.key"; };
listen = { mqtt = "127.0.0.1:0"; };
throttle = { registrations-per-minute = 0; operations-per-minute = 0; polls-per-10s = 0; };
defaults = { assigning-polls = 0; retry-after = 0; };
enrollments = (
  { group = "grp-load"; attestation = "symmetric-key"; primary-key = "$(cat "$tmp/grp-load.group-sas")";
    hubs = [ "hub-load-a.azure-devices.net", "hub-load-b.azure-devices.net" ]; allocation = "round-robin"; }
);
EOF

sim_args=(--config "$tmp/dps-sim.conf" --ready-file "$tmp/ready.json" --set retry-after=0 --set assigning-polls=0)
[[ -n $events ]] && sim_args+=(--events "$events")
"$sim" "${sim_args[@]}" 2>"$tmp/dps-sim.log" &
sim_pid=$!

for _ in $(seq 200); do
        [[ -s $tmp/ready.json ]] && break
        kill -0 "$sim_pid" 2>/dev/null || { echo "$prog: dps-sim exited early:" >&2; cat "$tmp/dps-sim.log" >&2; exit 1; }
        sleep 0.05
done
[[ -s $tmp/ready.json ]] || { echo "$prog: dps-sim wrote no ready file in 10 s" >&2; exit 1; }
port=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["mqtt"])' "$tmp/ready.json")

lg_args=(--port "$port" --ca "$tmp/ca.crt" --group-key-file "$tmp/grp-load.group-sas"
         --devices "$devices" --timeout "$timeout" --json)
[[ -n $concurrency ]] && lg_args+=(--concurrency "$concurrency")
lg_rc=0
result=$("$loadgen" "${lg_args[@]}") || lg_rc=$?

hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$sim_pid/status" 2>/dev/null || echo 0)
rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$sim_pid/status" 2>/dev/null || echo 0)
# utime + stime in clock ticks (fields 14 and 15; the command name in field 2 has no spaces here).
sim_ticks=$(awk '{ print $14 + $15 }' "/proc/$sim_pid/stat" 2>/dev/null || echo 0)
hz=$(getconf CLK_TCK)

kill -TERM "$sim_pid"
sim_rc=0
wait "$sim_pid" || sim_rc=$?
sim_pid=

python3 - "$result" "${hwm:-0}" "${rss:-0}" "$devices" "${sim_ticks:-0}" "$hz" "$(nproc)" <<'EOF'
import json, sys
r = json.loads(sys.argv[1]) if sys.argv[1].strip() else {}
hwm, rss, n = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
sim_cpu = int(sys.argv[5]) / int(sys.argv[6])
cores = int(sys.argv[7])
lg_cpu = r.get("loadgen_cpu_s", 0)
done = r.get("assigned") or 0
print("dps-sim load: %d TLS devices, %s at once, one group enrollment, no throttling"
      % (n, r.get("concurrency", n) if r.get("concurrency", n) != n else "all"))
print("  assigned         %s of %s (failed %s: %s)" % (r.get("assigned"), r.get("devices"), r.get("failed"),
      ", ".join("%s %d" % kv for kv in r.get("failures", {}).items() if kv[1]) or "none"))
print("  registrations/s  %.1f   (%.3f s from the first connect to the last assignment)"
      % (r.get("registrations_per_s", 0), r.get("seconds", 0)))
print("  latency          p50 %.1f ms   p99 %.1f ms   max %.1f ms"
      % (r.get("p50_ms", 0), r.get("p99_ms", 0), r.get("max_ms", 0)))
ph = r.get("phases_ms", {})
if ph:
    print("  phases p50/p99   " + ", ".join("%s %.0f/%.0f ms" % (k, v["p50"], v["p99"])
                                          for k, v in ph.items() if k != "total"))
print("  dps-sim memory   peak RSS (VmHWM) %.1f MiB, RSS after the run %.1f MiB" % (hwm / 1024, rss / 1024))
if done:
    # Wall-clock rates depend on whatever else runs on the machine; CPU per
    # registration does not, and bounds what the cores could do.
    per = (sim_cpu + lg_cpu) / done
    print("  cpu              dps-sim %.2f ms, dps-loadgen %.2f ms per registration;"
          " %d cores bound both together at ~%.0f registrations/s"
          % (1000 * sim_cpu / done, 1000 * lg_cpu / done, cores, cores / per if per else 0))
print("RESULT " + json.dumps(dict(r, sim_vmhwm_kib=hwm, sim_vmrss_kib=rss, sim_cpu_s=round(sim_cpu, 3))))
EOF

if (( sim_rc != 0 )); then
        echo "$prog: dps-sim exited with status $sim_rc after SIGTERM:" >&2
        tail -n 20 "$tmp/dps-sim.log" >&2
        exit 1
fi
if (( lg_rc != 0 )); then
        echo "$prog: not every device was assigned (dps-loadgen exit $lg_rc); dps-sim log tail:" >&2
        tail -n 20 "$tmp/dps-sim.log" >&2
        exit 1
fi
