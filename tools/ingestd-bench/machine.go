package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// machine describes where the benchmark ran, so a table is never read
// without its context.
type machine struct {
	CPUs         int    `json:"cpus"`
	CPUModel     string `json:"cpu_model"`
	MemTotalGiB  string `json:"mem_total_gib"`
	Kernel       string `json:"kernel"`
	GoVersion    string `json:"go_version"`
	Postgres     string `json:"postgres"`
	PGDurability string `json:"postgres_durability"`
	LoadAvgStart string `json:"load_avg_start"`
	LoadAvgEnd   string `json:"load_avg_end"`
}

// machineInfo gathers the machine's description; what cannot be read is
// left empty rather than failing the benchmark.
func machineInfo(ctx context.Context, databaseURL string) machine {
	m := machine{
		CPUs:         numCPU(),
		CPUModel:     cpuModel(),
		MemTotalGiB:  memTotalGiB(),
		Kernel:       readTrim("/proc/sys/kernel/osrelease"),
		GoVersion:    runtime.Version(),
		LoadAvgStart: loadAvg(),
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(ctx, databaseURL); err == nil {
		defer func() { _ = conn.Close(ctx) }()
		var v, sc, fs string
		if conn.QueryRow(ctx, `SELECT current_setting('server_version'), current_setting('synchronous_commit'), current_setting('fsync')`).Scan(&v, &sc, &fs) == nil {
			m.Postgres = v
			m.PGDurability = "synchronous_commit=" + sc + ", fsync=" + fs
		}
	}
	return m
}

// numCPU is the number of CPUs the kernel lets this process use.
func numCPU() int { return runtime.NumCPU() }

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func memTotalGiB() string {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kib, err := strconv.ParseFloat(fields[1], 64)
			if err != nil {
				return ""
			}
			return fmt.Sprintf("%.1f", kib/(1<<20))
		}
	}
	return ""
}

// loadAvg is the 1-minute load average: above the CPU count, other work was
// competing with the benchmark.
func loadAvg() string {
	f := strings.Fields(readTrim("/proc/loadavg"))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
