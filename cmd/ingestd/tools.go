package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/user"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/cli"
	"github.com/ingestd/ingestd/internal/cursor"
	"github.com/ingestd/ingestd/internal/lease"
	"github.com/ingestd/ingestd/internal/pg"
	"github.com/ingestd/ingestd/internal/publish"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/sources"
	"github.com/ingestd/ingestd/internal/status"
	"github.com/ingestd/ingestd/internal/storage"
)

// toolLeaseTTL bounds how long an operator command holds a source's lease;
// it releases it as soon as it is done.
const toolLeaseTTL = 30 * time.Second

// openStore parses the database flag (INGESTD_DATABASE_URL) plus the
// command's own flags, and opens the stores.
func openStore(ctx context.Context, name string, args []string, stderr io.Writer, bind func(*flag.FlagSet)) (*storage.Stores, error) {
	cfg := pg.DefaultConfig()
	fs := flag.NewFlagSet("ingestd "+name, flag.ContinueOnError)
	fs.Var(secret.Flag{S: &cfg.DatabaseURL}, "database-url", "PostgreSQL DSN (required)")
	bind(fs)
	if err := parseFlags(fs, args, stderr); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, &cli.UsageError{Err: fmt.Errorf("invalid configuration:\n%w", err)}
	}
	return storage.Open(ctx, cfg)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// actor names the operator in the cursor history.
func actor() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return "cli:" + name + "@" + host
}

func runCursor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return &cli.UsageError{Err: errors.New("usage: ingestd cursor show|history|set|rewind [flags]")}
	}
	switch args[0] {
	case "show":
		return cursorShow(ctx, args[1:], stdout, stderr)
	case "history":
		return cursorHistory(ctx, args[1:], stdout, stderr)
	case "set", "rewind":
		return cursorChange(ctx, args[0], args[1:], stdout, stderr)
	default:
		return &cli.UsageError{Err: fmt.Errorf("unknown cursor command %q (show, history, set, rewind)", args[0])}
	}
}

type sourceView struct {
	Source       string     `json:"source"`
	Cursor       string     `json:"cursor"`
	EventsTotal  int64      `json:"events_total"`
	UpdatedAt    time.Time  `json:"updated_at"`
	HaltedAt     *time.Time `json:"halted_at"`
	HaltedReason string     `json:"halted_reason,omitempty"`
	LeaseHolder  string     `json:"lease_holder,omitempty"`
	LeaseEpoch   int64      `json:"lease_epoch,omitempty"`
	LeaseLive    bool       `json:"lease_live"`
}

func cursorShow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var source string
	var asJSON bool
	store, err := openStore(ctx, "cursor show", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&source, "source", "", "only this source (e.g. yandex/default)")
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	})
	if err != nil {
		return err
	}
	defer store.Close()
	states, err := store.Cursors.Sources(ctx)
	if err != nil {
		return err
	}
	leases, err := store.Leases.List(ctx)
	if err != nil {
		return err
	}
	byName := map[string]lease.State{}
	for _, l := range leases {
		byName[l.Name] = l
	}
	views := []sourceView{}
	for _, st := range states {
		if source != "" && st.SourceID != source {
			continue
		}
		l := byName[lease.Source(st.SourceID)]
		views = append(views, sourceView{
			Source: st.SourceID, Cursor: st.Cursor, EventsTotal: st.EventsTotal, UpdatedAt: st.UpdatedAt,
			HaltedAt: st.HaltedAt, HaltedReason: st.HaltedReason, LeaseHolder: l.Holder, LeaseEpoch: l.Epoch, LeaseLive: l.Live,
		})
	}
	if source != "" && len(views) == 0 {
		return fmt.Errorf("no stored cursor for source %q", source)
	}
	if asJSON {
		return printJSON(stdout, views)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tEVENTS\tCURSOR AGE\tSTATE\tACTIVE INSTANCE\tCURSOR")
	for _, v := range views {
		state := "ok"
		if v.HaltedAt != nil {
			state = "HALTED: " + v.HaltedReason
		}
		holder := v.LeaseHolder
		if !v.LeaseLive {
			holder = "(none)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", v.Source, v.EventsTotal, time.Since(v.UpdatedAt).Round(time.Second), state, holder, v.Cursor)
	}
	return tw.Flush()
}

