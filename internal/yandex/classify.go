package yandex

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/ingestd/ingestd/internal/upstream"
)

// opFetch is the Op of every error Journal returns.
const opFetch = "fetch journal page"

// outcome is everything Journal learned about a failed call. Exactly one of
// internal, badCursor, err, malformed or a non-2xx status describes the
// failure.
type outcome struct {
	// internal is a failure of this client itself, such as a request that
	// cannot be built although the configuration was validated.
	internal error
	// badCursor is set when the stored cursor could not even be encoded.
	badCursor error
	// err is a transport or body-read error; status is set when it happened
	// while reading a response body.
	err error
	// timeout is the per-request timeout, named in timeout errors.
	timeout time.Duration
	// malformed is why a 2xx body is not a usable page.
	malformed error
	status    int
	header    http.Header
	body      []byte
	now       time.Time
}

// classify is the one place that maps what happened to a journal request to
// an *upstream.Error, whose Class the poller acts on. The only exception is
// the caller's own cancellation: when ctx is done the result wraps ctx.Err(),
// so that errors.Is(err, context.Canceled) (or DeadlineExceeded) tells the
// poller to exit quietly instead of counting a failure.
func classify(ctx context.Context, o outcome) error {
	if o.internal != nil {
		// Retrying a programming error would loop forever without a word;
		// halting makes it visible.
		return &upstream.Error{Class: upstream.Permanent, Op: opFetch, Message: "internal error", Err: o.internal}
	}
	if o.badCursor != nil {
		return &upstream.Error{Class: upstream.BadCursor, Op: opFetch, Message: o.badCursor.Error()}
	}
	if o.err != nil {
		return upstream.TransportError(ctx, opFetch, o.status, o.err, o.timeout)
	}
	if o.malformed != nil {
		return &upstream.Error{
			Class:      upstream.Retry,
			Op:         opFetch,
			StatusCode: o.status,
			// The description quotes the body (keys, claim ids), so it is
			// bounded and sanitised like any provider text.
			Message: "malformed journal page: " + upstream.Excerpt([]byte(o.malformed.Error())),
		}
	}
	return classifyStatus(o)
}

// classifyStatus handles a response with a non-2xx status.
func classifyStatus(o outcome) *upstream.Error {
	ue := &upstream.Error{Op: opFetch, StatusCode: o.status}
	ue.Code, ue.Message = providerError(o.body)

	switch s := o.status; {
	case s == http.StatusBadRequest:
		ue.Class = upstream.Permanent
		// The documented codes are invalid_cursor and unknown_error with a
		// message about the cursor ("Неправильный формат cursor").
		if containsFold(ue.Code, "cursor") || containsFold(ue.Message, "cursor") {
			ue.Class = upstream.BadCursor
		}
	case s == http.StatusUnauthorized, s == http.StatusForbidden:
		ue.Class = upstream.Auth
	case s == http.StatusRequestTimeout, s == http.StatusTooEarly:
		ue.Class = upstream.Retry
	case s == http.StatusTooManyRequests:
		ue.Class = upstream.RateLimited
		ue.RetryAfter = upstream.ParseRetryAfter(o.header.Get("Retry-After"), o.now)
	case s >= 500 && s <= 599:
		ue.Class = upstream.Retry
		if s == http.StatusServiceUnavailable {
			ue.RetryAfter = upstream.ParseRetryAfter(o.header.Get("Retry-After"), o.now)
		}
	case s >= 300 && s <= 499:
		// Redirects are not followed (see NewClient) and land here with the
		// other client errors: the base URL or the request is wrong, and
		// retrying cannot fix either.
		ue.Class = upstream.Permanent
		if s < 400 {
			// The body of a redirect is boilerplate; where it points is what
			// the operator needs to fix the base URL.
			ue.Message = upstream.Excerpt([]byte("redirected to " + o.header.Get("Location")))
		}
	default:
		// 1xx that reached us, or a status outside the standard ranges: an
		// odd proxy rather than a verdict on the request.
		ue.Class = upstream.Retry
	}
	return ue
}

// providerError extracts the provider's {"code","message"} from an error
// body. A body in another shape (a proxy's HTML page, plain text) yields
// its beginning as the message, so the operator still sees something.
func providerError(body []byte) (code, message string) {
	var pe struct {
		Code    json.RawMessage `json:"code"`
		Message json.RawMessage `json:"message"`
	}
	if err := json.Unmarshal(body, &pe); err == nil && (pe.Code != nil || pe.Message != nil) {
		return jsonText(pe.Code), jsonText(pe.Message)
	}
	return "", upstream.Excerpt(body)
}

// jsonText renders a code or message value: strings unquoted, anything else
// (a numeric code, say) as its JSON text, so no shape is rejected.
func jsonText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return upstream.Excerpt([]byte(s))
	}
	if string(raw) == "null" {
		return ""
	}
	return upstream.Excerpt(raw)
}

// containsFold reports whether s contains substr, ignoring case.
func containsFold(s, substr string) bool {
	return strings.Contains(strings.ToLower(s), substr)
}
