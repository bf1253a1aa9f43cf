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
    if ! out=$(go test -run '^$' -fuzz "^$f\$" -fuzztime "$fuzztime" "$pkg" 2>&1); then
      echo "$out"
      echo "fuzz: $pkg $f failed; the input is under $(go list -f '{{.Dir}}' "$pkg")/testdata/fuzz/$f" >&2
      exit 1
    fi
    echo "fuzz: $f ($pkg) ok for $fuzztime"
  done
done
if [ "$n" = 0 ]; then
  echo "fuzz: no fuzz targets found: the run proves nothing" >&2
  exit 1
fi
echo "fuzz: $n targets, $fuzztime each, $((SECONDS - start)) s"
