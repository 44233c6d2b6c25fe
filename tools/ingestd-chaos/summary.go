package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// partitionInfo compares, for one partition, what Kafka holds with the
// publish watermark PostgreSQL recorded.
type partitionInfo struct {
	Partition int32 `json:"partition"`
	Records   int   `json:"records"`
	EndOffset int64 `json:"end_offset"`
	// MaxSeq is the highest ingestd_seq header in the partition.
	MaxSeq int64 `json:"max_seq"`
	// Watermark is publish_progress.last_seq.
	Watermark int64 `json:"watermark"`
}

// clusterReport is what the cluster mode did to the brokers, and what the
// brokers saw of it.
type clusterReport struct {
	Brokers       int    `json:"brokers"`
	SASLMechanism string `json:"sasl_mechanism"`
	churnStats
	// RefusedBatches counts partition batches that reached a broker which
	// no longer led their partition (each answered NOT_LEADER_OR_FOLLOWER,
	// for ingestd to send again on fresh metadata).
	RefusedBatches int `json:"produce_batches_to_former_leaders"`
}

// summary is the result of a run, printed as text or JSON.
type summary struct {
	Seed int64 `json:"seed"`
	// Mode is "single broker" or "cluster" (-cluster).
	Mode           string `json:"mode"`
	EventsExpected int    `json:"events_expected"`
	// Received counts records, each (partition, offset) once; Distinct
	// their distinct event ids. Redelivered counts the records the
	// checker's consumer delivered again (after a leader move it may
	// rewind a partition), which are judged once.
	Received        int   `json:"received"`
	Distinct        int   `json:"distinct"`
	Redelivered     int   `json:"checker_redeliveries"`
	TopicEndOffsets int64 `json:"topic_end_offsets"`
	Lost            int   `json:"lost"`
	// Duplicated is records beyond the first of each expected id, plus
	// every record of an id no journal entry has (Unexpected counts those
	// ids).
	Duplicated int `json:"duplicated"`
	Unexpected int `json:"unexpected_ids"`
	// OrderViolations counts events of a key that arrived after a later
	// journal entry of the same key.
	OrderViolations int `json:"order_violations"`
	KeysOutOfOrder  int `json:"keys_out_of_order"`
	KeysSplit       int `json:"keys_split_across_partitions"`
	// SeqRegressions counts records whose ingestd_seq is not above the
	// previous one in the partition; StaleEpochWrites those whose
	// ingestd_epoch is below it.
	SeqRegressions   int `json:"partition_seq_regressions"`
	StaleEpochWrites int `json:"stale_epoch_writes"`
	BadRecords       int `json:"bad_records"`

	OutboxRows    int64           `json:"outbox_rows"`
	CursorCommits int             `json:"cursor_commits"`
	CursorEvents  int             `json:"cursor_history_events"`
	CursorForks   int             `json:"cursor_history_forks"`
	CursorAtEnd   bool            `json:"cursor_at_end"`
	Partitions    []partitionInfo `json:"partitions"`

	SIGKILLs        killCounts `json:"sigkills"`
	Rounds          int        `json:"rounds"`
	DualRounds      int        `json:"dual_rounds"`
	PauseRounds     int        `json:"pause_rounds"`
	Takeovers       int        `json:"pause_takeovers"`
	FencedStepDowns int        `json:"fenced_step_downs"`
	FailpointMisses int        `json:"failpoint_misses"`
	InstanceStarts  int        `json:"instance_starts"`
	UnexpectedExits []string   `json:"unexpected_exits"`
	// WriteFailuresLogged counts the partition writes the instances logged
	// as failed, by outcome: moved, unknown, refused.
	WriteFailuresLogged map[string]int `json:"write_failures_logged"`
	// Cluster is set in cluster mode.
	Cluster        *clusterReport `json:"cluster,omitempty"`
	ElapsedSeconds float64        `json:"elapsed_seconds"`

	Evidence []string `json:"evidence"`
	Notes    []string `json:"notes"`
	Failures []string `json:"failures"`
	Pass     bool     `json:"pass"`

	// shown counts the examples given per kind (per format string), so
	// that a systematic problem does not print thousands of lines.
	shown map[string]int
}

