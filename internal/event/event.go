// Package event defines ingestd's normalized delivery event (schema v1), the
// canonical statuses shared by every provider, the provider status mappings,
// and the Kafka encoding: a JSON payload plus CloudEvents 1.0 binary-mode
// headers. It is a leaf package: it imports nothing of ingestd.
package event

import (
	"encoding/json"
	"time"
)

// SchemaVersion is the payload schema version written in every event.
const SchemaVersion = 1

// Type is the kind of change an event reports; it is also the CloudEvents
// ce_type header.
type Type string

// Event types.
const (
	TypeStatusChanged Type = "delivery.status_changed"
	TypePriceChanged  Type = "delivery.price_changed"
)

// Status is a canonical delivery status, shared by all providers.
type Status string

// Canonical statuses. StatusUnknown is a provider status nobody has mapped
// yet: the event is still published, with the raw value in ProviderStatus.
const (
	StatusCreated          Status = "created"
	StatusCourierSearch    Status = "courier_search"
	StatusCourierAssigned  Status = "courier_assigned"
	StatusCourierAtPickup  Status = "courier_at_pickup"
	StatusPickedUp         Status = "picked_up"
	StatusInTransit        Status = "in_transit"
	StatusAtDeliveryOffice Status = "at_delivery_office"
	StatusOutForDelivery   Status = "out_for_delivery"
	StatusCourierAtDropoff Status = "courier_at_dropoff"
	StatusDelivered        Status = "delivered"
	StatusReturning        Status = "returning"
	StatusReturned         Status = "returned"
	StatusCancelled        Status = "cancelled"
	StatusFailed           Status = "failed"
	StatusExpired          Status = "expired"
	StatusUnknown          Status = "unknown"
)

// Provider names, used in keys, sources and payloads.
const (
	ProviderYandex = "yandex"
	ProviderBTS    = "bts"
)

// Price is an amount as a decimal string (never a float) with its currency.
type Price struct {
	Amount   string `json:"amount"`
	Currency string `json:"currency"`
}

// Event is one normalized change of one shipment (payload schema v1).
type Event struct {
	// ID is deterministic from the upstream identity of the change (see ID),
	// so the same upstream change always yields the same event ID.
	ID       string
	Type     Type
	Provider string
	Account  string
	// OrderID is the provider's shipment identifier (Yandex claim_id, BTS orderId).
	OrderID string
	// Status is the canonical status; empty when the upstream change carries
	// no status (encoded as null).
	Status Status
	// ProviderStatus is the raw upstream status, kept even when unmapped;
	// empty encodes as null.
	ProviderStatus string
	// ProviderStatusName is the provider's human name for the status (BTS
	// dictionary); empty encodes as null.
	ProviderStatusName string
	Terminal           bool
	// Resolution is the provider's resolution of a terminal status
	// (Yandex: success/failed); empty encodes as null.
	Resolution string
	// Revision is the provider's version of the shipment after this change.
	Revision int64
	// OccurredAt is the upstream time of the change (Yandex updated_ts). It is
	// display data only: ordering always follows the upstream journal.
	OccurredAt time.Time
	// ObservedAt is when ingestd read the change.
	ObservedAt time.Time
	Price      *Price
	PointID    *int64
	// Raw is the upstream record verbatim, so that fields ingestd does not
	// know yet are kept, not dropped; nil encodes as null.
	Raw json.RawMessage
	// RawChecked says that Raw is known to be exactly one syntactically
	// valid JSON object with no surrounding space, because the decoder that
	// produced it checked every byte as strictly as encoding/json. Message
	// then does not scan it again (a sixth of building a message). Leave it
	// false for any Raw not straight from such a decoder.
	RawChecked bool
}

// Message is one event as it travels to Kafka: the record key, the
// CloudEvents attributes (sent as headers) and the JSON payload.
type Message struct {
	// ID is the CloudEvents ce_id, equal to Event.ID.
	ID string
	// Key is the Kafka record key, "<provider>:<order id>", so all events of
	// one shipment land in one partition.
	Key string
	// Source is ce_source, "/ingestd/<provider>/<account>".
	Source string
	// Type is ce_type.
	Type Type
	// Subject is ce_subject, the order id.
	Subject string
	// Time is ce_time, the upstream time of the change.
	Time time.Time
	// Payload is the JSON encoding of the event.
	Payload []byte
}

// Header is a Kafka record header. The event package declares its own type so
// that it stays independent of any Kafka client.
type Header struct {
	Key   string
	Value []byte
}
