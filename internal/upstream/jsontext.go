package upstream

import (
	"encoding/json"
	"strconv"
)

// JSONText renders a JSON value from a provider's body as text: strings
// unquoted, null or an absent value as "", an integer in its canonical form
// and anything else as its JSON text, so that no shape is rejected. The
// result is not bounded; pass it through Excerpt before it reaches a log.
func JSONText(raw json.RawMessage) string {
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
