// Package bench holds the benchmark scripts (bench/*.sh, run by make
// bench) that compare rackboot with other servers, and the test that runs
// each of them at a tiny size in CI so that none silently breaks. The
// load generators they build live under bench/internal.
package bench
