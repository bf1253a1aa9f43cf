#!/usr/bin/env bash
# Runs every Fuzz* target of the module for FUZZTIME each, two at a
# time (FUZZJOBS), each with one fuzzing worker, so the run's builds and its
# fuzzing share the machine's cores instead of waiting on each other. A crasher
# the fuzzer finds is written by the test binary under the package's
# testdata/fuzz/FuzzNAME/ and fails the run; commit it with the fix, and it is a
# seed from then on. make test runs the quick version, make soak a long one.
set -euo pipefail
cd "$(dirname "$0")/.."
# FUZZTIME unset: FUZZTOTAL seconds of fuzzing (default 120) shared by the
# targets, at least 2 s each, so the run's length stays put as targets are
# added.
fuzztime=${FUZZTIME:-}
fuzztotal=${FUZZTOTAL:-120}
jobs=${FUZZJOBS:-2}
start=$SECONDS
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# fuzz_pkg DIR TARGET...: builds the package's fuzzing test binary once and
# runs each of its targets from it in turn (a go test -fuzz per target would
# link the same instrumented binary again for each). A target's output goes
# to $logs/DIR_TARGET.out and its verdict to $logs/DIR_TARGET.rc.
fuzz_pkg() {
  local dir=$1 f corpus before after out try rc cache bin key
  shift
  key=$(tr / _ <<<"$dir")
  bin=$logs/$key.test
  local built=$SECONDS
  if ! out=$(go test -c -fuzz . -o "$bin" "./$dir" 2>&1); then
    for f in "$@"; do
      printf 'fuzz: building ./%s failed:\n%s\n' "$dir" "$out" >"$logs/${key}_$f.out"
      echo 1 >"$logs/${key}_$f.rc"
    done
    return
  fi
  echo $((SECONDS - built)) >"$logs/$key.build"
  # go test keeps each package's generated corpus here; so do we.
  cache=$(go env GOCACHE)/fuzz/$(go list "./$dir")
  for f in "$@"; do
    corpus=$dir/testdata/fuzz/$f
    before=$(ls "$corpus" 2>/dev/null | sort || true)
    try=1 rc=0
    while ! out=$(cd "$dir" && "$bin" -test.run '^$' -test.fuzz "^$f\$" -test.fuzztime "$fuzztime" \
      -test.parallel 1 -test.timeout 10m -test.fuzzcachedir "$cache" 2>&1); do
      after=$(ls "$corpus" 2>/dev/null | sort || true)
      # Go's fuzz coordinator can fail a target at the -fuzztime boundary with
      # a bare "context deadline exceeded" when a worker is still busy as the
      # deadline fires (go.dev/issue/75804, fixed in Go 1.27). Such a failure
      # writes no input and names none. It gets one more whole run; a second
      # failure of any kind, or any failure that left an input, fails.
      if [ "$try" = 1 ] && [ "$before" = "$after" ] &&
        grep -q '^    context deadline exceeded$' <<<"$out" &&
        ! grep -qE 'Failing input|panic:|--- FAIL: .*#' <<<"$out"; then
        echo "fuzz: $f (./$dir) hit the fuzz coordinator's deadline race with no input written; running it again" >&2
        try=2
        continue
      fi
      rc=1
      break
    done
    printf '%s\n' "$out" >"$logs/${key}_$f.out"
    echo "$rc" >"$logs/${key}_$f.rc"
  done
}

# The targets, read from the test files (asking go test -list would build
# every package's tests first). Files with build tags are left out: the
# fuzz run builds without tags.
targets=()
for dir in $(git ls-files '*_test.go' | xargs grep -l '^func Fuzz' | xargs grep -L '^//go:build' | xargs -n1 dirname | sort -u); do
  for f in $(cat "$dir"/*_test.go | sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p'); do
    targets+=("$dir $f")
  done
done
if [ ${#targets[@]} = 0 ]; then
  echo "fuzz: no fuzz targets found: the run proves nothing" >&2
  exit 1
fi
if [ -z "$fuzztime" ]; then
  per=$((fuzztotal / ${#targets[@]}))
  fuzztime="$((per < 2 ? 2 : per))s"
fi
# One job per package, FUZZJOBS at a time.
for dir in $(printf '%s\n' "${targets[@]}" | cut -d' ' -f1 | uniq); do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
    wait -n || true
  done
  # shellcheck disable=SC2046
  fuzz_pkg "$dir" $(printf '%s\n' "${targets[@]}" | awk -v d="$dir" '$1 == d {print $2}') &
done
wait
failed=0
for t in "${targets[@]}"; do
  read -r dir f <<<"$t"
  key=$(tr / _ <<<"$dir")_$f
  if [ "$(cat "$logs/$key.rc" 2>/dev/null)" = 0 ]; then
    echo "fuzz: $f (./$dir) ok for $fuzztime"
  else
    failed=$((failed + 1))
    cat "$logs/$key.out" 2>/dev/null || echo "fuzz: $f left no output"
    echo "fuzz: ./$dir $f failed; the input is under $(go list -f '{{.Dir}}' "./$dir")/testdata/fuzz/$f" >&2
  fi
done
if [ "$failed" != 0 ]; then
  echo "fuzz: $failed of ${#targets[@]} targets failed" >&2
  exit 1
fi
builds=$(cat "$logs"/*.build 2>/dev/null | awk '{s += $1} END {print s + 0}')
echo "fuzz: ${#targets[@]} targets, $fuzztime each, $jobs at a time, $((SECONDS - start)) s (building the fuzzing binaries: $builds s, summed over the jobs)"
