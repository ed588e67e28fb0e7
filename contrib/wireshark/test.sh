#!/usr/bin/env bash
# Tests contrib/wireshark/ferry.lua with tshark:
#   1. the test vectors of docs/PROTOCOL.md section 11, written into a pcap with dummy TCP
#      headers (text2pcap), one frame per segment, all frames in one segment, and frames split
#      across segments: each must decode to its documented fields;
#   2. a real session: ferryd on a free loopback TCP port, captured with tshark while `ferry`
#      authenticates (SCRAM), pings, creates, lists, uploads and downloads a sparse volume (a
#      64 MiB hole: STREAM_HOLE; 256 KiB chunks: CREDIT, frames split over many segments),
#      asks for a missing volume (NOT_FOUND), watches events and aborts a download (Ctrl-C);
#      raw frames from bash to the test program (PING, ECHO, SLEEP + CANCEL, FAIL, an unknown
#      program, SOURCE and SINK with holes); then the node's shutdown (SHUTDOWN, GOAWAY).
#
# Usage: contrib/wireshark/test.sh   (root: it captures on lo, and installs tshark if missing)
# FERRYD and FERRY name the binaries (default: in PATH, else the workspace's target/).
# KEEP=1 keeps the temporary directory (the pcaps, logs) for a look in Wireshark.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
lua="${FERRY_LUA:-$here/ferry.lua}"  # FERRY_LUA: test another copy of the dissector

find_binary() {
  local name=$1 candidate
  for candidate in "$(command -v "$name" 2>/dev/null || true)" \
    "$repo/target/debug/$name" "$repo/target/release/$name"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
      echo "$candidate"
      return
    fi
  done
  echo "test.sh: no $name binary; build the workspace or set ${name^^}=/path/to/$name" >&2
  exit 2
}
FERRYD="${FERRYD:-$(find_binary ferryd)}"
FERRY="${FERRY:-$(find_binary ferry)}"

if ! command -v tshark >/dev/null 2>&1 || ! command -v text2pcap >/dev/null 2>&1 || ! command -v reordercap >/dev/null 2>&1; then
  echo "== installing tshark"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tshark >/dev/null
fi

tmp="$(mktemp -d)"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ "${KEEP:-0}" = 1 ]; then
    echo "kept $tmp"
  else
    rm -rf "$tmp"
  fi
}
trap cleanup EXIT

failures=0
pass() { echo "ok   $*"; }
fail() {
  echo "FAIL $*"
  failures=$((failures + 1))
}

# Decodes $cap with the dissector: tsh FILTER FIELD... prints one line per matching packet,
# fields separated by '|', occurrences in one packet by ','.
tsh() {
  local filter=$1
  shift
  local args=()
  local field
  for field in "$@"; do args+=(-e "$field"); done
  tshark -n -r "$cap" -X lua_script:"$lua" ${decode_as:+-d "$decode_as"} -Y "$filter" \
    -T fields -E separator='|' "${args[@]}" 2>>"$tmp/tshark-read.err"
}

# expect_count DESCRIPTION MIN FILTER: at least MIN packets match FILTER.
expect_count() {
  local what=$1 min=$2 filter=$3 n
  n=$(tsh "$filter" frame.number | wc -l)
  if [ "$n" -ge "$min" ]; then pass "$what ($n)"; else fail "$what: $n packets match '$filter', wanted >= $min"; fi
}
# expect_none DESCRIPTION FILTER: no packet matches FILTER.
expect_none() {
  local what=$1 filter=$2 n
  n=$(tsh "$filter" frame.number | wc -l)
  if [ "$n" -eq 0 ]; then pass "$what"; else fail "$what: $n packets match '$filter'"; fi
}
# expect_output DESCRIPTION EXPECTED FILTER FIELD...: the tsh output is exactly EXPECTED.
expect_output() {
  local what=$1 expected=$2 filter=$3 got
  shift 3
  got=$(tsh "$filter" "$@")
  if [ "$got" = "$expected" ]; then
    pass "$what"
  else
    fail "$what"
    diff <(echo "$expected") <(echo "$got") | sed 's/^/     /' || true
  fi
}

