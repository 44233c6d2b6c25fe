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

// accountResult is what the checker found for one account: its share of
// the topic, judged against its own journal, and its own cursor history.
type accountResult struct {
	Account  string `json:"account"`
	SourceID string `json:"source_id"`
	// EventsExpected is the account's journal length; Received counts the
	// records of its entries (or, for an id no entry has, whose payload
	// names it), Distinct the distinct entries among them.
	EventsExpected  int  `json:"events_expected"`
	Received        int  `json:"received"`
	Distinct        int  `json:"distinct"`
	Lost            int  `json:"lost"`
	Duplicated      int  `json:"duplicated"`
	OrderViolations int  `json:"order_violations"`
	CursorCommits   int  `json:"cursor_commits"`
	CursorEvents    int  `json:"cursor_history_events"`
	CursorForks     int  `json:"cursor_history_forks"`
	CursorAtEnd     bool `json:"cursor_at_end"`
	// HeldBy is the instance holding the source's lease once the journals
	// were drained (many-accounts mode).
	HeldBy string `json:"held_by,omitempty"`
}

// problems describes what is wrong with the account, "" when nothing is.
func (a *accountResult) problems() string {
	var p []string
	if a.Lost > 0 {
		p = append(p, fmt.Sprintf("%d lost", a.Lost))
	}
	if a.Duplicated > 0 {
		p = append(p, fmt.Sprintf("%d duplicated", a.Duplicated))
	}
	if a.OrderViolations > 0 {
		p = append(p, fmt.Sprintf("%d order violations", a.OrderViolations))
	}
	if a.CursorForks > 0 {
		p = append(p, fmt.Sprintf("cursor history forked %d times", a.CursorForks))
	}
	if !a.CursorAtEnd {
		p = append(p, "cursor not at the end of its journal")
	}
	return strings.Join(p, ", ")
}

// manyReport is what the many-accounts mode did with its replicas.
type manyReport struct {
	Accounts int `json:"accounts"`
	// FromSourcesFile counts the accounts the sources file lists; the
	// other one is described by the INGESTD_YANDEX_* settings.
	FromSourcesFile int             `json:"accounts_from_sources_file"`
	Replicas        []replicaReport `json:"replicas"`
	// SpreadSettled is whether, once the journals were drained, every
	// lease was held and the sources spread within one of each other.
	SpreadSettled bool `json:"spread_settled"`
	// SourceLeaseAcquisitions sums every source lease's epoch beyond its
	// first, before the final stop: each is a takeover after a kill or a
	// pause, or a hand-over when the sources spread again or an instance
	// stopped cleanly. PublisherEpoch is the publisher lease's epoch.
	SourceLeaseAcquisitions int64 `json:"source_lease_acquisitions"`
	PublisherEpoch          int64 `json:"publisher_epoch"`
}

// replicaReport is one replica slot of the many-accounts mode.
type replicaReport struct {
	Slot   int `json:"slot"`
	Starts int `json:"starts"`
	// Kills counts the SIGKILLs that ended the slot's instances, the
	// harness's and the failpoints'.
	Kills        int    `json:"sigkills"`
	LastInstance string `json:"last_instance"`
	// SourcesHeldAtEnd and PublisherAtEnd are what its last instance held
	// once the journals were drained.
	SourcesHeldAtEnd int  `json:"sources_held_at_end"`
	PublisherAtEnd   bool `json:"publisher_at_end"`
}

// summary is the result of a run, printed as text or JSON.
type summary struct {
	Seed int64 `json:"seed"`
	// Mode is "single broker", "cluster" (-cluster) or "many accounts"
	// (-accounts).
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
	Cluster *clusterReport `json:"cluster,omitempty"`
	// Accounts is the checker's finding per account (one in the
	// single-account modes).
	Accounts []accountResult `json:"accounts"`
	// UnknownSources are the source ids with a cursor history that the
	// run does not have; UnknownTokenRequests counts the journal requests
	// whose token no simulated account has (many-accounts mode).
	UnknownSources       []string `json:"unknown_sources"`
	UnknownTokenRequests int64    `json:"unknown_token_requests"`
	// Many is set in the many-accounts mode.
	Many           *manyReport `json:"many_accounts,omitempty"`
	ElapsedSeconds float64     `json:"elapsed_seconds"`

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
	if h.o.many() {
		s.Mode = "many accounts"
		m := &manyReport{Accounts: len(h.env.accounts), FromSourcesFile: len(h.env.accounts) - 1}
		if e := h.manyEnd; e != nil {
			m.SpreadSettled = e.settled
			m.SourceLeaseAcquisitions = e.sourceAcquisitions
			m.PublisherEpoch = e.publisherEpoch
		}
		for _, r := range h.replicas {
			rr := replicaReport{Slot: r.slot, Starts: r.starts, Kills: r.kills, LastInstance: r.c.name}
			if e := h.manyEnd; e != nil {
				rr.SourcesHeldAtEnd = e.hold.sources[r.slot]
				rr.PublisherAtEnd = e.hold.publisher == r.slot
			}
			m.Replicas = append(m.Replicas, rr)
		}
		s.Many = m
	}
	return s
}

