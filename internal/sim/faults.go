package sim

import (
	"fmt"
	"net/http"
	"time"
)

// FaultKind selects what a scripted fault does to one request.
type FaultKind int

// Fault kinds. The zero value, FaultNone, serves the request normally; it is
// useful for scripting "one good page, then a failure".
const (
	// FaultNone answers normally and suppresses random faults for the request.
	FaultNone FaultKind = iota
	// FaultTooManyRequests answers 429 too_many_requests, with Retry-After
	// set to Fault.RetryAfter when it is not empty.
	FaultTooManyRequests
	// FaultServerError answers Fault.Status (default 503) with a small body
	// whose shape depends on the status, as different proxies produce.
	FaultServerError
	// FaultSlow waits Fault.Delay (default YandexConfig.Faults.SlowDelay, or
	// one second) and then answers normally, unless the client gives up first.
	FaultSlow
	// FaultMalformed answers 200 with the real page truncated in the middle,
	// so the body starts like a valid page but is not valid JSON.
	FaultMalformed
	// FaultEventsNotArray answers 200 with valid JSON whose "events" is an
	// object instead of an array, next to a cursor that would skip the page.
	FaultEventsNotArray
	// FaultBadCursor answers 400 invalid_cursor whatever the request said.
	FaultBadCursor
	// FaultUnauthorized answers 401 even with the right token.
	FaultUnauthorized
	// FaultForbidden answers 403.
	FaultForbidden
	// FaultDropConnection closes the connection without sending a response.
	FaultDropConnection
	// FaultReplay serves the page starting ReplayCount entries before the
	// cursor position, re-serving entries the client already has.
	FaultReplay

	numFaultKinds
)

// ReplayCount is how many already-served entries a FaultReplay page repeats
// (fewer when the cursor is closer to the start or the limit is smaller).
const ReplayCount = 5

// String returns the Go name of the kind, for test output.
func (k FaultKind) String() string {
	switch k {
	case FaultNone:
		return "FaultNone"
	case FaultTooManyRequests:
		return "FaultTooManyRequests"
	case FaultServerError:
		return "FaultServerError"
	case FaultSlow:
		return "FaultSlow"
	case FaultMalformed:
		return "FaultMalformed"
	case FaultEventsNotArray:
		return "FaultEventsNotArray"
	case FaultBadCursor:
		return "FaultBadCursor"
	case FaultUnauthorized:
		return "FaultUnauthorized"
	case FaultForbidden:
		return "FaultForbidden"
	case FaultDropConnection:
		return "FaultDropConnection"
	case FaultReplay:
		return "FaultReplay"
	}
	return fmt.Sprintf("FaultKind(%d)", int(k))
}

// Fault is one scripted fault, consumed by exactly one request.
type Fault struct {
	Kind FaultKind
	// RetryAfter is the Retry-After header value for FaultTooManyRequests;
	// empty sends no header.
	RetryAfter string
	// Status is the HTTP status for FaultServerError (500-599, default 503).
	Status int
	// Delay is how long FaultSlow waits.
	Delay time.Duration
}

// FaultRates configures random faults. Each is the probability that a request
// gets that fault; their sum must not exceed 1. They are drawn from their own
// seeded stream, so enabling faults never changes the journal itself.
type FaultRates struct {
	// TooManyRequests answers 429 with Retry-After set to RetryAfter.
	TooManyRequests float64
	// ServerError answers 500, 502 or 503.
	ServerError float64
	// Slow delays the answer by SlowDelay (default one second).
	Slow float64
	// Malformed answers 200 with a truncated page, a page whose events is not
	// an array, or an HTML page.
	Malformed float64
	// RetryAfter is the Retry-After header of random 429s; empty sends none.
	RetryAfter string
	// SlowDelay is how long slow answers wait.
	SlowDelay time.Duration
}

// malformedVariant is how a malformed 200 answer is broken.
type malformedVariant int

const (
	malformedNone malformedVariant = iota
	malformedTruncated
	malformedEventsObject
	malformedHTML
)

