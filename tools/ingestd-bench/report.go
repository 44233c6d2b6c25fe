package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// The targets, on a 2-core machine with everything local.
const (
	targetEventsPerSec = 50_000
	targetRatio        = 0.5
	targetCPUUs        = 10
	targetRSSMiB       = 48
	// The freshness target is the poll interval plus this.
	targetFreshSlackMs = 100
)

// config is the measured configuration, echoed in the output.
type config struct {
	Sizes          []int   `json:"sizes"`
	PageLimit      int     `json:"page_limit"`
	Partitions     int     `json:"partitions"`
	KafkaBatch     int     `json:"raw_kafka_batch"`
	Claims         int     `json:"claims"`
	Seed           int64   `json:"seed"`
	FreshRate      float64 `json:"fresh_rate_per_sec"`
	FreshSeconds   float64 `json:"fresh_seconds"`
	FreshBacklog   int     `json:"fresh_backlog"`
	PollIntervalMs float64 `json:"poll_interval_ms"`
	// Compression is --compression ("" for the binary's default);
	// Compare and Rounds describe a --compare-compression run.
	Compression string   `json:"compression,omitempty"`
	Compare     []string `json:"compare_compression,omitempty"`
	Rounds      int      `json:"rounds,omitempty"`
}

func configOf(o options) config {
	c := config{
		Sizes: o.sizes, PageLimit: o.pageLimit, Partitions: o.partitions, KafkaBatch: rawBatch,
		Claims: o.claims, Seed: o.seed, FreshRate: o.freshRate, FreshSeconds: o.freshDur.Seconds(),
		FreshBacklog: o.freshBacklog, PollIntervalMs: ms(o.pollInterval), Compression: o.compression,
	}
	if len(o.compare) > 0 {
		c.Compare, c.Rounds, c.FreshSeconds = o.compare, o.rounds, 0
	}
	return c
}

// target is one target checked against one measurement.
type target struct {
	Name string `json:"name"`
	// Events is the catch-up size the measurement belongs to; zero for the
	// freshness run and the many-accounts scenario.
	Events int `json:"events,omitempty"`
	// Instances is the number of ingestd instances of a many-accounts run.
	Instances int     `json:"instances,omitempty"`
	Measured  float64 `json:"measured"`
	Target    string  `json:"target"`
	Pass      bool    `json:"pass"`
}

// report is everything one benchmark run measured.
type report struct {
	Machine machine         `json:"machine"`
	Config  config          `json:"config"`
	CatchUp []catchUpResult `json:"catch_up"`
	// Compression summarizes CatchUp per codec in a --compare-compression
	// run.
	Compression []codecSummary `json:"compression,omitempty"`
	Freshness   *freshResult   `json:"freshness,omitempty"`
	// Accounts is the many-accounts scenario (issue 12).
	Accounts *accountsResult `json:"many_accounts,omitempty"`
	Targets  []target        `json:"targets"`
	Notes    []string        `json:"notes"`
}

