// Package sources reads the sources file (INGESTD_SOURCES_FILE): every
// Yandex Delivery account and BTS Express login one deployment runs, with
// their secrets taken from files (mounted Kubernetes Secrets) or named
// environment variables, never from the file itself. A source's id stays
// "<provider>/<account>", as cursors, leases, metrics and events use it.
package sources

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/yandex"
)

// EnvFile is the variable naming the sources file.
const EnvFile = "INGESTD_SOURCES_FILE"

// Providers.
const (
	ProviderYandex = "yandex"
	ProviderBTS    = "bts"
)

// maxFileBytes bounds the file: a thousand sources take about 300 KiB.
const maxFileBytes = 4 << 20

// file is the YAML document.
type file struct {
	Sources []entry `yaml:"sources"`
}

// entry is one source as written in the file. Optional fields are
// pointers, so that "not given" (take the INGESTD_* default) differs from
// a zero value (which validation refuses).
type entry struct {
	Provider string `yaml:"provider"`
	Account  string `yaml:"account"`

	// Yandex.
	TokenFile      string         `yaml:"token_file"`
	TokenEnv       string         `yaml:"token_env"`
	PageLimit      *int           `yaml:"page_limit"`
	PollInterval   *time.Duration `yaml:"poll_interval"`
	AcceptLanguage *string        `yaml:"accept_language"`

	// BTS.
	LoginFile     string         `yaml:"login_file"`
	LoginEnv      string         `yaml:"login_env"`
	PasswordFile  string         `yaml:"password_file"`
	PasswordEnv   string         `yaml:"password_env"`
	Language      *string        `yaml:"language"`
	Rate          *float64       `yaml:"rate"`
	Concurrency   *int           `yaml:"concurrency"`
	PollIntervals *string        `yaml:"poll_intervals"`
	TokenTTL      *time.Duration `yaml:"token_ttl"`
	// The account's webhook token, optional: without it the account takes
	// no webhooks.
	WebhookTokenFile string `yaml:"webhook_token_file"`
	WebhookTokenEnv  string `yaml:"webhook_token_env"`

	// Both.
	BaseURL        *string        `yaml:"base_url"`
	RequestTimeout *time.Duration `yaml:"request_timeout"`

	line int
}

// Secret names where a secret is read from: a file (a mounted Kubernetes
// Secret, read again when it changes) or an environment variable.
type Secret struct {
	File string
	Env  string
}

// String says where the secret comes from, never its value.
func (s Secret) String() string {
	if s.File != "" {
		return "file " + s.File
	}
	return "variable " + s.Env
}

// Read returns the secret's current value: the file's content without its
// trailing newline (as `kubectl create secret --from-file` keeps one from
// an editor), or the variable's value.
func (s Secret) Read(getenv func(string) string) (secret.String, error) {
	var v string
	if s.File != "" {
		b, err := os.ReadFile(s.File)
		if err != nil {
			return secret.String{}, err
		}
		v = strings.TrimRight(string(b), "\r\n")
	} else {
		v = getenv(s.Env)
	}
	if v == "" {
		return secret.String{}, errors.New("empty")
	}
	return secret.New(v), nil
}

// Source is one source of the file with every default applied and its
// secrets read.
type Source struct {
	// Provider is ProviderYandex or ProviderBTS; the matching config is set.
	Provider string
	Yandex   yandex.Config
	BTS      bts.Config
	// Token is where a Yandex source's token comes from; Login and Password
	// where a BTS source's do. They are read again when the file or the
	// secret changes.
	Token    Secret
	Login    Secret
	Password Secret
	// WebhookToken is where a BTS source's webhook token comes from; zero
	// when it takes no webhooks (or its token is a setting's).
	WebhookToken Secret
}

// Secrets returns where the source's secrets come from, for the files to
// watch; a secret of the INGESTD_* settings is the zero Secret.
func (s Source) Secrets() []Secret {
	return []Secret{s.Token, s.Login, s.Password, s.WebhookToken}
}

// ID is the source id, "<provider>/<account>".
func (s Source) ID() string {
	if s.Provider == ProviderYandex {
		return s.Yandex.SourceID()
	}
	return s.BTS.SourceID()
}

// Defaults are the settings a file's optional fields default to: the
// INGESTD_YANDEX_* and INGESTD_BTS_* settings.
type Defaults struct {
	Yandex yandex.Config
	BTS    bts.Config
}

