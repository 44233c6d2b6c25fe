package bts

// The account's webhook setting at BTS. Nothing of it is in BTS's
// documentation; integrators describe it so: one URL per account, set with
// GET /v1/webhook/webhook-config and a JSON body
// {"webhook_url", "environment", "has_token", "itx-apiKey"}, answered in
// the usual envelope. With has_token, BTS sends itx-apiKey along with every
// webhook call, so ingestd registers the account's webhook token there: it
// is how the webhook endpoint tells which account a call belongs to. The
// same request without a body reads the setting back (the simulator does
// so, with data null while there is none).

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/upstream"
)

// WebhookConfigPath is where an account's webhook is set and read.
const WebhookConfigPath = "/v1/webhook/webhook-config"

// Webhook environments BTS accepts. What the choice changes upstream is not
// known; ingestd only passes it on.
const (
	WebhookProduction = "production"
	WebhookTest       = "test"
)

// Ops of the webhook calls, named in errors. They are not order calls, so a
// 404 on them means a wrong base URL or an endpoint BTS does not have
// (Permanent), never a missing order.
const (
	opWebhookShow = "bts read webhook setting"
	opWebhookSet  = "bts set webhook"
)

// ErrInvalidWebhook marks a setting that SetWebhook refuses before sending
// anything.
var ErrInvalidWebhook = errors.New("invalid webhook setting")

// Webhook is an account's webhook setting at BTS.
type Webhook struct {
	// URL receives BTS's calls: an absolute http or https URL.
	URL string
	// Environment is WebhookProduction or WebhookTest.
	Environment string
	// HasToken says that BTS sends APIKey with every call.
	HasToken bool
	// APIKey is the token BTS sends with every call (itx-apiKey). It is a
	// secret.String because it authenticates the calls: whoever reads it
	// can make calls that ingestd accepts.
	APIKey secret.String
}

// Validate checks w as SetWebhook does before sending it. Every error wraps
// ErrInvalidWebhook, and none quotes the key.
func (w Webhook) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidWebhook}, args...)...)
	}
	u, err := url.Parse(w.URL)
	switch {
	case w.URL == "":
		return bad("the URL is empty")
	case err != nil:
		// url.Parse's error quotes the URL, which is the operator's own.
		return bad("%v", err)
	case u.User != nil:
		// Not quoted: the user info may hold a password, which BTS would
		// then show to anyone reading the setting back.
		return bad("the URL must not carry a user name or password")
	case (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return bad("%q is not an absolute http or https URL", w.URL)
	}
	if w.Environment != WebhookProduction && w.Environment != WebhookTest {
		return bad("environment must be %q or %q, got %q", WebhookProduction, WebhookTest, w.Environment)
	}
	key := w.APIKey.Reveal()
	switch {
	case w.HasToken && key == "":
		return bad("has_token is set but the key is empty")
	case !w.HasToken && key != "":
		// BTS would store a key it never sends: most likely a mistake.
		return bad("a key is given but has_token is not set")
	case w.HasToken && len(key) < MinWebhookTokenLen:
		// The webhook endpoint refuses shorter tokens (see
		// Config.Validate), so registering one would break every call.
		return bad("the key must be at least %d characters, got %d", MinWebhookTokenLen, len(key))
	case !upstream.ValidHeaderValue(key):
		// BTS may send the key in a header, where control characters
		// cannot travel.
		return bad("the key must not contain control characters")
	}
	return nil
}

// KeyMatches reports whether BTS's key is token, comparing in constant time
// so that the comparison does not hint at the token through its timing. An
// unset key or token matches nothing.
func (w Webhook) KeyMatches(token secret.String) bool {
	if !w.APIKey.IsSet() || !token.IsSet() {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(w.APIKey.Reveal()), []byte(token.Reveal())) == 1
}

// webhookJSON is the setting as BTS takes and answers it. has_token is raw
// because BTS is a Yii2 application, whose boolean validator and answers mix
// true, 1 and "1".
type webhookJSON struct {
	URL         *string         `json:"webhook_url"`
	Environment *string         `json:"environment"`
	HasToken    json.RawMessage `json:"has_token"`
	APIKey      *string         `json:"itx-apiKey,omitempty"`
}

// Webhook returns the account's webhook setting at BTS; ok is false when it
// has none. It is not in BTS's documentation that a body-less request reads
// the setting; a BTS that answers it otherwise yields an *upstream.Error.
// Every failure is an *upstream.Error, classified as for the other calls,
// except that when ctx is done the error satisfies errors.Is(err, ctx.Err()).
func (c *Client) Webhook(ctx context.Context) (Webhook, bool, error) {
	data, status, err := c.webhookCall(ctx, opWebhookShow, nil, "")
	if err != nil {
		return Webhook{}, false, err
	}
	if data == nil {
		return Webhook{}, false, nil
	}
	w, err := decodeWebhook(data)
	if err != nil {
		return Webhook{}, false, upstream.Malformed(opWebhookShow, "response", status, err)
	}
	return w, w.URL != "", nil
}