// evaluate checks every target and writes the notes that say how to read
// the figures.
func (r *report) evaluate() {
	r.Targets = nil
	for _, c := range r.CatchUp {
		if c.PollingDelayMs > 0 {
			// A paced journal caps the catch-up at one page per delay by
			// design; what must hold is that no request came too early.
			r.Targets = append(r.Targets, target{Name: "requests refused as too early (paced)", Events: c.Events, Measured: float64(c.TooEarly), Target: "= 0", Pass: c.TooEarly == 0})
			continue
		}
		r.Targets = append(r.Targets,
			target{Name: "catch-up events/s", Events: c.Events, Measured: c.EventsPerSec, Target: "≥ " + fmtInt(targetEventsPerSec), Pass: c.EventsPerSec >= targetEventsPerSec},
			target{Name: "ratio to lower raw limit", Events: c.Events, Measured: c.Ratio, Target: "≥ " + strconv.FormatFloat(targetRatio, 'f', -1, 64), Pass: c.Ratio >= targetRatio},
			target{Name: "ingestd CPU µs/event", Events: c.Events, Measured: c.IngestdCPUUsPerEvent, Target: "≤ " + strconv.Itoa(targetCPUUs), Pass: c.IngestdCPUUsPerEvent <= targetCPUUs},
			target{Name: "ingestd peak RSS MiB", Events: c.Events, Measured: c.PeakRSSMiB, Target: "≤ " + strconv.Itoa(targetRSSMiB), Pass: c.PeakRSSMiB <= targetRSSMiB},
		)
	}
	if f := r.Freshness; f != nil {
		limit := f.PollIntervalMs + targetFreshSlackMs
		r.Targets = append(r.Targets, target{Name: "freshness p99 ms", Measured: f.P99Ms, Target: "≤ " + fmtInt(limit), Pass: f.Events > 0 && f.P99Ms <= limit})
	}
	if a := r.Accounts; a != nil {
		r.Targets = append(r.Targets, a.targets()...)
	}

	r.Notes = []string{
		"Catch-up time runs from ingestd's first upstream request (process start-up excluded) until every event is committed to PostgreSQL, acknowledged by Kafka (acks=all) and marked published in publish_progress.",
		"Raw limits are measured in the same run after the catch-up, on the same broker and server, with ingestd's own messages (keys, headers, payloads, partitions) and outbox rows: kafka-go writes 1000 messages per synchronous call; PostgreSQL takes one COPY of a page plus a one-row cursor UPDATE per transaction, into a scratch schema with the same DDL.",
		"Stage times are sums over the catch-up: the simulator's time answering requests (server side), and ingestd's ingestd_page_commit_seconds and ingestd_publish_write_seconds histograms from its /metrics. While the poller fetches, decodes and commits one page after another, upstream + commits + decoding add up to the ingest time; once it overlaps them, the sums exceed it. Kafka writes run alongside.",
		"ingestd CPU comes from the child's rusage after SIGTERM: its whole life, start-up and shutdown included. Peak RSS is its VmHWM at the end of the catch-up: the rusage maxrss of a child started by Go also counts the harness's own peak at exec (vfork semantics), so it is only in the JSON.",
		"PostgreSQL CPU counts the backends serving ingestd's (or the raw run's) connections, read from /proc; the WAL writer, checkpointer and other auxiliary processes serve every database and are not counted.",
		"Harness CPU is this process: the in-process kfake broker and the simulator (and a 20ms completion poll); during the raw produce run, the broker and the kafka-go producer.",
		"Freshness delay is receipt by a franz-go consumer in this process minus the entry's appearance upstream. Receipt comes after Kafka's acknowledgement, so it overstates appearance-to-acknowledgement slightly.",
		"Bytes sent to Kafka are the growth of ingestd's ingestd_kafka_bytes_sent_total from its first upstream request to the end of the catch-up, over the events: compressed record batches plus the produce requests' framing and metadata requests. Stored bytes are the topic's size as the broker reports it (DescribeLogDirs): kfake keeps record batches as they were sent, so they are ingestd's compressed batches. The raw produce run uses the codec of those batches.",
		fmt.Sprintf("Everything shares this machine's %d CPUs with whatever else runs on it: a load average above the CPU count (start %s, end %s) means the figures are noisy.", r.Machine.CPUs, r.Machine.LoadAvgStart, r.Machine.LoadAvgEnd),
	}
	if r.Accounts != nil {
		r.Notes = append(r.Notes, r.Accounts.notes()...)
	}
	if len(r.Compression) > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("Compression runs: %d per codec, interleaved; odd rounds run the codecs in reverse order, so that a steady drift of the machine's speed favours none. Cells are the mean and, in brackets, the lowest and highest run.", r.Config.Rounds))
	}
	for _, c := range r.CatchUp {
		if c.PGCPUUsPerEvent == nil {
			r.Notes = append(r.Notes, "PostgreSQL CPU was not measured: the server's processes are not visible in /proc (not on this machine).")
			break
		}
	}
}

// checkErr fails the run when an event was lost or duplicated: throughput
// of a pipeline that drops events means nothing.
func (r *report) checkErr() error {
	var errs []error
	for _, c := range r.CatchUp {
		if c.TopicRecords != int64(c.Events) || c.OutboxRows != int64(c.Events) {
			errs = append(errs, fmt.Errorf("catch-up of %d events: %d records in the topic and %d outbox rows, want %d of each", c.Events, c.TopicRecords, c.OutboxRows, c.Events))
		}
	}
	if a := r.Accounts; a != nil {
		for _, run := range append([]accountsRun{a.Baseline}, a.Runs...) {
			if run.Missing > 0 || run.Duplicates > 0 || run.Unmatched > 0 {
				errs = append(errs, fmt.Errorf("many accounts, %d instance(s), %d sources: %d events missing, %d duplicates, %d records of no journal entry", run.Instances, run.Sources, run.Missing, run.Duplicates, run.Unmatched))
			}
		}
	}
	if f := r.Freshness; f != nil && (f.Missing > 0 || f.Duplicates > 0 || f.Unmatched > 0) {
		errs = append(errs, fmt.Errorf("freshness run: %d events missing, %d duplicates, %d records of no journal entry", f.Missing, f.Duplicates, f.Unmatched))
	}
	return errors.Join(errs...)
}

