package sim

// Webhooks of the simulated BTS API, as integrators describe them (nothing
// here is in BTS's documentation, and none of it is signed): a client
// configures one URL with GET /v1/webhook/webhook-config and a JSON body,
// and BTS then POSTs a form to that URL on every status change of an
// order, the form field "text" holding the order and its new status as
// JSON. With has_token the client's itx-apiKey comes along with every call;
// where it goes is not documented, so the simulator sends it as
// BTSWebhookConfig.TokenStyle says.
//
// ingestd treats a webhook as a doorbell only (it makes the order due for a
// track read and is never trusted as data), so the simulator's job is to be
// a realistic nuisance: calls get lost, duplicated, delayed and reordered,
// and forged calls arrive among the real ones.
//
// RunWebhooks walks every order's changes in time order from a heap holding
// the next change of each order, computing lifecycles on demand as the rest
// of the simulator does, so its memory is a few words per order; a bounded
// pool of workers posts the calls.

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// BTSWebhookConfigPath is where a client configures its webhook.
const BTSWebhookConfigPath = "/v1/webhook/webhook-config"

// Webhook environments a client may configure.
const (
	BTSWebhookProduction = "production"
	BTSWebhookTest       = "test"
)

// BTSWebhookTokenStyle is how a webhook call carries the client's token.
// BTS does not document it, so a receiver must be tested against each.
type BTSWebhookTokenStyle int

// Token styles.
const (
	// BTSWebhookTokenHeader sends the header "token: <t>".
	BTSWebhookTokenHeader BTSWebhookTokenStyle = iota
	// BTSWebhookTokenBearer sends "Authorization: Bearer <t>".
	BTSWebhookTokenBearer
	// BTSWebhookTokenQuery adds the query parameter token=<t> to the URL.
	BTSWebhookTokenQuery

	numBTSWebhookTokenStyles
)

// BTSWebhookForgery says whether and how a webhook call is forged.
type BTSWebhookForgery int

// Forgeries.
const (
	// BTSWebhookGenuine is a real call about a real change.
	BTSWebhookGenuine BTSWebhookForgery = iota
	// BTSWebhookWrongToken is a real change's call with a token that is not
	// the client's. It is only forged when the webhook has a token.
	BTSWebhookWrongToken
	// BTSWebhookWrongStatus names a real order with a status that order
	// never has.
	BTSWebhookWrongStatus
	// BTSWebhookUnknownOrder names an order id the account does not have.
	BTSWebhookUnknownOrder
)

// BTSWebhookConfig configures the webhooks of a simulated BTS account. URL,
// Environment and Token are the client's setting, which the config endpoint
// replaces; the rest belongs to the simulator.
type BTSWebhookConfig struct {
	// URL receives the calls; empty sends none until a client configures
	// one through BTSWebhookConfigPath. It must be an absolute http(s) URL.
	URL string
	// Environment is "production" (the default) or "test". The simulator
	// only reports it back: nothing is known of what it changes upstream.
	Environment string
	// Token is the itx-apiKey sent with every call; empty means has_token
	// is false and calls carry no token.
	Token string
	// TokenStyle is how calls carry the token.
	TokenStyle BTSWebhookTokenStyle
	// Loss is the fraction of changes whose call is never sent.
	Loss float64
	// Duplicate is the fraction of the remaining changes whose call is
	// sent twice, each copy with its own delay.
	Duplicate float64
	// Forged is the fraction of changes that, besides their own call,
	// produce a forged one (see BTSWebhookForgery), independently of Loss.
	Forged float64
	// MaxDelay delays each call uniformly in [0, MaxDelay] after its
	// change. It is network delay, so Speed does not scale it, and calls of
	// one order whose changes are closer than that may arrive out of order.
	MaxDelay time.Duration
	// Concurrency bounds the calls in flight, default 16.
	Concurrency int
	// Timeout bounds each call, default 2s; a call that times out failed.
	// It applies to the client the simulator builds, not to Client.
	Timeout time.Duration
	// Client sends the calls; nil builds one with Timeout that ignores
	// proxy settings. Set it to reach an https receiver with its own CA.
	Client *http.Client
	// OnCall, when set, is told about every call sent, once its answer
	// (or error) is in; not about calls abandoned when RunWebhooks' context
	// ends. It is called from many goroutines at once.
	OnCall func(BTSWebhookCall)
}

