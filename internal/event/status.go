package event

// Valid reports whether s is one of the canonical statuses of schema v1,
// StatusUnknown included. The canonical set is closed in v1, so anything else
// is a programming error upstream of the encoder.
func (s Status) Valid() bool {
	switch s {
	case StatusCreated, StatusCourierSearch, StatusCourierAssigned,
		StatusCourierAtPickup, StatusPickedUp, StatusInTransit,
		StatusAtDeliveryOffice, StatusOutForDelivery, StatusCourierAtDropoff,
		StatusDelivered, StatusReturning, StatusReturned, StatusCancelled,
		StatusFailed, StatusExpired, StatusUnknown:
		return true
	}
	return false
}

// Statuses returns every canonical status, in the order they are declared.
// It returns a fresh slice on each call so that callers may modify it.
func Statuses() []Status {
	return []Status{
		StatusCreated,
		StatusCourierSearch,
		StatusCourierAssigned,
		StatusCourierAtPickup,
		StatusPickedUp,
		StatusInTransit,
		StatusAtDeliveryOffice,
		StatusOutForDelivery,
		StatusCourierAtDropoff,
		StatusDelivered,
		StatusReturning,
		StatusReturned,
		StatusCancelled,
		StatusFailed,
		StatusExpired,
		StatusUnknown,
	}
}

// YandexStatus maps a Yandex Delivery ClaimStatus (the journal's new_status)
// to the canonical status, and reports whether the raw status is terminal,
// i.e. no further status change will follow for the claim.
//
// delivered and returned are deliberately not terminal: Yandex follows them
// with delivered_finish and returned_finish, which are. An unmapped status
// (including the empty string) yields StatusUnknown and false, so that the
// event is still published with its raw value instead of being dropped.
//
// docs/events.md mirrors this switch row by row; a test keeps them in step.
func YandexStatus(raw string) (s Status, terminal bool) {
	switch raw {
	case "new", "estimating", "ready_for_approval", "accepted", "pay_waiting":
		return StatusCreated, false
	case "estimating_failed":
		return StatusFailed, true
	case "performer_lookup", "performer_draft":
		return StatusCourierSearch, false
	case "performer_found":
		return StatusCourierAssigned, false
	case "performer_not_found":
		return StatusFailed, true
	case "pickup_arrived", "ready_for_pickup_confirmation":
		return StatusCourierAtPickup, false
	case "pickuped":
		return StatusPickedUp, false
	case "delivery_arrived", "ready_for_delivery_confirmation":
		return StatusCourierAtDropoff, false
	case "delivered":
		return StatusDelivered, false
	case "delivered_finish":
		return StatusDelivered, true
	case "returning", "return_arrived", "ready_for_return_confirmation":
		return StatusReturning, false
	case "returned":
		return StatusReturned, false
	case "returned_finish":
		return StatusReturned, true
	case "failed":
		return StatusFailed, true
	case "cancelled", "cancelled_with_payment", "cancelled_by_taxi", "cancelled_with_items_on_hands":
		return StatusCancelled, true
	}
	return StatusUnknown, false
}

// BTSStatus maps a BTS Express status code (GET /v1/status/index) to the
// canonical status, and reports whether the code is terminal.
//
// Code 0 is not in the BTS dictionary: BTS reports a cancelled order as
// status id 0 ("Cancelled Order"). Codes 900 and 1000 appear only in
// next_possible_statuses and are never defined, so they map to StatusUnknown
// like any code BTS may add later; the event is still published with the raw
// code.
//
// docs/events.md mirrors this switch row by row; a test keeps them in step.
func BTSStatus(code int) (s Status, terminal bool) {
	switch code {
	case 0:
		return StatusCancelled, true
	case 100:
		return StatusCreated, false
	case 200:
		return StatusPickedUp, false
	case 300, 400, 500, 600, 700:
		return StatusInTransit, false
	case 800:
		return StatusAtDeliveryOffice, false
	case 1100:
		return StatusOutForDelivery, false
	case 1200:
		return StatusDelivered, true
	case 1300:
		return StatusCancelled, true
	case 1400:
		return StatusExpired, true
	}
	return StatusUnknown, false
}
