package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// child is one running ingestd process of the harness.
type child struct {
	// name is its INGESTD_INSTANCE_ID, which is also its holder name in the
	// lease table.
	name string
	// failpoint is the INGESTD_FAILPOINTS point it was armed with, "" for
	// none; a SIGKILL the harness did not send is that point firing.
	failpoint string
	cmd       *exec.Cmd
	logs      *logBuffer
	done      chan struct{} // closed once Wait returned
	// sentKill is set just before the harness sends SIGKILL, so that the
	// exit status can be told apart from a failpoint's self-kill.
	sentKill atomic.Bool
	// sentTerm is set when the harness asked for a graceful stop.
	sentTerm atomic.Bool
	started  time.Time

	// accounted and outcome are the harness's record of how the child
	// ended, so that each exit is counted once; only the harness's own
	// goroutine uses them.
	accounted bool
	outcome   string
}

// exitClass says how a child ended.
type exitClass int

const (
	// exitRunning: the child has not exited yet.
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

// exited is closed when the child has exited.
func (c *child) exited() <-chan struct{} { return c.done }

// running reports whether the child has not exited yet.
func (c *child) running() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// class classifies the child's exit; exitRunning while it runs.
func (c *child) class() exitClass {
	if c.running() {
		return exitRunning
	}
	ws, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok {
		return exitUnexpected
	}
	switch {
	case ws.Signaled() && ws.Signal() == syscall.SIGKILL && c.sentKill.Load():
		return exitHarnessKill
	case ws.Signaled() && ws.Signal() == syscall.SIGKILL && c.failpoint != "":
		return exitSelfKill
	case ws.Exited() && ws.ExitStatus() == 0 && c.sentTerm.Load():
		return exitClean
	}
	return exitUnexpected
}

// status describes the exit status for round lines and errors.
func (c *child) status() string {
	if c.running() {
		return "running"
	}
	return c.cmd.ProcessState.String()
}

// kill sends SIGKILL if the child still runs and waits until it is gone. It
// reports whether the harness's signal is what ended it: false means the
// child had already exited (a failpoint, or a crash) before the signal.
func (c *child) kill() bool {
	if !c.running() {
		return false
	}
	c.sentKill.Store(true)
	err := c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
	if err != nil {
		// The process was already reaped: it ended on its own.
		c.sentKill.Store(false)
		return false
	}
	return c.class() == exitHarnessKill
}

// signal sends sig unless the child has exited already.
func (c *child) signal(sig syscall.Signal) error {
	if !c.running() {
		return nil
	}
	if err := c.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("send %v to %s: %w", sig, c.name, err)
	}
	return nil
}

// logTail is how much of a child's log an error report quotes.
const logTail = 4 << 10

// describe is the child's exit and the end of its log, for reports of
// unexpected exits.
func (c *child) describe() string {
	return fmt.Sprintf("%s (%s, armed %q) ended with %s; its log ends with:\n%s",
		c.name, time.Since(c.started).Round(time.Millisecond), c.failpoint, c.status(), c.logs.tail(logTail))
}

// fleet owns every child the harness started, so that none outlives it.
type fleet struct {
	mu       sync.Mutex
	children []*child
}

func (f *fleet) add(c *child) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.children = append(f.children, c)
}

// killAll SIGKILLs every child still running (a stopped one too: SIGKILL
// needs no SIGCONT) and waits for each one's Wait goroutine to finish. It is
// deferred on every exit path of the harness, panics included.
func (f *fleet) killAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.children {
		if c.running() {
			_ = c.cmd.Process.Signal(syscall.SIGKILL)
		}
		<-c.done
	}
}

// logBuffer keeps the last max bytes of a child's output, and how many bytes
// were ever written, so that the harness can look for a log line written
// after a given moment (see mark and since).
type logBuffer struct {
	mu    sync.Mutex
	max   int
	b     []byte
	total int64
}

func newLogBuffer(max int) *logBuffer { return &logBuffer{max: max} }

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	l.total += int64(len(p))
	if over := len(l.b) - l.max; over > 0 {
		l.b = append(l.b[:0], l.b[over:]...)
	}
	return len(p), nil
}

// mark returns the position of the end of the log so far.
func (l *logBuffer) mark() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// since returns what was written after mark, as far as it is still kept.
func (l *logBuffer) since(mark int64) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	start := int64(len(l.b)) - (l.total - mark)
	if start < 0 {
		start = 0
	}
	return string(l.b[start:])
}

// tail returns the last n bytes of the log, starting at a line boundary
// when there is one.
func (l *logBuffer) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.b
	if len(b) > n {
		b = b[len(b)-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return strings.TrimRight(string(b), "\n")
}