// BTSWebhookCall is one webhook call the simulator sent.
type BTSWebhookCall struct {
	// OrderID and Code are what the call says: for a forged call, an
	// unknown order or a status the order never has.
	OrderID int64
	Code    int
	// At is when the change behind the call happened, on the simulator's
	// clock.
	At time.Time
	// Forgery is BTSWebhookGenuine for real calls.
	Forgery BTSWebhookForgery
	// Duplicate marks the second copy of a duplicated call.
	Duplicate bool
	// Delay is how long the call was held back after its change.
	Delay time.Duration
	// SentAt is when the call was sent, on the simulator's clock; SentAt
	// minus At minus Delay is how far the simulator fell behind.
	SentAt time.Time
	// Status is the receiver's HTTP status, 0 when Err is set.
	Status int
	Err    error
}

// Defaults and bounds of the webhook delivery.
const (
	defaultWebhookConcurrency = 16
	maxWebhookConcurrency     = 1024
	defaultWebhookTimeout     = 2 * time.Second
	// webhookPoll caps every wait of the delivery loop, so that a clock
	// set forward by a test (BTSConfig.Now) is noticed promptly although
	// the loop's timer runs on real time.
	webhookPoll = 20 * time.Millisecond
	// webhookQueue is the room for calls due but not yet taken by a
	// worker. When it is full the loop waits: a receiver slower than the
	// changes makes the simulator fall behind rather than drop calls,
	// since dropping calls is what Loss is for.
	webhookQueue = 1024
	// maxWebhookConfigBody bounds the config endpoint's body.
	maxWebhookConfigBody = 16 << 10
)

// Constants mixed into the seed for the webhook draws.
const (
	mixBTSWebhook      = 0x082efa98ec4e6c89
	mixBTSWebhookToken = 0x452821e638d01377
)

// btsTashkent is BTS's time zone. Uzbekistan has kept UTC+5 without
// daylight saving time since 1992, so a fixed zone is exact for any date the
// simulator produces and needs no time zone database in the container.
var btsTashkent = time.FixedZone("Asia/Tashkent", 5*60*60)

// btsWebhookDate is the layout of the "date" a call carries.
const btsWebhookDate = "2006-01-02 15:04:05"

// btsWebhookCodes are the codes a forged status is drawn from: every code
// an order may have, but the undefined one, which has no name to send.
var btsWebhookCodes = []int{BTSCancelled, 100, 200, 300, 400, 500, 600, 700, 800, 1100, 1200, 1300, 1400}

func (c BTSWebhookConfig) validate() error {
	for _, p := range []float64{c.Loss, c.Duplicate, c.Forged} {
		if !(p >= 0 && p <= 1) {
			return fmt.Errorf("sim: BTS webhook Loss, Duplicate and Forged must be probabilities, got %v", p)
		}
	}
	switch {
	case c.MaxDelay < 0 || c.Timeout < 0:
		return fmt.Errorf("sim: BTS webhook durations must not be negative")
	case c.Concurrency < 0 || c.Concurrency > maxWebhookConcurrency:
		return fmt.Errorf("sim: BTS webhook Concurrency must be between 0 and %d, got %d", maxWebhookConcurrency, c.Concurrency)
	case c.TokenStyle < 0 || c.TokenStyle >= numBTSWebhookTokenStyles:
		return fmt.Errorf("sim: unknown BTS webhook TokenStyle %d", int(c.TokenStyle))
	case c.Environment != "" && c.Environment != BTSWebhookProduction && c.Environment != BTSWebhookTest:
		return fmt.Errorf("sim: BTS webhook Environment must be %q or %q, got %q", BTSWebhookProduction, BTSWebhookTest, c.Environment)
	}
	if c.URL != "" {
		if _, err := webhookURL(c.URL); err != nil {
			return fmt.Errorf("sim: BTS webhook URL: %w", err)
		}
	}
	return nil
}