func cursorHistory(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var source string
	var limit int
	var asJSON bool
	store, err := openStore(ctx, "cursor history", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&source, "source", "", "source (required, e.g. yandex/default)")
		fs.IntVar(&limit, "limit", 20, "most recent entries to show")
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	})
	if err != nil {
		return err
	}
	defer store.Close()
	if source == "" {
		return &cli.UsageError{Err: errors.New("--source is required")}
	}
	hist, err := store.Cursors.History(ctx, source, limit)
	if err != nil {
		return err
	}
	if asJSON {
		type entry struct {
			ID         int64     `json:"id"`
			Cursor     string    `json:"cursor"`
			PrevCursor string    `json:"prev_cursor"`
			EventCount int       `json:"event_count"`
			RecordedAt time.Time `json:"recorded_at"`
			Actor      string    `json:"actor"`
			Reason     string    `json:"reason,omitempty"`
		}
		out := make([]entry, 0, len(hist))
		for _, h := range hist {
			out = append(out, entry{h.ID, h.Cursor, h.PrevCursor, h.EventCount, h.RecordedAt, h.Actor, h.Reason})
		}
		return printJSON(stdout, out)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRECORDED AT\tEVENTS\tACTOR\tREASON\tCURSOR")
	for _, h := range hist {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\n", h.ID, h.RecordedAt.UTC().Format(time.RFC3339Nano), h.EventCount, h.Actor, h.Reason, h.Cursor)
	}
	return tw.Flush()
}

// resumeNote says what a cursor change does to the running daemon: the
// source's lease is taken over and handed back, which restarts the source,
// so a halted one resumes.
const resumeNote = "The running daemon continues from this cursor within seconds (at its next lease renewal); a halted source resumes."

// cursorChange implements `cursor set` and `cursor rewind`: it takes the
// source's lease over (the daemon's next write is fenced and it stands by),
// writes the cursor with the operator's name and reason in the history, and
// releases the lease so the daemon takes it back and resumes from the new
// cursor.
func cursorChange(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) error {
	var source, value, to, reason string
	var asJSON bool
	store, err := openStore(ctx, "cursor "+cmd, args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&source, "source", "", "source (required, e.g. yandex/default)")
		if cmd == "set" {
			fs.StringVar(&value, "value", "", "the new cursor, exactly as the upstream issued it (required)")
		} else {
			fs.StringVar(&to, "to", "", "RFC 3339 time: rewind to the newest history entry recorded at or before it (required)")
		}
		fs.StringVar(&reason, "reason", "", "why, for the history (required)")
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	})
	if err != nil {
		return err
	}
	defer store.Close()
	switch {
	case source == "":
		return &cli.UsageError{Err: errors.New("--source is required")}
	case reason == "":
		return &cli.UsageError{Err: errors.New("--reason is required: it is recorded in the cursor history")}
	case cmd == "set" && value == "":
		return &cli.UsageError{Err: errors.New("--value is required")}
	case cmd == "rewind" && to == "":
		return &cli.UsageError{Err: errors.New("--to is required")}
	case strings.HasPrefix(source, bts.SourceID("")):
		return &cli.UsageError{Err: fmt.Errorf("%s is a BTS watch-list source: it has no cursor (its orders are in `ingestd bts list`); a halted BTS source resumes when ingestd restarts", source)}
	}
	if cmd == "rewind" {
		at, err := time.Parse(time.RFC3339Nano, to)
		if err != nil {
			return &cli.UsageError{Err: fmt.Errorf("--to %q: not an RFC 3339 time such as 2026-11-22T10:00:00Z", to)}
		}
		h, err := store.Cursors.HistoryAt(ctx, source, at)
		if err != nil {
			return err
		}
		value = h.Cursor
		reason = fmt.Sprintf("rewind to history entry %d (%s): %s", h.ID, h.RecordedAt.UTC().Format(time.RFC3339), reason)
	}

	who := actor()
	l, err := store.Leases.Steal(ctx, lease.Source(source), who, toolLeaseTTL)
	if err != nil {
		return err
	}
	prev, err := store.Cursors.SetCursor(ctx, cursor.CursorChange{Lease: l, SourceID: source, Cursor: value, Actor: who, Reason: reason})
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if rerr := store.Leases.Release(rctx, l); rerr != nil && err == nil {
		err = fmt.Errorf("cursor written, but releasing the lease failed (the daemon resumes when it expires in %s): %w", toolLeaseTTL, rerr)
	}
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(stdout, map[string]any{"source": source, "cursor": value, "prev_cursor": prev, "actor": who, "reason": reason, "lease_epoch": l.Epoch})
	}
	_, err = fmt.Fprintf(stdout, "cursor of %s set by %s\n  from %s\n  to   %s\nreason: %s\n%s\n", source, who, prev, value, reason, resumeNote)
	return err
}

