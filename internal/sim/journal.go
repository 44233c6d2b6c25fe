package sim

import (
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"
)

// record is one journal entry in compact form. It is 24 bytes so that a
// million-entry journal costs about 24 MB; everything else an entry shows is
// derived from the record, the claim table and the seed when it is rendered.
type record struct {
	ts     int64  // updated_ts in microseconds since the Unix epoch
	claim  uint32 // index into journal.claims
	price  uint32 // the claim's price in minor units (kopecks) after this change
	rev    uint32 // the claim's revision after this change
	status status // new_status
	flags  uint8  // flag* bits and the route point kind
}

// Bits of record.flags.
const (
	flagPriceChanged uint8 = 1 << iota // change_type is price_changed
	flagHasPrice                       // new_price and new_currency are present
	flagExtra                          // the entry carries an undocumented field
	flagPointShift   = 3               // bits 3-4 hold the route point kind
	flagPointMask    = 3 << flagPointShift
)

// Shape of the generated journal.
const (
	extraFieldOneIn    = 64 // roughly one entry in this many has an extra field
	priceChangePercent = 12 // share of changes in the pricing phase that reprice
)

// claimInfo is the immutable part of a claim, shared by all of its entries.
type claimInfo struct {
	id        [16]byte
	pointBase int64 // source point id; destination and return follow it
	client    uint8 // index into journal.clients
}

// clientInfo is one account of the simulated B2B platform.
type clientInfo struct {
	id       [16]byte
	currency string
}

// slot is a claim in flight in the generator. When its claim reaches a
// terminal status the slot is freed and the next pick starts a new claim,
// so the number of slots is the number of interleaved lifecycles.
type slot struct {
	claim     uint32
	active    bool
	payWaited bool   // pay_waiting happens at most once per claim
	known     status // last documented status, drives the lifecycle
	shown     status // status the journal reports, possibly undocumented
	rev       uint32
	price     uint32
}

// generator produces journal records strictly in order. All randomness comes
// from one seeded stream, so the journal depends only on the configuration,
// never on how it is paged or how far ahead it was generated.
type generator struct {
	rng           *rand.Rand
	slots         []slot
	clock         int64 // microseconds; the journal's own monotonic time
	prevTS        int64
	generated     int
	unknownRate   float64
	backwardsRate float64
	clients       int
}

// journal is the generated prefix of the journal. Records and claims are only
// ever appended, so a reader may keep using slices taken under the read lock
// after releasing it: the generator never writes to indices a snapshot covers.
type journal struct {
	mu      sync.RWMutex
	recs    []record
	claims  []claimInfo
	gen     generator
	clients []clientInfo // immutable after construction

	seedHash uint64
	opBase   int64
	total    int // number of entries the journal will ever have; -1 if unlimited
}

// Constants mixed into the seed to derive independent values and streams.
const (
	mixOps       = 0x6a09e667f3bcc908
	mixJournalID = 0xbb67ae8584caa73b
	mixCursorKey = 0x3c6ef372fe94f82b
	mixJournal   = 0xa54ff53a5f1d36f1
	mixFaults    = 0x510e527fade682d1
	mixClock     = 0x9b05688c2b3e6c1f
	mixExtra     = 0x1f83d9abfb41bd6b
)

// mix64 is the SplitMix64 finalizer: a cheap, well-distributed hash used to
// derive per-seed and per-entry values without storing them.
func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// newJournal prepares an empty journal for the given parameters. Nothing is
// generated yet: entries are produced when first read.
func newJournal(seedHash uint64, width int, unknownRate, backwardsRate float64, total int) *journal {
	rng := rand.New(rand.NewPCG(seedHash, mixJournal))
	j := &journal{
		seedHash: seedHash,
		opBase:   1_000_000 + int64(mix64(seedHash^mixOps)%1_000_000_000_000),
		total:    total,
	}
	nClients := 1 + rng.IntN(6)
	for c := range nClients {
		cl := clientInfo{currency: "RUB"}
		fillID(rng, &cl.id)
		// The first account always bills in roubles so that every journal
		// looks like the documented example; others occasionally do not.
		if c > 0 && rng.IntN(6) == 0 {
			cl.currency = "KZT"
		}
		j.clients = append(j.clients, cl)
	}
	// The journal starts on a seed-dependent moment early in 2026.
	start := time.Date(2026, 3, 2, 6, 0, 0, 0, time.UTC).UnixMicro()
	start += int64(mix64(seedHash^mixClock) % (86_400 * 1_000_000))
	j.gen = generator{
		rng:           rng,
		slots:         make([]slot, width),
		clock:         start,
		prevTS:        start,
		unknownRate:   unknownRate,
		backwardsRate: backwardsRate,
		clients:       nClients,
	}
	return j
}