// webhookURL parses an absolute http(s) URL.
func webhookURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	return u, nil
}

// btsWebhookSetting is a client's webhook setting, as the config endpoint
// takes and returns it. A setting is never changed once stored, so calls
// hold on to the one they were made with.
type btsWebhookSetting struct {
	URL         string `json:"webhook_url"`
	Environment string `json:"environment"`
	HasToken    bool   `json:"has_token"`
	APIKey      string `json:"itx-apiKey"`
	u           *url.URL
}

// btsWebhooks is the webhook state of one simulated account.
type btsWebhooks struct {
	cfg     BTSWebhookConfig
	setting atomic.Pointer[btsWebhookSetting]

	// running admits one delivery loop at a time; resume and delivered
	// belong to it.
	running atomic.Bool
	// resume is the first change the next loop sends, in the loop's order.
	resume webhookChange
	// delivered holds, per order, a bit per code whose genuine call a
	// receiver accepted (bit code/100, bit 0 for cancelled). It is
	// allocated by the first loop, so that accounts never sending webhooks
	// pay nothing for it.
	delivered atomic.Pointer[[]atomic.Uint32]

	sent, lost, duplicated, forged, failed atomic.Int64
}

// newBTSWebhooks starts from the setting in cfg, if it has a URL, as if a
// client had configured it.
func newBTSWebhooks(cfg BTSWebhookConfig) *btsWebhooks {
	w := &btsWebhooks{cfg: cfg}
	if cfg.URL != "" {
		u, _ := webhookURL(cfg.URL) // validated by NewBTS
		env := cfg.Environment
		if env == "" {
			env = BTSWebhookProduction
		}
		w.setting.Store(&btsWebhookSetting{URL: cfg.URL, Environment: env, HasToken: cfg.Token != "", APIKey: cfg.Token, u: u})
	}
	return w
}

// WebhooksSent returns how many webhook calls were sent, genuine, duplicate
// and forged alike, whatever the receiver answered. Calls still waiting or
// in flight when RunWebhooks' context ends are abandoned and counted by none
// of the counters.
func (b *BTS) WebhooksSent() int64 { return b.wh.sent.Load() }

// WebhooksLost returns how many changes had their call dropped (Loss).
func (b *BTS) WebhooksLost() int64 { return b.wh.lost.Load() }

// WebhooksDuplicated returns how many changes had their call sent twice.
func (b *BTS) WebhooksDuplicated() int64 { return b.wh.duplicated.Load() }

// WebhooksForged returns how many forged calls were made.
func (b *BTS) WebhooksForged() int64 { return b.wh.forged.Load() }

// WebhooksFailed returns how many calls sent got a transport error or a
// status other than 2xx. Failed calls are not retried: BTS's retry policy
// is unknown, so the simulator treats a failure as a loss.
func (b *BTS) WebhooksFailed() int64 { return b.wh.failed.Load() }

// WebhooksDelivered returns the codes of orderID whose genuine call a
// receiver accepted with a 2xx, in lifecycle order, or nil for none or an
// unknown order. Tests use it to tell orders known only through webhooks.
func (b *BTS) WebhooksDelivered(orderID string) []int {
	i, ok := b.index(orderID)
	d := b.wh.delivered.Load()
	if !ok || d == nil {
		return nil
	}
	bits := (*d)[i].Load()
	var codes []int
	for _, c := range b.lifecycle(i) {
		if bits&webhookBit(c.Code) != 0 {
			codes = append(codes, c.Code)
		}
	}
	return codes
}

// webhookBit is the bit of a code in a delivered mask: codes are multiples
// of 100 up to 1400, and 0.
func webhookBit(code int) uint32 { return 1 << (code / 100) }

