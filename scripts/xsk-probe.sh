#!/bin/bash
# AF_XDP smoke probe (groundwork for the AF_XDP backend; see docs/afxdp.md):
# two netns joined by a veth pair, addresses in 198.18.0.0/15 only; an
# AF_XDP socket on one end receives what the other end sends, and sends a
# frame back. Never touches eth0, host routes, iptables/nftables; cleans up
# through a trap.
# Build first: cargo build --release -p sluice-perf --features afxdp --example xsk_probe
# Usage (root): bash scripts/xsk-probe.sh [none|inner]   (bpffs inside the netns: no / yes)
set -u
BPFFS_INNER=${1:-none}
cd "$(dirname "$0")/.."
OUT=$(mktemp -d)
BIN=${BIN:-$PWD/target/release/examples/xsk_probe}
PY=/usr/bin/python3
mkdir -p "$OUT"; rm -f "$OUT"/*
PIDS=()
MOUNTED_BPFFS=0

cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  ip netns del xskp-a 2>/dev/null
  ip netns del xskp-b 2>/dev/null   # deleting the netns destroys the veth pair
  if [ "$MOUNTED_BPFFS" = 1 ]; then umount /sys/fs/bpf && echo "[cleanup] unmounted host bpffs"; fi
  echo "[cleanup] netns left: $(ip netns list | grep -c xskp)"
}
trap cleanup EXIT INT TERM

# --- bpffs on the host ---
if findmnt -t bpf /sys/fs/bpf >/dev/null; then
  echo "[setup] host bpffs already mounted at /sys/fs/bpf"
else
  echo "[setup] host bpffs NOT mounted; mounting it"
  mount -t bpf bpf /sys/fs/bpf && MOUNTED_BPFFS=1
fi

# --- namespaces + veth ---
ip netns add xskp-a || exit 1
ip netns add xskp-b || exit 1
ip link add xskpa0 netns xskp-a type veth peer name xskpb0 netns xskp-b || exit 1
for ns in xskp-a xskp-b; do
  ip netns exec $ns sysctl -qw net.ipv6.conf.all.disable_ipv6=1   # keep the capture quiet (netns-local sysctl)
  ip -n $ns link set lo up
done
ip -n xskp-a addr add 198.18.250.1/24 dev xskpa0
ip -n xskp-b addr add 198.18.250.2/24 dev xskpb0
ip -n xskp-a link set xskpa0 up
ip -n xskp-b link set xskpb0 up
MAC_A=$(ip netns exec xskp-a cat /sys/class/net/xskpa0/address)
MAC_B=$(ip netns exec xskp-b cat /sys/class/net/xskpb0/address)
echo "[setup] xskpa0=$MAC_A xskpb0=$MAC_B"
ip -n xskp-a neigh replace 198.18.250.2 lladdr "$MAC_B" dev xskpa0 nud permanent
ip netns exec xskp-b ethtool -l xskpb0 2>&1 | sed 's/^/[ethtool -l] /' | grep -iE "combined|rx|tx" | head -4
sleep 1

# --- receivers in xskp-a for the XSK TX test ---
ip netns exec xskp-a tcpdump --immediate-mode -l -nn -e -XX -c1 -i xskpa0 'udp and dst host 198.18.250.1 and dst port 5000' >"$OUT/tcpdump.txt" 2>"$OUT/tcpdump.err" &
PIDS+=($!)
ip netns exec xskp-a $PY -c '
import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(("198.18.250.1",5000)); s.settimeout(20)
try:
    d,a=s.recvfrom(2048); print("[udp-listener xskp-a] got %r from %s:%d" % (d,a[0],a[1]))
except socket.timeout:
    print("[udp-listener xskp-a] TIMEOUT, nothing received")
' >"$OUT/listener.txt" 2>&1 &
LPID=$!; PIDS+=($LPID)
sleep 1

# --- the XSK probe in xskp-b ---
if [ "$BPFFS_INNER" = inner ]; then
  ip netns exec xskp-b sh -c 'mount -t bpf bpf /sys/fs/bpf && exec ${WRAP:-} "$0" "$@"' "$BIN" xskpb0 5 "$MAC_A" >"$OUT/probe.txt" 2>&1 &
else
  ip netns exec xskp-b "$BIN" xskpb0 5 "$MAC_A" >"$OUT/probe.txt" 2>&1 &
fi
PPID_=$!; PIDS+=($PPID_)
sleep 1
echo "--- during run: ip -n xskp-b -d link show xskpb0"; ip -n xskp-b -d link show xskpb0 | grep -E "xskpb0|xdp|prog"
PROGID=$(ip -n xskp-b -d link show xskpb0 | grep -oP 'prog/xdp id \K[0-9]+' | head -1)
[ -n "$PROGID" ] && bpftool prog show id "$PROGID" | head -3
ip netns exec xskp-b bpftool net show dev xskpb0 2>&1 | head -5
ip netns exec xskp-b sh -c 'findmnt -t bpf; ls -R /sys/fs/bpf 2>/dev/null | head' | sed 's/^/[netns bpffs] /'

# --- traffic from xskp-a to 198.18.250.2 ---
ip netns exec xskp-a $PY -c '
import socket
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
for i in range(3): s.sendto(b"udp-probe-%d" % i, ("198.18.250.2", 6000))
print("[sender xskp-a] sent 3 UDP datagrams to 198.18.250.2:6000")
'
ip netns exec xskp-a ping -c 3 -i 0.3 -W 1 198.18.250.2 | tail -2

wait $PPID_; echo "[probe exit code] $?"
wait $LPID
echo "================ probe output"; cat "$OUT/probe.txt"
echo "================ listener"; cat "$OUT/listener.txt"
sleep 1
echo "================ tcpdump"; cat "$OUT/tcpdump.txt"; grep -v "listening\|^$" "$OUT/tcpdump.err"
echo "================ after exit: ip -n xskp-b link show xskpb0"
ip -n xskp-b link show xskpb0
ip -n xskp-b -d link show xskpb0 | grep -q xdp && echo "!!! XDP PROGRAM STILL ATTACHED" || echo "[check] no xdp program attached"
ip netns exec xskp-b bpftool net show dev xskpb0 2>&1 | head -5
