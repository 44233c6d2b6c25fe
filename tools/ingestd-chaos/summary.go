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

// summary is the result of a run, printed as text or JSON.
type summary struct {
	Seed           int64 `json:"seed"`
	EventsExpected int   `json:"events_expected"`
	// Received counts records; Distinct their distinct event ids.
	Received        int   `json:"received"`
	Distinct        int   `json:"distinct"`
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
	ElapsedSeconds  float64    `json:"elapsed_seconds"`

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
	return &summary{
		Seed:            h.o.seed,
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
	}
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
	fmt.Fprintf(&b, "\ningestd chaos summary (seed %d)\n", s.Seed)
	line("events expected", "%d", s.EventsExpected)
	line("received (records)", "%d (topic end offsets %d)", s.Received, s.TopicEndOffsets)
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
	if s.Pass {
		b.WriteString("RESULT: PASS\n")
	} else {
		fmt.Fprintf(&b, "RESULT: FAIL: %s\n", strings.Join(s.Failures, "; "))
	}
	_, _ = io.WriteString(w, b.String())
}