// Read reads and checks the sources file at path. getenv looks up the
// variables secrets may name. Every problem is reported, each naming the
// file, the source (its position, line and id) and the field.
func Read(path string, d Defaults, getenv func(string) string) ([]Source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", EnvFile, path, err)
	}
	defer func() { _ = f.Close() }()
	b, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", EnvFile, path, err)
	}
	if len(b) > maxFileBytes {
		return nil, fmt.Errorf("%s: %s: larger than %d bytes", EnvFile, path, maxFileBytes)
	}
	srcs, err := Parse(b, d, getenv)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", EnvFile, path, err)
	}
	return srcs, nil
}

// Parse checks a sources document (see Read).
func Parse(doc []byte, d Defaults, getenv func(string) string) ([]Source, error) {
	entries, err := decode(doc)
	if err != nil {
		return nil, err
	}
	var (
		errs []error
		out  = make([]Source, 0, len(entries))
		seen = map[string]int{}
	)
	for i, e := range entries {
		where := fmt.Sprintf("sources[%d] (line %d", i, e.line)
		if e.Account != "" {
			where += ", " + e.Provider + "/" + e.Account
		}
		where += ")"
		s, problems := e.resolve(d, getenv)
		for _, p := range problems {
			errs = append(errs, fmt.Errorf("%s: %w", where, p))
		}
		if len(problems) > 0 {
			continue
		}
		if j, dup := seen[s.ID()]; dup {
			errs = append(errs, fmt.Errorf("%s: account: %s is also sources[%d]; a source id must be unique", where, s.ID(), j))
			continue
		}
		seen[s.ID()] = i
		out = append(out, s)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// decode parses the YAML strictly: an unknown field is an error (a typo
// such as token-file would otherwise leave a source without its token).
func decode(doc []byte) ([]entry, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(doc, &root); err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	if len(root.Content) == 0 {
		return nil, errors.New("empty: want a list of sources under the key sources")
	}
	// A Node's own Decode does not refuse unknown fields; a Decoder does.
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, cleanYAMLError(err)
	}
	// The nodes give each entry's line, for messages.
	if len(root.Content) == 1 {
		m := root.Content[0]
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == "sources" {
				for j, n := range m.Content[i+1].Content {
					if j < len(f.Sources) {
						f.Sources[j].line = n.Line
					}
				}
			}
		}
	}
	if f.Sources == nil {
		return nil, errors.New("no sources: want a list of sources under the key sources")
	}
	return f.Sources, nil
}

// cleanYAMLError drops yaml.v3's Go type names ("in type sources.entry"),
// which mean nothing to an operator.
func cleanYAMLError(err error) error {
	msg := err.Error()
	msg = strings.ReplaceAll(msg, " in type sources.entry", "")
	msg = strings.ReplaceAll(msg, " in type sources.file", "")
	msg = strings.ReplaceAll(msg, "yaml: unmarshal errors:\n  ", "")
	return errors.New(msg)
}

