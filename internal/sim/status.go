package sim

import "math/rand/v2"

// status is a compact claim status code. Journal records store one byte per
// entry instead of a string so that a million-entry journal stays small;
// names are produced by String when an entry is rendered.
type status uint8

// The documented ClaimStatus enum, in the order of the API document, followed
// by pay_waiting (seen in the wild but missing from the enum) and by a few
// statuses the document does not know at all. The undocumented tail exists
// so that clients are exercised against values they cannot map.
const (
	stNew status = iota
	stEstimating
	stEstimatingFailed
	stReadyForApproval
	stAccepted
	stPerformerLookup
	stPerformerDraft
	stPerformerFound
	stPerformerNotFound
	stPickupArrived
	stReadyForPickupConfirmation
	stPickuped
	stDeliveryArrived
	stReadyForDeliveryConfirmation
	stDelivered
	stDeliveredFinish
	stReturning
	stReturnArrived
	stReadyForReturnConfirmation
	stReturned
	stReturnedFinish
	stFailed
	stCancelled
	stCancelledWithPayment
	stCancelledByTaxi
	stCancelledWithItemsOnHands
	stPayWaiting

	// numKnownStatuses separates the statuses a client may know about from
	// the ones it cannot.
	numKnownStatuses

	stTeleportedV2 status = iota - 1
	stPerformerReassigning
	stAwaitingCourierEta
	stBatchedV3

	// numStatuses is one past the last status code.
	numStatuses
)

// String returns the wire name of the status.
func (s status) String() string {
	switch s {
	case stNew:
		return "new"
	case stEstimating:
		return "estimating"
	case stEstimatingFailed:
		return "estimating_failed"
	case stReadyForApproval:
		return "ready_for_approval"
	case stAccepted:
		return "accepted"
	case stPerformerLookup:
		return "performer_lookup"
	case stPerformerDraft:
		return "performer_draft"
	case stPerformerFound:
		return "performer_found"
	case stPerformerNotFound:
		return "performer_not_found"
	case stPickupArrived:
		return "pickup_arrived"
	case stReadyForPickupConfirmation:
		return "ready_for_pickup_confirmation"
	case stPickuped:
		return "pickuped"
	case stDeliveryArrived:
		return "delivery_arrived"
	case stReadyForDeliveryConfirmation:
		return "ready_for_delivery_confirmation"
	case stDelivered:
		return "delivered"
	case stDeliveredFinish:
		return "delivered_finish"
	case stReturning:
		return "returning"
	case stReturnArrived:
		return "return_arrived"
	case stReadyForReturnConfirmation:
		return "ready_for_return_confirmation"
	case stReturned:
		return "returned"
	case stReturnedFinish:
		return "returned_finish"
	case stFailed:
		return "failed"
	case stCancelled:
		return "cancelled"
	case stCancelledWithPayment:
		return "cancelled_with_payment"
	case stCancelledByTaxi:
		return "cancelled_by_taxi"
	case stCancelledWithItemsOnHands:
		return "cancelled_with_items_on_hands"
	case stPayWaiting:
		return "pay_waiting"
	case stTeleportedV2:
		return "teleported_v2"
	case stPerformerReassigning:
		return "performer_reassigning"
	case stAwaitingCourierEta:
		return "awaiting_courier_eta"
	case stBatchedV3:
		return "batched_v3"
	}
	return "invalid_status"
}

// known reports whether the status is part of the documented enum (plus
// pay_waiting).
func (s status) known() bool { return s < numKnownStatuses }

// terminal reports whether a claim ends with this status. A terminal status
// carries a resolution and frees the claim's slot in the generator.
func (s status) terminal() bool {
	switch s {
	case stEstimatingFailed, stPerformerNotFound, stDeliveredFinish, stReturnedFinish,
		stFailed, stCancelled, stCancelledWithPayment, stCancelledByTaxi, stCancelledWithItemsOnHands:
		return true
	}
	return false
}

// resolution returns the resolution reported with a terminal status. Only a
// delivered claim counts as a success: a returned parcel never reached the
// recipient.
func (s status) resolution() string {
	switch {
	case !s.terminal():
		return ""
	case s == stDeliveredFinish:
		return "success"
	default:
		return "failed"
	}
}

