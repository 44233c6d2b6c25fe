package child

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Bounds of the waits for a child's state; the polls end as soon as the
// state is reached, so they only matter on a machine that is very busy.
const (
	within = 30 * time.Second
	tick   = 5 * time.Millisecond
)

// startSh starts /bin/sh -c script and kills it when the test ends.
func startSh(t *testing.T, script string, o Options) *Process {
	t.Helper()
	o.Args = []string{"-c", script}
	p, err := Start("/bin/sh", o)
	require.NoError(t, err)
	t.Cleanup(func() { p.Kill() })
	return p
}

// waitReady polls until the child printed "ready": it has set up what the
// test relies on (a trap, say).
func waitReady(t *testing.T, p *Process) {
	t.Helper()
	require.Eventually(t, func() bool { return strings.Contains(p.Log().String(), "ready") }, within, tick,
		"the child never got ready; its log: %q", p.Log().String())
}

// signalOf is the signal that ended an exited child, 0 for an exit.
func signalOf(t *testing.T, p *Process) syscall.Signal {
	t.Helper()
	ws, ok := p.State().Sys().(syscall.WaitStatus)
	require.True(t, ok)
	if !ws.Signaled() {
		return 0
	}
	return ws.Signal()
}

func TestBuild(t *testing.T) {
	t.Parallel()
	const hello = "./internal/child/testdata/hello"
	cases := []struct {
		name    string
		pkg     string
		flags   []string
		wantErr string
	}{
		{name: "a main package", pkg: hello},
		{name: "with flags", pkg: hello, flags: []string{"-trimpath", "-ldflags=-s -w"}},
		{name: "a package that does not exist", pkg: "./internal/child/testdata/missing", wantErr: "go build ./internal/child/testdata/missing"},
		{name: "a flag go build does not know", pkg: hello, flags: []string{"-no-such-flag"}, wantErr: "no-such-flag"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			bin, remove, err := Build(t.Context(), tc.pkg, tc.flags...)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.FileExists(t, bin)
			require.Equal(t, "hello", bin[strings.LastIndexByte(bin, '/')+1:], "named after the package")

			p, err := Start(bin, Options{Args: []string{"a", "b"}})
			require.NoError(t, err)
			require.NoError(t, p.Wait())
			require.Equal(t, "hello a b\n", p.Log().String())

			remove()
			require.NoFileExists(t, bin)
		})
	}
}

// TestStartEnvironment is not parallel: it sets an INGESTD_* variable of
// the test process, which must not reach the child.
func TestStartEnvironment(t *testing.T) {
	t.Setenv("INGESTD_LEAKED", "from the developer's shell")
	require.NotContains(t, BaseEnv(), "INGESTD_LEAKED=from the developer's shell")
	p := startSh(t, "env", Options{Env: []string{"INGESTD_GIVEN=by the harness"}})
	require.NoError(t, p.Wait())
	out := p.Log().String()
	require.Contains(t, out, "INGESTD_GIVEN=by the harness\n")
	require.NotContains(t, out, "INGESTD_LEAKED")
	require.Contains(t, out, "PATH="+os.Getenv("PATH")+"\n", "the rest of the environment is kept")
}

func TestStartFailsForAMissingBinary(t *testing.T) {
	t.Parallel()
	_, err := Start("/nonexistent/ingestd", Options{})
	require.ErrorContains(t, err, "start /nonexistent/ingestd")
}

func TestStop(t *testing.T) {
	t.Parallel()
	// The trapping scripts wait for a background sleep, which wait leaves
	// at once for the trap; the trap then ends the sleep, so that no
	// grandchild keeps the output pipe open.
	const trapped = `trap 'kill $!; exit %d' TERM; sleep 1000 >/dev/null 2>&1 & echo ready; wait`
	cases := []struct {
		name      string
		script    string
		exitFirst bool
		within    time.Duration
		wantErr   bool
		wantCode  int // exit status, or -1 for a signal
		wantSig   syscall.Signal
	}{
		{name: "exits 0 after SIGTERM", script: fmt.Sprintf(trapped, 0), within: within, wantCode: 0},
		{name: "exits 3 after SIGTERM", script: fmt.Sprintf(trapped, 3), within: within, wantCode: 3},
		{name: "dies of SIGTERM", script: `echo ready; exec sleep 1000`, within: within, wantCode: -1, wantSig: syscall.SIGTERM},
		// An ignored signal stays ignored across exec.
		{name: "ignores SIGTERM and is killed", script: `trap '' TERM; echo ready; exec sleep 1000`, within: 50 * time.Millisecond,
			wantErr: true, wantCode: -1, wantSig: syscall.SIGKILL},
		{name: "had exited before", script: `echo ready; exit 4`, exitFirst: true, within: within, wantCode: 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := startSh(t, tc.script, Options{})
			waitReady(t, p)
			if tc.exitFirst {
				<-p.Done()
			}
			err := p.Stop(context.Background(), tc.within)
			if tc.wantErr {
				var late *StopTimeoutError
				require.ErrorAs(t, err, &late)
				require.Equal(t, tc.within, late.Within)
			} else {
				require.NoError(t, err)
			}
			require.False(t, p.Running())
			require.Equal(t, tc.wantCode, p.State().ExitCode())
			require.Equal(t, tc.wantSig, signalOf(t, p))
		})
	}
}

// TestStopLeavesTheChildWhenTheContextEnds: a cancelled harness does not
// wait out the stop bound; the child is its Kill's.
func TestStopLeavesTheChildWhenTheContextEnds(t *testing.T) {
	t.Parallel()
	p := startSh(t, `trap '' TERM; echo ready; exec sleep 1000`, Options{})
	waitReady(t, p)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, p.Stop(ctx, time.Hour), context.Canceled)
	require.True(t, p.Running())
	require.True(t, p.Kill())
	require.Equal(t, syscall.SIGKILL, signalOf(t, p))
}

