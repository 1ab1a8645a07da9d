#!/bin/sh
# bench.sh — the intake benchmark of one exact commit.
#
#   cmd/lastmile-loadgen/bench.sh [COMMIT] [compare flags...]
#
# Builds lastmile (and the load generator) from COMMIT (default HEAD) in a
# temporary copy — so that uncommitted edits in the working tree are not
# measured — then runs `lastmile-loadgen compare`: lastmile serve with a
# fresh database and the baseline, measured alternately, the inbox counted.
# Everything listens on 127.0.0.1 and stops by itself (-timeout).
set -eu
root=$(git rev-parse --show-toplevel)
commit=HEAD
case "${1:-}" in
-* | "") ;;
*) commit=$1; shift ;;
esac
rev=$(git -C "$root" rev-parse --short=12 "$commit^{commit}")
work=$(mktemp -d "${TMPDIR:-/tmp}/lastmile-bench-src-XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
git -C "$root" archive "$rev" | tar -x -C "$work"
echo "building lastmile $rev …"
(cd "$work" && go build -o "$work/lastmile" ./cmd/lastmile)
if [ -d "$work/cmd/lastmile-loadgen" ]; then
	(cd "$work" && go build -o "$work/loadgen" ./cmd/lastmile-loadgen)
else # a commit older than the load generator: use the working tree's
	(cd "$root" && go build -o "$work/loadgen" ./cmd/lastmile-loadgen)
fi
cd "$root"
"$work/loadgen" compare -lastmile "$work/lastmile" -lastmile-commit "$rev" "$@"
