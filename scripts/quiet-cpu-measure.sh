#!/usr/bin/env bash
# Quiet-machine measurements (16 cores): metrics on vs off, and HTTP overhead vs ceiling.
set -u
cd "$(dirname "$0")/.."  # repo root
B=${MICA_BIN:-target/release/mica}
echo "== metrics on vs off, null engine, alternating pairs"
for c in 1 64; do
  for i in 1 2 3 4 5; do
    on=$($B bench -c config/null.toml --concurrency $c --duration 3s --warmup 1s --no-progress --json | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['total']['requests']/d['duration_s'])")
    off=$($B bench -c config/null.toml --concurrency $c --duration 3s --warmup 1s --no-progress --json --no-metrics | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['total']['requests']/d['duration_s'])")
    python3 -c "print('concurrency $c pair $i: requests/s on %.0f off %.0f ratio %.3f' % ($on, $off, $on/$off))"
  done
done
echo "== HTTP overhead, concurrency 16 (mica bench --url), null engine vs ceiling"
MICA__SERVER__PORT=18000 MICA__METRICS__PORT=18002 $B serve --config config/null.toml >/tmp/serve.log 2>&1 &
S=$!
${CEILING_BIN:-target/release/examples/http_ceiling} 127.0.0.1:18100 >/dev/null 2>&1 &
C=$!
sleep 3
for name in ceiling:18100 mica:18000; do
  port=${name#*:}
  $B bench --url http://127.0.0.1:$port --model null --concurrency 16 --duration 8s --warmup 1s --no-progress --json | python3 -c "import json,sys; d=json.load(sys.stdin); print('${name%%:*}: requests/s %.0f p99 %.3f ms' % (d['total']['requests']/d['duration_s'], d['total']['p99_ms']))"
done
kill $S $C
nproc
