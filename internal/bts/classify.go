package bts

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ingestd/ingestd/internal/upstream"
)

// Ops name the calls in errors and logs.
const (
	opLogin    = "bts log in"
	opRefresh  = "bts refresh token"
	opStatuses = "bts fetch status dictionary"
	opTrack    = "bts track order"
	opDetail   = "bts order detail"
)

// outcome is everything a call learned before it failed. Exactly one of
// internal, err, malformed or a non-2xx status describes the failure.
type outcome struct {
	op string
	// orderOp is set for calls about one order (track, detail), where a 404
	// means that order does not exist. Anywhere else a 404 means the base
	// URL is wrong.
	orderOp bool
	// internal is a failure of this client itself, such as a request that
	// cannot be built although the configuration was validated.
	internal error
	// err is a transport or body-read error; status is set when it happened
	// while reading a response body.
	err error
	// timeout is the per-request timeout, named in timeout errors.
	timeout time.Duration
	// malformed is why a 2xx body is not a usable answer.
	malformed error
	status    int
	header    http.Header
	body      []byte
	now       time.Time
}

// classify is the one place that maps what happened to a BTS call to an
// *upstream.Error, whose Class the poller acts on:
//
//	401 (after one refresh and retry), 403                 Auth
//	404 on an order call                                    NotFound
//	404 elsewhere, 422, other 3xx/4xx                       Permanent
//	429                                                     RateLimited (Retry-After)
//	408, 425, 5xx, timeouts, connection errors,
//	oversized or malformed bodies, "status": false on a 2xx Retry
//
// The only exception is the caller's own cancellation: when ctx is done the
// result wraps ctx.Err(), so that errors.Is(err, context.Canceled) tells the
// poller to exit quietly instead of counting a failure.
func classify(ctx context.Context, o outcome) error {
	if o.internal != nil {
		// Retrying a programming error would loop forever without a word;
		// halting makes it visible.
		return &upstream.Error{Class: upstream.Permanent, Op: o.op, Message: "internal error", Err: o.internal}
	}
	if o.err != nil {
		return upstream.TransportError(ctx, o.op, o.status, o.err, o.timeout)
	}
	if o.malformed != nil {
		return &upstream.Error{
			Class:      upstream.Retry,
			Op:         o.op,
			StatusCode: o.status,
			// The description may quote the body, so it is bounded and
			// sanitised like any provider text.
			Message: "malformed response: " + upstream.Excerpt([]byte(o.malformed.Error())),
		}
	}
	return classifyStatus(o)
}

// classifyStatus handles a response with a non-2xx status.
func classifyStatus(o outcome) *upstream.Error {
	ue := &upstream.Error{Op: o.op, StatusCode: o.status}
	ue.Code, ue.Message = providerError(o.body)

	switch s := o.status; {
	case s == http.StatusUnauthorized, s == http.StatusForbidden:
		ue.Class = upstream.Auth
	case s == http.StatusNotFound && o.orderOp:
		ue.Class = upstream.NotFound
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
		// 422 (validation), a 404 outside an order call (a wrong base URL)
		// and redirects, which are not followed (see NewClient): the request
		// or the configuration is wrong and retrying cannot fix either.
		ue.Class = upstream.Permanent
		if s < 400 {
			ue.Message = upstream.Excerpt([]byte("redirected to " + o.header.Get("Location")))
		}
	default:
		// 1xx that reached us, or a status outside the standard ranges: an
		// odd proxy rather than a verdict on the request.
		ue.Class = upstream.Retry
	}
	return ue
}

// errorBody is the union of BTS's error shapes: the API envelope
// {status, message, status_code, errors} and the Yii2 framework's
// {name, message, code, status}.
type errorBody struct {
	Name       json.RawMessage `json:"name"`
	Message    json.RawMessage `json:"message"`
	Code       json.RawMessage `json:"code"`
	StatusCode json.RawMessage `json:"status_code"`
	Errors     json.RawMessage `json:"errors"`
}

// providerError extracts a code and a message from an error body: the
// framework's name (or the envelope's status code) as the code, and the
// message followed by any validation messages. A body in another shape (a
// proxy's HTML page, plain text) yields its beginning as the message, so the
// operator still sees something.
func providerError(body []byte) (code, message string) {
	trimmed := strings.TrimSpace(string(body))
	if strings.HasPrefix(trimmed, "[") {
		// Yii2's default validation answer is a bare array of
		// {"field", "message"}.
		if v := validationMessages(json.RawMessage(trimmed)); v != "" {
			return "", upstream.Excerpt([]byte(v))
		}
		return "", upstream.Excerpt(body)
	}
	var eb errorBody
	if err := json.Unmarshal(body, &eb); err != nil || (eb.Name == nil && eb.Message == nil && eb.Errors == nil) {
		return "", upstream.Excerpt(body)
	}
	code = jsonText(eb.Name)
	if code == "" {
		code = jsonText(eb.Code)
		if code == "0" {
			code = ""
		}
	}
	message = jsonText(eb.Message)
	if v := validationMessages(eb.Errors); v != "" {
		if message != "" {
			message += ": "
		}
		message += v
	}
	return upstream.Excerpt([]byte(code)), upstream.Excerpt([]byte(message))
}

// validationMessages renders the "errors" of a 422 in any of the shapes Yii2
// produces: {"field": ["message", ...]}, {"field": "message"},
// [{"field": "f", "message": "m"}] or ["message"]. Fields are sorted so
// that the text is stable.
func validationMessages(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var parts []string
	var byField map[string]json.RawMessage
	if json.Unmarshal(raw, &byField) == nil {
		fields := make([]string, 0, len(byField))
		for f := range byField {
			fields = append(fields, f)
		}
		sort.Strings(fields)
		for _, f := range fields {
			var msgs []string
			if json.Unmarshal(byField[f], &msgs) != nil {
				msgs = []string{jsonText(byField[f])}
			}
			parts = append(parts, f+": "+strings.Join(msgs, ", "))
		}
		return strings.Join(parts, "; ")
	}
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) != nil {
		return jsonText(raw)
	}
	for _, item := range list {
		var fm struct {
			Field   string `json:"field"`
			Message string `json:"message"`
		}
		if json.Unmarshal(item, &fm) == nil && (fm.Field != "" || fm.Message != "") {
			if fm.Field != "" {
				parts = append(parts, fm.Field+": "+fm.Message)
			} else {
				parts = append(parts, fm.Message)
			}
			continue
		}
		parts = append(parts, jsonText(item))
	}
	return strings.Join(parts, "; ")
}

// jsonText renders a JSON value as text: strings unquoted, null as "",
// anything else (a numeric code, say) as its JSON text, so no shape is
// rejected.
func jsonText(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
			return strconv.FormatInt(i, 10)
		}
	}
	return string(raw)
}
