package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/peterbourgon/ff/v3"

	"github.com/ingestd/ingestd/internal/admin"
	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/cli"
	"github.com/ingestd/ingestd/internal/pg"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/storage"
	"github.com/ingestd/ingestd/internal/upstream"
	"github.com/ingestd/ingestd/internal/watchlist"
)

const btsUsage = `ingestd bts manages the BTS Express watch-list: the orders ingestd polls.

Usage:
  ingestd bts track ORDER_ID...     add orders (an order BTS did not know is retried)
  ingestd bts untrack ORDER_ID...   remove orders
  ingestd bts list [--state active|terminal|not_found]

Flags (each also an environment variable, --database-url is INGESTD_DATABASE_URL):
  --database-url   PostgreSQL DSN (required)
  --bts-account    BTS account whose watch-list to manage (default "default")
  --json           print JSON instead of text
  --state          list only orders in this state

Orders can also be added with plain SQL:
  INSERT INTO bts_orders (source_id, order_id) VALUES ('bts/default', '12345') ON CONFLICT DO NOTHING;
`

// btsListPage is how many orders `ingestd bts list` reads per query: the
// listing streams page by page and never holds the whole watch-list.
const btsListPage = 1000

// btsFlags are the flags shared by the bts subcommands.
type btsFlags struct {
	db      pg.Config
	account string
	json    bool
	state   string
}

func (f *btsFlags) bind(fs *flag.FlagSet, list bool) {
	fs.Var(secret.Flag{S: &f.db.DatabaseURL}, "database-url", "PostgreSQL DSN (required)")
	fs.StringVar(&f.account, "bts-account", f.account, "BTS account whose watch-list to manage")
	fs.BoolVar(&f.json, "json", false, "print JSON instead of text")
	if list {
		fs.StringVar(&f.state, "state", "", "list only orders in this state: active, terminal or not_found")
	}
}

// runBTS implements `ingestd bts track|untrack|list`.
func runBTS(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		_, err := fmt.Fprint(stdout, btsUsage)
		if len(args) == 0 {
			return &cli.UsageError{Err: errors.New("bts: missing subcommand (track, untrack or list)")}
		}
		return err
	}
	sub, args := args[0], args[1:]
	f := btsFlags{db: pg.DefaultConfig(), account: bts.DefaultAccount}
	fs := flag.NewFlagSet("ingestd bts "+sub, flag.ContinueOnError)
	fs.Usage = func() { _, _ = fmt.Fprint(fs.Output(), btsUsage) }

	var ids []string
	switch sub {
	case "track", "untrack":
		f.bind(fs, false)
		var err error
		if ids, err = parseWithArgs(fs, args, stderr); err != nil {
			return err
		}
		if len(ids) == 0 {
			return &cli.UsageError{Err: fmt.Errorf("bts %s: give at least one ORDER_ID", sub)}
		}
		for _, id := range ids {
			if !bts.ValidOrderID(id) {
				return &cli.UsageError{Err: fmt.Errorf("bts %s: %q is not a BTS order id (1 to %d characters of A-Z, a-z, 0-9, _ and -)", sub, id, bts.MaxOrderIDLen)}
			}
		}
	case "list":
		f.bind(fs, true)
		// Not parseFlags: it stops at the first stray argument and echoes
		// the rest, which may hold the DSN's password.
		extra, err := parseWithArgs(fs, args, stderr)
		if err != nil {
			return err
		}
		if len(extra) > 0 {
			return &cli.UsageError{Err: fmt.Errorf("bts list takes no arguments, got %d (flags: --state, --json)", len(extra))}
		}
		if f.state != "" && !watchlist.State(f.state).Valid() {
			return &cli.UsageError{Err: fmt.Errorf("bts list: --state must be active, terminal or not_found, got %q", f.state)}
		}
	default:
		_, _ = fmt.Fprint(stderr, btsUsage)
		return &cli.UsageError{Err: fmt.Errorf("bts: unknown subcommand %q", sub)}
	}
	if !upstream.ValidAccount(f.account) {
		return &cli.UsageError{Err: fmt.Errorf("%s: must match [a-z0-9][a-z0-9._-]{0,62}, got %q", bts.EnvAccount, f.account)}
	}
	if err := f.db.Validate(); err != nil {
		return &cli.UsageError{Err: fmt.Errorf("invalid configuration:\n%w", err)}
	}

	store, err := storage.Open(ctx, f.db)
	if err != nil {
		return err
	}
	defer store.Close()
	source := bts.SourceID(f.account)
	switch sub {
	case "track":
		return btsTrack(ctx, store.Watchlist, source, ids, f.json, stdout)
	case "untrack":
		return btsUntrack(ctx, store.Watchlist, source, ids, f.json, stdout)
	default:
		return btsList(ctx, store.Watchlist, source, watchlist.State(f.state), f.json, stdout)
	}
}