// serveWebhookConfig sets or reads the webhook setting. With a JSON body it
// replaces the setting and answers it; without one it answers the current
// setting, or null when there is none. BTS documents only the setting; that
// a request without a body reads it back is the simulator's assumption.
// Faults do not apply here, as they do not to login: the endpoint is used
// once at set-up, and drawing faults for it would shift the seeded fault
// stream of the data endpoints.
func (b *BTS) serveWebhookConfig(w http.ResponseWriter, r *http.Request) {
	if !b.method(w, r, http.MethodGet) {
		return
	}
	if !b.authorized(r) {
		b.unauthorized.Add(1)
		btsUnauthorized(w)
		return
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookConfigBody))
	if err != nil {
		btsValidation(w, "webhook_url", "Webhook Url cannot be blank.")
		return
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		if s := b.wh.setting.Load(); s != nil {
			btsOK(w, s)
		} else {
			btsOK(w, nil)
		}
		return
	}
	s, field, msg := parseWebhookSetting(raw)
	if field != "" {
		btsValidation(w, field, msg)
		return
	}
	b.wh.setting.Store(s)
	btsOK(w, s)
}

// parseWebhookSetting validates a config body as Yii2 would, returning the
// first field in error and its message, with Yii2's default messages and
// attribute labels. A body that is not a JSON object has every field blank,
// as login treats one.
func parseWebhookSetting(raw []byte) (*btsWebhookSetting, string, string) {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		m = nil
	}
	str := func(key string) (string, bool) {
		v, ok := m[key]
		if !ok || string(v) == "null" {
			return "", true
		}
		var s string
		err := json.Unmarshal(v, &s)
		return s, err == nil
	}
	s := &btsWebhookSetting{}
	var ok bool
	switch s.URL, ok = str("webhook_url"); {
	case !ok:
		return nil, "webhook_url", "Webhook Url must be a string."
	case s.URL == "":
		return nil, "webhook_url", "Webhook Url cannot be blank."
	}
	u, err := webhookURL(s.URL)
	if err != nil {
		return nil, "webhook_url", "Webhook Url is not a valid URL."
	}
	s.u = u
	switch s.Environment, ok = str("environment"); {
	case s.Environment == "" && ok:
		return nil, "environment", "Environment cannot be blank."
	case !ok || (s.Environment != BTSWebhookProduction && s.Environment != BTSWebhookTest):
		return nil, "environment", "Environment is invalid."
	}
	// Yii2's boolean validator compares loosely with "1" and "0", so it
	// takes true, false, 1, 0, "1" and "0"; a missing has_token is false.
	if v, present := m["has_token"]; present {
		switch strings.TrimSpace(string(v)) {
		case "true", "1", `"1"`:
			s.HasToken = true
		case "false", "0", `"0"`:
		default:
			return nil, "has_token", `Has Token must be either "1" or "0".`
		}
	}
	switch s.APIKey, ok = str("itx-apiKey"); {
	case !ok:
		return nil, "itx-apiKey", "Itx Api Key must be a string."
	case s.HasToken && s.APIKey == "":
		return nil, "itx-apiKey", "Itx Api Key cannot be blank."
	}
	return s, "", ""
}

// webhookChange is the next change of one order still to be sent: change k
// of order i's lifecycle, at offset at from the start. Changes are sent in
// (at, i) order, which is total since an order's changes strictly increase
// in time.
type webhookChange struct {
	at time.Duration
	i  int32
	k  int32
}

func (a webhookChange) before(b webhookChange) bool {
	return a.at < b.at || (a.at == b.at && a.i < b.i)
}

// webhookChanges is a min-heap of the next change of every order.
type webhookChanges []webhookChange

func (h webhookChanges) Len() int           { return len(h) }
func (h webhookChanges) Less(i, j int) bool { return h[i].before(h[j]) }
func (h webhookChanges) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *webhookChanges) Push(x any)        { *h = append(*h, x.(webhookChange)) }
func (h *webhookChanges) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// webhookJob is one call to send.
type webhookJob struct {
	set   *btsWebhookSetting
	call  BTSWebhookCall
	index int // the order's index, -1 for an unknown order
	token string
	due   time.Duration // offset from the start when it may be sent
	seq   uint64        // breaks ties of due, so calls keep the changes' order
}