func (h *harness) newSummary() *summary {
	st := h.stats
	s := &summary{
		Seed:            h.o.seed,
		Mode:            "single broker",
		EventsExpected:  h.o.events,
		SIGKILLs:        st.Kills,
		Rounds:          st.Rounds,
		DualRounds:      st.DualRounds,
		PauseRounds:     st.PauseRounds,
		Takeovers:       st.Takeovers,
		FencedStepDowns: st.StepDowns,
		FailpointMisses: st.FailpointMisses,
		InstanceStarts:  st.Starts,
		UnexpectedExits: st.Unexpected,
		Notes:           st.Notes,
		shown:           map[string]int{},

		WriteFailuresLogged: h.loggedWriteFailures(),
	}
	if h.env.churn != nil {
		s.Mode = "cluster"
		s.Cluster = &clusterReport{
			Brokers:        clusterBrokers,
			SASLMechanism:  saslMechanism,
			churnStats:     h.env.churn.counts(),
			RefusedBatches: h.env.produces.refusedBatches(),
		}
	}
	return s
}

// example appends one evidence line, at most maxExamples per format.
func (s *summary) example(list *[]string, format string, args ...any) {
	s.shown[format]++
	switch n := s.shown[format]; {
	case n <= maxExamples:
		*list = append(*list, fmt.Sprintf(format, args...))
	case n == maxExamples+1:
		*list = append(*list, "... (further lines like the one above left out)")
	}
}

// bad counts a malformed record, with an example.
func (s *summary) bad(format string, args ...any) {
	s.BadRecords++
	s.example(&s.Evidence, format, args...)
}

// judge lists every failure: the checker's findings, and a run that did not
// do what it was asked to (too few kills, a failpoint never hit).
func (h *harness) judge(s *summary) {
	fail := func(format string, args ...any) { s.Failures = append(s.Failures, fmt.Sprintf(format, args...)) }
	if s.Lost > 0 {
		fail("%d events lost", s.Lost)
	}
	if s.Duplicated > 0 {
		fail("%d duplicated records", s.Duplicated)
	}
	if s.OrderViolations > 0 {
		fail("%d per-key order violations in %d keys", s.OrderViolations, s.KeysOutOfOrder)
	}
	if s.KeysSplit > 0 {
		fail("%d keys in more than one partition", s.KeysSplit)
	}
	if s.SeqRegressions > 0 {
		fail("%d records out of outbox order in their partition", s.SeqRegressions)
	}
	if s.StaleEpochWrites > 0 {
		fail("%d records written by a publisher after its successor wrote", s.StaleEpochWrites)
	}
	if s.BadRecords > 0 {
		fail("%d malformed records", s.BadRecords)
	}
	if s.CursorForks > 0 {
		fail("the cursor history forked %d times", s.CursorForks)
	}
	if !s.CursorAtEnd {
		fail("the stored cursor is not after the last journal entry")
	}
	if s.SIGKILLs.Total < h.o.kills {
		fail("only %d SIGKILLs, %d asked for", s.SIGKILLs.Total, h.o.kills)
	}
	for _, fp := range failpoints() {
		if s.SIGKILLs.Failpoints[fp] == 0 {
			fail("failpoint %s never fired", fp)
		}
	}
	if h.o.dualRate > 0 && s.PauseRounds == 0 {
		fail("no pause round took place")
	}
	if s.Takeovers > s.FencedStepDowns {
		fail("%d paused instances were taken over, but only %d stepped down after SIGCONT", s.Takeovers, s.FencedStepDowns)
	}
	if len(s.UnexpectedExits) > 0 {
		fail("%d instances exited unexpectedly", len(s.UnexpectedExits))
	}
	if c := s.Cluster; c != nil {
		if c.Shuffles == 0 {
			fail("cluster mode, but no partition leader was elected anew")
		}
		if c.Removals == 0 {
			fail("cluster mode, but no broker was removed")
		}
		if c.Returns < c.Removals {
			fail("%d brokers removed but only %d added back", c.Removals, c.Returns)
		}
	}
	s.Pass = len(s.Failures) == 0
}

func (s *summary) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s); err != nil {
		return fmt.Errorf("write the JSON summary: %w", err)
	}
	return nil
}