// parseWithArgs parses flags and the environment like parseFlags, but
// keeps positional arguments, which may come before, between or after the
// flags, and returns them.
func parseWithArgs(fs *flag.FlagSet, args []string, stderr io.Writer) ([]string, error) {
	fs.SetOutput(stderr)
	err := ff.Parse(fs, args, ff.WithEnvVarPrefix(envPrefix))
	var positional []string
	for err == nil && fs.NArg() > 0 {
		positional = append(positional, fs.Arg(0))
		err = fs.Parse(fs.Args()[1:])
	}
	if errors.Is(err, flag.ErrHelp) {
		return nil, err
	}
	if err != nil {
		return nil, &cli.UsageError{Err: err}
	}
	return positional, nil
}

// btsTracked is the --json output of track, shaped like the admin API's
// answer.
type btsTracked struct {
	Source         string   `json:"source"`
	Added          []string `json:"added"`
	AlreadyTracked []string `json:"already_tracked"`
}

// btsUntracked is the --json output of untrack.
type btsUntracked struct {
	Source     string   `json:"source"`
	Removed    []string `json:"removed"`
	NotTracked []string `json:"not_tracked"`
}

func btsTrack(ctx context.Context, store *watchlist.Store, source string, ids []string, asJSON bool, w io.Writer) error {
	added, err := store.Track(ctx, source, ids)
	if err != nil {
		return err
	}
	rest := missing(ids, added)
	if asJSON {
		return writeJSONLine(w, btsTracked{Source: source, Added: nonNil(added), AlreadyTracked: nonNil(rest)})
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, id := range added {
		_, _ = fmt.Fprintf(tw, "%s\tadded\n", id)
	}
	for _, id := range rest {
		_, _ = fmt.Fprintf(tw, "%s\talready tracked\n", id)
	}
	_, _ = fmt.Fprintf(tw, "%s: %d added, %d already tracked\n", source, len(added), len(rest))
	return tw.Flush()
}

func btsUntrack(ctx context.Context, store *watchlist.Store, source string, ids []string, asJSON bool, w io.Writer) error {
	removed, err := store.Untrack(ctx, source, ids)
	if err != nil {
		return err
	}
	rest := missing(ids, removed)
	if asJSON {
		return writeJSONLine(w, btsUntracked{Source: source, Removed: nonNil(removed), NotTracked: nonNil(rest)})
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, id := range removed {
		_, _ = fmt.Fprintf(tw, "%s\tremoved\n", id)
	}
	for _, id := range rest {
		_, _ = fmt.Fprintf(tw, "%s\tnot tracked\n", id)
	}
	_, _ = fmt.Fprintf(tw, "%s: %d removed, %d not tracked\n", source, len(removed), len(rest))
	return tw.Flush()
}

// btsList prints the watch-list page by page: a text table, or a JSON
// array of the admin API's order objects.
func btsList(ctx context.Context, store *watchlist.Store, source string, state watchlist.State, asJSON bool, w io.Writer) error {
	var (
		tw    *tabwriter.Writer
		enc   *json.Encoder
		after string
		n     int
	)
	if asJSON {
		enc = json.NewEncoder(w)
		if _, err := io.WriteString(w, "["); err != nil {
			return err
		}
	} else {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		_, _ = fmt.Fprintln(tw, "ORDER_ID\tSTATE\tCODE\tSTATUS\tCHANGES\tNEXT_POLL\tLAST_POLLED\tERRORS\tLAST_ERROR")
	}
	for {
		page, err := store.List(ctx, watchlist.ListQuery{SourceID: source, State: state, After: after, Limit: btsListPage})
		if err != nil {
			return err
		}
		for _, o := range page {
			if asJSON {
				sep := ","
				if n == 0 {
					sep = ""
				}
				if _, err := io.WriteString(w, sep+"\n"); err != nil {
					return err
				}
				if err := enc.Encode(admin.OrderOf(o)); err != nil {
					return err
				}
			} else {
				code := "-"
				if o.HasStatus {
					code = strconv.Itoa(o.StatusCode)
				}
				_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d\t%s\n", o.OrderID, o.State, code, dash(o.StatusName),
					o.ChangeCount, timeOrDash(o.NextPollAt), timeOrDash(o.LastPolledAt), o.ErrorCount, dash(oneLine(o.LastError)))
			}
			n++
		}
		if len(page) < btsListPage {
			break
		}
		after = page[len(page)-1].OrderID
		if !asJSON {
			// Flush each page so a long listing starts printing at once.
			if err := tw.Flush(); err != nil {
				return err
			}
		}
	}
	if asJSON {
		_, err := io.WriteString(w, "]\n")
		return err
	}
	_, _ = fmt.Fprintf(tw, "%d orders in %s\n", n, source)
	return tw.Flush()
}

// missing returns the ids not in got, in order.
func missing(ids, got []string) []string {
	in := make(map[string]bool, len(got))
	for _, id := range got {
		in[id] = true
	}
	var out []string
	for _, id := range ids {
		if !in[id] {
			in[id] = true
			out = append(out, id)
		}
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func writeJSONLine(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func timeOrDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// oneLine keeps a stored error on one table row.
func oneLine(s string) string {
	b := []rune(s)
	for i, r := range b {
		if r == '\n' || r == '\r' || r == '\t' {
			b[i] = ' '
		}
	}
	if len(b) > 120 {
		b = append(b[:117], '.', '.', '.')
	}
	return string(b)
}