// webhookCalls is a min-heap of calls by due time.
type webhookCalls []*webhookJob

func (h webhookCalls) Len() int { return len(h) }
func (h webhookCalls) Less(i, j int) bool {
	return h[i].due < h[j].due || (h[i].due == h[j].due && h[i].seq < h[j].seq)
}
func (h webhookCalls) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *webhookCalls) Push(x any)   { *h = append(*h, x.(*webhookJob)) }
func (h *webhookCalls) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return x
}

// RunWebhooks posts a webhook call for every status change of every order
// at the moment it happens on the simulator's clock, with the faults of
// BTSConfig.Webhooks, to the URL configured when the change happens;
// changes while none is configured are not sent, and neither are changes
// before the start (see BTSConfig.Backdate). It returns nil once every
// change has been sent and every call answered, and ctx's error if ctx
// ends first; calls then pending are abandoned, and a later RunWebhooks
// goes on with the first change not yet sent. Only one RunWebhooks may run
// at a time; a second one returns an error at once.
func (b *BTS) RunWebhooks(ctx context.Context) error {
	wh := b.wh
	if !wh.running.CompareAndSwap(false, true) {
		return errors.New("sim: BTS RunWebhooks is already running")
	}
	defer wh.running.Store(false)
	if wh.delivered.Load() == nil {
		d := make([]atomic.Uint32, b.cfg.Orders)
		wh.delivered.Store(&d)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	client := wh.cfg.Client
	if client == nil {
		n := wh.cfg.Concurrency
		if n == 0 {
			n = defaultWebhookConcurrency
		}
		timeout := wh.cfg.Timeout
		if timeout == 0 {
			timeout = defaultWebhookTimeout
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		// The receiver is a neighbour in the test or compose network, never
		// behind the environment's proxy; and every worker keeps its
		// connection, so that thousands of calls do not churn ports.
		tr.Proxy = nil
		tr.MaxIdleConnsPerHost = n
		defer tr.CloseIdleConnections()
		client = &http.Client{Timeout: timeout, Transport: tr}
	}

	workers := wh.cfg.Concurrency
	if workers == 0 {
		workers = defaultWebhookConcurrency
	}
	jobs := make(chan *webhookJob, webhookQueue)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				b.deliver(ctx, client, j)
			}
		})
	}
	err := b.dispatchWebhooks(ctx, jobs)
	close(jobs)
	wg.Wait()
	return err
}

// dispatchWebhooks walks the changes in time order and hands their calls to
// the workers when they are due. Every call, delayed or not, waits in one
// heap ordered by due time, so that a loop that fell behind still sends in
// the order a timely one would: delays reorder calls the same way whatever
// the load.
func (b *BTS) dispatchWebhooks(ctx context.Context, jobs chan<- *webhookJob) error {
	wh := b.wh
	changes := b.webhookQueue(wh.resume)
	var calls webhookCalls
	var seq uint64
	timer := time.NewTimer(webhookPoll)
	defer timer.Stop()
	// stop records where the next run goes on: the first change whose
	// calls were not made. Calls made but not sent are abandoned.
	stop := func(err error) error {
		if len(changes) > 0 {
			wh.resume = changes[0]
		} else {
			wh.resume = webhookChange{at: math.MaxInt64}
		}
		return err
	}

	for {
		if err := ctx.Err(); err != nil {
			return stop(err)
		}
		now := b.now().Sub(b.start)
		for {
			changeDue := len(changes) > 0 && changes[0].at <= now
			callDue := len(calls) > 0 && calls[0].due <= now
			if callDue && (!changeDue || calls[0].due <= changes[0].at) {
				select {
				case jobs <- heap.Pop(&calls).(*webhookJob):
				case <-ctx.Done():
					return stop(ctx.Err())
				}
				continue
			}
			if !changeDue {
				break
			}
			c := changes[0]
			h := b.lifecycle(int(c.i))
			for _, j := range b.webhookJobs(int(c.i), int(c.k), h) {
				seq++
				j.seq = seq
				heap.Push(&calls, j)
			}
			if int(c.k)+1 < len(h) {
				changes[0] = webhookChange{at: h[c.k+1].At.Sub(b.start), i: c.i, k: c.k + 1}
				heap.Fix(&changes, 0)
			} else {
				heap.Pop(&changes)
			}
		}
		if len(changes) == 0 && len(calls) == 0 {
			return stop(nil)
		}
		next := time.Duration(math.MaxInt64)
		if len(changes) > 0 {
			next = changes[0].at
		}
		if len(calls) > 0 && calls[0].due < next {
			next = calls[0].due
		}
		timer.Reset(min(next-now, webhookPoll))
		select {
		case <-ctx.Done():
		case <-timer.C:
		}
	}
}