// resolve applies the defaults and reads the secrets.
func (e entry) resolve(d Defaults, getenv func(string) string) (Source, []error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{field}, args...)...))
	}
	ref := func(name, fileField, envField, file, env string) (Secret, bool) {
		switch {
		case file != "" && env != "":
			bad(fileField, "give %s or %s, not both", fileField, envField)
		case file == "" && env == "":
			bad(fileField, "required (or %s)", envField)
		default:
			return Secret{File: file, Env: env}, true
		}
		return Secret{}, false
	}
	read := func(field string, s Secret) secret.String {
		v, err := s.Read(getenv)
		if err != nil {
			// The error names the file or variable, never a value.
			bad(field, "%s %s: %v", name(field), s, err)
		}
		return v
	}
	only := func(provider string, fields map[string]bool) {
		for f, given := range fields {
			if given {
				bad(f, "is a %s field; this source's provider is %s", provider, e.Provider)
			}
		}
	}

	s := Source{Provider: e.Provider}
	switch e.Provider {
	case ProviderYandex:
		only(ProviderBTS, map[string]bool{
			"login_file": e.LoginFile != "", "login_env": e.LoginEnv != "", "password_file": e.PasswordFile != "", "password_env": e.PasswordEnv != "",
			"webhook_token_file": e.WebhookTokenFile != "", "webhook_token_env": e.WebhookTokenEnv != "",
			"language": e.Language != nil, "rate": e.Rate != nil, "concurrency": e.Concurrency != nil, "poll_intervals": e.PollIntervals != nil, "token_ttl": e.TokenTTL != nil,
		})
		c := d.Yandex
		c.Account = e.Account
		set(&c.BaseURL, e.BaseURL)
		set(&c.PageLimit, e.PageLimit)
		set(&c.PollInterval, e.PollInterval)
		set(&c.AcceptLanguage, e.AcceptLanguage)
		set(&c.RequestTimeout, e.RequestTimeout)
		if r, ok := ref("token", "token_file", "token_env", e.TokenFile, e.TokenEnv); ok {
			s.Token = r
			c.Token = read("token_file", r)
		}
		if c.Token.IsSet() || len(errs) == 0 {
			errs = append(errs, fieldErrors(c.Validate(), yandexFields)...)
		}
		s.Yandex = c
	case ProviderBTS:
		only(ProviderYandex, map[string]bool{
			"token_file": e.TokenFile != "", "token_env": e.TokenEnv != "", "page_limit": e.PageLimit != nil,
			"poll_interval": e.PollInterval != nil, "accept_language": e.AcceptLanguage != nil,
		})
		c := d.BTS
		c.Account = e.Account
		set(&c.BaseURL, e.BaseURL)
		set(&c.Language, e.Language)
		set(&c.RequestTimeout, e.RequestTimeout)
		set(&c.TokenTTL, e.TokenTTL)
		set(&c.Schedule.Rate, e.Rate)
		set(&c.Schedule.Concurrency, e.Concurrency)
		if e.PollIntervals != nil {
			iv, err := bts.ParseIntervals(*e.PollIntervals)
			if err != nil {
				bad("poll_intervals", "%v", err)
			}
			c.Schedule.Intervals = iv
		}
		if r, ok := ref("login", "login_file", "login_env", e.LoginFile, e.LoginEnv); ok {
			s.Login = r
			login := read("login_file", r)
			c.Login = login.Reveal()
		}
		if r, ok := ref("password", "password_file", "password_env", e.PasswordFile, e.PasswordEnv); ok {
			s.Password = r
			c.Password = read("password_file", r)
		}
		// The webhook token is optional: the settings' INGESTD_BTS_WEBHOOK_TOKEN
		// belongs to the settings' own account, never to a file's.
		c.WebhookToken = secret.String{}
		if e.WebhookTokenFile != "" || e.WebhookTokenEnv != "" {
			if r, ok := ref("webhook_token", "webhook_token_file", "webhook_token_env", e.WebhookTokenFile, e.WebhookTokenEnv); ok {
				s.WebhookToken = r
				c.WebhookToken = read("webhook_token_file", r)
			}
		}
		if c.Enabled() {
			errs = append(errs, fieldErrors(c.Validate(), btsFields)...)
		}
		s.BTS = c
	case "":
		bad("provider", "required: yandex or bts")
	default:
		bad("provider", "%q is not yandex or bts", e.Provider)
	}
	if e.Account == "" {
		bad("account", "required ([a-z0-9][a-z0-9._-]{0,62})")
	}
	return s, errs
}

// name is what a secret field's messages call the secret.
func name(field string) string {
	return strings.TrimSuffix(strings.TrimSuffix(field, "_file"), "_env")
}

func set[T any](dst *T, v *T) {
	if v != nil {
		*dst = *v
	}
}

// Validation of a source's settings is the provider's own (Config.Validate),
// which names environment variables; in a file the field is what the
// operator wrote, so the names are mapped.
var (
	yandexFields = map[string]string{
		yandex.EnvToken:          "token_file",
		yandex.EnvBaseURL:        "base_url",
		yandex.EnvAccount:        "account",
		yandex.EnvPageLimit:      "page_limit",
		yandex.EnvPollInterval:   "poll_interval",
		yandex.EnvRequestTimeout: "request_timeout",
		yandex.EnvAcceptLanguage: "accept_language",
	}
	btsFields = map[string]string{
		bts.EnvBaseURL:        "base_url",
		bts.EnvLogin:          "login_file",
		bts.EnvPassword:       "password_file",
		bts.EnvAccount:        "account",
		bts.EnvLanguage:       "language",
		bts.EnvRequestTimeout: "request_timeout",
		bts.EnvTokenTTL:       "token_ttl",
		bts.EnvPollIntervals:  "poll_intervals",
		bts.EnvRate:           "rate",
		bts.EnvConcurrency:    "concurrency",
		bts.EnvWebhookToken:   "webhook_token_file",
	}
)

// fieldErrors splits a joined validation error into one error per line,
// each naming the file's field instead of the variable.
func fieldErrors(err error, fields map[string]string) []error {
	if err == nil {
		return nil
	}
	var out []error
	for _, line := range strings.Split(err.Error(), "\n") {
		if line == "" {
			continue
		}
		if env, rest, ok := strings.Cut(line, ": "); ok {
			if f, known := fields[env]; known {
				line = f + ": " + rest
			}
		}
		out = append(out, errors.New(line))
	}
	return out
}