func runOutbox(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "stats" {
		return &cli.UsageError{Err: errors.New("usage: ingestd outbox stats [--json]")}
	}
	var asJSON bool
	store, err := openStore(ctx, "outbox stats", args[1:], stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	})
	if err != nil {
		return err
	}
	defer store.Close()
	st, err := store.Outbox.Stats(ctx)
	if err != nil {
		return err
	}
	var oldestAge *float64
	if !st.Backlog.Oldest.IsZero() {
		age := time.Since(st.Backlog.Oldest).Seconds()
		oldestAge = &age
	}
	if asJSON {
		return printJSON(stdout, map[string]any{
			"topic": st.Topic, "partitions": st.Partitions, "last_seq": st.LastSeq, "rows": st.Rows,
			"unpublished": st.Backlog.Rows, "oldest_unpublished_age_seconds": oldestAge, "watermarks": st.Watermarks,
		})
	}
	fmt.Fprintf(stdout, "topic %s, %d partitions\noutbox rows: %d (last seq %d)\nunpublished: %d", st.Topic, st.Partitions, st.Rows, st.LastSeq, st.Backlog.Rows)
	if oldestAge != nil {
		fmt.Fprintf(stdout, " (oldest %s ago)", time.Duration(*oldestAge*float64(time.Second)).Round(time.Second))
	}
	fmt.Fprintln(stdout)
	for p, wm := range st.Watermarks {
		fmt.Fprintf(stdout, "  partition %d published through seq %d\n", p, wm)
	}
	return nil
}

// sourceJSON is a source as check-config lists it: where each secret
// comes from, never its value.
type sourceJSON struct {
	ID       string `json:"id"`
	Provider string `json:"provider"`
	Account  string `json:"account"`
	BaseURL  string `json:"base_url"`
	// From is "settings" for a source the INGESTD_YANDEX_* or
	// INGESTD_BTS_* settings describe, else "file".
	From    string            `json:"from"`
	Secrets map[string]string `json:"secrets"`
}

func sourceOf(s sources.Source) sourceJSON {
	j := sourceJSON{ID: s.ID(), Provider: s.Provider, From: "file", Secrets: map[string]string{}}
	secretFrom := func(name string, ref sources.Secret, env string) {
		if ref == (sources.Secret{}) {
			j.From, j.Secrets[name] = "settings", "variable "+env
			return
		}
		j.Secrets[name] = ref.String()
	}
	switch s.Provider {
	case sources.ProviderYandex:
		j.Account, j.BaseURL = s.Yandex.Account, s.Yandex.BaseURL
		secretFrom("token", s.Token, "INGESTD_YANDEX_TOKEN")
	case sources.ProviderBTS:
		j.Account, j.BaseURL = s.BTS.Account, s.BTS.BaseURL
		secretFrom("login", s.Login, "INGESTD_BTS_LOGIN")
		secretFrom("password", s.Password, "INGESTD_BTS_PASSWORD")
		switch {
		case s.WebhookToken != (sources.Secret{}):
			j.Secrets["webhook_token"] = s.WebhookToken.String()
		case s.BTS.WebhookToken.IsSet():
			j.Secrets["webhook_token"] = "variable INGESTD_BTS_WEBHOOK_TOKEN"
		}
	}
	return j
}