func (s *summary) writeText(w io.Writer) {
	var b strings.Builder
	line := func(label, format string, args ...any) {
		fmt.Fprintf(&b, "  %-22s %s\n", label, fmt.Sprintf(format, args...))
	}
	fmt.Fprintf(&b, "\ningestd chaos summary (%s, seed %d)\n", s.Mode, s.Seed)
	line("events expected", "%d", s.EventsExpected)
	line("received (records)", "%d (topic end offsets %d; %d redelivered by the consumer, judged once)", s.Received, s.TopicEndOffsets, s.Redelivered)
	line("distinct", "%d", s.Distinct)
	line("lost", "%d", s.Lost)
	line("duplicated", "%d (unexpected ids %d)", s.Duplicated, s.Unexpected)
	line("order violations", "%d (keys out of order %d, keys split across partitions %d)", s.OrderViolations, s.KeysOutOfOrder, s.KeysSplit)
	line("partition order", "%d seq regressions, %d stale-epoch writes, %d malformed records", s.SeqRegressions, s.StaleEpochWrites, s.BadRecords)
	chain := "linear"
	if s.CursorForks > 0 {
		chain = fmt.Sprintf("FORKED %d times", s.CursorForks)
	}
	end := "at the end of the journal"
	if !s.CursorAtEnd {
		end = "NOT at the end of the journal"
	}
	line("outbox, cursor", "%d outbox rows; cursor history %d commits (%d events), %s, %s", s.OutboxRows, s.CursorCommits, s.CursorEvents, chain, end)
	var parts []string
	for _, p := range s.Partitions {
		parts = append(parts, fmt.Sprintf("p%d %d records (end %d), max seq %d, watermark %d", p.Partition, p.Records, p.EndOffset, p.MaxSeq, p.Watermark))
	}
	line("partitions", "%s", strings.Join(parts, "; "))
	k := s.SIGKILLs
	var fps []string
	for _, fp := range failpoints() {
		fps = append(fps, fmt.Sprintf("%s %d", fp, k.Failpoints[fp]))
	}
	line("SIGKILLs", "%d (random %d, %s, paused-then-resumed %d)", k.Total, k.Random, strings.Join(fps, ", "), k.Paused)
	line("rounds", "%d (with two instances %d; pause %d: takeovers %d, fenced step-downs %d; failpoint misses %d)",
		s.Rounds, s.DualRounds, s.PauseRounds, s.Takeovers, s.FencedStepDowns, s.FailpointMisses)
	line("instance starts", "%d", s.InstanceStarts)
	wf := s.WriteFailuresLogged
	line("failed writes logged", "%d of unknown outcome (read back), %d to a moved leader past the re-sends, %d refused", wf["unknown"], wf["moved"], wf["refused"])
	if c := s.Cluster; c != nil {
		line("cluster", "%d brokers, TLS + SASL %s; %d leader elections (%d partition leader changes), %d broker removals (%d during a produce request to the broker; %d added back; %d client connections dropped); %d produce batches reached a former leader",
			c.Brokers, c.SASLMechanism, c.Shuffles, c.LeaderChanges, c.Removals, c.RemovalsMidProduce, c.Returns, c.DroppedConns, c.RefusedBatches)
	}
	line("unexpected exits", "%d", len(s.UnexpectedExits))
	line("elapsed", "%v", (time.Duration(s.ElapsedSeconds * float64(time.Second))).Round(time.Second))
	if len(s.Evidence) > 0 {
		b.WriteString("  evidence:\n")
		for _, e := range s.Evidence {
			fmt.Fprintf(&b, "    - %s\n", e)
		}
	}
	for _, u := range s.UnexpectedExits {
		fmt.Fprintf(&b, "  unexpected exit: %s\n", u)
	}
	if len(s.Notes) > 0 {
		b.WriteString("  notes:\n")
		for _, n := range s.Notes {
			fmt.Fprintf(&b, "    - %s\n", n)
		}
	}
	// The result line names the run, so that the two runs of `make chaos`
	// read apart.
	run := fmt.Sprintf("%s, seed %d: %d SIGKILLs, %d lost, %d duplicated, %d order violations, %v",
		s.Mode, s.Seed, s.SIGKILLs.Total, s.Lost, s.Duplicated, s.OrderViolations,
		(time.Duration(s.ElapsedSeconds * float64(time.Second))).Round(time.Second))
	if s.Pass {
		fmt.Fprintf(&b, "RESULT: PASS (%s)\n", run)
	} else {
		fmt.Fprintf(&b, "RESULT: FAIL (%s): %s\n", run, strings.Join(s.Failures, "; "))
	}
	_, _ = io.WriteString(w, b.String())
}
