package main

import (
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/ingestd/ingestd/internal/child"
)

// instanceLogBytes is how much of an instance's log is kept: enough to find
// its step-down line after SIGCONT (see playPause) and to quote in reports.
const instanceLogBytes = 256 << 10

// instance is one running ingestd process of the harness.
type instance struct {
	// name is its INGESTD_INSTANCE_ID, which is also its holder name in the
	// lease table.
	name string
	// failpoint is the INGESTD_FAILPOINTS point it was armed with, "" for
	// none; a SIGKILL the harness did not send is that point firing.
	failpoint string
	p         *child.Process
	started   time.Time

	// sentKill is set when the harness's SIGKILL reached the process, so
	// that its exit status can be told apart from a failpoint's
	// self-kill; sentTerm when the harness asked for a graceful stop.
	// accounted and outcome are the harness's record of how the instance
	// ended, so that each exit is counted once. Only the harness's own
	// goroutine uses these fields.
	sentKill  bool
	sentTerm  bool
	accounted bool
	outcome   string
}

// exitClass says how an instance ended.
type exitClass int

const (
	// exitRunning: the instance has not exited yet.
	exitRunning exitClass = iota
	// exitHarnessKill: the SIGKILL the harness sent.
	exitHarnessKill
	// exitSelfKill: SIGKILL that the harness did not send, from an armed
	// failpoint.
	exitSelfKill
	// exitClean: status 0 after the harness sent SIGTERM.
	exitClean
	// exitUnexpected: anything else (a crash, a non-zero status, status 0
	// without SIGTERM, a SIGKILL nobody explains). Every one is a bug.
	exitUnexpected
)

// running reports whether the instance has not exited yet.
func (c *instance) running() bool { return c.p.Running() }

// waitStatus is the exited instance's wait status.
func (c *instance) waitStatus() (syscall.WaitStatus, bool) {
	ws, ok := c.p.State().Sys().(syscall.WaitStatus)
	return ws, ok
}

// class classifies the instance's exit; exitRunning while it runs.
func (c *instance) class() exitClass {
	if c.running() {
		return exitRunning
	}
	ws, ok := c.waitStatus()
	if !ok {
		return exitUnexpected
	}
	switch {
	case ws.Signaled() && ws.Signal() == syscall.SIGKILL && c.sentKill:
		return exitHarnessKill
	case ws.Signaled() && ws.Signal() == syscall.SIGKILL && c.failpoint != "":
		return exitSelfKill
	case ws.Exited() && ws.ExitStatus() == 0 && c.sentTerm:
		return exitClean
	}
	return exitUnexpected
}

// status describes the exit status for round lines and errors.
func (c *instance) status() string {
	if c.running() {
		return "running"
	}
	return c.p.State().String()
}

// kill sends SIGKILL if the instance still runs and waits until it is gone.
// It reports whether the harness's signal is what ended it: false means the
// instance had already exited (a failpoint, or a crash) before the signal.
func (c *instance) kill() bool {
	if !c.running() {
		return false
	}
	c.sentKill = c.p.Kill()
	return c.class() == exitHarnessKill
}

// signal sends sig unless the instance has exited already.
func (c *instance) signal(sig syscall.Signal) error {
	if err := c.p.Signal(sig); err != nil {
		return fmt.Errorf("%s: %w", c.name, err)
	}
	return nil
}

// logTail is how much of an instance's log an error report quotes.
const logTail = 4 << 10

// describe is the instance's exit and the end of its log, for reports of
// unexpected exits.
func (c *instance) describe() string {
	return fmt.Sprintf("%s (%s, armed %q) ended with %s; its log ends with:\n%s",
		c.name, time.Since(c.started).Round(time.Millisecond), c.failpoint, c.status(), c.p.Log().Tail(logTail))
}

// fleet owns every instance the harness started, so that none outlives it.
type fleet struct {
	mu        sync.Mutex
	instances []*instance
}

func (f *fleet) add(c *instance) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.instances = append(f.instances, c)
}

// killAll SIGKILLs every instance still running (a stopped one too) and
// waits until each is gone. It is deferred on every exit path of the
// harness, panics included.
func (f *fleet) killAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.instances {
		c.p.Kill()
	}
}
