// Package fence holds no code: its test keeps the dependency arrows of
// docs/architecture.md true, by asking go list what each fenced package
// links.
package fence
