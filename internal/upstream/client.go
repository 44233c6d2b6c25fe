package upstream

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// maxErrorBodyBytes bounds how much of an error response is read: only the
// provider's code and message are wanted, and an error page must not cost
// the full MaxBody.
const maxErrorBodyBytes = 64 << 10

// ClientConfig is what a provider's client fixes once: where its API lives,
// the bounds of every request, the headers it always sends, and the two
// hooks through which the provider reads its own error bodies and names the
// statuses it treats apart from the shared rules.
type ClientConfig struct {
	// BaseURL is the API root, already checked with ValidateBaseURL. A
	// trailing slash is dropped, so that paths can be appended as they are.
	BaseURL string
	// Timeout bounds each request, including reading its body.
	Timeout time.Duration
	// MaxBody bounds a response body.
	MaxBody int64
	// Header holds the headers sent with every request, such as a fixed
	// token or a language. Accept and Content-Type (application/json) and
	// User-Agent are always sent and need not be listed.
	Header http.Header
	// ErrorBody extracts the provider's error code and message from the
	// body of a non-2xx response, which it must keep short and safe for a
	// log line (see Excerpt). Nil quotes the body's beginning as the
	// message.
	ErrorBody func(body []byte) (code, message string)
	// Status returns the class of a non-2xx response that the provider
	// treats apart from the shared rules (a rejected cursor, a missing
	// order), or 0 to leave the response to them. It sees the error with Op,
	// StatusCode, Code and Message set. Nil means the shared rules decide
	// every status.
	Status func(*Error) Class
}

// Client is the HTTP machinery every provider's client shares: one request
// at a time, bounded in time and size, and every failure classified here,
// in one place, into an *Error whose Class the poller acts on. It is safe
// for concurrent use.
type Client struct {
	hc        *http.Client
	base      string
	timeout   time.Duration
	maxBody   int64
	header    []headerField
	errorBody func([]byte) (code, message string)
	status    func(*Error) Class
}

// headerField is one fixed header, its key in canonical form so that a
// request can take it without canonicalizing it again.
type headerField struct {
	key    string
	values []string
}

// NewClient returns the client core for cfg. The caller supplies hc because
// TLS and proxy settings live there; nil means a client with
// http.DefaultTransport. The core works on a copy of hc that does not follow
// redirects: following one would turn a POST into a GET or move the
// credentials to another host, and a redirect means the base URL is wrong,
// which an operator must fix.
//
// The only error is a base URL that net/http cannot use, returned as
// net/http reports it so that the caller can name its own setting.
func NewClient(cfg ClientConfig, hc *http.Client) (*Client, error) {
	base := strings.TrimRight(cfg.BaseURL, "/")
	// Building a request once here turns a URL that net/http cannot use into
	// a configuration error instead of a failure on every poll.
	if _, err := http.NewRequest(http.MethodGet, base, nil); err != nil {
		return nil, err
	}
	var own http.Client
	if hc != nil {
		own = *hc
	}
	own.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	header := make([]headerField, 0, len(cfg.Header))
	for k, vs := range cfg.Header {
		header = append(header, headerField{key: http.CanonicalHeaderKey(k), values: slices.Clone(vs)})
	}
	errorBody := cfg.ErrorBody
	if errorBody == nil {
		errorBody = excerptOnly
	}
	return &Client{
		hc:        &own,
		base:      base,
		timeout:   cfg.Timeout,
		maxBody:   cfg.MaxBody,
		header:    header,
		errorBody: errorBody,
		status:    cfg.Status,
	}, nil
}

// excerptOnly is the ErrorBody of a provider that names none: the body's
// beginning is all the operator gets.
func excerptOnly(body []byte) (code, message string) { return "", Excerpt(body) }

// URL returns the absolute URL of path (which starts with a slash) under
// the base URL, with query appended when it has any values.
func (c *Client) URL(path string, query url.Values) string {
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	return u
}

// Request is one call of a provider's API.
type Request struct {
	// Op names the call in errors, for example "fetch journal page".
	Op     string
	Method string
	// URL is absolute; see Client.URL.
	URL string
	// Body is sent as it is, as JSON; nil sends no body.
	Body []byte
	// Bearer, when set, is sent as "Authorization: Bearer <Bearer>" with
	// this request only, for a token that changes while the client lives;
	// a fixed token belongs in ClientConfig.Header.
	Bearer string
}

// Response is a 2xx answer.
type Response struct {
	Status int
	// Header is the answer's header, for what a provider reads there (such
	// as Yandex's X-Polling-Delay-Ms).
	Header http.Header
	// Body is read in full.
	Body []byte
}

