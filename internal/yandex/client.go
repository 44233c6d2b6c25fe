package yandex

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ingestd/ingestd/internal/event"
	"github.com/ingestd/ingestd/internal/upstream"
)

// journalPath is the journal endpoint relative to the base URL.
const journalPath = "/b2b/cargo/integration/v2/claims/journal"

// maxErrorBodyBytes bounds how much of an error response is read: only the
// provider's code and message are wanted, and an error page must not cost
// the full MaxResponseBytes.
const maxErrorBodyBytes = 64 << 10

// Client fetches pages of the Yandex claims journal. It is safe for
// concurrent use, although a journal is walked by one poller at a time.
type Client struct {
	hc             *http.Client
	url            string
	auth           string
	acceptLanguage string
	timeout        time.Duration
	maxBody        int64
	pageLimit      int
}

// NewClient returns a client for cfg, which must be valid and enabled. The
// caller supplies hc because TLS and proxy settings live there; nil means a
// client with http.DefaultTransport. The client works on a copy of hc that
// does not follow redirects: following one would turn the POST into a GET
// or silently move the source to another host, and a redirect means the base
// URL is wrong, which an operator must fix.
func NewClient(cfg Config, hc *http.Client) (*Client, error) {
	if !cfg.Enabled() {
		return nil, fmt.Errorf("yandex client: %s is not set", EnvToken)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("yandex client: %w", err)
	}
	// Building a request once here turns a URL that net/http cannot use into
	// a configuration error instead of a failure on every poll.
	journalURL := strings.TrimRight(cfg.BaseURL, "/") + journalPath + "?limit=" + strconv.Itoa(cfg.PageLimit)
	if _, err := http.NewRequest(http.MethodPost, journalURL, nil); err != nil {
		return nil, fmt.Errorf("yandex client: %s: %w", EnvBaseURL, err)
	}
	var own http.Client
	if hc != nil {
		own = *hc
	}
	own.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	return &Client{
		hc:             &own,
		url:            journalURL,
		auth:           "Bearer " + cfg.Token.Reveal(),
		acceptLanguage: cfg.AcceptLanguage,
		timeout:        cfg.RequestTimeout,
		maxBody:        cfg.MaxResponseBytes,
		pageLimit:      cfg.PageLimit,
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
		return nil, classify(ctx, outcome{badCursor: err})
	}

	// The timeout covers reading the body too, so it is cancelled only when
	// this call returns.
	reqCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(reqCtx, http.MethodPost, c.url, bytes.NewReader(reqBody))
	if err != nil {
		return nil, classify(ctx, outcome{internal: err})
	}
	req.Header.Set("Authorization", c.auth)
	req.Header.Set("Accept-Language", c.acceptLanguage)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "ingestd")

	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, classify(ctx, outcome{err: err, timeout: c.timeout})
	}
	defer func() { _ = resp.Body.Close() }()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// A failed read of an error body changes nothing: the status alone
		// decides the class, and what was read still helps the operator.
		body, _ := io.ReadAll(io.LimitReader(resp.Body, min(c.maxBody, maxErrorBodyBytes)))
		return nil, classify(ctx, outcome{status: resp.StatusCode, header: resp.Header, body: body, now: time.Now()})
	}

	// A declared length over the limit fails at once rather than after
	// reading MaxResponseBytes.
	if resp.ContentLength > c.maxBody {
		err := fmt.Errorf("%w (Content-Length %d, limit %d)", upstream.ErrBodyTooLarge, resp.ContentLength, c.maxBody)
		return nil, classify(ctx, outcome{status: resp.StatusCode, err: err})
	}
	body, err := upstream.ReadBody(resp.Body, c.maxBody, resp.ContentLength)
	if err != nil {
		return nil, classify(ctx, outcome{status: resp.StatusCode, err: err, timeout: c.timeout})
	}
	page, err := decodePage(body, c.pageLimit)
	if err != nil {
		return nil, classify(ctx, outcome{status: resp.StatusCode, malformed: err})
	}
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
