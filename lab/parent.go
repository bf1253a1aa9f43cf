package lab

import (
	"os/exec"
	"runtime"
)

// parentThread starts processes from one OS thread that lives until
// Close. Linux sends a child its Pdeathsig when the thread that forked it
// ends, not the process, and Go ends threads on its own (InNamespace's
// die with their goroutines): a child forked from such a thread would be
// killed in the middle of a test. From this thread, the signal comes only
// when the test process dies or Close is called.
type parentThread struct{ reqs chan func() }

func newParentThread() *parentThread {
	p := &parentThread{reqs: make(chan func())}
	go func() {
		// Never unlocked: the goroutine's end ends the thread, which is
		// what Close means.
		runtime.LockOSThread()
		for f := range p.reqs {
			f()
		}
	}()
	return p
}

// Start starts cmd from the thread.
func (p *parentThread) Start(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	p.reqs <- func() { errc <- cmd.Start() }
	return <-errc
}

// Close ends the goroutine and with it the thread, unless Go had put it on
// the main thread, which it never ends: callers stop their children by
// pid first, and the signal is only a backstop.
func (p *parentThread) Close() { close(p.reqs) }
