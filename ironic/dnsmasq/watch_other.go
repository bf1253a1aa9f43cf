//go:build !linux

package dnsmasq

// watcher without inotify: Watch falls back on its rescans.
type watcher struct{ events chan change }

func newWatcher(*Dir) (*watcher, error) { return &watcher{}, nil }

func (*watcher) add() {}

func (*watcher) close() {}