func TestKill(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		script    string
		stopFirst bool
		exitFirst bool
		wantSent  bool
		wantSig   syscall.Signal
	}{
		{name: "running", script: `echo ready; exec sleep 1000`, wantSent: true, wantSig: syscall.SIGKILL},
		{name: "stopped with SIGSTOP", script: `echo ready; exec sleep 1000`, stopFirst: true, wantSent: true, wantSig: syscall.SIGKILL},
		{name: "had exited before", script: `echo ready; exit 0`, exitFirst: true, wantSent: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := startSh(t, tc.script, Options{})
			waitReady(t, p)
			if tc.stopFirst {
				require.NoError(t, p.Signal(syscall.SIGSTOP))
			}
			if tc.exitFirst {
				<-p.Done()
				require.NoError(t, p.Signal(syscall.SIGTERM), "signalling an exited child is no error")
			}
			require.Equal(t, tc.wantSent, p.Kill())
			require.False(t, p.Running())
			require.Equal(t, tc.wantSig, signalOf(t, p))
			require.False(t, p.Kill(), "a second Kill finds it gone")
		})
	}
}

func TestProcessKeepsABoundedLog(t *testing.T) {
	t.Parallel()
	p := startSh(t, `i=0; while [ $i -lt 2000 ]; do echo "line $i"; i=$((i+1)); done`, Options{LogBytes: 100})
	require.NoError(t, p.Wait())
	out := p.Log().String()
	require.Len(t, out, 100)
	require.True(t, strings.HasSuffix(out, "line 1999\n"), out)
	require.Equal(t, "line 1998\nline 1999", p.Log().Tail(20))
}

func TestLog(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		max        int
		before     []string // written before the mark
		after      []string // written after it
		wantString string
		tailN      int
		wantTail   string
		wantSince  string
	}{
		{name: "under the bound", max: 64, before: []string{"a\n"}, after: []string{"b\n", "c\n"},
			wantString: "a\nb\nc\n", tailN: 64, wantTail: "a\nb\nc", wantSince: "b\nc\n"},
		{name: "tail starts at a line", max: 64, before: []string{"first line\nsecond line\n"},
			wantString: "first line\nsecond line\n", tailN: 15, wantTail: "second line", wantSince: ""},
		{name: "tail cut just after a newline", max: 64, before: []string{"one\ntwo\n"},
			wantString: "one\ntwo\n", tailN: 4, wantTail: "two", wantSince: ""},
		{name: "tail of one long line", max: 64, before: []string{"0123456789"},
			wantString: "0123456789", tailN: 4, wantTail: "6789", wantSince: ""},
		{name: "over the bound keeps the end", max: 8, before: []string{"0123456789"}, after: []string{"abcdef"},
			wantString: "89abcdef", tailN: 8, wantTail: "89abcdef", wantSince: "abcdef"},
		{name: "since what is no longer kept", max: 4, before: []string{"0123"}, after: []string{"456789", "ab"},
			wantString: "89ab", tailN: 4, wantTail: "89ab", wantSince: "89ab"},
		{name: "far over the bound", max: 4, before: []string{strings.Repeat("x", 100)}, after: []string{strings.Repeat("y", 50) + "end!"},
			wantString: "end!", tailN: 2, wantTail: "d!", wantSince: "end!"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := newLog(tc.max)
			for _, s := range tc.before {
				_, _ = l.Write([]byte(s))
			}
			mark := l.Mark()
			for _, s := range tc.after {
				n, err := l.Write([]byte(s))
				require.NoError(t, err)
				require.Equal(t, len(s), n)
			}
			require.Equal(t, tc.wantString, l.String())
			require.Equal(t, tc.wantTail, l.Tail(tc.tailN))
			require.Equal(t, tc.wantSince, l.Since(mark))
			require.LessOrEqual(t, len(l.b), 2*tc.max, "the buffer stays bounded")
		})
	}
}

// helperEnv marks the test binary started by TestChildDiesWithItsHarness.
const helperEnv = "INTERNAL_CHILD_TEST_HARNESS"

// TestHarnessProcess is the harness of TestChildDiesWithItsHarness, run in
// a process of its own: it starts a child, prints its pid and blocks until
// it is killed.
func TestHarnessProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("the harness process of TestChildDiesWithItsHarness")
	}
	p, err := Start("/bin/sleep", Options{Args: []string{"1000"}})
	require.NoError(t, err)
	_, _ = fmt.Fprintln(os.Stdout, p.Pid())
	// Blocks until the test kills this process; the test never writes.
	_, _ = bufio.NewReader(os.Stdin).ReadByte()
	p.Kill()
}

// TestChildDiesWithItsHarness: a harness that is SIGKILLed runs no deferred
// clean-up, and its children must die all the same.
func TestChildDiesWithItsHarness(t *testing.T) {
	t.Parallel()
	harness := exec.Command(os.Args[0], "-test.run=^TestHarnessProcess$", "-test.count=1")
	harness.Env = append(os.Environ(), helperEnv+"=1")
	stdin, err := harness.StdinPipe()
	require.NoError(t, err)
	defer func() { _ = stdin.Close() }()
	stdout, err := harness.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, harness.Start())
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	require.NoError(t, err, "harness printed %q", line)
	require.True(t, alive(pid), "the child runs while its harness does")

	require.NoError(t, harness.Process.Kill())
	_ = harness.Wait()
	require.Eventually(t, func() bool { return !alive(pid) }, within, tick, "child %d outlived its harness", pid)
}

// alive reports whether pid is a live process: neither gone nor a zombie
// (an orphan killed but not yet reaped by init).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z'
}
