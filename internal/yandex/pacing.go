package yandex

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ingestd/ingestd/internal/upstream"
)

// HeaderPollingDelay is the header of a journal answer that says how long,
// in milliseconds, the client should wait before its next journal request.
// Yandex may answer 429 ("Too Often") to a client that ignores it.
const HeaderPollingDelay = "X-Polling-Delay-Ms"

// MaxPollingDelay caps the delay an answer can ask for. A larger value is
// far outside anything the API has been seen to send, so it is more likely
// a proxy's or a unit's mistake than a real request; waiting it out would
// stall the source for longer than any alert window.
const MaxPollingDelay = 10 * time.Minute

// PollingDelay is the delay a journal answer asked for.
type PollingDelay struct {
	// Wait is how long to wait after the answer before the next request:
	// zero when the answer asked for nothing usable.
	Wait time.Duration
	// Raw is the header's value as sent ("" when absent), for the log.
	Raw string
	// Capped says the value was above MaxPollingDelay, which Wait is then.
	Capped bool
	// Invalid says the header was present but not a whole number of
	// milliseconds at least 0; Wait is then zero.
	Invalid bool
}

// ParsePollingDelay reads the delay an answer's header asks for. A missing
// or empty header asks for nothing; a value that is not a whole,
// non-negative number of milliseconds is Invalid and asks for nothing
// either, so that pacing falls back to the poll interval; a value over
// MaxPollingDelay is Capped.
func ParsePollingDelay(h http.Header) PollingDelay {
	raw := strings.TrimSpace(h.Get(HeaderPollingDelay))
	if raw == "" {
		return PollingDelay{}
	}
	d := PollingDelay{Raw: raw}
	ms, err := strconv.ParseInt(raw, 10, 64)
	switch {
	case err != nil && errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(raw, "-"):
		d.Wait, d.Capped = MaxPollingDelay, true
	case err != nil || ms < 0:
		d.Invalid = true
	case ms > MaxPollingDelay.Milliseconds():
		d.Wait, d.Capped = MaxPollingDelay, true
	default:
		d.Wait = time.Duration(ms) * time.Millisecond
	}
	return d
}

// PollingDelayOf returns the delay asked for by the answer behind a failed
// journal request (a 429 or 5xx carries the header too), and the zero
// PollingDelay when no answer arrived.
func PollingDelayOf(err error) PollingDelay {
	var ue *upstream.Error
	if errors.As(err, &ue) && ue.Header != nil {
		return ParsePollingDelay(ue.Header)
	}
	return PollingDelay{}
}