# bounded DESCRIPTION TRIES COMMAND...: runs COMMAND every 0.1 s until it succeeds.
bounded() {
  local what=$1 tries=$2 i
  shift 2
  for ((i = 0; i < tries; i++)); do
    if "$@"; then return 0; fi
    sleep 0.1
  done
  echo "test.sh: timed out waiting for $what" >&2
  return 1
}

###############################################################################################
echo "== section 11 test vectors"

# The vectors, as docs/PROTOCOL.md section 11 prints them.
vectors=(
  "00000020 74657374 00000001 00000001 00000000 00000001 00000000 0a026869"
  "00000032 74657374 00000001 00000001 00000001 00000001 00000001 0805120e 6e6f2073 75636820 766f6c75 6d651802 2004"
  "00000021 74657374 00000001 00000004 00000003 00000007 00000002 66657272 79"
  "00000028 74657374 00000001 00000004 00000006 00000007 00000002 00000000 40000000 00000000"
  "00000020 74657374 00000001 00000004 00000007 00000007 00000000 00100000"
  "0000001c 74657374 00000001 00000002 00000008 00000003 00000000"
  "0000001c 74657374 00000001 00000004 00000003 00000007 00000000"
  "00000028 74657374 00000001 00000004 00000003 00000007 00000001 080a1204 73746f70 18012003"
  "0000001c 6b656570 00000001 00000001 00000002 00000000 00000000"
  "0000003e 766f6c75 00000001 00000005 00000003 00000009 00000000 0a20af13 49b9f5f9 a1a6a040 4dea36dc c9499bcb 25c9adc1 12b7cc9a 93cae41f 3262"
  "00000028 766f6c75 00000001 00000005 00000006 00000009 00000002 00000000 00040000 00000001"
)
for v in "${vectors[@]}"; do
  if grep -qF "\`$v\`" "$repo/docs/PROTOCOL.md"; then :; else fail "vector not in PROTOCOL.md section 11: $v"; fi
done
[ "$(grep -c '^| .* | `[0-9a-f ]*` |$' "$repo/docs/PROTOCOL.md")" -eq "${#vectors[@]}" ] \
  || fail "PROTOCOL.md section 11 has another number of vectors than this test"

# text2pcap reads `od -Ax -tx1` style dumps; a packet starts at offset 0.
to_od() {
  local hex=${1// /} off=0
  while [ -n "$hex" ]; do
    printf '%06x' "$off"
    echo "${hex:0:32}" | sed 's/../ &/g'
    hex=${hex:32}
    off=$((off + 16))
  done
}
# make_pcap FILE SEGMENT...: one TCP segment (40000 -> 7300) per argument, in sequence.
make_pcap() {
  local out=$1 segment
  shift
  : >"$tmp/dump.txt"
  for segment in "$@"; do to_od "$segment" >>"$tmp/dump.txt"; done
  text2pcap -q -T 40000,7300 "$tmp/dump.txt" "$out" >/dev/null 2>"$tmp/text2pcap.err" || {
    cat "$tmp/text2pcap.err"
    exit 1
  }
}

decode_as=""   # port 7300: the dissector's own registration
cap="$tmp/vectors.pcap"
make_pcap "$cap" "${vectors[@]}"

expect_output "headers of every vector" "$(cat <<'EOF'
32|0x74657374|1|1|0|1|0|test|ECHO
50|0x74657374|1|1|1|1|1|test|ECHO
33|0x74657374|1|4|3|7|2|test|SINK
40|0x74657374|1|4|6|7|2|test|SINK
32|0x74657374|1|4|7|7|0|test|SINK
28|0x74657374|1|2|8|3|0|test|SLEEP
28|0x74657374|1|4|3|7|0|test|SINK
40|0x74657374|1|4|3|7|1|test|SINK
28|0x6b656570|1|1|2|0|0|keepalive|PING
62|0x766f6c75|1|5|3|9|0|volume|UPLOAD
40|0x766f6c75|1|5|6|9|2|volume|UPLOAD
EOF
)" ferry ferry.length ferry.program ferry.version ferry.procedure ferry.type ferry.serial \
  ferry.status ferry.program.name ferry.procedure.name

