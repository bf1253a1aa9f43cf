// Package upgradetest checks that databases written by an earlier
// rackboot open with this one: testdata holds a database of each engine,
// filled and dumped by TestWriteFixture (-update) with that release's
// schema and code, and the golden JSON of what its store read back then.
// The tests open each dump, which runs the migrations, and compare.
package upgradetest