func (r *report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// tableRow is one line of the table: a value per catch-up size (or a
// single value for the freshness rows), a target and the verdicts.
type tableRow struct {
	label   string
	cells   []string
	target  string
	verdict string
	section bool // a section heading, printed alone
}

// rows lays out the table.
func (r *report) rows() []tableRow {
	cols := len(r.CatchUp)
	per := func(f func(c catchUpResult) string) []string {
		out := make([]string, cols)
		for i, c := range r.CatchUp {
			out[i] = f(c)
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
	optional := func(p *float64) string {
		if p == nil {
			return "not measured"
		}
		return fmtF(*p, 2)
	}
	var rows []tableRow
	if cols > 0 {
		rows = append(rows,
			tableRow{label: fmt.Sprintf("catch-up (page limit %d; messages %s B, outbox rows %s B on average)",
				r.Config.PageLimit, fmtInt(r.CatchUp[0].AvgMessageBytes), fmtInt(r.CatchUp[0].AvgRowBytes)), section: true},
			tableRow{label: "catch-up, end to end (events/s)", cells: per(func(c catchUpResult) string { return fmtInt(c.EventsPerSec) }),
				target: "≥ " + fmtInt(targetEventsPerSec), verdict: verdicts("catch-up events/s")},
			tableRow{label: "  upstream requests; refused as too early (X-Polling-Delay-Ms)", cells: per(func(c catchUpResult) string {
				return fmtInt(float64(c.Requests)) + "; " + fmtInt(float64(c.TooEarly))
			}), target: "0 refused", verdict: verdicts("requests refused as too early (paced)")},
			tableRow{label: "  time, first request to all published (s)", cells: per(func(c catchUpResult) string { return fmtF(c.Seconds, 3) })},
			tableRow{label: "  time, first request to last page committed (s)", cells: per(func(c catchUpResult) string { return fmtF(c.IngestSeconds, 3) })},
			tableRow{label: "  stage: simulator answering ingestd's requests (s)", cells: per(func(c catchUpResult) string { return fmtF(c.UpstreamServeSeconds, 3) })},
			tableRow{label: "  stage: ingestd page commits (s)", cells: per(func(c catchUpResult) string {
				if c.Stages == nil {
					return "not exported"
				}
				return fmtF(c.Stages.CommitSeconds, 3)
			})},
			tableRow{label: "  stage: ingestd Kafka writes (s)", cells: per(func(c catchUpResult) string {
				if c.Stages == nil {
					return "not exported"
				}
				return fmtF(c.Stages.WriteSeconds, 3)
			})},
			tableRow{label: "  rows the publisher read back from the outbox", cells: per(func(c catchUpResult) string {
				if c.Stages == nil || c.Stages.OutboxReadRows == nil {
					return "not exported"
				}
				return fmtInt(*c.Stages.OutboxReadRows)
			})},
			tableRow{label: "Kafka compression (as stored in the topic)", cells: per(func(c catchUpResult) string {
				if c.Compression == "" {
					return c.StoredCodec + " (default)"
				}
				return c.StoredCodec
			})},
			tableRow{label: "bytes sent to Kafka (per event)", cells: per(func(c catchUpResult) string { return optFmt(c.KafkaBytesSentPerEvent, 1) })},
			tableRow{label: "record batches as stored (bytes per event)", cells: per(func(c catchUpResult) string { return fmtF(c.StoredBytesPerEvent, 1) })},
			tableRow{label: "raw limit: kafka-go produce (events/s)", cells: per(func(c catchUpResult) string { return fmtInt(c.RawKafkaPerSec) })},
			tableRow{label: "raw limit: PostgreSQL COPY, 1 commit/page (rows/s)", cells: per(func(c catchUpResult) string { return fmtInt(c.RawPGPerSec) })},
			tableRow{label: "ratio to the lower raw limit", cells: per(func(c catchUpResult) string { return fmtF(c.Ratio, 2) + " of " + shortLimit(c.Lower) }),
				target: "≥ " + strconv.FormatFloat(targetRatio, 'f', -1, 64), verdict: verdicts("ratio to lower raw limit")},
			tableRow{label: "ingestd CPU (µs/event)", cells: per(func(c catchUpResult) string { return fmtF(c.IngestdCPUUsPerEvent, 2) }),
				target: "≤ " + strconv.Itoa(targetCPUUs), verdict: verdicts("ingestd CPU µs/event")},
			tableRow{label: "ingestd CPU (s per 100,000 events)", cells: per(func(c catchUpResult) string { return fmtF(c.IngestdCPUPer100k, 3) })},
			tableRow{label: "ingestd heap allocations (per event)", cells: per(func(c catchUpResult) string {
				if c.Stages == nil || c.Stages.Mallocs == nil {
					return "not exported"
				}
				return fmtF(*c.Stages.Mallocs/float64(c.Events), 2)
			})},
			tableRow{label: "ingestd heap allocated (bytes per event)", cells: per(func(c catchUpResult) string {
				if c.Stages == nil || c.Stages.AllocBytes == nil {
					return "not exported"
				}
				return fmtInt(*c.Stages.AllocBytes / float64(c.Events))
			})},
			tableRow{label: "ingestd peak RSS (MiB)", cells: per(func(c catchUpResult) string { return fmtF(c.PeakRSSMiB, 1) }),
				target: "≤ " + strconv.Itoa(targetRSSMiB), verdict: verdicts("ingestd peak RSS MiB")},
			tableRow{label: "PostgreSQL CPU, ingestd's backends (µs/event)", cells: per(func(c catchUpResult) string { return optional(c.PGCPUUsPerEvent) })},
			tableRow{label: "PostgreSQL CPU, raw COPY run (µs/row)", cells: per(func(c catchUpResult) string { return optional(c.PGRawCPUUsPerRow) })},
			tableRow{label: "harness CPU: broker + simulator (µs/event)", cells: per(func(c catchUpResult) string { return fmtF(c.HarnessCPUUsPerEvent, 2) })},
			tableRow{label: "harness CPU: broker, raw produce run (µs/event)", cells: per(func(c catchUpResult) string { return fmtF(c.HarnessRawKafkaCPUUsPerEvent, 2) })},
			tableRow{label: "CPU busy during catch-up (% of all CPUs)", cells: per(func(c catchUpResult) string { return fmtF(c.CPUBusyPercent, 0) })},
			tableRow{label: "check: topic records / outbox rows", cells: per(func(c catchUpResult) string {
				return fmtInt(float64(c.TopicRecords)) + " / " + fmtInt(float64(c.OutboxRows))
			}), target: "= events", verdict: strings.Join(per(func(c catchUpResult) string {
				return okFail(c.TopicRecords == int64(c.Events) && c.OutboxRows == int64(c.Events))
			}), " ")},
		)
	}
	if f := r.Freshness; f != nil {
		one := func(s string) []string {
			out := make([]string, max(cols, 1))
			out[0] = s
			return out
		}
		rows = append(rows,
			tableRow{label: fmt.Sprintf("freshness (%s events/s for %gs, poll interval %gms, %d events)", fmtInt(f.Rate), f.Seconds, f.PollIntervalMs, f.Events), section: true},
			tableRow{label: "freshness p50 (ms)", cells: one(fmtInt(f.P50Ms))},
			tableRow{label: "freshness p99 (ms)", cells: one(fmtInt(f.P99Ms)), target: "≤ " + fmtInt(f.PollIntervalMs+targetFreshSlackMs), verdict: verdicts("freshness p99 ms")},
			tableRow{label: "freshness max (ms)", cells: one(fmtInt(f.MaxMs))},
			tableRow{label: "check: missing / duplicate events", cells: one(strconv.Itoa(f.Missing) + " / " + strconv.FormatInt(f.Duplicates, 10)),
				target: "0 / 0", verdict: okFail(f.Missing == 0 && f.Duplicates == 0 && f.Unmatched == 0)},
		)
	}
	return rows
}

// writeTable prints the machine, the configuration, the table and the
// notes.
func (r *report) writeTable(w io.Writer) error {
	m := r.Machine
	var b strings.Builder
	fmt.Fprintf(&b, "ingestd-bench: %d CPUs (%s), %s GiB RAM, Linux %s, PostgreSQL %s (%s), kfake in-process broker, %s\n",
		m.CPUs, orUnknown(m.CPUModel), orUnknown(m.MemTotalGiB), orUnknown(m.Kernel), orUnknown(m.Postgres), orUnknown(m.PGDurability), m.GoVersion)
	fmt.Fprintf(&b, "load average %s at start, %s at end; %d partitions, everything on 127.0.0.1\n\n", orUnknown(m.LoadAvgStart), orUnknown(m.LoadAvgEnd), r.Config.Partitions)

	if len(r.Compression) > 0 {
		b.WriteString(r.compressionTable())
		b.WriteString("\nEvery run:\n")
	}
	headers := make([]string, max(len(r.CatchUp), 1))
	for i, c := range r.CatchUp {
		headers[i] = fmtInt(float64(c.Events)) + " events"
		if c.PollingDelayMs > 0 {
			headers[i] += ", paced " + fmtInt(c.PollingDelayMs) + "ms"
		}
		if len(r.Compression) > 0 {
			headers[i] = c.Compression + " " + fmtInt(float64(c.Events))
		}
	}
	if len(r.CatchUp) == 0 {
		headers[0] = "value"
	}
	renderTable(&b, headers, r.rows())
	if r.Accounts != nil {
		b.WriteString("\n")
		renderTable(&b, r.Accounts.headers(), r.accountsRows())
	}
	b.WriteString("\nNotes:\n")
	for _, n := range r.Notes {
		b.WriteString("- " + n + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// renderTable lays rows out under headers: a label column, a column per
// header, the target and the verdict.
func renderTable(b *strings.Builder, headers []string, rows []tableRow) {
	labelW, targetW := len("metric"), len("target")
	cellW := make([]int, len(headers))
	for i, h := range headers {
		cellW[i] = width(h)
	}
	for _, row := range rows {
		if row.section {
			continue
		}
		labelW = max(labelW, width(row.label))
		targetW = max(targetW, width(row.target))
		for i, c := range row.cells {
			cellW[i] = max(cellW[i], width(c))
		}
	}
	line := func(label string, cells []string, tgt, verdict string) {
		b.WriteString(pad(label, labelW, false))
		for i := range cellW {
			c := ""
			if i < len(cells) {
				c = cells[i]
			}
			b.WriteString("  ")
			b.WriteString(pad(c, cellW[i], true))
		}
		b.WriteString("  ")
		b.WriteString(pad(tgt, targetW, false))
		b.WriteString("  ")
		b.WriteString(verdict)
		b.WriteString("\n")
	}
	line("metric", headers, "target", "result")
	total := labelW + targetW + 2 + 2 + len("result")
	for _, cw := range cellW {
		total += cw + 2
	}
	b.WriteString(strings.Repeat("-", total) + "\n")
	for _, row := range rows {
		if row.section {
			b.WriteString(row.label + "\n")
			continue
		}
		line(row.label, row.cells, row.target, row.verdict)
	}
}

// stat is the mean, lowest and highest of one figure over repeated runs.
type stat struct {
	Mean float64 `json:"mean"`
	Min  float64 `json:"min"`
	Max  float64 `json:"max"`
}

func statOf(v []float64) stat {
	if len(v) == 0 {
		return stat{}
	}
	s := stat{Min: v[0], Max: v[0]}
	for _, x := range v {
		s.Mean += x
		s.Min = min(s.Min, x)
		s.Max = max(s.Max, x)
	}
	s.Mean /= float64(len(v))
	return s
}

// codecSummary is one codec's runs in a compression comparison.
type codecSummary struct {
	Codec                string `json:"codec"`
	Runs                 int    `json:"runs"`
	EventsPerSec         stat   `json:"events_per_sec"`
	IngestdCPUUsPerEvent stat   `json:"ingestd_cpu_us_per_event"`
	// KafkaBytesSentPerEvent is nil when a run lacks the counter.
	KafkaBytesSentPerEvent *stat `json:"kafka_bytes_sent_per_event,omitempty"`
	// SentToNone is KafkaBytesSentPerEvent's mean over that of "none",
	// when both were measured.
	SentToNone          *float64 `json:"kafka_bytes_sent_ratio_to_none,omitempty"`
	StoredBytesPerEvent stat     `json:"stored_bytes_per_event"`
	PeakRSSMiB          stat     `json:"ingestd_peak_rss_mib"`
	RawKafkaPerSec      stat     `json:"raw_kafka_events_per_sec"`
}

// summarize groups runs by their codec, in the order of list.
func summarize(runs []catchUpResult, list []string) []codecSummary {
	var out []codecSummary
	for _, codec := range list {
		var eps, cpu, sent, stored, rss, raw []float64
		complete := true
		for _, r := range runs {
			if r.Compression != codec {
				continue
			}
			eps = append(eps, r.EventsPerSec)
			cpu = append(cpu, r.IngestdCPUUsPerEvent)
			stored = append(stored, r.StoredBytesPerEvent)
			rss = append(rss, r.PeakRSSMiB)
			raw = append(raw, r.RawKafkaPerSec)
			if r.KafkaBytesSentPerEvent == nil {
				complete = false
			} else {
				sent = append(sent, *r.KafkaBytesSentPerEvent)
			}
		}
		if len(eps) == 0 {
			continue
		}
		s := codecSummary{Codec: codec, Runs: len(eps), EventsPerSec: statOf(eps), IngestdCPUUsPerEvent: statOf(cpu),
			StoredBytesPerEvent: statOf(stored), PeakRSSMiB: statOf(rss), RawKafkaPerSec: statOf(raw)}
		if complete {
			st := statOf(sent)
			s.KafkaBytesSentPerEvent = &st
		}
		out = append(out, s)
	}
	var none *stat
	for _, s := range out {
		if s.Codec == "none" {
			none = s.KafkaBytesSentPerEvent
		}
	}
	for i := range out {
		if none != nil && none.Mean > 0 && out[i].KafkaBytesSentPerEvent != nil {
			v := out[i].KafkaBytesSentPerEvent.Mean / none.Mean
			out[i].SentToNone = &v
		}
	}
	return out
}

// compressionTable lays out a compression comparison, one codec a line.
func (r *report) compressionTable() string {
	events := 0
	if len(r.CatchUp) > 0 {
		events = r.CatchUp[0].Events
	}
	spread := func(s stat, f func(float64) string) string {
		return f(s.Mean) + " (" + f(s.Min) + "–" + f(s.Max) + ")"
	}
	int0 := func(v float64) string { return fmtInt(v) }
	dec := func(prec int) func(float64) string { return func(v float64) string { return fmtF(v, prec) } }
	header := []string{"codec", "runs", "catch-up (events/s)", "ingestd CPU (µs/event)", "sent to Kafka (B/event)", "sent vs none", "stored (B/event)", "peak RSS (MiB)", "raw kafka-go (events/s)"}
	rows := [][]string{header}
	for _, s := range r.Compression {
		sent, ratio := "not exported", "–"
		if s.KafkaBytesSentPerEvent != nil {
			sent = spread(*s.KafkaBytesSentPerEvent, dec(1))
		}
		if s.SentToNone != nil {
			ratio = fmtF(*s.SentToNone, 3)
		}
		rows = append(rows, []string{s.Codec, strconv.Itoa(s.Runs), spread(s.EventsPerSec, int0), spread(s.IngestdCPUUsPerEvent, dec(2)),
			sent, ratio, fmtF(s.StoredBytesPerEvent.Mean, 1), fmtF(s.PeakRSSMiB.Mean, 1), spread(s.RawKafkaPerSec, int0)})
	}
	w := make([]int, len(header))
	for _, row := range rows {
		for i, c := range row {
			w[i] = max(w[i], width(c))
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "compression: %s events per catch-up (page limit %d), %d runs per codec, interleaved\n", fmtInt(float64(events)), r.Config.PageLimit, r.Config.Rounds)
	for k, row := range rows {
		for i, c := range row {
			if i > 0 {
				b.WriteString("  ")
			}
			b.WriteString(pad(c, w[i], i > 0))
		}
		b.WriteString("\n")
		if k == 0 {
			total := 2 * (len(w) - 1)
			for _, x := range w {
				total += x
			}
			b.WriteString(strings.Repeat("-", total) + "\n")
		}
	}
	return b.String()
}

// optFmt formats an optional figure.
func optFmt(p *float64, prec int) string {
	if p == nil {
		return "not exported"
	}
	return fmtF(*p, prec)
}

func shortLimit(s string) string {
	if s == "PostgreSQL" {
		return "PG"
	}
	return s
}

func passMiss(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

func okFail(ok bool) string {
	if ok {
		return "OK"
	}
	return "FAIL"
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// width counts runes, so "≥" and "µ" take one column.
func width(s string) int { return utf8.RuneCountInString(s) }

func pad(s string, w int, right bool) string {
	n := w - width(s)
	if n <= 0 {
		return s
	}
	if right {
		return strings.Repeat(" ", n) + s
	}
	return s + strings.Repeat(" ", n)
}

// fmtInt rounds v and groups its digits by thousands: 1234567 → 1,234,567.
func fmtInt(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func fmtF(v float64, prec int) string { return strconv.FormatFloat(v, 'f', prec, 64) }