expect_output "payloads of every vector" "$(cat <<'EOF'
6869||||||||||
||5|no such volume|2|4|||||
||||||5|6665727279|||
||||||||1073741824|0x00000000|
||||||||||1048576
|1|||||||||
||||||||||
||10|stop|1|3|||||
||||||||||
||||||||||
||||||||262144|0x00000001|
EOF
)" ferry ferry.test.echo_request.payload ferry.cancel ferry.error.code ferry.error.message \
  ferry.error.side ferry.error.layer ferry.data.length ferry.data ferry.hole.length \
  ferry.hole.flags ferry.credit

expect_output "names of every vector (Info column)" "$(cat <<'EOF'
CALL/OK test.ECHO s=1 payload=6869
REPLY/ERROR test.ECHO s=1 NOT_FOUND "no such volume"
STREAM/CONTINUE test.SINK s=7 data 5 bytes
STREAM_HOLE/CONTINUE test.SINK s=7 hole 1073741824 bytes
CREDIT/OK test.SINK s=7 +1048576
CANCEL/OK test.SLEEP s=3
STREAM/OK test.SINK s=7 (finish/confirmation)
STREAM/ERROR test.SINK s=7 CANCELLED "stop"
MESSAGE/OK keepalive.PING s=0
STREAM/OK volume.UPLOAD s=9 (finish/confirmation) trailer checksum=32 bytes
STREAM_HOLE/CONTINUE volume.UPLOAD s=9 keep 262144 bytes
EOF
)" ferry _ws.col.Info

expect_output "an upload's finish trailer decodes as UploadFinish (section 7.6)" \
  "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262" \
  'ferry.serial == 9' ferry.volume.upload_finish.checksum

expect_count "type names in filters (CREDIT, STREAM_HOLE, CANCEL)" 4 \
  'ferry.type == CREDIT || ferry.type == STREAM_HOLE || ferry.type == CANCEL'
expect_output "error body names: NOT_FOUND/SERVER/APPLICATION, CANCELLED/CLIENT/STREAM" "2
8" 'ferry.error.code == NOT_FOUND && ferry.error.side == SERVER && ferry.error.layer == APPLICATION ||
    ferry.error.code == CANCELLED && ferry.error.side == CLIENT && ferry.error.layer == STREAM' frame.number
expect_none "no expert warnings or errors on the vectors" \
  '_ws.malformed || _ws.expert.severity >= warning || ferry.expert.framing || ferry.expert.violation'

# All eleven in one segment.
all=""
for v in "${vectors[@]}"; do all+="${v// /}"; done
cap="$tmp/one-segment.pcap"
make_pcap "$cap" "$all"
expect_output "all vectors in one segment: eleven frames" "0,1,3,6,7,8,3,3,2,3,6|1,1,7,7,7,3,7,7,0,9,9" \
  ferry ferry.type ferry.serial