// pricePhase reports whether a price_changed entry may follow this status.
// Prices are recalculated between estimation and the end of the delivery.
func (s status) pricePhase() bool {
	return s >= stReadyForApproval && !s.terminal()
}

// carriesPrice reports whether a status_changed entry for this status always
// reports the price, as the real journal does when a price is fixed.
func (s status) carriesPrice() bool {
	switch s {
	case stReadyForApproval, stAccepted, stDeliveredFinish, stReturnedFinish, stCancelledWithPayment:
		return true
	}
	return false
}

// Route point kinds, stored in two bits of a record. Zero means the entry
// has no current_point_id.
const (
	pointNone uint8 = iota
	pointSource
	pointDestination
	pointReturn
)

// point returns which route point is current while a claim has this status.
// Before a performer is found there is no current point, and a cancelled claim
// no longer reports one.
func (s status) point() uint8 {
	switch s {
	case stPerformerFound, stPickupArrived, stReadyForPickupConfirmation:
		return pointSource
	case stPickuped, stDeliveryArrived, stReadyForDeliveryConfirmation, stDelivered, stDeliveredFinish, stFailed:
		return pointDestination
	case stReturning, stReturnArrived, stReadyForReturnConfirmation, stReturned, stReturnedFinish:
		return pointReturn
	}
	return pointNone
}

// next picks the status that follows s in a claim's lifecycle. The weights
// keep the happy path dominant while every documented variant (cancellations,
// performer_not_found, estimating_failed, failed, the return path and
// pay_waiting) still shows up often enough to be exercised by tests.
func (s status) next(r *rand.Rand, payWaited bool) status {
	p := r.IntN(1000)
	switch s {
	case stNew:
		return stEstimating
	case stEstimating:
		if p < 30 {
			return stEstimatingFailed
		}
		return stReadyForApproval
	case stReadyForApproval:
		if p < 60 {
			return stCancelled
		}
		return stAccepted
	case stAccepted:
		switch {
		case p < 80 && !payWaited:
			return stPayWaiting
		case p < 110:
			return stCancelled
		}
		return stPerformerLookup
	case stPayWaiting:
		if p < 50 {
			return stCancelled
		}
		return stPerformerLookup
	case stPerformerLookup:
		switch {
		case p < 50:
			return stPerformerNotFound
		case p < 70:
			return stCancelled
		}
		return stPerformerDraft
	case stPerformerDraft:
		if p < 50 {
			return stPerformerLookup
		}
		return stPerformerFound
	case stPerformerFound:
		switch {
		case p < 30:
			return stCancelledByTaxi
		case p < 55:
			return stCancelledWithPayment
		case p < 75:
			return stCancelled
		}
		return stPickupArrived
	case stPickupArrived:
		if p < 30 {
			return stCancelledWithPayment
		}
		return stReadyForPickupConfirmation
	case stReadyForPickupConfirmation:
		if p < 20 {
			return stCancelledWithPayment
		}
		return stPickuped
	case stPickuped:
		switch {
		case p < 40:
			return stReturning
		case p < 55:
			return stCancelledWithItemsOnHands
		case p < 75:
			return stFailed
		}
		return stDeliveryArrived
	case stDeliveryArrived:
		if p < 40 {
			return stReturning
		}
		return stReadyForDeliveryConfirmation
	case stReadyForDeliveryConfirmation:
		if p < 50 {
			return stReturning
		}
		return stDelivered
	case stDelivered:
		return stDeliveredFinish
	case stReturning:
		return stReturnArrived
	case stReturnArrived:
		return stReadyForReturnConfirmation
	case stReadyForReturnConfirmation:
		return stReturned
	case stReturned:
		return stReturnedFinish
	}
	// Terminal and unknown statuses never reach here: the generator tracks
	// the last known status separately and frees terminal claims.
	return stFailed
}

// YandexStatuses returns the documented ClaimStatus enum plus pay_waiting,
// which real journals contain although the document omits it. The slice is
// freshly allocated, so callers may modify it.
func YandexStatuses() []string {
	out := make([]string, 0, numKnownStatuses)
	for s := range numKnownStatuses {
		out = append(out, s.String())
	}
	return out
}

// parseStatus maps a wire name back to its code.
func parseStatus(name string) (status, bool) {
	for s := range numStatuses {
		if s.String() == name {
			return s, true
		}
	}
	return 0, false
}