// runCheckConfig validates the configuration exactly as `ingestd run` would
// read it, prints the effective settings (secrets redacted), and checks that
// PostgreSQL (migrated) and Kafka (the topic) answer.
func runCheckConfig(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var asJSON, offline bool
	cfg, fs, err := parseDaemonConfig("ingestd check-config", args, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print JSON")
		fs.BoolVar(&offline, "offline", false, "validate only; do not connect to PostgreSQL or Kafka")
	})
	if err != nil {
		return err
	}
	settings := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "json" || f.Name == "offline" {
			return
		}
		settings[envPrefix+"_"+strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))] = f.Value.String()
	})
	settings["INGESTD_INSTANCE_ID"] = cfg.Lease.Holder
	report := struct {
		Valid    bool              `json:"valid"`
		Errors   []string          `json:"errors"`
		Settings map[string]string `json:"settings"`
		Sources  []sourceJSON      `json:"sources"`
		Checks   map[string]string `json:"checks"`
	}{Valid: true, Errors: []string{}, Settings: settings, Sources: []sourceJSON{}, Checks: map[string]string{}}

	if err := cfg.Validate(); err != nil {
		report.Valid = false
		report.Errors = append(report.Errors, strings.Split(err.Error(), "\n")...)
	} else if srcs, err := cfg.Sources(); err == nil {
		for _, s := range srcs {
			report.Sources = append(report.Sources, sourceOf(s))
		}
	}
	failed := false
	if report.Valid && !offline {
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		report.Checks["postgres"] = "ok"
		if db, err := pg.Open(cctx, cfg.Database); err != nil {
			report.Checks["postgres"], failed = err.Error(), true
		} else {
			db.Close()
		}
		report.Checks["kafka"] = "ok"
		if err := publish.CheckTopic(cctx, cfg.Kafka); err != nil {
			report.Checks["kafka"], failed = err.Error(), true
		}
	}

	if asJSON {
		if err := printJSON(stdout, report); err != nil {
			return err
		}
	} else {
		keys := make([]string, 0, len(settings))
		for k := range settings {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		for _, k := range keys {
			fmt.Fprintf(tw, "%s\t%s\n", k, settings[k])
		}
		_ = tw.Flush()
		for _, e := range report.Errors {
			fmt.Fprintln(stdout, "error:", e)
		}
		for _, src := range report.Sources {
			secrets := make([]string, 0, len(src.Secrets))
			for _, k := range slices.Sorted(maps.Keys(src.Secrets)) {
				secrets = append(secrets, k+" from "+src.Secrets[k])
			}
			fmt.Fprintf(stdout, "source %s (%s, %s): %s\n", src.ID, src.From, src.BaseURL, strings.Join(secrets, ", "))
		}
		for _, k := range []string{"postgres", "kafka"} {
			if v, ok := report.Checks[k]; ok {
				fmt.Fprintf(stdout, "check %s: %s\n", k, v)
			}
		}
	}
	switch {
	case !report.Valid:
		return &cli.UsageError{Err: errors.New("configuration is invalid")}
	case failed:
		return errors.New("configuration is valid, but a check failed")
	}
	return nil
}

// runSources shows every configured source's status: the sources come from
// the configuration exactly as `ingestd run` reads it (the INGESTD_YANDEX_*
// and INGESTD_BTS_* sources and INGESTD_SOURCES_FILE), their state from
// PostgreSQL.
func runSources(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "list" {
		return &cli.UsageError{Err: errors.New("usage: ingestd sources list [--json]")}
	}
	var asJSON bool
	cfg, _, err := parseDaemonConfig("ingestd sources list", args[1:], stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print JSON")
	})
	if err != nil {
		return err
	}
	srcs, err := cfg.Sources()
	if err != nil {
		return &cli.UsageError{Err: fmt.Errorf("invalid configuration:\n%w", err)}
	}
	if err := cfg.Database.Validate(); err != nil {
		return &cli.UsageError{Err: fmt.Errorf("invalid configuration:\n%w", err)}
	}
	store, err := storage.Open(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer store.Close()
	c := status.Collector{Cursors: store.Cursors, Leases: store.Leases, Outbox: store.Outbox, MaxBacklog: cfg.MaxBacklog}
	list, err := c.Collect(ctx, srcs, time.Now())
	if err != nil {
		return err
	}
	if asJSON {
		if list == nil {
			list = []status.Source{}
		}
		return printJSON(stdout, list)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tINSTANCE\tLAST COMMIT\tEVENTS\tHALTED\tPAUSED")
	for _, s := range list {
		last := "never"
		if s.LastCommitAgeSeconds != nil {
			last = time.Duration(*s.LastCommitAgeSeconds*float64(time.Second)).Round(time.Second).String() + " ago"
		}
		instance := s.Instance
		if instance == "" {
			instance = "(none)"
		}
		halted := "no"
		if s.Halted {
			halted = "yes: " + s.HaltedReason
		}
		paused := "no"
		if s.Paused {
			paused = "yes: " + s.PausedReason
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", s.ID, instance, last, s.EventsIngested, halted, paused)
	}
	return tw.Flush()
}
