package main

import (
	"fmt"
	"strconv"
	"strings"
)

// The targets for many accounts (issue 12).
const (
	// The quiet accounts' freshness p99 while the backlog drains is the
	// poll interval plus this.
	targetAccountsFreshSlackMs = 200
	// The big account's catch-up beside the quiet ones, over the same
	// catch-up alone.
	targetAccountsRatio = 0.8
	// Peak RSS of an instance running 200 sources.
	targetAccountsRSSMiB = 96
)

// Target names of the scenario, shared by targets and the table's verdicts.
const (
	tgtQuietP99     = "accounts: quiet freshness p99 while draining ms"
	tgtBacklogRatio = "accounts: backlog catch-up ratio to single account"
	tgtRSS          = "accounts: ingestd peak RSS MiB"
	tgtConns        = "accounts: PostgreSQL connections per instance"
	tgtIdleStill    = "accounts: idle unchanged cursor rows written per poll"
	tgtIdleChanged  = "accounts: idle history rows per cursor change"
)

// freshLimit is the quiet accounts' freshness target in milliseconds.
func (a *accountsResult) freshLimit() float64 { return a.PollIntervalMs + targetAccountsFreshSlackMs }

// targets checks every run against the targets. The idle targets
// are checked only where the WAL could be read back.
func (a *accountsResult) targets() []target {
	var out []target
	for _, r := range a.Runs {
		n := r.Instances
		rss, conns := maxOf(r.PeakRSSMiB), maxOf(r.PGConns)
		out = append(out,
			target{Name: tgtQuietP99, Instances: n, Measured: r.QuietDrain.P99Ms, Target: "≤ " + fmtInt(a.freshLimit()), Pass: r.QuietDrain.Events > 0 && r.QuietDrain.P99Ms <= a.freshLimit()},
			target{Name: tgtBacklogRatio, Instances: n, Measured: r.BigRatio, Target: "≥ " + fmtF(targetAccountsRatio, 1), Pass: r.BigRatio >= targetAccountsRatio},
			target{Name: tgtRSS, Instances: n, Measured: rss, Target: "≤ " + strconv.Itoa(targetAccountsRSSMiB), Pass: rss > 0 && rss <= targetAccountsRSSMiB},
			target{Name: tgtConns, Instances: n, Measured: float64(conns), Target: "≤ " + strconv.Itoa(a.PoolMaxConns), Pass: conns > 0 && conns <= a.PoolMaxConns},
		)
		if w := r.Idle; w != nil && w.WAL != nil {
			v := w.WAL.rowWrites("source_cursors", w.Polls) + w.WAL.rowWrites("cursor_history", w.Polls)
			out = append(out, target{Name: tgtIdleStill, Instances: n, Measured: v, Target: "= 0", Pass: w.Polls > 0 && v == 0})
		}
		if w := r.IdleChanged; w != nil && w.WAL != nil {
			_, most, ok := w.WAL.historyPerChange()
			out = append(out, target{Name: tgtIdleChanged, Instances: n, Measured: float64(most), Target: "≤ 1", Pass: ok && most <= 1})
		}
	}
	return out
}

// headers name the table's columns, one per run.
func (a *accountsResult) headers() []string {
	h := make([]string, len(a.Runs))
	for i, r := range a.Runs {
		h[i] = strconv.Itoa(r.Instances) + " instance"
		if r.Instances != 1 {
			h[i] += "s"
		}
	}
	if len(h) == 0 {
		h = []string{"value"}
	}
	return h
}

