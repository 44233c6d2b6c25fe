package yandex

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/ingestd/ingestd/internal/upstream"
)

// opFetch is the Op of every error Journal returns.
const opFetch = "fetch journal page"

// cursorRejected is the client core's status hook. The one Yandex answer
// the shared rules (see upstream.Client.Do) do not decide is a 400 about
// the cursor: it must halt the source with the cursor kept for an operator
// to repair, not pass for an ordinary client error. Every other 400 is left
// to the shared rules, which make it Permanent.
func cursorRejected(e *upstream.Error) upstream.Class {
	// The documented codes are invalid_cursor and unknown_error with a
	// message about the cursor ("Неправильный формат cursor").
	if e.StatusCode == http.StatusBadRequest && (containsFold(e.Code, "cursor") || containsFold(e.Message, "cursor")) {
		return upstream.BadCursor
	}
	return 0
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
		code = upstream.Excerpt([]byte(upstream.JSONText(pe.Code)))
		message = upstream.Excerpt([]byte(upstream.JSONText(pe.Message)))
		return code, message
	}
	return "", upstream.Excerpt(body)
}

// containsFold reports whether s contains substr, ignoring case.
func containsFold(s, substr string) bool {
	return strings.Contains(strings.ToLower(s), substr)
}
