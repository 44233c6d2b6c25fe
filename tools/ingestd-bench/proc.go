package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

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