// accountsRows lays out the many-accounts table.
func (r *report) accountsRows() []tableRow {
	a := r.Accounts
	per := func(f func(run accountsRun) string) []string {
		out := make([]string, len(a.Runs))
		for i, run := range a.Runs {
			out[i] = f(run)
		}
		return out
	}
	verdicts := func(name string) string {
		var v []string
		for _, t := range r.Targets {
			if t.Name == name {
				v = append(v, passMiss(t.Pass))
			}
		}
		return strings.Join(v, " ")
	}
	list := func(v []string) string { return strings.Join(v, "/") }
	ints := func(v []int) string {
		s := make([]string, len(v))
		for i, x := range v {
			s[i] = fmtInt(float64(x))
		}
		return list(s)
	}
	// A figure per instance: the largest, and each when there are several.
	largest := func(v []float64, prec int) string {
		s := fmtF(maxOf(v), prec)
		if len(v) > 1 {
			each := make([]string, len(v))
			for i, x := range v {
				each[i] = fmtF(x, prec)
			}
			s += " (" + list(each) + ")"
		}
		return s
	}
	// A window without events (a backlog drained before any quiet entry
	// appeared) has no percentile.
	fresh := func(l latency, f func(latency) float64) string {
		if l.Events == 0 {
			return "no events"
		}
		return fmtInt(f(l))
	}
	on := func(i int) string {
		if i == 0 {
			return "?"
		}
		return strconv.Itoa(i)
	}
	rows := []tableRow{
		{label: fmt.Sprintf("many accounts: %d quiet accounts at %g events/s each + 1 account whose %s-event backlog arrives at once; poll interval %gms; pool %d connections per instance",
			a.Quiet, a.Rate, fmtInt(float64(a.Backlog)), a.PollIntervalMs, a.PoolMaxConns), section: true},
		{label: "sources held per instance", cells: per(func(run accountsRun) string { return ints(run.Held) })},
		{label: "  time from start to an even spread (s)", cells: per(func(run accountsRun) string { return fmtF(run.SpreadSeconds, 1) })},
		{label: "  instance holding the backlog account / the publisher", cells: per(func(run accountsRun) string {
			return on(run.BigInstance) + " / " + on(run.PublisherInstance)
		})},
		{label: "quiet accounts, steady: freshness p50 / p99 (ms)", cells: per(func(run accountsRun) string {
			return fresh(run.QuietSteady, func(l latency) float64 { return l.P50Ms }) + " / " + fresh(run.QuietSteady, func(l latency) float64 { return l.P99Ms })
		})},
		{label: "quiet accounts while the backlog drains: freshness p50 (ms)", cells: per(func(run accountsRun) string {
			return fresh(run.QuietDrain, func(l latency) float64 { return l.P50Ms })
		})},
		{label: "quiet accounts while the backlog drains: freshness p99 (ms)", cells: per(func(run accountsRun) string {
			return fresh(run.QuietDrain, func(l latency) float64 { return l.P99Ms })
		}), target: "≤ " + fmtInt(a.freshLimit()), verdict: verdicts(tgtQuietP99)},
		{label: "quiet accounts while the backlog drains: freshness max (ms)", cells: per(func(run accountsRun) string {
			return fresh(run.QuietDrain, func(l latency) float64 { return l.MaxMs })
		})},
		{label: "  quiet events measured: steady / while draining", cells: per(func(run accountsRun) string {
			return fmtInt(float64(run.QuietSteady.Events)) + " / " + fmtInt(float64(run.QuietDrain.Events))
		})},
		{label: "backlog account: catch-up (events/s)", cells: per(func(run accountsRun) string { return fmtInt(run.BigEventsPerSec) })},
		{label: "  single account, same backlog and method (events/s)", cells: per(func(accountsRun) string { return fmtInt(a.Baseline.BigEventsPerSec) })},
		{label: "backlog account: catch-up ÷ single account", cells: per(func(run accountsRun) string { return fmtF(run.BigRatio, 2) }),
			target: "≥ " + fmtF(targetAccountsRatio, 1), verdict: verdicts(tgtBacklogRatio)},
		{label: "publisher while the backlog drains: events published (per s)", cells: per(func(run accountsRun) string { return fmtInt(run.PublishedPerSec) })},
		{label: "publisher while the backlog drains: time in Kafka writes (%)", cells: per(func(run accountsRun) string { return fmtF(100*run.PublishWriteShare, 0) })},
		{label: "ingestd peak RSS (MiB; largest instance)", cells: per(func(run accountsRun) string { return largest(run.PeakRSSMiB, 1) }),
			target: "≤ " + strconv.Itoa(targetAccountsRSSMiB), verdict: verdicts(tgtRSS)},
		{label: "ingestd goroutines (peak, per instance)", cells: per(func(run accountsRun) string { return ints(run.Goroutines) })},
		{label: "PostgreSQL connections (peak per instance; all at once)", cells: per(func(run accountsRun) string {
			return ints(run.PGConns) + "; " + strconv.Itoa(run.PGConnsTotal)
		}), target: "≤ " + strconv.Itoa(a.PoolMaxConns) + " per instance", verdict: verdicts(tgtConns)},
		{label: "  while draining, connections waiting for a lock / the WAL / active / idle (mean)", cells: per(func(run accountsRun) string {
			c := run.PGConnsDraining
			return fmtF(c.LockWait, 1) + " / " + fmtF(c.WALWait, 1) + " / " + fmtF(c.Active, 1) + " / " + fmtF(c.Idle+c.IdleInTx, 1)
		})},
		{label: "  while draining, statement most often waiting for a lock (share)", cells: per(func(run accountsRun) string {
			c := run.PGConnsDraining
			if c.LockWaitStatement == "" {
				return "none"
			}
			// Its first three words name it (UPDATE outbox_seq SET).
			words := strings.Fields(c.LockWaitStatement)
			return strings.Join(words[:min(3, len(words))], " ") + " (" + fmtF(100*c.LockWaitShare, 0) + "%)"
		})},
		{label: "ingestd CPU over the run (s, all instances)", cells: per(func(run accountsRun) string { return fmtF(run.CPUSeconds, 2) })},
	}
	if a.IdleSeconds > 0 {
		xacts := "PostgreSQL transactions per poll (ingestd's database)"
		if !a.OwnDatabase {
			xacts = "PostgreSQL transactions per poll (shared database: upper bound)"
		}
		rows = append(rows, tableRow{label: fmt.Sprintf("idle: no new entries, %d sources polled every %gms, %gs per window; per poll = per upstream request",
			a.Quiet+1, a.PollIntervalMs, a.IdleSeconds), section: true})
		for _, mode := range []struct {
			name string
			get  func(accountsRun) *idleCost
			// The unchanged window's target is on the rows per poll, the
			// changing window's on the history rows per change.
			stillTarget, stillVerdict string
			changed                   bool
		}{
			{"idle, unchanged cursors", func(run accountsRun) *idleCost { return run.Idle }, "= 0 / 0", verdicts(tgtIdleStill), false},
			{"idle, new cursor per empty page", func(run accountsRun) *idleCost { return run.IdleChanged }, "", "", true},
		} {
			cell := func(f func(c *idleCost) string) []string {
				return per(func(run accountsRun) string {
					if c := mode.get(run); c != nil {
						return f(c)
					}
					return "not measured"
				})
			}
			wal := func(f func(w *walBreakdown, polls int64) string) []string {
				return cell(func(c *idleCost) string {
					if c.WAL == nil {
						return "not measured"
					}
					return f(c.WAL, c.Polls)
				})
			}
			rows = append(rows,
				tableRow{label: mode.name + ": polls (per s)", cells: cell(func(c *idleCost) string { return fmtF(c.PollsPerSec, 1) })},
				tableRow{label: mode.name + ": ingestd CPU per poll (µs)", cells: cell(func(c *idleCost) string { return fmtF(c.CPUUsPerPoll, 1) })},
				tableRow{label: mode.name + ": ingestd CPU (% of one CPU)", cells: cell(func(c *idleCost) string { return fmtF(c.CPUPercent, 2) })},
				tableRow{label: mode.name + ": " + xacts, cells: cell(func(c *idleCost) string { return fmtF(c.XactsPerPoll, 2) })},
				tableRow{label: mode.name + ": write transactions per poll (from the WAL)", cells: wal(func(w *walBreakdown, _ int64) string { return fmtF(w.WriteXactsPerPoll, 2) })},
				tableRow{label: mode.name + ": WAL bytes per poll, ingestd's tables", cells: wal(func(w *walBreakdown, _ int64) string { return fmtF(w.BytesPerPoll, 1) })},
				tableRow{label: mode.name + ":   of which cursors and history", cells: wal(func(w *walBreakdown, p int64) string {
					return fmtF(w.bytesPerPoll(p, "source_cursors", "cursor_history"), 1)
				})},
				tableRow{label: mode.name + ":   of which leases and heartbeats", cells: wal(func(w *walBreakdown, p int64) string {
					return fmtF(w.bytesPerPoll(p, "leases", "instances"), 1)
				})},
				tableRow{label: mode.name + ":   of which commit records", cells: wal(func(w *walBreakdown, p int64) string { return fmtF(w.bytesPerPoll(p, commitRecords), 1) })},
				tableRow{label: mode.name + ": WAL bytes per poll, whole server (upper bound)", cells: cell(func(c *idleCost) string { return fmtF(c.WALServerPerPoll, 1) })},
				tableRow{label: mode.name + ": rows written per poll: cursors / history", cells: wal(func(w *walBreakdown, p int64) string {
					return fmtF(w.rowWrites("source_cursors", p), 2) + " / " + fmtF(w.rowWrites("cursor_history", p), 2)
				}), target: mode.stillTarget, verdict: mode.stillVerdict},
			)
			if mode.changed {
				rows = append(rows, tableRow{label: mode.name + ": history rows per cursor change (most in one transaction)", cells: wal(func(w *walBreakdown, _ int64) string {
					if mean, most, ok := w.historyPerChange(); ok {
						return fmtF(mean, 2) + " (" + strconv.FormatInt(most, 10) + ")"
					}
					return "no change"
				}), target: "most ≤ 1", verdict: verdicts(tgtIdleChanged)})
			}
		}
	}
	rows = append(rows, tableRow{label: "check: missing / duplicate / unmatched events", cells: per(func(run accountsRun) string {
		return strconv.Itoa(run.Missing) + " / " + strconv.FormatInt(run.Duplicates, 10) + " / " + strconv.FormatInt(run.Unmatched, 10)
	}), target: "0 / 0 / 0", verdict: strings.Join(per(func(run accountsRun) string {
		return okFail(run.Missing == 0 && run.Duplicates == 0 && run.Unmatched == 0)
	}), " ")})
	return rows
}

