package yandex

import (
	"fmt"
	"strconv"
	"time"

	"github.com/ingestd/ingestd/internal/event"
)

// changeTypePrice is the journal's change_type of a price change. Every other
// value, status_changed or one Yandex adds later, is published as a status
// change; the raw entry keeps the original value.
const changeTypePrice = "price_changed"

// Normalize turns one journal entry of account into a normalized event.
// observedAt is when ingestd read the entry. An entry whose updated_ts or
// new_price cannot be parsed is an error naming the claim and operation,
// because publishing it with a made-up time or price would be worse than
// stopping.
func Normalize(account string, e *Entry, observedAt time.Time) (event.Event, error) {
	return NormalizeIn(nil, account, e, observedAt)
}

// NormalizeIn is Normalize with the event's strings taken from a, normally
// the page's (Page.Strings), so that normalizing a page does not allocate
// per event.
func NormalizeIn(a *event.Arena, account string, e *Entry, observedAt time.Time) (event.Event, error) {
	occurred, err := time.Parse(time.RFC3339Nano, e.UpdatedTS)
	if err != nil {
		return event.Event{}, fmt.Errorf("normalize claim %s op %d: parse updated_ts %q: %w",
			e.ClaimID, e.OperationID, e.UpdatedTS, err)
	}

	ev := event.Event{
		ID:             a.UUID(entryUUID(account, e)),
		Type:           event.TypeStatusChanged,
		Provider:       event.ProviderYandex,
		Account:        account,
		OrderID:        e.ClaimID,
		ProviderStatus: e.NewStatus,
		Resolution:     e.Resolution,
		Revision:       e.Revision,
		OccurredAt:     occurred.UTC(),
		ObservedAt:     observedAt.UTC(),
		PointID:        e.CurrentPointID,
		Raw:            e.Raw,
		RawChecked:     e.rawChecked,
	}
	if e.ChangeType == changeTypePrice {
		ev.Type = event.TypePriceChanged
	}
	// A change without a status (a price change, typically) has no status
	// rather than "unknown": unknown means a status nobody has mapped yet.
	if e.NewStatus != "" {
		ev.Status, ev.Terminal = event.YandexStatus(e.NewStatus)
	}
	if e.NewPrice != "" {
		if !isDecimal(e.NewPrice) {
			return event.Event{}, fmt.Errorf("normalize claim %s op %d: new_price %q is not a decimal number",
				e.ClaimID, e.OperationID, e.NewPrice)
		}
		e.price = event.Price{Amount: e.NewPrice, Currency: e.NewCurrency}
		ev.Price = &e.price
	}
	return ev, nil
}

// isDecimal reports whether s matches -?[0-9]+(\.[0-9]+)?, the only amount
// shape consumers must handle. It is written out rather than as a regexp to
// avoid a package-level variable on a hot path.
func isDecimal(s string) bool {
	if len(s) > 0 && s[0] == '-' {
		s = s[1:]
	}
	intDigits := 0
	for intDigits < len(s) && s[intDigits] >= '0' && s[intDigits] <= '9' {
		intDigits++
	}
	if intDigits == 0 {
		return false
	}
	s = s[intDigits:]
	if s == "" {
		return true
	}
	if s[0] != '.' || len(s) == 1 {
		return false
	}
	for i := 1; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// entryUUID is the event id of a journal entry. Its numbers are formatted on
// the stack: ID only reads its parts, so they do not escape.
func entryUUID(account string, e *Entry) [16]byte {
	var op, rev [20]byte
	return event.UUID(event.ProviderYandex, account, e.ClaimID,
		string(strconv.AppendInt(op[:0], e.OperationID, 10)), e.ChangeType,
		string(strconv.AppendInt(rev[:0], e.Revision, 10)))
}
