#!/usr/bin/env bash
# Runs every Fuzz* target of the module for FUZZTIME each (default 4s), one at a
# time. A crasher the fuzzer finds is written by go test under the package's
# testdata/fuzz/FuzzNAME/ and fails the run; commit it with the fix, and it is a
# seed from then on. make test runs the quick version, make soak a long one.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-4s}
n=0
start=$SECONDS
# The targets, read from the test files (asking go test -list would build
# every package's tests first). Files with build tags are left out: the
# fuzz run builds without tags.
for dir in $(git ls-files '*_test.go' | xargs grep -l '^func Fuzz' | xargs grep -L '^//go:build' | xargs -n1 dirname | sort -u); do
  pkg=./$dir
  for f in $(cat "$dir"/*_test.go | sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p'); do
    n=$((n + 1))
    corpus=$dir/testdata/fuzz/$f
    before=$(ls "$corpus" 2>/dev/null | sort || true)
    try=1
    while ! out=$(go test -run '^$' -fuzz "^$f\$" -fuzztime "$fuzztime" "$pkg" 2>&1); do
      after=$(ls "$corpus" 2>/dev/null | sort || true)
      # Go's fuzz coordinator can fail a target at the -fuzztime boundary with
      # a bare "context deadline exceeded" when a worker is still busy as the
      # deadline fires (go.dev/issue/75804, fixed in Go 1.27). Such a failure
      # writes no input and names none. It gets one more whole run; a second
      # failure of any kind, or any failure that left an input, fails.
      if [ "$try" = 1 ] && [ "$before" = "$after" ] &&
        grep -q '^    context deadline exceeded$' <<<"$out" &&
        ! grep -qE 'Failing input|panic:|--- FAIL: .*#' <<<"$out"; then
        echo "fuzz: $f ($pkg) hit the fuzz coordinator's deadline race with no input written; running it again" >&2
        try=2
        continue
      fi
      echo "$out"
      echo "fuzz: $pkg $f failed; the input is under $(go list -f '{{.Dir}}' "$pkg")/testdata/fuzz/$f" >&2
      exit 1
    done
    echo "fuzz: $f ($pkg) ok for $fuzztime"
  done
done
if [ "$n" = 0 ]; then
  echo "fuzz: no fuzz targets found: the run proves nothing" >&2
  exit 1
fi
echo "fuzz: $n targets, $fuzztime each, $((SECONDS - start)) s"
