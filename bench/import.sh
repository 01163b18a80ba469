#!/usr/bin/env bash
# Import throughput (issue 5): N generated student rows checked and committed by
# `santong import students` (release build), against the database's own bulk loader reading the
# same file into a bare table: `sqlite3 .import` for SQLite, `COPY` for PostgreSQL. Prints rows/s
# and the importer's peak memory. Usage: bench/import.sh [ROWS] [sqlite|postgres|both]
# PostgreSQL: SANTONG_BENCH_PG (default postgres://postgres@127.0.0.1:5432/test), a scratch
# database `santong_bench` is created and dropped.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
WHICH=${2:-both}
PG=${SANTONG_BENCH_PG:-postgres://postgres@127.0.0.1:5432/test}
cargo build --release --bin santong >&2
BIN=$PWD/target/release/santong
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
CSV=$WORK/students.csv
python3 bench/gen_students.py "$ROWS" "$CSV" "$(date +%F)"
echo "rows: $ROWS, file: $(du -h "$CSV" | cut -f1)"
SCHOOL=1440305001

seconds() { python3 -c "import sys; print(f'{float(sys.argv[1]):.2f}')" "$1"; }
rate() { python3 -c "import sys; print(f'{int(sys.argv[1]) / float(sys.argv[2]):,.0f}')" "$1" "$2"; }
# Runs a command under GNU time; leaves elapsed seconds in $ELAPSED and peak KiB in $PEAK.
measure() {
  local t="$WORK/time.txt"
  /usr/bin/time -f '%e %M' -o "$t" "$@" >"$WORK/out.txt" 2>"$WORK/err.txt" || { cat "$WORK/err.txt" >&2; exit 1; }
  read -r ELAPSED PEAK <"$t"
}

if [[ $WHICH != postgres ]]; then
  DATA=$WORK/sqlite
  "$BIN" demo --data "$DATA" >/dev/null 2>&1
  measure "$BIN" import students "$CSV" --school "$SCHOOL" --data "$DATA"
  IMPORT_S=$ELAPSED; IMPORT_KB=$PEAK
  tail -n 2 "$WORK/out.txt"
  # The same file into a bare table (the header row becomes the column names).
  measure sqlite3 "$WORK/bare.db" ".mode csv" ".import $CSV bare"
  BARE_S=$ELAPSED
  echo "SQLite  santong import: $(seconds "$IMPORT_S") s, $(rate "$ROWS" "$IMPORT_S") rows/s, peak $((IMPORT_KB / 1024)) MiB"
  echo "SQLite  sqlite3 .import: $(seconds "$BARE_S") s, $(rate "$ROWS" "$BARE_S") rows/s"
  python3 -c "import sys; print(f'SQLite  ratio: {float(sys.argv[2]) / float(sys.argv[1]):.0%} of .import')" "$IMPORT_S" "$BARE_S"
fi

if [[ $WHICH != sqlite ]]; then
  ADMIN_URL=$PG
  psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS santong_bench" >/dev/null
  psql "$ADMIN_URL" -qc "CREATE DATABASE santong_bench" >/dev/null
  URL=${PG%/*}/santong_bench
  "$BIN" demo --data "$WORK/pgdata" --database-url "$URL" >/dev/null 2>&1
  measure "$BIN" import students "$CSV" --school "$SCHOOL" --data "$WORK/pgdata" --database-url "$URL"
  IMPORT_S=$ELAPSED; IMPORT_KB=$PEAK
  tail -n 2 "$WORK/out.txt"
  psql "$URL" -qc "CREATE TABLE bare (name text, sex text, birth text, ethnicity text, id_number text, grade text, guardian text, relation text, phone text)"
  measure psql "$URL" -qc "\\copy bare FROM '$CSV' WITH (FORMAT csv, HEADER true)"
  BARE_S=$ELAPSED
  psql "$ADMIN_URL" -qc "DROP DATABASE santong_bench" >/dev/null
  echo "PostgreSQL santong import: $(seconds "$IMPORT_S") s, $(rate "$ROWS" "$IMPORT_S") rows/s, peak $((IMPORT_KB / 1024)) MiB"
  echo "PostgreSQL COPY: $(seconds "$BARE_S") s, $(rate "$ROWS" "$BARE_S") rows/s"
  python3 -c "import sys; print(f'PostgreSQL ratio: {float(sys.argv[2]) / float(sys.argv[1]):.0%} of COPY')" "$IMPORT_S" "$BARE_S"
fi
