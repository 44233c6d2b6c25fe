package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/peterbourgon/ff/v3"

	"github.com/ingestd/ingestd/internal/admin"
	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/cli"
	"github.com/ingestd/ingestd/internal/daemon"
	"github.com/ingestd/ingestd/internal/pg"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/sources"
	"github.com/ingestd/ingestd/internal/storage"
	"github.com/ingestd/ingestd/internal/upstream"
	"github.com/ingestd/ingestd/internal/watchlist"
)

const btsUsage = `ingestd bts manages BTS Express: the watch-list of orders ingestd polls, and the
webhook BTS calls on every status change of an account's orders.

Usage:
  ingestd bts track ORDER_ID...     add orders (an order BTS did not know is retried)
  ingestd bts untrack ORDER_ID...   remove orders
  ingestd bts list [--state active|terminal|not_found]
  ingestd bts webhook register --url URL [--environment production|test]
                                    have BTS call URL, with the account's webhook token
  ingestd bts webhook show          the account's webhook setting at BTS (secrets redacted)

Flags (each also an environment variable, --database-url is INGESTD_DATABASE_URL):
  --database-url   PostgreSQL DSN (required by track, untrack and list)
  --bts-account    BTS account whose watch-list to manage (default "default"), or whose
                   webhook to set or show (default: the only BTS account, else the one
                   INGESTD_BTS_ACCOUNT names, "default" unless set)
  --json           print JSON instead of text
  --state          list only orders in this state
  --url            where BTS sends the webhook calls: an absolute https (or http) URL,
                   ingestd's public address and its INGESTD_BTS_WEBHOOK_PATH
  --environment    BTS's webhook environment: production (default) or test

The webhook commands read the BTS accounts as ` + "`ingestd run`" + ` does (the INGESTD_BTS_*
settings and INGESTD_SOURCES_FILE), log in with the account's credentials and need no
database. register sends the account's webhook token (INGESTD_BTS_WEBHOOK_TOKEN, or
webhook_token_file / webhook_token_env in the sources file) as the key BTS sends back
with every call; show never prints that key, only whether it matches.

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

// runBTS implements `ingestd bts track|untrack|list|webhook`.
func runBTS(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		_, err := fmt.Fprint(stdout, btsUsage)
		if len(args) == 0 {
			return &cli.UsageError{Err: errors.New("bts: missing subcommand (track, untrack, list or webhook)")}
		}
		return err
	}
	sub, args := args[0], args[1:]
	if sub == "webhook" {
		// The webhook commands talk to BTS rather than to PostgreSQL, and
		// read the accounts as the daemon does: another configuration.
		return runBTSWebhook(ctx, args, stdout, stderr)
	}
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

// btsWebhookOpts are the flags of `ingestd bts webhook`, besides the
// daemon's.
type btsWebhookOpts struct {
	url, environment string
	json             bool
}

func (o *btsWebhookOpts) bind(fs *flag.FlagSet, register bool) {
	if register {
		fs.StringVar(&o.url, "url", "", "where BTS sends the webhook calls (required)")
		fs.StringVar(&o.environment, "environment", bts.WebhookProduction, "BTS's webhook environment: production or test")
	}
	fs.BoolVar(&o.json, "json", false, "print JSON instead of text")
}

// runBTSWebhook implements `ingestd bts webhook register|show`.
func runBTSWebhook(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		_, _ = fmt.Fprint(stderr, btsUsage)
		return &cli.UsageError{Err: errors.New("bts webhook: missing subcommand (register or show)")}
	}
	if args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		_, err := fmt.Fprint(stdout, btsUsage)
		return err
	}
	sub, args := args[0], args[1:]
	if sub != "register" && sub != "show" {
		_, _ = fmt.Fprint(stderr, btsUsage)
		return &cli.UsageError{Err: fmt.Errorf("bts webhook: unknown subcommand %q (register or show)", sub)}
	}
	register := sub == "register"
	account, accountGiven := commandLineAccount(args)
	var o btsWebhookOpts
	cfg, _, err := parseDaemonConfig("ingestd bts webhook "+sub, args, stderr, func(fs *flag.FlagSet) {
		o.bind(fs, register)
		fs.Usage = func() { _, _ = fmt.Fprint(fs.Output(), btsUsage) }
	})
	if err != nil {
		return err
	}
	if accountGiven {
		// --bts-account is also the daemon's flag naming the account of
		// the INGESTD_BTS_* settings. Here it picks an account instead, so
		// that account keeps the name INGESTD_BTS_ACCOUNT gives it; else
		// picking a sources-file account would rename the settings' one
		// after it, and the two would clash.
		cfg.BTS.Account = bts.DefaultAccount
		if v := os.Getenv(bts.EnvAccount); v != "" {
			cfg.BTS.Account = v
		}
	}
	srcs, err := cfg.Sources()
	if err != nil {
		return &cli.UsageError{Err: fmt.Errorf("invalid configuration:\n%w", err)}
	}
	src, err := pickBTSSource(srcs, account, accountGiven, cfg.BTS.Account)
	if err != nil {
		return err
	}
	if err := src.BTS.Validate(); err != nil {
		return &cli.UsageError{Err: fmt.Errorf("invalid configuration of %s:\n%w", src.ID(), err)}
	}

	var want bts.Webhook
	if register {
		if o.url == "" {
			return &cli.UsageError{Err: errors.New("bts webhook register: --url is required")}
		}
		if !src.BTS.WebhookToken.IsSet() {
			return &cli.UsageError{Err: fmt.Errorf("bts webhook register: %s has no webhook token, which BTS must send with every call: %s", src.ID(), webhookTokenHint(src))}
		}
		want = bts.Webhook{URL: o.url, Environment: o.environment, HasToken: true, APIKey: src.BTS.WebhookToken}
		if err := want.Validate(); err != nil {
			return &cli.UsageError{Err: fmt.Errorf("bts webhook register: %w", err)}
		}
	}

	// The daemon's own upstream client: a register that works from a pod
	// proves the daemon's path to BTS too.
	hc, err := cfg.Upstream.HTTPClient(0)
	if err != nil {
		return &cli.UsageError{Err: err}
	}
	client, err := bts.NewClient(src.BTS, hc)
	if err != nil {
		return &cli.UsageError{Err: fmt.Errorf("invalid configuration of %s:\n%w", src.ID(), err)}
	}
	var (
		got bts.Webhook
		ok  = true
	)
	if register {
		if u, err := url.Parse(o.url); err == nil && u.Scheme == "http" {
			_, _ = fmt.Fprintln(stderr, "warning: --url is plain http: BTS's calls, and the webhook token in them, travel unencrypted")
		}
		got, err = client.SetWebhook(ctx, want)
	} else {
		got, ok, err = client.Webhook(ctx)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", src.ID(), err)
	}
	view := webhookViewOf(src, got, ok)
	if o.json {
		return printJSON(stdout, view)
	}
	if register {
		_, _ = fmt.Fprintf(stdout, "webhook of %s set at BTS:\n", view.Source)
	}
	return view.print(stdout)
}

// commandLineAccount returns the --bts-account given on the command line,
// if any, by parsing args with the same flags but without the environment:
// whether an operator chose the account, or INGESTD_BTS_ACCOUNT merely names
// the settings' account, decides how it is picked. A command line that does
// not parse yields nothing; the real parse reports it.
func commandLineAccount(args []string) (string, bool) {
	cfg := daemon.DefaultConfig()
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	bindDaemonFlags(fs, &cfg)
	var o btsWebhookOpts
	o.bind(fs, true)
	if fs.Parse(args) != nil {
		return "", false
	}
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "bts-account" })
	return cfg.BTS.Account, given
}

// pickBTSSource returns the BTS source whose account is account when given,
// else the only BTS source, else the one named settingsAccount (the name of
// the INGESTD_BTS_* settings' account, "default" unless set). Anything else
// is a usage error that lists the accounts to choose from.
func pickBTSSource(srcs []sources.Source, account string, given bool, settingsAccount string) (sources.Source, error) {
	var (
		btsSrcs []sources.Source
		names   []string
	)
	for _, s := range srcs {
		if s.Provider == sources.ProviderBTS {
			btsSrcs = append(btsSrcs, s)
			names = append(names, s.BTS.Account)
		}
	}
	find := func(name string) (sources.Source, bool) {
		for _, s := range btsSrcs {
			if s.BTS.Account == name {
				return s, true
			}
		}
		return sources.Source{}, false
	}
	switch {
	case len(btsSrcs) == 0:
		return sources.Source{}, &cli.UsageError{Err: fmt.Errorf("no BTS account is configured: set %s and %s, or list one in %s", bts.EnvLogin, bts.EnvPassword, sources.EnvFile)}
	case given:
		if s, ok := find(account); ok {
			return s, nil
		}
		return sources.Source{}, &cli.UsageError{Err: fmt.Errorf("--bts-account %q: no such BTS account is configured; the BTS accounts are: %s", account, strings.Join(names, ", "))}
	case len(btsSrcs) == 1:
		return btsSrcs[0], nil
	}
	if s, ok := find(settingsAccount); ok {
		return s, nil
	}
	return sources.Source{}, &cli.UsageError{Err: fmt.Errorf("%d BTS accounts are configured (%s): choose one with --bts-account", len(btsSrcs), strings.Join(names, ", "))}
}

// webhookTokenHint says where the webhook token of src is configured.
func webhookTokenHint(src sources.Source) string {
	if src.Login == (sources.Secret{}) {
		// A source without a Login reference is the INGESTD_BTS_* settings'
		// (see sourceOf).
		return fmt.Sprintf("set %s (at least %d characters, e.g. `openssl rand -hex 24`)", bts.EnvWebhookToken, bts.MinWebhookTokenLen)
	}
	return fmt.Sprintf("give it webhook_token_file (or webhook_token_env) in %s (at least %d characters, e.g. `openssl rand -hex 24`)", sources.EnvFile, bts.MinWebhookTokenLen)
}

// What show says of the key BTS holds, never the key itself: a state for
// JSON, and its text.
const (
	webhookKeyNone      = "none"
	webhookKeyHidden    = "hidden"
	webhookKeyMatches   = "matches"
	webhookKeyDiffers   = "differs"
	webhookKeyUnchecked = "unchecked"
)

var webhookKeyText = map[string]string{
	webhookKeyNone:      "none",
	webhookKeyHidden:    "set (BTS does not show it)",
	webhookKeyMatches:   "set (matches this account's webhook token)",
	webhookKeyDiffers:   "set (does NOT match this account's webhook token: run `ingestd bts webhook register` again)",
	webhookKeyUnchecked: "set (this account has no webhook token to compare it with)",
}

// btsWebhookView is the output of the webhook commands: the setting BTS
// holds for the account, its key reduced to how it compares with the
// account's webhook token.
type btsWebhookView struct {
	Source string `json:"source"`
	// Configured is false when BTS holds no setting; the fields below are
	// then empty.
	Configured  bool   `json:"configured"`
	URL         string `json:"webhook_url"`
	Environment string `json:"environment"`
	HasToken    bool   `json:"has_token"`
	// APIKey is none, hidden (BTS has one but does not show it), matches,
	// differs, or unchecked (the account has no webhook token).
	APIKey string `json:"api_key"`
}

// webhookViewOf describes w, the setting BTS holds for src (ok false: none),
// comparing its key with src's webhook token.
func webhookViewOf(src sources.Source, w bts.Webhook, ok bool) btsWebhookView {
	v := btsWebhookView{Source: src.ID(), Configured: ok, APIKey: webhookKeyNone}
	if !ok {
		return v
	}
	v.URL, v.Environment, v.HasToken = w.URL, w.Environment, w.HasToken
	switch {
	case !w.APIKey.IsSet() && w.HasToken:
		v.APIKey = webhookKeyHidden
	case !w.APIKey.IsSet():
		v.APIKey = webhookKeyNone
	case !src.BTS.WebhookToken.IsSet():
		v.APIKey = webhookKeyUnchecked
	case w.KeyMatches(src.BTS.WebhookToken):
		v.APIKey = webhookKeyMatches
	default:
		v.APIKey = webhookKeyDiffers
	}
	return v
}

func (v btsWebhookView) print(w io.Writer) error {
	if !v.Configured {
		_, err := fmt.Fprintf(w, "%s: BTS holds no webhook setting (set one with `ingestd bts webhook register --url URL`)\n", v.Source)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	_, _ = fmt.Fprintf(tw, "source\t%s\n", v.Source)
	_, _ = fmt.Fprintf(tw, "webhook_url\t%s\n", v.URL)
	_, _ = fmt.Fprintf(tw, "environment\t%s\n", dash(v.Environment))
	_, _ = fmt.Fprintf(tw, "has_token\t%t\n", v.HasToken)
	_, _ = fmt.Fprintf(tw, "itx-apiKey\t%s\n", webhookKeyText[v.APIKey])
	return tw.Flush()
}
