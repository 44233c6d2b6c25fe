// Package child runs the ingestd binary as a child process for the
// development harnesses, tools/ingestd-bench and tools/ingestd-chaos. Both
// measure or attack the real binary, exactly as it runs in production, so
// both need the same machinery: build it once, start it with only the
// INGESTD_* settings the harness chooses, keep a bounded tail of its log to
// explain a failure, stop it gracefully within a bound or kill it, and make
// sure no child outlives the harness. Each harness used to carry its own copy
// of all of that. What an exit means stays with each harness: the benchmark
// fails on any exit it did not ask for, while the chaos harness tells its own
// SIGKILLs from a failpoint's self-kill.
package child

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// IngestdPackage is the product binary's package, relative to the module
// root, for Build.
const IngestdPackage = "./cmd/ingestd"

// Build compiles pkg, a package path relative to the root of the module that
// holds the working directory, into a new temporary directory, with the go
// build flags given (for example -trimpath). It builds statically
// (CGO_ENABLED=0), as `make build` and the Dockerfile do. It returns the
// binary's path and a function that removes it.
//
// How long a build takes depends on the build cache and on the machine's
// load, from a second to minutes, so a caller that bounds what the binary
// does (a test's deadline above all) builds first and starts the clock
// after.
func Build(ctx context.Context, pkg string, flags ...string) (bin string, remove func(), err error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", nil, fmt.Errorf("find the module (go env GOMOD): %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", nil, errors.New("not inside the ingestd module: run from the repository, or pass a prebuilt binary")
	}
	dir, err := os.MkdirTemp("", "ingestd-child-")
	if err != nil {
		return "", nil, fmt.Errorf("create a directory for the binary: %w", err)
	}
	remove = func() { _ = os.RemoveAll(dir) }
	bin = filepath.Join(dir, path.Base(pkg))
	args := append(append([]string{"build"}, flags...), "-o", bin, pkg)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = filepath.Dir(gomod)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		remove()
		return "", nil, fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
	}
	return bin, remove, nil
}

// BaseEnv is the caller's environment without its INGESTD_* variables, so
// that a developer's own settings cannot leak into a child's configuration:
// the child gets exactly the settings the harness gives it.
func BaseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "INGESTD_") {
			env = append(env, kv)
		}
	}
	return env
}

// Options describe a child process.
type Options struct {
	// Args are its command-line arguments.
	Args []string
	// Env is added to BaseEnv: the child's INGESTD_* settings.
	Env []string
	// LogBytes bounds how much of the child's output (stdout and stderr
	// together) is kept; 0 means 64 KiB.
	LogBytes int
}

// waitDelay bounds how long Wait waits for the child's output pipes to
// close after it exited, should it have handed them to a process of its
// own.
const waitDelay = 5 * time.Second

// Process is a running child. It ends only when told to (Stop or Kill) or
// on its own: it is not tied to a context, so that its owner chooses
// between a graceful stop and a kill. Kill is the owner's deferred safety
// net on every path.
type Process struct {
	cmd  *exec.Cmd
	log  *Log
	done chan struct{} // closed once cmd.Wait returned
	err  error         // cmd.Wait's result, set before done is closed
}

// Start starts bin. The child gets SIGKILL from the kernel if the thread
// that started it dies, so a harness killed with SIGKILL (whose deferred
// clean-up never runs) leaves no child behind.
func Start(bin string, o Options) (*Process, error) {
	if o.LogBytes <= 0 {
		o.LogBytes = 64 << 10
	}
	cmd := exec.Command(bin, o.Args...)
	cmd.Env = append(BaseEnv(), o.Env...)
	log := newLog(o.LogBytes)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = waitDelay
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &Process{cmd: cmd, log: log, done: make(chan struct{})}
	// Owned by p: it ends when the child does, and Stop, Kill and Wait
	// wait for it.
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid is the child's process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Log is the kept end of the child's output.
func (p *Process) Log() *Log { return p.log }

// Done is closed when the child has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Running reports whether the child has not exited yet.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Wait waits for the child to exit and returns what exec.Cmd.Wait did: nil
// for exit status 0, an *exec.ExitError otherwise.
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// State is the exited child's state (exit status, signal, resource usage);
// nil while it runs.
func (p *Process) State() *os.ProcessState {
	if p.Running() {
		return nil
	}
	return p.cmd.ProcessState
}

// Signal sends sig unless the child has exited already.
func (p *Process) Signal(sig os.Signal) error {
	if !p.Running() {
		return nil
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("send %v to process %d: %w", sig, p.Pid(), err)
	}
	return nil
}

// Kill sends SIGKILL unless the child has exited, and waits until it is
// gone. It reports whether the signal reached the child: false means it had
// ended (and been reaped) before. A stopped child dies too: SIGKILL needs no
// SIGCONT.
func (p *Process) Kill() bool {
	if !p.Running() {
		return false
	}
	err := p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	return err == nil
}

// StopTimeoutError is Stop's error when the child did not exit in time
// after SIGTERM and was killed.
type StopTimeoutError struct{ Within time.Duration }

func (e *StopTimeoutError) Error() string {
	return fmt.Sprintf("no exit within %v of SIGTERM; killed", e.Within)
}

// Stop sends SIGTERM and waits up to within for the child to exit; past
// that it kills it and returns a *StopTimeoutError. It returns nil once the
// child exited, whatever its status, which is the caller's to judge (State),
// and nil at once if it had exited before. If ctx ends first, Stop returns
// ctx's error and leaves the child to the caller's Kill.
func (p *Process) Stop(ctx context.Context, within time.Duration) error {
	if !p.Running() {
		return nil
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	t := time.NewTimer(within)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		p.Kill()
		return &StopTimeoutError{Within: within}
	}
}

// Log keeps the end of a child's output, at least the last max bytes and
// at most twice that, and counts every byte written, so that a caller can
// look for what was written after a given moment (Mark and Since). It
// trims only once it holds twice max, so that a chatty child costs one copy
// per max bytes rather than one per write.
type Log struct {
	mu    sync.Mutex
	max   int
	b     []byte
	total int64
}

func newLog(n int) *Log { return &Log{max: n} }

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	l.total += int64(len(p))
	if over := len(l.b) - l.max; over > l.max {
		l.b = append(l.b[:0], l.b[over:]...)
	}
	return len(p), nil
}

// kept is the last max bytes; the caller holds mu.
func (l *Log) kept() []byte {
	if len(l.b) > l.max {
		return l.b[len(l.b)-l.max:]
	}
	return l.b
}

// String is the last max bytes written.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.kept())
}

// Tail is the last n bytes of the log (at most max), starting at a line
// boundary when there is one and without the final newline: a quotable end
// of the log for an error message.
func (l *Log) Tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.kept()
	if cut := len(b) - n; cut > 0 {
		// Past a partial first line, unless the cut falls just after a
		// newline.
		if i := bytes.IndexByte(b[cut:], '\n'); b[cut-1] != '\n' && i >= 0 {
			cut += i + 1
		}
		b = b[cut:]
	}
	return strings.TrimRight(string(b), "\n")
}

// Mark is the position of the end of the log so far, for Since.
func (l *Log) Mark() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// Since is what was written after mark, as far as it is still kept.
func (l *Log) Since(mark int64) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.kept()
	start := int64(len(b)) - (l.total - mark)
	return string(b[max(start, 0):])
}