// webhookQueue returns a heap of every order's first change not before
// from.
func (b *BTS) webhookQueue(from webhookChange) webhookChanges {
	q := make(webhookChanges, 0, b.cfg.Orders)
	for i := range b.cfg.Orders {
		for k, c := range b.lifecycle(i) {
			wc := webhookChange{at: c.At.Sub(b.start), i: int32(i), k: int32(k)}
			if !wc.before(from) {
				q = append(q, wc)
				break
			}
		}
	}
	heap.Init(&q)
	return q
}

// webhookDraws gives the uniform draws of one change: a pure function of
// the seed, the order and the change, so that which calls are lost,
// duplicated, delayed or forged does not depend on timing.
type webhookDraws uint64

func (d webhookDraws) float(n uint64) float64 {
	return float64(mix64(uint64(d)+n)>>11) / (1 << 53)
}

func (d webhookDraws) intn(n uint64, m int) int { return int(mix64(uint64(d)+n) % uint64(m)) }

// webhookJobs returns the calls change k of order i makes, with their
// faults, and counts the faults.
func (b *BTS) webhookJobs(i, k int, h []Change) []*webhookJob {
	set := b.wh.setting.Load()
	if set == nil {
		return nil
	}
	cfg := &b.wh.cfg
	d := webhookDraws(mix64(b.seedHash ^ mixBTSWebhook ^ mix64(uint64(i)<<8|uint64(k))))
	c := h[k]
	at := c.At.Sub(b.start)
	id := b.firstID + int64(i)
	token := ""
	if set.HasToken {
		token = set.APIKey
	}
	job := func(dup bool, draw uint64) *webhookJob {
		delay := time.Duration(d.float(draw) * float64(cfg.MaxDelay))
		return &webhookJob{
			set:   set,
			call:  BTSWebhookCall{OrderID: id, Code: c.Code, At: c.At, Duplicate: dup, Delay: delay},
			index: i,
			token: token,
			due:   at + delay,
		}
	}
	var out []*webhookJob
	if d.float(0) < cfg.Loss {
		b.wh.lost.Add(1)
	} else {
		out = append(out, job(false, 1))
		if d.float(2) < cfg.Duplicate {
			b.wh.duplicated.Add(1)
			out = append(out, job(true, 3))
		}
	}
	if d.float(4) < cfg.Forged {
		b.wh.forged.Add(1)
		f := job(false, 5)
		kinds := []BTSWebhookForgery{BTSWebhookWrongStatus, BTSWebhookUnknownOrder, BTSWebhookWrongToken}
		if !set.HasToken {
			// A call without a token cannot carry a wrong one.
			kinds = kinds[:2]
		}
		f.call.Forgery = kinds[d.intn(6, len(kinds))]
		switch f.call.Forgery {
		case BTSWebhookWrongToken:
			f.token = "forged-" + strconv.FormatUint(mix64(uint64(d)^mixBTSWebhookToken), 36)
		case BTSWebhookWrongStatus:
			var have uint32
			for _, ch := range h {
				have |= webhookBit(ch.Code)
			}
			var never []int
			for _, code := range btsWebhookCodes {
				if have&webhookBit(code) == 0 {
					never = append(never, code)
				}
			}
			// never is not empty: no order reaches both 1200 and 1300.
			f.call.Code = never[d.intn(7, len(never))]
		case BTSWebhookUnknownOrder:
			// Past this account's last order, so never one of its own.
			f.index = -1
			f.call.OrderID = b.firstID + int64(b.cfg.Orders) + 1 + int64(d.intn(7, 1000))
		}
		out = append(out, f)
	}
	return out
}