// Do sends r and returns a 2xx answer, its body read in full. Deciding
// whether that body is usable is the provider's part (see Malformed).
//
// Every failure is an *Error, classified here. The shared rules are: a
// transport failure, a timeout, an oversized body, 408, 425, 5xx and any
// status outside 2xx-5xx are Retry (with the server's Retry-After on 503);
// 429 is RateLimited (with Retry-After); 401 and 403 are Auth; every other
// 3xx and 4xx is Permanent, a redirect naming where it pointed.
// ClientConfig.Status may class a status otherwise before these rules
// apply. The only exception is the caller's own cancellation: when ctx is
// done the error wraps ctx.Err() (see TransportError).
func (c *Client) Do(ctx context.Context, r Request) (Response, error) {
	// The timeout covers reading the body too, so it is cancelled only when
	// this call returns.
	reqCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var rb io.Reader
	if r.Body != nil {
		rb = bytes.NewReader(r.Body)
	}
	req, err := http.NewRequestWithContext(reqCtx, r.Method, r.URL, rb)
	if err != nil {
		return Response{}, Internal(r.Op, err)
	}
	for _, f := range c.header {
		// A copy per request, as Header.Set would make, so that nothing a
		// transport does to one request's headers reaches the next.
		req.Header[f.key] = slices.Clone(f.values)
	}
	if r.Bearer != "" {
		req.Header.Set("Authorization", "Bearer "+r.Bearer)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "ingestd")

	resp, err := c.hc.Do(req)
	if err != nil {
		return Response{}, TransportError(ctx, r.Op, 0, err, c.timeout)
	}
	defer func() { _ = resp.Body.Close() }()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// A failed read of an error body changes nothing: the status alone
		// decides the class, and what was read still helps the operator.
		b, _ := io.ReadAll(io.LimitReader(resp.Body, min(c.maxBody, maxErrorBodyBytes)))
		// An HTTP-date Retry-After is the server's wall-clock time, read
		// against ours, not against a component's injected clock.
		return Response{}, c.classifyStatus(r.Op, resp.StatusCode, resp.Header, b, time.Now())
	}
	// A declared length over the limit fails at once rather than after
	// reading MaxBody.
	if resp.ContentLength > c.maxBody {
		err := fmt.Errorf("%w (Content-Length %d, limit %d)", ErrBodyTooLarge, resp.ContentLength, c.maxBody)
		return Response{}, TransportError(ctx, r.Op, resp.StatusCode, err, c.timeout)
	}
	b, err := ReadBody(resp.Body, c.maxBody, resp.ContentLength)
	if err != nil {
		return Response{}, TransportError(ctx, r.Op, resp.StatusCode, err, c.timeout)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// classifyStatus is the one place that classes a non-2xx response: the
// provider's Status hook first, then the rules every provider shares.
func (c *Client) classifyStatus(op string, status int, header http.Header, body []byte, now time.Time) *Error {
	ue := &Error{Op: op, StatusCode: status, Header: header}
	ue.Code, ue.Message = c.errorBody(body)
	if c.status != nil {
		if class := c.status(ue); class != 0 {
			ue.Class = class
			return ue
		}
	}

	switch s := status; {
	case s == http.StatusUnauthorized, s == http.StatusForbidden:
		ue.Class = Auth
	case s == http.StatusRequestTimeout, s == http.StatusTooEarly:
		ue.Class = Retry
	case s == http.StatusTooManyRequests:
		ue.Class = RateLimited
		ue.RetryAfter = ParseRetryAfter(header.Get("Retry-After"), now)
	case s >= 500 && s <= 599:
		ue.Class = Retry
		if s == http.StatusServiceUnavailable {
			ue.RetryAfter = ParseRetryAfter(header.Get("Retry-After"), now)
		}
	case s >= 300 && s <= 499:
		// Redirects are not followed (see NewClient) and land here with the
		// other client errors: the base URL or the request is wrong, and
		// retrying cannot fix either.
		ue.Class = Permanent
		if s < 400 {
			// The body of a redirect is boilerplate; where it points is what
			// the operator needs to fix the base URL.
			ue.Message = Excerpt([]byte("redirected to " + header.Get("Location")))
		}
	default:
		// 1xx that reached us, or a status outside the standard ranges: an
		// odd proxy rather than a verdict on the request.
		ue.Class = Retry
	}
	return ue
}

// Internal classifies a failure of a client itself, such as a request that
// cannot be built although the configuration was validated, as Permanent:
// retrying a programming error would loop forever without a word, while
// halting makes it visible.
func Internal(op string, err error) error {
	return &Error{Class: Permanent, Op: op, Message: "internal error", Err: err}
}

// Malformed classifies a 2xx answer of op that is not usable (what names
// the expected thing, such as "journal page") as Retry: a body that makes
// no sense may be a passing glitch, and halting on it would stop a source
// that the next request could serve. The description may quote the body,
// so it is bounded and sanitised like any provider text.
func Malformed(op, what string, status int, err error) error {
	return &Error{
		Class:      Retry,
		Op:         op,
		StatusCode: status,
		Message:    "malformed " + what + ": " + Excerpt([]byte(err.Error())),
	}
}
