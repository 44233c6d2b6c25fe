package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stopTimeout bounds a graceful stop of the ingestd child before it is
// killed. It is above ingestd's default shutdown timeout (20s) so that a
// healthy shutdown is never cut short.
const stopTimeout = 30 * time.Second

// child is a running ingestd process.
type child struct {
	cmd  *exec.Cmd
	logs *tailBuffer
	done chan struct{} // closed once Wait returned
	err  error         // Wait's result, valid after done
}

// startChild starts bin with env as its only INGESTD_* settings. The
// process gets SIGTERM when ctx is cancelled (and SIGKILL if it is still
// there 10s later), and SIGKILL if the harness dies, so no ingestd outlives
// a benchmark.
func startChild(ctx context.Context, bin string, env []string, args ...string) (*child, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(baseEnv(), env...)
	logs := &tailBuffer{max: 32 << 10}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	c := &child{cmd: cmd, logs: logs, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// baseEnv is the harness's environment without INGESTD_* variables, so that
// a developer's own settings cannot leak into the measured configuration.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "INGESTD_") {
			env = append(env, kv)
		}
	}
	return env
}

// pid is the child's process id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// exited is closed when the child has exited.
func (c *child) exited() <-chan struct{} { return c.done }

// exitErr describes an unexpected exit, with the end of the child's log.
func (c *child) exitErr() error {
	return fmt.Errorf("ingestd exited unexpectedly (%v); its log ends with:\n%s", c.err, c.logs.String())
}

// stop sends SIGTERM, waits for a graceful exit (killing the child if it
// takes longer than stopTimeout), and returns its resource usage. An exit
// status other than 0 is an error: ingestd exits 0 after SIGTERM.
func (c *child) stop() (*syscall.Rusage, error) {
	select {
	case <-c.done:
	default:
		if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return nil, fmt.Errorf("signal ingestd: %w", err)
		}
		t := time.NewTimer(stopTimeout)
		select {
		case <-c.done:
			t.Stop()
		case <-t.C:
			_ = c.cmd.Process.Kill()
			<-c.done
			return nil, fmt.Errorf("ingestd did not stop within %v of SIGTERM; killed. Its log ends with:\n%s", stopTimeout, c.logs.String())
		}
	}
	if c.err != nil {
		return nil, fmt.Errorf("ingestd exited with %v after SIGTERM; its log ends with:\n%s", c.err, c.logs.String())
	}
	ru, ok := c.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return nil, errors.New("no resource usage for the ingestd process on this platform")
	}
	return ru, nil
}

// kill ends the child at once if it is still running and waits for it. It
// is the deferred safety net; stop is the normal way out.
func (c *child) kill() {
	select {
	case <-c.done:
	default:
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// migrate applies ingestd's migrations to dsn with the binary under test,
// so the schema is exactly the one that binary expects.
func migrate(ctx context.Context, bin, dsn string) error {
	cmd := exec.CommandContext(ctx, bin, "migrate")
	cmd.Env = append(baseEnv(), "INGESTD_DATABASE_URL="+dsn)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ingestd migrate: %w\n%s", err, out)
	}
	return nil
}

// tailBuffer keeps the last max bytes written to it: enough of a child's log
// to explain a failure, without growing with a long run.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// clockTicks is USER_HZ, the unit of the CPU times in /proc/<pid>/stat. It
// is 100 on every Linux architecture Go supports; the kernel converts to it
// whatever its internal HZ.
const clockTicks = 100

// procCPU returns the user+system CPU time a process has used so far, from
// /proc/<pid>/stat. Its resolution is 10ms.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read CPU time of process %d: %w", pid, err)
	}
	// The command name (field 2) is in parentheses and may contain spaces;
	// the fields after the last ')' start with the state (field 3).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return 0, fmt.Errorf("read CPU time of process %d: malformed stat", pid)
	}
	f := strings.Fields(string(b[i+2:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("read CPU time of process %d: short stat", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("read CPU time of process %d: %w", pid, err)
	}
	return time.Duration(utime+stime) * (time.Second / clockTicks), nil
}

// procPeakRSS returns a process's peak resident set size so far (VmHWM in
// /proc/<pid>/status), in bytes.
//
// It is read while ingestd runs rather than taken from the rusage after it
// exits because Go starts children with vfork semantics (CLONE_VM): at exec
// the kernel folds the parent's high-water RSS into the child's ru_maxrss,
// so rusage would report the harness's own peak (which holds the broker's
// records) whenever that is larger. VmHWM belongs to the memory the child
// got at exec and is ingestd's alone.
func procPeakRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("read peak RSS of process %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		v, ok := strings.CutPrefix(line, "VmHWM:")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			break
		}
		kib, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			break
		}
		return kib << 10, nil
	}
	return 0, fmt.Errorf("read peak RSS of process %d: no VmHWM line", pid)
}

// selfCPU is the harness process's own user+system CPU time so far: the
// in-process broker and simulator, plus the harness's monitoring.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return rusageCPU(&ru)
}

func rusageCPU(ru *syscall.Rusage) time.Duration {
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