// fillID fills a 16-byte identifier (rendered as 32 hex characters).
func fillID(r *rand.Rand, id *[16]byte) {
	a, b := r.Uint64(), r.Uint64()
	for k := range 8 {
		id[k] = byte(a >> (8 * k))
		id[8+k] = byte(b >> (8 * k))
	}
}

// randomPointBase draws a route point id. Most are modest, some are in the
// 372036854775807 range of the API example and some exceed 2^53, so a client
// that decodes them through float64 loses precision and is caught.
func randomPointBase(r *rand.Rand) int64 {
	switch p := r.IntN(100); {
	case p < 60:
		return 100_000 + r.Int64N(900_000_000)
	case p < 85:
		return 372_036_854_000_000 + r.Int64N(775_807)
	default:
		return 9_000_000_000_000_000_000 + r.Int64N(200_000_000_000_000_000)
	}
}

// view returns the records and claims generated so far, generating up to n
// records first if needed.
func (j *journal) view(n int) ([]record, []claimInfo) {
	j.mu.RLock()
	recs, claims := j.recs, j.claims
	j.mu.RUnlock()
	if len(recs) >= n {
		return recs, claims
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if n > cap(j.recs) {
		// Grow by doubling but never past the journal's total, so that a
		// fully read finite journal retains no slack at all.
		c := max(n, 2*cap(j.recs), 1024)
		if j.total >= 0 {
			c = min(c, j.total)
		}
		j.recs = append(make([]record, 0, c), j.recs...)
	}
	for len(j.recs) < n {
		j.recs = append(j.recs, j.gen.step(&j.claims))
	}
	return j.recs, j.claims
}

// step generates the next record.
func (g *generator) step(claims *[]claimInfo) record {
	r := g.rng
	s := &g.slots[r.IntN(len(g.slots))]
	var flags uint8
	switch {
	case !s.active:
		c := claimInfo{client: uint8(r.IntN(g.clients)), pointBase: randomPointBase(r)}
		fillID(r, &c.id)
		*claims = append(*claims, c)
		*s = slot{
			claim:  uint32(len(*claims) - 1),
			active: true,
			known:  stNew,
			shown:  stNew,
			price:  15_000 + 50*uint32(r.IntN(6_700)),
		}
	case s.known.pricePhase() && r.IntN(100) < priceChangePercent:
		flags |= flagPriceChanged | flagHasPrice
		delta := 50 * uint32(1+r.IntN(60))
		if r.IntN(3) == 0 && s.price > delta+5_000 {
			s.price -= delta
		} else {
			s.price += delta
		}
	case g.unknownRate > 0 && r.Float64() < g.unknownRate:
		// An undocumented status is a detour: the claim keeps its place in
		// the lifecycle and continues from its last documented status.
		s.shown = stTeleportedV2 + status(r.IntN(int(numStatuses-numKnownStatuses)))
	default:
		next := s.known.next(r, s.payWaited)
		if next == stPayWaiting {
			s.payWaited = true
		}
		s.known, s.shown = next, next
	}
	s.rev++
	if flags&flagPriceChanged == 0 && (s.shown.carriesPrice() || r.IntN(10) == 0) {
		flags |= flagHasPrice
	}
	point := s.known.point()
	if point != pointNone && r.IntN(20) == 0 {
		point = pointNone
	}
	flags |= point << flagPointShift
	if r.IntN(extraFieldOneIn) == 0 {
		flags |= flagExtra
	}

	g.clock += 1_000 + r.Int64N(400_000)
	if r.IntN(32) == 0 {
		// Python's isoformat drops the fraction when it is zero; rounding
		// up (never down) keeps the clock increasing.
		g.clock = (g.clock/1_000_000 + 1) * 1_000_000
	}
	ts := g.clock
	if g.generated > 0 && g.backwardsRate > 0 && r.Float64() < g.backwardsRate {
		ts = g.prevTS - 1 - r.Int64N(90_000_000)
	}
	g.prevTS = ts
	g.generated++

	rec := record{ts: ts, claim: s.claim, price: s.price, rev: s.rev, status: s.shown, flags: flags}
	if s.shown.terminal() {
		s.active = false
	}
	return rec
}

// opID returns the operation_id of entry i. It is derived rather than stored:
// a stride of 4 with jitter in [0,3] keeps it strictly increasing with gaps.
func (j *journal) opID(i int) int64 {
	return j.opBase + 4*int64(i) + int64(mix64(j.seedHash^uint64(i))&3)
}

// appendEntry renders entry i as the exact JSON object the server sends, in
// the field order of the API document. Every string it writes is plain ASCII
// or fixed text that needs no escaping, which is what makes append-style
// encoding both safe and cheap.
func (j *journal) appendEntry(dst []byte, i int, rec *record, claims []claimInfo) []byte {
	c := &claims[rec.claim]
	dst = append(dst, `{"operation_id":`...)
	dst = strconv.AppendInt(dst, j.opID(i), 10)
	dst = append(dst, `,"claim_id":"`...)
	dst = hex.AppendEncode(dst, c.id[:])
	if rec.flags&flagPriceChanged != 0 {
		dst = append(dst, `","change_type":"price_changed","updated_ts":"`...)
	} else {
		dst = append(dst, `","change_type":"status_changed","updated_ts":"`...)
	}
	dst = appendTS(dst, rec.ts)
	dst = append(dst, `","new_status":"`...)
	dst = append(dst, rec.status.String()...)
	dst = append(dst, '"')
	if rec.flags&flagHasPrice != 0 {
		dst = append(dst, `,"new_price":"`...)
		dst = appendPrice(dst, rec.price)
		dst = append(dst, `","new_currency":"`...)
		dst = append(dst, j.clients[c.client].currency...)
		dst = append(dst, '"')
	}
	if res := rec.status.resolution(); res != "" {
		dst = append(dst, `,"resolution":"`...)
		dst = append(dst, res...)
		dst = append(dst, '"')
	}
	dst = append(dst, `,"revision":`...)
	dst = strconv.AppendUint(dst, uint64(rec.rev), 10)
	dst = append(dst, `,"client_id":"`...)
	dst = hex.AppendEncode(dst, j.clients[c.client].id[:])
	dst = append(dst, '"')
	if p := (rec.flags & flagPointMask) >> flagPointShift; p != pointNone {
		dst = append(dst, `,"current_point_id":`...)
		dst = strconv.AppendInt(dst, c.pointBase+int64(p-1), 10)
	}
	if rec.flags&flagExtra != 0 {
		dst = append(dst, ',')
		dst = j.appendExtra(dst, i, rec)
	}
	return append(dst, '}')
}

// appendExtra renders the undocumented field of entry i as `"key":value`.
// The variants are chosen to punish lossy handling: a nested object, a
// non-ASCII string and an unsigned integer beyond int64 and float64 precision.
func (j *journal) appendExtra(dst []byte, i int, rec *record) []byte {
	h := mix64(j.seedHash ^ mixExtra ^ uint64(i)*0x9e3779b97f4a7c15)
	switch h % 3 {
	case 0:
		dst = append(dst, `"courier_eta_v2":{"eta_ts":"`...)
		dst = appendTS(dst, rec.ts+int64(60+(h>>8)%3_600)*1_000_000)
		dst = append(dst, `","confidence":0.`...)
		dst = strconv.AppendUint(dst, 10+(h>>20)%90, 10)
		dst = append(dst, `,"legs":[`...)
		dst = strconv.AppendUint(dst, 1+(h>>28)%5, 10)
		dst = append(dst, `,{"kind":"walk","meters":`...)
		dst = strconv.AppendUint(dst, (h>>32)%2_000, 10)
		return append(dst, `}]}`...)
	case 1:
		return append(dst, `"comment_v2":"Позвонить за 15 минут, домофон не работает"`...)
	default:
		dst = append(dst, `"trace_seq":`...)
		return strconv.AppendUint(dst, h|1<<63, 10)
	}
}

// appendTS renders microseconds since the epoch like Python's isoformat with
// a UTC offset: "2026-03-02T06:15:40.811347+00:00", omitting the fraction
// when it is zero.
func appendTS(dst []byte, us int64) []byte {
	t := time.UnixMicro(us).UTC()
	year, month, day := t.Date()
	hour, minute, sec := t.Clock()
	dst = appendDigits(dst, year, 4)
	dst = append(dst, '-')
	dst = appendDigits(dst, int(month), 2)
	dst = append(dst, '-')
	dst = appendDigits(dst, day, 2)
	dst = append(dst, 'T')
	dst = appendDigits(dst, hour, 2)
	dst = append(dst, ':')
	dst = appendDigits(dst, minute, 2)
	dst = append(dst, ':')
	dst = appendDigits(dst, sec, 2)
	if frac := t.Nanosecond() / 1_000; frac != 0 {
		dst = append(dst, '.')
		dst = appendDigits(dst, frac, 6)
	}
	return append(dst, "+00:00"...)
}

// appendDigits appends v zero-padded to width digits (v must be >= 0).
func appendDigits(dst []byte, v, width int) []byte {
	var buf [20]byte
	k := len(buf)
	for v > 0 || width > 0 {
		k--
		buf[k] = byte('0' + v%10)
		v /= 10
		width--
	}
	return append(dst, buf[k:]...)
}

// appendPrice renders minor units as a decimal string with two fraction
// digits, e.g. 41250 → "412.50".
func appendPrice(dst []byte, minor uint32) []byte {
	dst = strconv.AppendUint(dst, uint64(minor/100), 10)
	dst = append(dst, '.')
	return appendDigits(dst, int(minor%100), 2)
}

// entry converts record i into the exported typed form.
func (j *journal) entry(i int, rec *record, claims []claimInfo) Entry {
	c := &claims[rec.claim]
	cl := &j.clients[c.client]
	e := Entry{
		OperationID: j.opID(i),
		ClaimID:     hex.EncodeToString(c.id[:]),
		ChangeType:  "status_changed",
		UpdatedTS:   string(appendTS(nil, rec.ts)),
		NewStatus:   rec.status.String(),
		Resolution:  rec.status.resolution(),
		Revision:    int64(rec.rev),
		ClientID:    hex.EncodeToString(cl.id[:]),
	}
	if rec.flags&flagPriceChanged != 0 {
		e.ChangeType = "price_changed"
	}
	if rec.flags&flagHasPrice != 0 {
		e.NewPrice = string(appendPrice(nil, rec.price))
		e.NewCurrency = cl.currency
	}
	if p := (rec.flags & flagPointMask) >> flagPointShift; p != pointNone {
		id := c.pointBase + int64(p-1)
		e.CurrentPointID = &id
	}
	if rec.flags&flagExtra != 0 {
		obj := append([]byte{'{'}, j.appendExtra(nil, i, rec)...)
		obj = append(obj, '}')
		// The extra field is produced by appendExtra and always valid JSON,
		// so an error here would be a bug in this package.
		if err := json.Unmarshal(obj, &e.Extra); err != nil {
			panic("sim: invalid extra field rendered: " + err.Error())
		}
	}
	return e
}

// Entry is one journal entry in typed form, as returned by Yandex.Entry.
// Optional fields are empty strings (or nil) when the entry omits them.
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
	// Extra holds undocumented fields with their exact JSON values; it is nil
	// for most entries.
	Extra map[string]json.RawMessage
}
