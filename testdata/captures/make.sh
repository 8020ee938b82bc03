#!/usr/bin/env bash
# Remakes the captures in this folder from real sessions between independent
# Modbus implementations (see README.md). Needs socat, mbpoll, libmodbus-dev
# and python3-pymodbus from Debian, and Go. Then refresh the golden files:
#   go test ./cmd/mcpgw -run TestReplayGolden -update
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
stop() { # interrupt everything started (mcpgw closes its capture), then kill what is left
	kill -INT "${pids[@]}" 2>/dev/null || true; sleep 0.5
	kill -KILL "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; pids=()
}

lm=$(pkg-config --cflags --libs libmodbus)
cc -o "$tmp/rtu_slave" ../interop/rtu_slave.c $lm
cc -o "$tmp/rtu_master" ../interop/rtu_master.c $lm
go build -o "$tmp/mcpgw" ../../cmd/mcpgw

line() { # line NAME [socat options]: a pty pair $tmp/NAME-a, $tmp/NAME-b
	local name=$1; shift
	socat "$@" pty,raw,echo=0,link="$tmp/$name-a" pty,raw,echo=0,link="$tmp/$name-b" &
	pids+=($!)
	for _ in $(seq 100); do [ -e "$tmp/$name-a" ] && [ -e "$tmp/$name-b" ] && return; sleep 0.05; done
	echo "socat did not start" >&2; exit 1
}
device() { # device PORT: pymodbus, units 1 to 3
	/usr/bin/python3 ../interop/pymodbus_server.py "$1" 19200 N 1 2 3 >/dev/null & pids+=($!)
	sleep 2 # python is slow to start
}
mb() { mbpoll -b 19200 -P none -o 0.3 -1 -0 "$@" >/dev/null || true; }

# The requests, straight on a line (rtu) or through a gateway (tcp).
session() { # session rtu PORT | session tcp PORT
	local m=(-m "$1") target=$2
	[ "$1" = tcp ] && m=(-m tcp -p "${target##*:}") && target=127.0.0.1
	mb "${m[@]}" -a 1 -r 0 -c 125 "$target"             # FC 03, the most registers
	mb "${m[@]}" -a 2 -t 3 -r 1875 -c 125 "$target"     # FC 04, up to the map's end
	mb "${m[@]}" -a 3 -t 0 -r 0 -c 125 "$target"        # FC 01
	mb "${m[@]}" -a 1 -t 1 -r 100 -c 125 "$target"      # FC 02
	mb "${m[@]}" -a 1 -t 0 -r 5 "$target" 1             # FC 05
	mb "${m[@]}" -a 1 -r 7 "$target" 1234               # FC 06
	mb "${m[@]}" -a 1 -t 0 -r 100 "$target" 1 0 1 1 0 1 # FC 15
	mb "${m[@]}" -a 1 -r 200 "$target" 11 22 33         # FC 16
	mb "${m[@]}" -a 1 -r 9999 -c 2 "$target"            # exception 02
	mb "${m[@]}" -a 9 -r 0 -c 1 "$target"               # a silent unit
}

# 1. Straight on the line, recorded by socat -x -v: mbpoll and a libmodbus
#    master to a pymodbus device.
line direct -x -v 2> session.socat.txt
device "$tmp/direct-b"
session rtu "$tmp/direct-a"
"$tmp/rtu_master" "$tmp/direct-a"
stop

# 2. Through mcpgw, recorded by mcpgw itself, as pcap and as text.
for fmt in pcap txt; do
	line gw
	device "$tmp/gw-b"
	cat > "$tmp/gw.toml" <<TOML
[server]
listen = "127.0.0.1:15020"
[log]
level = "error"
[[bus]]
name = "line1"
port = "$tmp/gw-a"
parity = "N"
stop_bits = 2
timeout = "500ms"
retries = 1
units = ["1-9"]
capture = "$PWD/gateway.$fmt"
TOML
	"$tmp/mcpgw" run -config "$tmp/gw.toml" & pids+=($!); sleep 0.5
	session tcp 127.0.0.1:15020
	stop
done

# 3. Noise and broken frames: mcpgw sim as a faulty device (seeded), mcpgw's capture.
line faulty
"$tmp/mcpgw" sim -port "$tmp/faulty-b" -parity N -stop-bits 2 -units 1 -noise 0.3 -corrupt 0.3 -seed 7 -log-level error & pids+=($!)
sed -e "s|$tmp/gw-a|$tmp/faulty-a|" -e "s|gateway.txt|faulty.txt|" -e 's|retries = 1|retries = 2|' "$tmp/gw.toml" > "$tmp/faulty.toml"
"$tmp/mcpgw" run -config "$tmp/faulty.toml" & pids+=($!); sleep 0.5
for r in 0 10 20 30 40 50 60 70; do mbpoll -m tcp -p 15020 -a 1 -0 -1 -r $r -c 10 127.0.0.1 >/dev/null || true; done
stop
echo "captures made"