// plan is what the server decided to do with one request before looking at
// it: the fault (scripted or random) and how many entries to replay.
type plan struct {
	fault     Fault
	malformed malformedVariant
	replay    int
}

// Inject queues scripted faults. Each request to the journal endpoint
// consumes the oldest one before any random fault is considered. It panics
// on an unknown kind or an out-of-range status or delay, since those are
// mistakes in the test that scripts them.
func (y *Yandex) Inject(faults ...Fault) {
	for _, f := range faults {
		if f.Kind < FaultNone || f.Kind >= numFaultKinds {
			panic(fmt.Sprintf("sim: Inject: unknown fault kind %d", int(f.Kind)))
		}
		if f.Kind == FaultServerError && f.Status != 0 && (f.Status < 500 || f.Status > 599) {
			panic(fmt.Sprintf("sim: Inject: FaultServerError status must be 500-599, got %d", f.Status))
		}
		if f.Delay < 0 {
			panic(fmt.Sprintf("sim: Inject: negative delay %v", f.Delay))
		}
	}
	y.faultMu.Lock()
	defer y.faultMu.Unlock()
	y.scripted = append(y.scripted, faults...)
}

// Pending returns the number of scripted faults not yet consumed.
func (y *Yandex) Pending() int {
	y.faultMu.Lock()
	defer y.faultMu.Unlock()
	return len(y.scripted)
}

// nextPlan consumes a scripted fault, or draws a random one, for a request.
func (y *Yandex) nextPlan() plan {
	y.faultMu.Lock()
	defer y.faultMu.Unlock()
	var p plan
	if len(y.scripted) > 0 {
		p.fault = y.scripted[0]
		y.scripted[0] = Fault{}
		y.scripted = y.scripted[1:]
		switch p.fault.Kind {
		case FaultMalformed:
			p.malformed = malformedTruncated
		case FaultEventsNotArray:
			p.malformed = malformedEventsObject
		case FaultServerError:
			if p.fault.Status == 0 {
				p.fault.Status = http.StatusServiceUnavailable
			}
		case FaultSlow:
			if p.fault.Delay == 0 {
				p.fault.Delay = y.slowDelay
			}
		case FaultReplay:
			p.replay = ReplayCount
		}
	} else if fr := &y.cfg.Faults; y.randomFaults {
		u := y.faultRNG.Float64()
		switch {
		case u < fr.TooManyRequests:
			p.fault = Fault{Kind: FaultTooManyRequests, RetryAfter: fr.RetryAfter}
		case u < fr.TooManyRequests+fr.ServerError:
			statuses := [...]int{500, 502, 503}
			p.fault = Fault{Kind: FaultServerError, Status: statuses[y.faultRNG.IntN(len(statuses))]}
		case u < fr.TooManyRequests+fr.ServerError+fr.Slow:
			p.fault = Fault{Kind: FaultSlow, Delay: y.slowDelay}
		case u < fr.TooManyRequests+fr.ServerError+fr.Slow+fr.Malformed:
			p.fault = Fault{Kind: FaultMalformed}
			p.malformed = malformedTruncated + malformedVariant(y.faultRNG.IntN(3))
		}
	}
	if p.replay == 0 && y.cfg.ReplayRate > 0 && y.faultRNG.Float64() < y.cfg.ReplayRate {
		p.replay = 1 + y.faultRNG.IntN(ReplayCount)
	}
	return p
}

// serverErrorBody writes a 5xx answer shaped like what sits in front of the
// real API: JSON from the service itself, HTML from nginx, plain text from
// an Envoy-style balancer.
func serverErrorBody(w http.ResponseWriter, status int) {
	switch status {
	case http.StatusBadGateway:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(status)
		_, _ = w.Write([]byte("<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"))
	case http.StatusServiceUnavailable:
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(status)
		_, _ = w.Write([]byte("upstream connect error or disconnect/reset before headers. reset reason: overflow"))
	default:
		writeError(w, status, "internal_error", "Внутренняя ошибка сервера")
	}
}

// dropConnection closes the client connection without a response. Hijacking
// works for HTTP/1; otherwise aborting the handler has the same effect.
func dropConnection(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}
