package lab

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestParentThread: a child whose Pdeathsig is tied to the parent thread
// outlives the threads Go ends meanwhile (locked goroutines that exit, as
// InNamespace's).
func TestParentThread(t *testing.T) {
	p := newParentThread()
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.Start(cmd); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread() // never unlocked: the thread ends
		}()
	}
	wg.Wait()
	select {
	case <-exited:
		t.Fatalf("the child died while other threads ended: %v", cmd.ProcessState)
	case <-time.After(500 * time.Millisecond):
	}
	cmd.Process.Kill()
	<-exited
	p.Close()
}