// modeDescription names the run in the result line: the mode, and in the
// many-accounts mode its size.
func (s *summary) modeDescription() string {
	if m := s.Many; m != nil {
		return fmt.Sprintf("%s: %d accounts on %d replicas", s.Mode, m.Accounts, len(m.Replicas))
	}
	return s.Mode
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
	if n := h.killsCounted(); n < h.o.kills {
		what := "SIGKILLs"
		if h.o.many() {
			what = "SIGKILLs of random replicas"
		}
		fail("only %d %s, %d asked for", n, what, h.o.kills)
	}
	for _, fp := range failpoints() {
		if s.SIGKILLs.Failpoints[fp] == 0 {
			fail("failpoint %s never fired", fp)
		}
	}
	pausesWanted := h.o.dualRate > 0
	if h.o.many() {
		pausesWanted = h.o.pauses > 0
	}
	if pausesWanted && s.PauseRounds == 0 {
		fail("no pause round took place")
	}
	if s.Takeovers > s.FencedStepDowns {
		fail("%d paused instances were taken over, but only %d stepped down after SIGCONT", s.Takeovers, s.FencedStepDowns)
	}
	if len(s.UnexpectedExits) > 0 {
		fail("%d instances exited unexpectedly", len(s.UnexpectedExits))
	}
	// With several accounts, which of them lost, duplicated or reordered
	// events, or did not end as one chain at their journal's end.
	if len(s.Accounts) > 1 {
		var bad []string
		for i := range s.Accounts {
			if p := s.Accounts[i].problems(); p != "" {
				bad = append(bad, s.Accounts[i].Account+": "+p)
			}
		}
		if len(bad) > 0 {
			fail("accounts with problems: %s", strings.Join(bad, "; "))
		}
	}
	if len(s.UnknownSources) > 0 {
		fail("cursor history of sources the run does not have: %s", strings.Join(s.UnknownSources, ", "))
	}
	if s.UnknownTokenRequests > 0 {
		fail("%d journal requests carried a token no account has", s.UnknownTokenRequests)
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
	if s.Many != nil {
		line("rounds", "%d (pause %d: takeovers of every lease %d, fenced step-downs %d)", s.Rounds, s.PauseRounds, s.Takeovers, s.FencedStepDowns)
	} else {
		line("rounds", "%d (with two instances %d; pause %d: takeovers %d, fenced step-downs %d; failpoint misses %d)",
			s.Rounds, s.DualRounds, s.PauseRounds, s.Takeovers, s.FencedStepDowns, s.FailpointMisses)
	}
	line("instance starts", "%d", s.InstanceStarts)
	wf := s.WriteFailuresLogged
	line("failed writes logged", "%d of unknown outcome (read back), %d to a moved leader past the re-sends, %d refused", wf["unknown"], wf["moved"], wf["refused"])
	if c := s.Cluster; c != nil {
		line("cluster", "%d brokers, TLS + SASL %s; %d leader elections (%d partition leader changes), %d broker removals (%d during a produce request to the broker; %d added back; %d client connections dropped); %d produce batches reached a former leader",
			c.Brokers, c.SASLMechanism, c.Shuffles, c.LeaderChanges, c.Removals, c.RemovalsMidProduce, c.Returns, c.DroppedConns, c.RefusedBatches)
	}
	if m := s.Many; m != nil {
		s.writeMany(line)
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
		s.modeDescription(), s.Seed, s.SIGKILLs.Total, s.Lost, s.Duplicated, s.OrderViolations,
		(time.Duration(s.ElapsedSeconds * float64(time.Second))).Round(time.Second))
	if s.Pass {
		fmt.Fprintf(&b, "RESULT: PASS (%s)\n", run)
	} else {
		fmt.Fprintf(&b, "RESULT: FAIL (%s): %s\n", run, strings.Join(s.Failures, "; "))
	}
	_, _ = io.WriteString(w, b.String())
}

// writeMany writes the many-accounts mode's lines: the replicas, the leases'
// movements and every account's findings.
func (s *summary) writeMany(line func(label, format string, args ...any)) {
	m := s.Many
	var reps []string
	for _, r := range m.Replicas {
		held := sources(r.SourcesHeldAtEnd)
		if r.PublisherAtEnd {
			held += " + publisher"
		}
		reps = append(reps, fmt.Sprintf("r%d %d starts, %d SIGKILLs, %s held at the end by %s", r.Slot, r.Starts, r.Kills, held, r.LastInstance))
	}
	line("replicas", "%s", strings.Join(reps, "; "))
	spread := "every lease held, sources spread within one"
	if !m.SpreadSettled {
		spread = "NOT settled (see the notes)"
	}
	line("leases", "%d source-lease acquisitions after each lease's first (takeovers after kills and pauses, hand-overs on rebalancing and clean stops), publisher epoch %d; after the drain: %s",
		m.SourceLeaseAcquisitions, m.PublisherEpoch, spread)
	line("accounts", "%d (%d from the sources file, 1 from INGESTD_YANDEX_*); %d journal requests with an unknown token",
		m.Accounts, m.FromSourcesFile, s.UnknownTokenRequests)
	for i := range s.Accounts {
		a := &s.Accounts[i]
		chain := "linear"
		if a.CursorForks > 0 {
			chain = fmt.Sprintf("FORKED %d times", a.CursorForks)
		}
		end := "at the end"
		if !a.CursorAtEnd {
			end = "NOT at the end"
		}
		held := ""
		if a.HeldBy != "" {
			held = ", held by " + a.HeldBy
		}
		line("  "+a.Account, "%d expected, %d received, %d lost, %d duplicated, %d order violations; cursor %d commits, %s, %s%s",
			a.EventsExpected, a.Received, a.Lost, a.Duplicated, a.OrderViolations, a.CursorCommits, chain, end, held)
	}
}