// notes say how to read the scenario's figures.
func (a *accountsResult) notes() []string {
	n := []string{
		"Many accounts: one simulator serves every account at one address and tells them apart by their tokens; ingestd reads them from a sources file. The quiet accounts start with a few entries and append at their rate; once the sources are spread evenly over the instances (every source held, shares within one) and the quiet accounts have polled for two intervals, their freshness is measured for the steady window, then the big account's whole backlog appears at once.",
		"The backlog's catch-up runs from its account's first request after the backlog appeared to the receipt of its last record by a consumer in this process; the single-account figure is the same backlog, drained the same way by one instance running that account alone, in the same invocation. The quiet accounts' freshness while draining counts their entries that appeared from that first request to that last receipt.",
		"PostgreSQL connections are the client backends in pg_stat_activity with each instance's application_name, counted every 200ms (a parallel query's workers carry the name too and are left out); the pool is INGESTD_DATABASE_MAX_CONNS. While the backlog drains, the same samples say what the connections are doing, and which statement waits for a lock.",
		"Idle windows: the journals stop growing, then ingestd's CPU (from /proc), its database's transactions (pg_stat_database, whose counters backends flush up to seconds late) and the server's WAL (pg_current_wal_insert_lsn) are taken over each window and divided by the upstream requests of every source in it. The WAL is read back with pg_walinspect and attributed to ingestd's tables (records touching their heaps, indexes or TOAST, and the commit records of the transactions that wrote them); the whole server's figure includes every other session's. In the second window a wrapper gives every empty page a cursor the client has not seen (the simulator itself repeats the cursor it was given).",
	}
	if !a.OwnDatabase {
		n = append(n, "The server refused CREATE DATABASE: ingestd's tables were in a schema of the shared database, whose transaction count includes every other session's (an upper bound).")
	}
	return n
}
