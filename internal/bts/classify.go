package bts

import (
	"encoding/json"
	"net/http"
	"sort"
	"strings"

	"github.com/ingestd/ingestd/internal/upstream"
)

// Ops name the calls in errors and logs. orderNotFound tells the calls
// about one order by their op, so a new one must be added there.
const (
	opLogin    = "bts log in"
	opRefresh  = "bts refresh token"
	opStatuses = "bts fetch status dictionary"
	opTrack    = "bts track order"
	opDetail   = "bts order detail"
)

// orderNotFound is the client core's status hook. The shared rules (see
// upstream.Client.Do) decide every BTS answer but one, a 404 on a call
// about one order (track, detail), which means that order does not exist;
// anywhere else a 404 means the base URL is wrong and is left to them. In
// all, BTS answers are classified:
//
//	401 (after one refresh and retry), 403                 Auth
//	404 on an order call                                    NotFound
//	404 elsewhere, 422, other 3xx/4xx                       Permanent
//	429                                                     RateLimited (Retry-After)
//	408, 425, 5xx, timeouts, connection errors,
//	oversized or malformed bodies, "status": false on a 2xx Retry
func orderNotFound(e *upstream.Error) upstream.Class {
	if e.StatusCode == http.StatusNotFound && (e.Op == opTrack || e.Op == opDetail) {
		return upstream.NotFound
	}
	return 0
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
	code = upstream.JSONText(eb.Name)
	if code == "" {
		code = upstream.JSONText(eb.Code)
		if code == "0" {
			code = ""
		}
	}
	message = upstream.JSONText(eb.Message)
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
				msgs = []string{upstream.JSONText(byField[f])}
			}
			parts = append(parts, f+": "+strings.Join(msgs, ", "))
		}
		return strings.Join(parts, "; ")
	}
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) != nil {
		return upstream.JSONText(raw)
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
		parts = append(parts, upstream.JSONText(item))
	}
	return strings.Join(parts, "; ")
}