// btsWebhookStatus holds the "status" object of each code a call may
// carry, rendered once: status.id is the code (0 for cancelled) and
// status.name its dictionary name, null for the undefined code.
var btsWebhookStatus = func() map[int]string {
	m := make(map[int]string, len(btsWebhookCodes)+1)
	for _, code := range append([]int{BTSUndefined}, btsWebhookCodes...) {
		st := struct {
			ID   int     `json:"id"`
			Name *string `json:"name"`
		}{ID: code}
		if name := BTSStatusName(code); name != "" {
			st.Name = &name
		}
		raw, _ := json.Marshal(st)
		m[code] = string(raw)
	}
	return m
}()

// webhookForm renders a call's form body: the field "text" holding
// {"clientId","orderId","barcode","status":{"id","name"},"date"}, the
// order named as the detail view names it and the date in Tashkent time.
// It is built by hand since it is made for every call.
func webhookForm(c *BTSWebhookCall) string {
	var text []byte
	text = append(text, `{"clientId":"sim-`...)
	text = strconv.AppendInt(text, c.OrderID, 10)
	text = append(text, `","orderId":`...)
	text = strconv.AppendInt(text, c.OrderID, 10)
	text = append(text, `,"barcode":"0199`...)
	text = strconv.AppendInt(text, c.OrderID, 10)
	text = append(text, `","status":`...)
	text = append(text, btsWebhookStatus[c.Code]...)
	text = append(text, `,"date":"`...)
	text = c.At.In(btsTashkent).AppendFormat(text, btsWebhookDate)
	text = append(text, `"}`...)
	return "text=" + url.QueryEscape(string(text))
}

// deliver posts one call, unless ctx has ended, and records the outcome.
func (b *BTS) deliver(ctx context.Context, client *http.Client, j *webhookJob) {
	if ctx.Err() != nil {
		return
	}
	u := j.set.u
	style := b.wh.cfg.TokenStyle
	if j.token != "" && style == BTSWebhookTokenQuery {
		withToken := *u
		q := withToken.Query()
		q.Set("token", j.token)
		withToken.RawQuery = q.Encode()
		u = &withToken
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(webhookForm(&j.call)))
	if err != nil {
		// The URL was parsed when it was configured, so this cannot happen;
		// count it as a failure rather than hide it.
		b.finish(j, 0, err)
		return
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if j.token != "" {
		switch style {
		case BTSWebhookTokenHeader:
			req.Header.Set("token", j.token)
		case BTSWebhookTokenBearer:
			req.Header.Set("Authorization", "Bearer "+j.token)
		}
	}
	j.call.SentAt = b.now()
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			// Cut short by the end of the run: abandoned, not failed.
			return
		}
		b.finish(j, 0, err)
		return
	}
	// Drain a little of the body so that the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	b.finish(j, resp.StatusCode, nil)
}

// finish counts a call whose answer is in.
func (b *BTS) finish(j *webhookJob, status int, err error) {
	wh := b.wh
	wh.sent.Add(1)
	ok := err == nil && status >= 200 && status <= 299
	if !ok {
		wh.failed.Add(1)
	} else if j.call.Forgery == BTSWebhookGenuine {
		(*wh.delivered.Load())[j.index].Or(webhookBit(j.call.Code))
	}
	if wh.cfg.OnCall != nil {
		j.call.Status, j.call.Err = status, err
		wh.cfg.OnCall(j.call)
	}
}