// SetWebhook replaces the account's webhook setting at BTS with w and
// returns the setting BTS answered; when BTS answers no data, that is w
// itself. An invalid w is refused before anything is sent, with an error
// wrapping ErrInvalidWebhook; every other failure is as for Webhook. The
// key never appears in an error, even when BTS quotes it back.
func (c *Client) SetWebhook(ctx context.Context, w Webhook) (Webhook, error) {
	if err := w.Validate(); err != nil {
		return Webhook{}, fmt.Errorf("%s: %w", opWebhookSet, err)
	}
	body, err := json.Marshal(webhookJSON{
		URL:         &w.URL,
		Environment: &w.Environment,
		HasToken:    json.RawMessage(strconv.FormatBool(w.HasToken)),
		APIKey:      optional(w.APIKey.Reveal()),
	})
	if err != nil {
		return Webhook{}, upstream.Internal(opWebhookSet, err)
	}
	data, status, err := c.webhookCall(ctx, opWebhookSet, body, w.APIKey.Reveal())
	if err != nil {
		return Webhook{}, err
	}
	if data == nil {
		return w, nil
	}
	got, err := decodeWebhook(data)
	if err != nil {
		return Webhook{}, upstream.Malformed(opWebhookSet, "response", status, err)
	}
	return got, nil
}

// optional returns a pointer to s, or nil for an empty s, so that a setting
// without a key sends no itx-apiKey at all.
func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// webhookCall sends an authenticated GET of the config endpoint with body
// (nil sends none) and returns the answer's data, nil when BTS answers
// data null. Like get, a 401 renews the token once and retries once. key is
// kept out of every error, in case BTS quotes what it was sent.
//
// It repeats get's loop rather than calling it because get sends no body
// and its envelope decoding (exchange) takes data null for a failure,
// while here it means "no setting".
func (c *Client) webhookCall(ctx context.Context, op string, body []byte, key string) (json.RawMessage, int, error) {
	for attempt := 0; ; attempt++ {
		access, gen, err := c.accessToken(ctx)
		if err != nil {
			return nil, 0, err
		}
		resp, err := c.core.Do(ctx, upstream.Request{
			Op: op, Method: http.MethodGet, URL: c.core.URL(WebhookConfigPath, nil), Body: body, Bearer: access,
		})
		if err == nil {
			data, derr := webhookData(resp.Body)
			if derr != nil {
				// The description may quote the answer, which may quote
				// the key.
				return nil, 0, upstream.Malformed(op, "response", resp.Status, errors.New(scrub(derr.Error(), key)))
			}
			return data, resp.Status, nil
		}
		var ue *upstream.Error
		if attempt == 0 && errors.As(err, &ue) && ue.StatusCode == http.StatusUnauthorized {
			if _, _, err := c.renew(ctx, gen, true); err != nil {
				return nil, 0, err
			}
			continue
		}
		return nil, 0, redact(err, access, key)
	}
}

// webhookData returns the data of a config answer: nil for a successful
// answer with data null or absent (no setting), else as decodeEnvelope.
func webhookData(body []byte) (json.RawMessage, error) {
	var env envelope
	if json.Unmarshal(body, &env) == nil && string(bytes.TrimSpace(env.Status)) == "true" {
		if d := bytes.TrimSpace(env.Data); len(d) == 0 || string(d) == "null" {
			return nil, nil
		}
	}
	return decodeEnvelope(body)
}

// decodeWebhook reads a setting answered by BTS. Its errors never quote
// data, which holds the key.
func decodeWebhook(data json.RawMessage) (Webhook, error) {
	var j webhookJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return Webhook{}, errors.New("data is not a webhook setting object")
	}
	var w Webhook
	if j.URL != nil {
		w.URL = *j.URL
	}
	if j.Environment != nil {
		w.Environment = *j.Environment
	}
	if j.APIKey != nil {
		w.APIKey = secret.New(*j.APIKey)
	}
	switch v := strings.TrimSpace(string(j.HasToken)); v {
	case "true", "1", `"1"`:
		w.HasToken = true
	case "", "null", "false", "0", `"0"`, `""`:
	default:
		return Webhook{}, errors.New("has_token is not a boolean")
	}
	return w, nil
}

// scrub replaces key in s, unless the key is too short to replace without
// mangling ordinary text (see redact).
func scrub(s, key string) string {
	if len(key) < 4 {
		return s
	}
	return strings.ReplaceAll(s, key, "[REDACTED]")
}
