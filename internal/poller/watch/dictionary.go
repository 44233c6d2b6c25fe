package watch

import (
	"slices"

	"github.com/ingestd/ingestd/internal/watchlist"
)

// dictionary is the status dictionary in memory.
type dictionary struct {
	byCode map[int]watchlist.Status
	// chained holds the codes some status lists as a next status: the main
	// line of a delivery. Codes nobody lists (0, 1300, 1400) are exits that
	// may follow any status and are never counted as skips.
	chained map[int]bool
}

func newDictionary(defs []watchlist.Status) *dictionary {
	d := &dictionary{byCode: make(map[int]watchlist.Status, len(defs)), chained: map[int]bool{}}
	for _, s := range defs {
		d.byCode[s.Code] = s
		for _, n := range s.Next {
			d.chained[n] = true
		}
	}
	return d
}

// name returns the dictionary name of code, or "".
func (d *dictionary) name(code int) string { return d.byCode[code].Name }

// skipped reports whether a change from one code to another skipped steps:
// the new code is on the main line but not among the old one's next
// statuses. Changes from codes the dictionary does not define are not
// judged.
func (d *dictionary) skipped(from, to int) bool {
	s, ok := d.byCode[from]
	if !ok || len(s.Next) == 0 || slices.Contains(s.Next, to) {
		return false
	}
	return d.chained[to]
}
