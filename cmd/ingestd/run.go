package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ingestd/ingestd/internal/cli"
	"github.com/ingestd/ingestd/internal/daemon"
	"github.com/ingestd/ingestd/internal/pg"
	"github.com/ingestd/ingestd/internal/secret"
)

// version is stamped at build time with -ldflags "-X main.version=...";
// the linker can only set a package-level variable, hence the one global.
var version = "dev"

const usage = `ingestd turns courier APIs into one stream of delivery events on Kafka.

Usage:
  ingestd [run] [flags]    run the daemon (configuration from INGESTD_* variables or flags)
  ingestd migrate          apply database migrations (INGESTD_DATABASE_URL)
  ingestd check-config     validate the configuration and check PostgreSQL and Kafka answer
  ingestd cursor show      every source's cursor, event count, halt state and active instance
  ingestd cursor history   --source S: the source's cursor changes, newest first
  ingestd cursor set       --source S --value V --reason R: replace a cursor (takes the lease)
  ingestd cursor rewind    --source S --to TIME --reason R: back to a recorded cursor
  ingestd outbox stats     outbox size, unpublished rows, per-partition progress
  ingestd sources list     every configured source: instance, last commit, events, halt
  ingestd bts track ID…    add BTS orders to the watch-list
  ingestd bts untrack ID…  remove BTS orders from the watch-list
  ingestd bts list         the BTS watch-list: status, changes, state, next poll
  ingestd bts webhook register  --url URL: have BTS call ingestd on every status change
  ingestd bts webhook show      the BTS account's webhook setting (secrets redacted)
  ingestd version          print the version

Every flag has an environment variable: --kafka-brokers is INGESTD_KAFKA_BROKERS.
Every command but the daemon prints human output, or JSON with --json.
Run 'ingestd run -h' for the daemon's flags.
`

// run executes one ingestd command. Configuration comes from args and the
// INGESTD_* environment variables.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "run"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return runDaemon(ctx, args, stderr)
	case "migrate":
		return runMigrate(ctx, args, stdout, stderr)
	case "cursor":
		return runCursor(ctx, args, stdout, stderr)
	case "outbox":
		return runOutbox(ctx, args, stdout, stderr)
	case "bts":
		return runBTS(ctx, args, stdout, stderr)
	case "sources":
		return runSources(ctx, args, stdout, stderr)
	case "check-config":
		return runCheckConfig(ctx, args, stdout, stderr)
	case "version":
		return runVersion(args, stdout, stderr)
	case "help":
		_, err := fmt.Fprint(stdout, usage)
		return err
	default:
		_, _ = fmt.Fprint(stderr, usage)
		return &cli.UsageError{Err: fmt.Errorf("unknown command %q", cmd)}
	}
}

func runDaemon(ctx context.Context, args []string, stderr io.Writer) error {
	cfg, _, err := parseDaemonConfig("ingestd run", args, stderr, nil)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)
	defer func() { _ = log.Sync() }()
	log.Info("starting ingestd", zap.String("version", buildVersion()))

	// daemon.New validates the configuration, once, and names every
	// problem, an unknown log level or format included.
	d, err := daemon.New(ctx, cfg, log)
	var invalid *daemon.ConfigError
	if errors.As(err, &invalid) {
		return &cli.UsageError{Err: invalid}
	}
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	// SIGHUP reads the sources again, as a change of the sources file does.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	hupDone := make(chan struct{})
	defer func() { <-hupDone }()
	hupCtx, stopHUP := context.WithCancel(ctx)
	defer stopHUP()
	go func() {
		defer close(hupDone)
		for {
			select {
			case <-hupCtx.Done():
				return
			case <-hup:
				log.Info("SIGHUP: reading the sources again")
				d.Reload()
			}
		}
	}()
	return d.Run(ctx)
}

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := pg.DefaultConfig()
	fs := flag.NewFlagSet("ingestd migrate", flag.ContinueOnError)
	fs.Var(secret.Flag{S: &cfg.DatabaseURL}, "database-url", "PostgreSQL DSN (required)")
	var asJSON bool
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return &cli.UsageError{Err: fmt.Errorf("invalid configuration:\n%w", err)}
	}
	applied, err := pg.Migrate(ctx, cfg)
	if err != nil {
		return err
	}
	if asJSON {
		type migration struct {
			Version         int64   `json:"version"`
			Name            string  `json:"name"`
			DurationSeconds float64 `json:"duration_seconds"`
		}
		out := make([]migration, 0, len(applied))
		for _, m := range applied {
			out = append(out, migration{m.Version, m.Name, m.Duration.Seconds()})
		}
		return printJSON(stdout, map[string]any{"applied": out})
	}
	if len(applied) == 0 {
		_, err = fmt.Fprintln(stdout, "database schema is up to date")
		return err
	}
	for _, m := range applied {
		if _, err := fmt.Fprintf(stdout, "applied %s (version %d) in %s\n", m.Name, m.Version, m.Duration.Round(1e6)); err != nil {
			return err
		}
	}
	return nil
}

// runVersion prints the version, as text or with --json as
// {"version": ..., "go": ...}.
func runVersion(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ingestd version", flag.ContinueOnError)
	var asJSON bool
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if err := parseFlags(fs, args, stderr); err != nil {
		return err
	}
	if asJSON {
		return printJSON(stdout, map[string]string{"version": buildVersion(), "go": runtime.Version()})
	}
	_, err := fmt.Fprintln(stdout, buildVersion())
	return err
}

// newLogger returns the logger c describes. An invalid level or format falls
// back to info and JSON, so that the configuration error, which daemon.New
// reports with every other problem, can still be logged.
func newLogger(c daemon.LogConfig, w io.Writer) *zap.Logger {
	level, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		level = zapcore.InfoLevel
	}
	var enc zapcore.Encoder
	if c.Format == "console" {
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	} else {
		enc = zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), level), zap.ErrorOutput(zapcore.AddSync(w)))
}

func buildVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return version
}