# Frames split across segments: the error reply in three pieces (the last also carrying the
# whole CREDIT vector and the start of the PING), then the rest of the PING.
v2=${vectors[1]// /}
v5=${vectors[4]// /}
v9=${vectors[8]// /}
cap="$tmp/split.pcap"
make_pcap "$cap" "${v2:0:20}" "${v2:20:40}" "${v2:60}$v5${v9:0:12}" "${v9:12}"
expect_output "frames split across segments are reassembled" "$(cat <<'EOF'
3|1,7|5|no such volume|1048576|3
4|2||||2
EOF
)" ferry frame.number ferry.type ferry.error.code ferry.error.message ferry.credit tcp.segment.count

# Framing errors are flagged, not decoded as frames: a length below 28, an unknown type.
cap="$tmp/bad.pcap"
make_pcap "$cap" "00000010 74657374 00000001 00000001 00000000 00000001 00000000" \
  "0000001c 74657374 00000001 00000001 00000004 00000001 00000000"
expect_count "framing errors are flagged" 2 'ferry.expert.framing'

###############################################################################################
echo "== a real session, captured"

data="$tmp/data"
mkdir -p "$data"
export FERRY_PASSWORD="wireshark-test-password"
# alice (admin) authenticates with SCRAM; connections that do not authenticate are
# read-write (the raw session below, from bash, has no SCRAM).
printf '[security]\nanonymous_role = "read-write"\n\n' >"$tmp/ferryd.toml"
"$FERRY" hash-password alice --role admin >>"$tmp/ferryd.toml"
"$FERRYD" --config "$tmp/ferryd.toml" --data-dir "$data" --tcp 127.0.0.1:0 --unix-socket "" \
  --metrics 127.0.0.1:0 >"$tmp/ferryd.out" 2>"$tmp/ferryd.log" &
pids+=($!)
ferryd_pid=$!
bounded "ferryd's ready line" 300 grep -q '^ferryd ready: ' "$tmp/ferryd.out" || {
  cat "$tmp/ferryd.log"
  exit 1
}
port=$(sed -n 's/^ferryd ready: tcp=127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$tmp/ferryd.out")
metrics_port=$(sed -n 's/.* metrics=127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$tmp/ferryd.out")
echo "ferryd on 127.0.0.1:$port (metrics on $metrics_port: the capture's probe)"

cap="$tmp/session.pcapng"
decode_as="tcp.port==$port,ferry"
tshark -n -i lo -B 64 -f "tcp port $port or tcp port $metrics_port" -w "$cap" >"$tmp/capture.out" 2>"$tmp/capture.err" &
pids+=($!)
tshark_pid=$!
capturing() { grep -q "Capturing on" "$tmp/capture.err" || ! kill -0 "$tshark_pid" 2>/dev/null; }
bounded "tshark to capture" 300 capturing
kill -0 "$tshark_pid" 2>/dev/null || {
  cat "$tmp/capture.err"
  exit 1
}

# "Capturing on" comes a little before packets are really captured, and packets reach the
# file in blocks, a little after they were sent. So: probe with connections to the metrics
# port until one shows up in the file; then the capture is live.
probe_captured() {
  [ "$(tshark -n -r "$cap" -Y "tcp.port == $metrics_port && tcp.flags.syn == 1" 2>/dev/null | wc -l)" -ge 1 ]
}
probe() {
  local i
  exec 8<>"/dev/tcp/127.0.0.1/$metrics_port" && exec 8>&-
  for ((i = 0; i < 10; i++)); do
    probe_captured && return 0
    sleep 0.2
  done
  return 1
}
bounded "the capture to go live" 30 probe

node=(-c "tcp://127.0.0.1:$port" --user alice)
ferry() { "$FERRY" "${node[@]}" "$@"; }
connections=0
# At the end: the file holds every ferry connection's opening and both sides' closings.
all_captured() {
  local syn fin
  syn=$(tshark -n -r "$cap" -Y "tcp.port == $port && tcp.flags.syn == 1 && tcp.flags.ack == 0" 2>/dev/null | wc -l)
  fin=$(tshark -n -r "$cap" -Y "tcp.port == $port && tcp.flags.fin == 1" 2>/dev/null | wc -l)
  [ "$syn" -ge "$connections" ] && [ "$fin" -ge $((2 * connections)) ]
}

ferry ping >"$tmp/ping.out"
connections=$((connections + 1))

# (Background jobs run $FERRY itself, not the function, so that $! is ferry's pid.)
"$FERRY" "${node[@]}" events >"$tmp/events.out" 2>&1 &
pids+=($!)
events_pid=$!
connections=$((connections + 1))
bounded "the events subscription" 100 grep -qs "watching events" "$tmp/events.out"

ferry vol create small 1MiB >/dev/null
ferry vol list >/dev/null
connections=$((connections + 2))

# A sparse file: 1 MiB of data, a 64 MiB hole (larger than a whole frame may be), 1 MiB.
head -c 1048576 /dev/urandom >"$tmp/sparse.img"
truncate -s $((65 * 1048576)) "$tmp/sparse.img"
head -c 1048576 /dev/urandom >>"$tmp/sparse.img"
ferry vol upload "$tmp/sparse.img" disk1 >/dev/null
disk1_checksum=$(ferry --json vol info disk1 | python3 -c 'import json, sys; print(json.load(sys.stdin)["checksum"])')
ferry vol download disk1 "$tmp/back.img" >/dev/null
connections=$((connections + 2))
cmp -s "$tmp/sparse.img" "$tmp/back.img" || fail "the downloaded volume differs from the upload"

if ferry vol info missing >/dev/null 2>"$tmp/missing.err"; then
  fail "info of a missing volume succeeded"
fi
connections=$((connections + 1))

# A raw session from bash: hand-written frames to the test program, each step waiting for the
# node's answer (its header, in hex, in what the node sent back).
raw_send() {
  local hex=${1// /}
  printf "$(sed 's/../\\x&/g' <<<"$hex")" >&9
}
raw_has() { od -An -tx1 -v "$tmp/raw.out" | tr -d ' \n' | grep -q "${1// /}"; }
raw_wait() { bounded "$1 on the raw connection" 100 raw_has "$2"; }
exec 9<>"/dev/tcp/127.0.0.1/$port"
cat <&9 >"$tmp/raw.out" &
pids+=($!)
raw_reader=$!
connections=$((connections + 1))
# keepalive PING -> PONG
raw_send "0000001c 6b656570 00000001 00000001 00000002 00000000 00000000"
raw_wait "PONG" "6b656570 00000001 00000002 00000002 00000000 00000000"
# ECHO s=1 "hi" -> REPLY/OK
raw_send "00000020 74657374 00000001 00000001 00000000 00000001 00000000 0a026869"
raw_wait "ECHO's reply" "74657374 00000001 00000001 00000001 00000001 00000000"
# SLEEP s=2 60 s, then CANCEL -> REPLY/ERROR CANCELLED
raw_send "00000020 74657374 00000001 00000002 00000000 00000002 00000000 08e0d403"
raw_send "0000001c 74657374 00000001 00000002 00000008 00000002 00000000"
raw_wait "the cancelled SLEEP's reply" "74657374 00000001 00000002 00000001 00000002 00000001"
# FAIL s=3 {code: ALREADY_EXISTS, message: "exists"} -> REPLY/ERROR
raw_send "00000026 74657374 00000001 00000003 00000000 00000003 00000000 08061206 65786973 7473"
raw_wait "FAIL's reply" "74657374 00000001 00000003 00000001 00000003 00000001"
# a program that does not exist, s=4 -> REPLY/ERROR (PERMISSION_DENIED from ferryd today)
raw_send "0000001c 12345678 00000001 00000001 00000000 00000004 00000000"
raw_wait "the unknown program's reply" "12345678 00000001 00000001 00000001 00000004 00000001"
# SOURCE s=5 {length: 300000, data_run: 100000, hole_run: 100000}, CREDIT 1 MiB: data, a
# hole, data, the server's finish; then the client's confirmation -> REPLY/OK
raw_send "00000028 74657374 00000001 00000005 00000000 00000005 00000000 08e0a712 10a08d06 18a08d06"
raw_send "00000020 74657374 00000001 00000005 00000007 00000005 00000000 00100000"
raw_wait "SOURCE's finish" "74657374 00000001 00000005 00000003 00000005 00000000"
raw_send "0000001c 74657374 00000001 00000005 00000003 00000005 00000000"
raw_wait "SOURCE's reply" "74657374 00000001 00000005 00000001 00000005 00000000"
# SINK s=6: after its CREDIT, "ferry", a 64 MiB hole, the finish -> REPLY/OK
raw_send "0000001c 74657374 00000001 00000004 00000000 00000006 00000000"
raw_wait "SINK's credit" "74657374 00000001 00000004 00000007 00000006 00000000"
raw_send "00000021 74657374 00000001 00000004 00000003 00000006 00000002 66657272 79"
raw_send "00000028 74657374 00000001 00000004 00000006 00000006 00000002 00000000 04000000 00000000"
raw_send "0000001c 74657374 00000001 00000004 00000003 00000006 00000000"
raw_wait "SINK's reply" "74657374 00000001 00000004 00000001 00000006 00000000"
# (The raw connection stays open: it will see the node's shutdown.)

# A download into a pipe nobody reads, interrupted: the client aborts its stream
# (STREAM/ERROR CANCELLED) and the node answers REPLY/ERROR CANCELLED.
mkfifo "$tmp/pipe"
"$FERRY" "${node[@]}" vol download disk1 - >"$tmp/pipe" 2>"$tmp/aborted.err" &
pids+=($!)
download_pid=$!
exec 7<"$tmp/pipe"
connections=$((connections + 1))
downloads_seen() { [ "$(grep -c 'progress .*"direction":"download"' "$tmp/events.out")" -ge 2 ]; }
bounded "the second download to start" 200 downloads_seen
kill -INT "$download_pid"
# The node reports the abort; then the pipe closes, so ferry's writer, blocked on it, ends.
bounded "the node to report the aborted download" 100 \
  grep -q 'failed .*"direction":"download".*cancelled' "$tmp/events.out"
exec 7<&-
bounded "the interrupted download to exit" 100 eval '! kill -0 $download_pid 2>/dev/null'
grep -q "interrupted" "$tmp/aborted.err" || fail "the download was not interrupted: $(cat "$tmp/aborted.err")"

# Ctrl-C on the events watcher (it closes its connection; it sends no CANCEL).
kill -INT "$events_pid"
bounded "the events watcher to exit" 100 eval '! kill -0 $events_pid 2>/dev/null'

# The node shuts down: the raw connection, idle, gets SHUTDOWN, then GOAWAY SHUTTING_DOWN.
kill -TERM "$ferryd_pid"
bounded "ferryd to exit" 300 eval '! kill -0 $ferryd_pid 2>/dev/null'
raw_has "66727279 00000001 00000002 00000002 00000000 00000001" || fail "no GOAWAY on the raw connection"
exec 9>&-
kill "$raw_reader" 2>/dev/null || true

bounded "every connection closed in the capture" 100 all_captured
kill -INT "$tshark_pid"
bounded "tshark to stop" 100 eval '! kill -0 $tshark_pid 2>/dev/null'
if grep -q "dropped" "$tmp/capture.err"; then
  fail "the capture dropped packets: $(grep dropped "$tmp/capture.err")"
fi
# Packets sent on both cores at once can reach the capture ring out of order (2 or 3 of ~480
# packets in two of seven captures on a 2-core VM; CI once failed the check below on one such
# packet, a segment that came late, not lost). The file is put in time order (reordercap,
# Wireshark's own tool, installed with tshark) before anything reads it.
reordercap "$cap" "$tmp/session-ordered.pcapng" >/dev/null
cap="$tmp/session-ordered.pcapng"

expect_none "no packet lost by the capture" 'tcp.analysis.lost_segment || tcp.analysis.ack_lost_segment'
expect_none "every frame decodes cleanly (no Lua error, malformed frame or violation)" \
  '_ws.malformed || _ws.expert.severity == error || ferry.expert.framing ||
   ferry.expert.violation || ferry.expert.payload'
expect_none "no frame of an unknown program or procedure but program 0x12345678" \
  'ferry && !ferry.procedure.name && ferry.program != 0x12345678 || ferry.expert.unknown && ferry.program != 0x12345678'
# (ferryd answers it PERMISSION_DENIED, not UNKNOWN_PROGRAM, for a non-admin: any error here.)
expect_count "program 0x12345678 flagged unknown in its CALL and its REPLY/ERROR" 2 \
  'ferry.program == 0x12345678 && ferry.expert.unknown && (ferry.type == CALL || ferry.type == REPLY && ferry.status == ERROR)'
for program in auth admin volume events test keepalive; do
  expect_count "program $program named" 1 "ferry.program.name == \"$program\""
done
expect_count "program numbers named (0x61757468 auth, 0x766f6c75 volume)" 2 \
  'ferry.program == 0x61757468 && ferry.program.name == "auth" || ferry.program == 0x766f6c75 && ferry.program.name == "volume"'
for procedure in SCRAM_SHA_256 INFO CREATE LIST UPLOAD DOWNLOAD SUBSCRIBE EVENT PING PONG ECHO SLEEP FAIL SOURCE SINK; do
  expect_count "procedure $procedure named" 1 "ferry.procedure.name == \"$procedure\""
done
expect_count "SCRAM client-first message shown" 1 'ferry.scram contains "n,,n=alice,r="'
expect_count "authenticated as alice, ADMIN" 1 \
  'ferry.auth.authenticated.identity == "alice" && ferry.auth.authenticated.role == ADMIN'
expect_count "admin INFO reply decoded" 1 'ferry.admin.server_info.max_chunk == 262144'
expect_count "CREATE request decoded" 1 \
  'ferry.volume.create_request.name == "small" && ferry.volume.create_request.size == 1048576'
expect_count "CREDIT grants of one window on UPLOAD and DOWNLOAD" 2 \
  'ferry.type == CREDIT && ferry.credit == 1048576 && (ferry.procedure.name == "UPLOAD" || ferry.procedure.name == "DOWNLOAD")'
expect_count "CREDIT returns after the first window" 2 'ferry.type == CREDIT && ferry.credit < 1048576'
expect_count "STREAM_HOLE of 64 MiB, flags 0, on UPLOAD" 1 \
  'ferry.type == STREAM_HOLE && ferry.status == CONTINUE && ferry.hole.length == 67108864 && ferry.hole.flags == 0 && ferry.procedure.name == "UPLOAD"'
expect_count "STREAM_HOLE of 64 MiB on DOWNLOAD" 2 \
  'ferry.type == STREAM_HOLE && ferry.hole.length == 67108864 && ferry.procedure.name == "DOWNLOAD"'
expect_count "256 KiB STREAM frames reassembled from several segments" 4 \
  'ferry.type == STREAM && ferry.status == CONTINUE && ferry.data.length == 262144 && tcp.segment.count > 1'
expect_count "segments carrying several frames" 1 'count(ferry.type) >= 2'
expect_output "the CLI's upload vouches for the file's BLAKE3 in its finish" \
  "$disk1_checksum" 'ferry.volume.upload_finish.checksum' ferry.volume.upload_finish.checksum
expect_count "upload finish (STREAM/OK) and its REPLY with the hole count" 1 \
  'ferry.volume.upload_reply.hole_bytes == 67108864 && ferry.volume.volume.name == "disk1"'
expect_count "download REPLY with its byte and hole counts" 1 \
  'ferry.volume.download_reply.bytes == 69206016 && ferry.volume.download_reply.hole_bytes == 67108864'
expect_output "NOT_FOUND error body of INFO missing (and of the upload's existence check)" \
  "$(printf '%s\n' '5|volume "disk1" does not exist|2|4' '5|volume "missing" does not exist|2|4')" \
  'ferry.type == REPLY && ferry.status == ERROR && ferry.procedure.name == "INFO"' \
  ferry.error.code ferry.error.message ferry.error.side ferry.error.layer
expect_count "the interrupted download: STREAM/ERROR CANCELLED from the client" 1 \
  'ferry.type == STREAM && ferry.status == ERROR && ferry.error.code == CANCELLED && ferry.error.side == CLIENT && ferry.procedure.name == "DOWNLOAD"'
expect_count "the interrupted download: REPLY/ERROR CANCELLED" 1 \
  'ferry.type == REPLY && ferry.error.code == CANCELLED && ferry.procedure.name == "DOWNLOAD"'
expect_count "events: subscribed, created, uploaded" 3 \
  'ferry.events.event.subscribed || ferry.events.volume_created.name == "small" || ferry.events.volume_uploaded.name == "disk1"'
expect_output "raw session: ECHO reply" "6869" 'ferry.type == REPLY && ferry.procedure.name == "ECHO"' \
  ferry.test.echo_reply.payload
expect_count "raw session: CANCEL of SLEEP" 1 'ferry.type == CANCEL && ferry.status == OK && ferry.procedure.name == "SLEEP" && ferry.serial == 2'
expect_output "raw session: SLEEP's REPLY/ERROR CANCELLED, raised by the CLIENT at the CALL layer" "10|1|2" \
  'ferry.type == REPLY && ferry.procedure.name == "SLEEP"' ferry.error.code ferry.error.side ferry.error.layer
expect_output "raw session: FAIL request and its error" "6|exists||
||6|exists" 'ferry.procedure.name == "FAIL"' ferry.test.fail_request.code \
  ferry.test.fail_request.message ferry.error.code ferry.error.message
# (Several frames may share a segment: values of one field in one packet are joined by ',')
expect_all() {
  local what=$1 expected=$2 filter=$3 field=$4 got
  got=$(tsh "$filter" "$field" | tr ',' '\n' | grep -v '^$' | tr '\n' ' ')
  if [ "$got" = "$expected " ]; then pass "$what"; else fail "$what: got '$got', wanted '$expected'"; fi
}
source_frames='ferry.procedure.name == "SOURCE"'
expect_all "raw session: SOURCE's frames in order" "0 7 3 6 3 3 3 1" "$source_frames" ferry.type
expect_all "raw session: SOURCE's data chunks" "100000 100000" "$source_frames" ferry.data.length
expect_all "raw session: SOURCE's hole" "100000" "$source_frames" ferry.hole.length
expect_all "raw session: SOURCE's reply" "300000" "$source_frames" ferry.test.source_reply.bytes
expect_all "raw session: SOURCE's request" "300000" "$source_frames && ferry.type == CALL" \
  ferry.test.source_request.length

expect_output "raw session: SINK's reply counts the hole" "67108869|67108864" \
  'ferry.type == REPLY && ferry.procedure.name == "SINK"' ferry.test.sink_reply.bytes ferry.test.sink_reply.hole_bytes

expect_count "control SHUTDOWN with its drain time" 1 \
  'ferry.type == MESSAGE && ferry.procedure.name == "SHUTDOWN" && ferry.shutdown.drain_millis > 0'
expect_count "control GOAWAY (MESSAGE/ERROR, serial 0) SHUTTING_DOWN from the SERVER, CONNECTION layer" 1 \
  'ferry.type == MESSAGE && ferry.status == ERROR && ferry.procedure.name == "GOAWAY" && ferry.serial == 0 &&
   ferry.error.code == SHUTTING_DOWN && ferry.error.side == SERVER && ferry.error.layer == CONNECTION'

if [ -s "$tmp/tshark-read.err" ] && grep -qi "lua\|error" "$tmp/tshark-read.err"; then
  fail "tshark reported errors: $(grep -i "lua\|error" "$tmp/tshark-read.err" | sort -u | head -5)"
fi

echo
if [ "$failures" -gt 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all checks passed"
