package yandex

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"unicode/utf8"

	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/upstream"
)

// journalPath is the journal endpoint relative to the base URL.
const journalPath = "/b2b/cargo/integration/v2/claims/journal"

// Client fetches pages of the Yandex claims journal. It is safe for
// concurrent use, although a journal is walked by one poller at a time.
type Client struct {
	core *upstream.Client
	// url is the journal URL with the page limit, built once because every
	// request is to it.
	url       string
	pageLimit int
}

// NewClient returns a client for cfg, which must be valid and enabled. The
// caller supplies hc because TLS and proxy settings live there; nil means a
// client with http.DefaultTransport. Redirects are not followed (see
// upstream.NewClient): following one would turn the POST into a GET or
// silently move the source to another host.
func NewClient(cfg Config, hc *http.Client) (*Client, error) {
	if !cfg.Enabled() {
		return nil, fmt.Errorf("yandex client: %s is not set", EnvToken)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("yandex client: %w", err)
	}
	core, err := upstream.NewClient(upstream.ClientConfig{
		BaseURL: cfg.BaseURL,
		Timeout: cfg.RequestTimeout,
		MaxBody: cfg.MaxResponseBytes,
		// The token never changes, so it is a fixed header rather than one
		// built for every request.
		Header:    http.Header{"Authorization": {"Bearer " + cfg.Token.Reveal()}, "Accept-Language": {cfg.AcceptLanguage}},
		ErrorBody: providerError,
		Status:    cursorRejected,
	}, hc)
	if err != nil {
		return nil, fmt.Errorf("yandex client: %s: %w", EnvBaseURL, err)
	}
	return &Client{
		core:      core,
		url:       core.URL(journalPath, url.Values{"limit": {strconv.Itoa(cfg.PageLimit)}}),
		pageLimit: cfg.PageLimit,
	}, nil
}

// Page is one page of the journal.
type Page struct {
	// Cursor is the opaque cursor to store, byte for byte; guaranteed
	// non-empty for a returned page.
	Cursor  string
	Entries []Entry
	// Bytes is the body size in bytes, for metrics.
	Bytes int
	// Delay is the wait the answer asked for before the next journal
	// request (X-Polling-Delay-Ms).
	Delay PollingDelay
	// strs holds the strings of the page's entries; see Strings.
	strs *event.Arena
}

// Strings returns the Arena that holds the strings of the page's entries,
// for the strings of the events built from them (see NormalizeIn): they
// all live as long as the page. It is nil for a Page not from the decoder.
func (p *Page) Strings() *event.Arena { return p.strs }

// Entry is one journal record: one change of one claim.
type Entry struct {
	OperationID    int64
	ClaimID        string
	ChangeType     string
	UpdatedTS      string
	NewStatus      string
	NewPrice       string
	NewCurrency    string
	Resolution     string
	Revision       int64
	ClientID       string
	CurrentPointID *int64
	// Raw is the entry exactly as served, unknown fields included. It may
	// alias the response buffer, so it must not be modified.
	Raw json.RawMessage
	// rawChecked is set by the page decoder, which checks every byte of Raw
	// as strictly as encoding/json; an Entry built any other way has its
	// Raw checked again when its event is encoded.
	rawChecked bool
	// price backs the Price of the entry's event, so that normalizing a
	// price change does not allocate one.
	price event.Price
}

// Journal fetches one page after cursor. cursor == "" means "no cursor":
// the very first call, whose body is {}; a stored cursor is never empty.
// Every failure is an *upstream.Error, except that when ctx is done the
// error satisfies errors.Is(err, ctx.Err()) so that the poller can exit
// quietly.
func (c *Client) Journal(ctx context.Context, cursor string) (*Page, error) {
	reqBody, err := requestBody(cursor)
	if err != nil {
		// The stored cursor cannot be sent unchanged, which only an
		// operator can repair.
		return nil, &upstream.Error{Class: upstream.BadCursor, Op: opFetch, Message: err.Error()}
	}
	resp, err := c.core.Do(ctx, upstream.Request{Op: opFetch, Method: http.MethodPost, URL: c.url, Body: reqBody})
	if err != nil {
		return nil, err
	}
	page, err := decodePage(resp.Body, c.pageLimit)
	if err != nil {
		// The delay still applies to the next request: see PollingDelayOf.
		ue := upstream.Malformed(opFetch, "journal page", resp.Status, err)
		var e *upstream.Error
		if errors.As(ue, &e) {
			e.Header = resp.Header
		}
		return nil, ue
	}
	page.Delay = ParsePollingDelay(resp.Header)
	return page, nil
}

// requestBody encodes the journal request. The cursor goes through the JSON
// encoder so that every character of the opaque value, quotes and
// backslashes included, reaches the server exactly as it was received.
func requestBody(cursor string) ([]byte, error) {
	if cursor == "" {
		return []byte(`{}`), nil
	}
	// JSON cannot carry invalid UTF-8: the encoder would replace it and send
	// a different cursor. decodePage never returns such a cursor, so a stored
	// one was damaged outside this package.
	if !utf8.ValidString(cursor) {
		return nil, errors.New("stored cursor is not valid UTF-8 and cannot be sent unchanged")
	}
	b, err := json.Marshal(struct {
		Cursor string `json:"cursor"`
	}{cursor})
	if err != nil {
		return nil, fmt.Errorf("encode cursor: %w", err)
	}
	return b, nil
}
