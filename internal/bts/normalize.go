package bts

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ingestd/ingestd/internal/event"
)

// Normalize turns an observed status change of an order into a normalized
// event of account.
//
//   - name is the status name from the dictionary; when empty, the name BTS
//     sent with the track answer is used.
//   - changeCount is the order's number of status changes as ingestd has
//     seen them, this one included (1 for the first status observed). It is
//     the event's revision and part of its id, so that a status the order
//     returns to later is a new event, while the same observation recorded
//     twice yields the same id.
//   - observedAt is when ingestd read the status. BTS reports no time of
//     change, so it is also the event's occurred_at: the true change
//     happened at most one poll interval earlier.
func Normalize(account string, t Track, name string, changeCount int64, observedAt time.Time) (event.Event, error) {
	if t.OrderID == "" {
		return event.Event{}, errors.New("normalize bts order: empty order id")
	}
	if changeCount < 1 {
		return event.Event{}, fmt.Errorf("normalize bts order %s: change count %d is not positive", t.OrderID, changeCount)
	}
	if observedAt.IsZero() {
		return event.Event{}, fmt.Errorf("normalize bts order %s: zero observation time", t.OrderID)
	}
	if name == "" {
		name = t.Name
	}
	code := strconv.Itoa(t.Code)
	status, terminal := event.BTSStatus(t.Code)
	at := observedAt.UTC()
	return event.Event{
		ID:                 event.ID(event.ProviderBTS, account, t.OrderID, code, strconv.FormatInt(changeCount, 10)),
		Type:               event.TypeStatusChanged,
		Provider:           event.ProviderBTS,
		Account:            account,
		OrderID:            t.OrderID,
		Status:             status,
		ProviderStatus:     code,
		ProviderStatusName: name,
		Terminal:           terminal,
		Revision:           changeCount,
		OccurredAt:         at,
		ObservedAt:         at,
		Raw:                t.Raw,
	}, nil
}
