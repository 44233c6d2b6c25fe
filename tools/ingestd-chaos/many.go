package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ingestd/ingestd/internal/failpoint"
	"github.com/ingestd/ingestd/internal/lease"
)

// The many-accounts mode (-accounts N) runs N simulated Yandex accounts at
// one address, one described by the INGESTD_YANDEX_* settings and the others
// by a sources file, on -replicas ingestd instances at once, which share the
// sources by their leases. It SIGKILLs a random replica at a time (preferring
// one that holds a lease), restarting it at once under a new name as a
// Deployment would, while the others carry on; the killed replica's leases
// are taken over once they expire, and the sources spread again when the new
// replica joins. Failpoints fit this mode unchanged: each replica restart may
// be armed with one, which fires on that process's Nth pass through the
// point, whichever of its sources (or the publisher, if it holds that lease)
// gets there; while a publisher failpoint has not fired, the kills are
// steered so that the publisher lease reaches an armed replica. -pauses
// kills first pause the victim past its leases.

// Tuning of the many-accounts mode.
const (
	// manyKillDelayMin and manyKillDelayMax bound the random wait before
	// each kill. A kill does not wait for the previous victim's leases to
	// be taken over or for the sources to spread again: crashes in a
	// deployment do not wait either.
	manyKillDelayMin = 300 * time.Millisecond
	manyKillDelayMax = 2 * time.Second
	// manyArmRate is the fraction of replica restarts armed with a random
	// failpoint once every failpoint has fired.
	manyArmRate = 0.25
	// maxManyArmings bounds the starts armed with a failpoint that has not
	// fired yet. A publisher failpoint fires only in the replica that takes
	// the one publisher lease, so it may take a few armed starts.
	maxManyArmings = 12
)

// replica is one slot of the many-accounts mode: an ingestd instance,
// started again under a new name each time it dies.
type replica struct {
	slot int
	// gen numbers the slot's instances, for their names.
	gen int
	c   *instance
	// starts counts the slot's instances; kills the SIGKILLs that ended
	// them, the harness's and the failpoints'.
	starts int
	kills  int
}

// replicaName is the INGESTD_INSTANCE_ID of a slot's gen-th instance.
func replicaName(slot, gen int) string { return fmt.Sprintf("chaos-r%d-%02d", slot, gen) }

// manyEnd is what the many-accounts mode saw once the journals were drained,
// before the replicas were stopped.
type manyEnd struct {
	hold holdings
	// settled is whether every lease was held and the sources spread within
	// one of each other.
	settled bool
	// sourceAcquisitions sums every source lease's epoch beyond its first;
	// publisherEpoch is the publisher lease's epoch.
	sourceAcquisitions int64
	publisherEpoch     int64
	// holders maps each source id to the instance holding it.
	holders map[string]string
}

// startReplica starts the slot's next instance, armed as armReplica
// chooses.
func (h *harness) startReplica(r *replica) error {
	point, spec := h.armReplica()
	return h.startReplicaWith(r, point, spec)
}

func (h *harness) startReplicaWith(r *replica, point, spec string) error {
	r.gen++
	c, err := h.start(replicaName(r.slot, r.gen), point, spec)
	if err != nil {
		return err
	}
	r.c = c
	r.starts++
	if point != "" {
		h.attempts[point]++
	}
	return nil
}

// armReplica picks the failpoint of a replica's restart: while a failpoint has
// not fired, the one armed in the fewest running replicas (so that whichever
// replica takes the publisher lease is soon armed with a publisher point);
// after that, a random one at manyArmRate. Nothing is armed once the final
// drain began.
func (h *harness) armReplica() (point, spec string) {
	if h.disarmed {
		return "", ""
	}
	best := -1
	for _, fp := range failpoints() {
		if h.stats.Kills.Failpoints[fp] > 0 || h.attempts[fp] >= maxManyArmings {
			continue
		}
		if n := h.armedRunning(fp); best < 0 || n < best {
			point, best = fp, n
		}
	}
	if point == "" && h.rng.Float64() < manyArmRate {
		fps := failpoints()
		point = fps[h.rng.IntN(len(fps))]
	}
	if point == "" {
		return "", ""
	}
	return point, point + "=" + strconv.Itoa(1+h.rng.IntN(5))
}

// armedRunning counts the running replicas armed with fp.
func (h *harness) armedRunning(fp string) int {
	n := 0
	for _, r := range h.replicas {
		// A slot not started yet has no instance.
		if r.c != nil && r.c.running() && r.c.failpoint == fp {
			n++
		}
	}
	return n
}

// armedDesc is " [armed point]" for a replica line, "" when unarmed.
func armedDesc(c *instance) string {
	if c.failpoint == "" {
		return ""
	}
	return " [armed " + c.failpoint + "]"
}

// countEnd adds a slot's ended instance to its kills when a SIGKILL ended
// it.
func countEnd(r *replica) {
	if cl := r.c.class(); cl == exitHarnessKill || cl == exitSelfKill {
		r.kills++
	}
}

// reap starts again every replica whose instance ended on its own (a
// failpoint's self-kill, or an unexpected exit, which settle records), and
// describes each. A stopped (SIGSTOP) instance is still running.
func (h *harness) reap() ([]string, error) {
	var out []string
	for _, r := range h.replicas {
		if r.c.running() {
			continue
		}
		how := h.settle(r.c)
		countEnd(r)
		if h.fatal != nil {
			return out, h.fatal
		}
		old, took := r.c.name, time.Since(r.c.started).Round(time.Millisecond)
		if err := h.startReplica(r); err != nil {
			return out, err
		}
		out = append(out, fmt.Sprintf("%s %s after %v, restarted as %s%s", old, how, took, r.c.name, armedDesc(r.c)))
	}
	return out, nil
}

// holdings is who holds the leases now.
type holdings struct {
	// sources counts each slot's live source leases held by its running
	// instance; publisher is the slot holding the publisher lease, -1 for
	// none.
	sources   []int
	publisher int
	// unheld counts the source leases that no running replica holds live.
	unheld int
	// holders maps each source id to the instance holding it live.
	holders map[string]string
}

// holdings reads the lease table.
func (h *harness) holdings(ctx context.Context) (holdings, error) {
	ls, err := h.leases(ctx)
	if err != nil {
		return holdings{}, err
	}
	hd := holdings{sources: make([]int, len(h.replicas)), publisher: -1, holders: map[string]string{}}
	slotOf := func(holder string) int {
		for _, r := range h.replicas {
			if r.c.name == holder && r.c.running() {
				return r.slot
			}
		}
		return -1
	}
	for _, a := range h.env.accounts {
		l, ok := ls[lease.Source(a.sourceID)]
		slot := -1
		if ok && l.Live {
			slot = slotOf(l.Holder)
		}
		if slot < 0 {
			hd.unheld++
			continue
		}
		hd.sources[slot]++
		hd.holders[a.sourceID] = l.Holder
	}
	if l, ok := ls[lease.Publisher]; ok && l.Live {
		hd.publisher = slotOf(l.Holder)
	}
	return hd, nil
}

// of describes what slot holds: "8 sources+publisher".
func (hd holdings) of(slot int) string {
	s := sources(hd.sources[slot])
	if hd.publisher == slot {
		s += "+publisher"
	}
	return s
}

// sources is "1 source" or "n sources".
func sources(n int) string {
	if n == 1 {
		return "1 source"
	}
	return fmt.Sprintf("%d sources", n)
}

// String is "r0=8+pub r1=8 r2=7, 1 unheld" for round lines.
func (hd holdings) String() string {
	var parts []string
	for slot, n := range hd.sources {
		p := fmt.Sprintf("r%d=%d", slot, n)
		if hd.publisher == slot {
			p += "+pub"
		}
		parts = append(parts, p)
	}
	s := strings.Join(parts, " ")
	if hd.unheld > 0 {
		s += fmt.Sprintf(", %d unheld", hd.unheld)
	}
	if hd.publisher < 0 {
		s += ", publisher unheld"
	}
	return s
}

// settled reports whether every lease is held by a running replica and the
// sources are spread within one of each other, as ingestd promises.
func (hd holdings) settled() bool {
	if hd.unheld > 0 || hd.publisher < 0 {
		return false
	}
	return slices.Max(hd.sources)-slices.Min(hd.sources) <= 1
}

// waitSettled waits, restarting replicas that die meanwhile, until the
// leases are settled or within passes, and returns the last holdings and the
// replica events seen.
func (h *harness) waitSettled(ctx context.Context, within time.Duration) (holdings, bool, []string, error) {
	var (
		hd     holdings
		events []string
	)
	ok, err := poll(ctx, within, pollEvery, func() (bool, error) {
		ev, err := h.reap()
		events = append(events, ev...)
		if err != nil {
			return false, err
		}
		if hd, err = h.holdings(ctx); err != nil {
			return false, err
		}
		return hd.settled(), nil
	})
	return hd, ok, events, err
}

// enoughMany reports whether the many-accounts rounds may stop: enough
// kills, at least half of the journals committed, every failpoint fired (or
// armed often enough), and a pause kill when pauses are asked for.
func (h *harness) enoughMany(p progress) bool {
	if h.killsCounted() < h.o.kills || p.committed*2 < int64(h.o.events) {
		return false
	}
	for _, fp := range failpoints() {
		if h.stats.Kills.Failpoints[fp] == 0 && h.attempts[fp] < maxManyArmings {
			return false
		}
	}
	return h.attempts["pause"] >= h.o.pauses
}

// manyRounds starts the replicas and kills one at a time until enough kills
// happened.
func (h *harness) manyRounds(ctx context.Context, until time.Time) error {
	defer h.releaseJournal()
	h.replicas = make([]*replica, h.o.replicas)
	for i := range h.replicas {
		h.replicas[i] = &replica{slot: i}
	}
	// The pauses come at random kills past the first quarter, when the
	// sources have moved between the replicas a few times.
	for range h.o.pauses {
		h.pauseAt = append(h.pauseAt, h.o.kills/4+h.rng.IntN(max(h.o.kills-h.o.kills/4, 1)))
	}
	slices.Sort(h.pauseAt)
	// The first replicas start unarmed, so that they take the leases and
	// spread the sources undisturbed; the armed ones are their successors.
	for _, r := range h.replicas {
		if err := h.startReplicaWith(r, "", ""); err != nil {
			return err
		}
	}
	var names []string
	for _, r := range h.replicas {
		names = append(names, r.c.name+armedDesc(r.c))
	}
	started := time.Now()
	// The first kill waits until the replicas took every lease and spread
	// the sources, so that it hits a deployment in its steady state.
	hd, ok, events, err := h.waitSettled(ctx, h.activeWithin())
	if err != nil {
		return err
	}
	h.printf("start      replicas %s; %s after %v%s", strings.Join(names, ", "), hd, time.Since(started).Round(time.Millisecond), joinEvents(events))
	if !ok {
		h.note("the replicas had not taken every lease and spread the sources within %v: %s", h.activeWithin(), hd)
	}
	for {
		events, err := h.reap()
		if err != nil {
			return err
		}
		if len(events) > 0 {
			h.printf("           %s", strings.Join(events, "; "))
		}
		p, err := h.progress(ctx)
		if err != nil {
			return err
		}
		if h.enoughMany(p) {
			return nil
		}
		if time.Now().After(until) {
			h.note("the rounds used up their share of -timeout after %d rounds; going on to the final drain", h.round)
			return nil
		}
		if h.round >= h.maxRounds() {
			h.note("stopping after %d rounds", h.round)
			return nil
		}
		h.round++
		h.pace(started)
		action, err := h.playMany(ctx)
		if err != nil {
			return err
		}
		h.stats.Rounds++
		if p, err = h.progress(ctx); err != nil {
			return err
		}
		if hd, err = h.holdings(ctx); err != nil {
			return err
		}
		h.printf("round %3d  committed=%d/%d  available=%d  backlog=%d  kills=%d  held %s  %s",
			h.round, p.committed, h.o.events, h.available(), p.backlog, h.stats.Kills.Total, hd, action)
		if h.fatal != nil {
			return h.fatal
		}
	}
}

// joinEvents is "; e1; e2" for a round line, "" without events.
func joinEvents(events []string) string {
	if len(events) == 0 {
		return ""
	}
	return "; " + strings.Join(events, "; ")
}

// playMany waits a random while (restarting replicas that die meanwhile),
// then kills a random replica holding a lease, first pausing it past its
// leases in some rounds, and starts it again.
func (h *harness) playMany(ctx context.Context) (string, error) {
	d := h.randDuration(manyKillDelayMin, manyKillDelayMax)
	deadline := time.Now().Add(d)
	var events []string
	for {
		ev, err := h.reap()
		events = append(events, ev...)
		if err != nil {
			return "", err
		}
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		if err := sleep(ctx, min(pollEvery, left)); err != nil {
			return "", err
		}
	}
	hd, err := h.holdings(ctx)
	if err != nil {
		return "", err
	}
	victim, steered := h.pickReplica(hd)
	// The pause kills come at the kill counts drawn at the start. There
	// are few of them (-pauses), because one can take half a minute: a
	// replica frozen in the middle of its sources' commits holds the
	// outbox counter, which every commit of the deployment waits for, and
	// the lock reports of slow pause rounds show its queued commits taking
	// the counter one after another, each until PostgreSQL ends it after
	// ingestd's stall timeout (5s).
	pause := h.attempts["pause"] < len(h.pauseAt) && h.killsCounted() >= h.pauseAt[h.attempts["pause"]]
	var action string
	if pause {
		action, err = h.pauseReplica(ctx, victim, hd, &events)
	} else {
		kind := "random"
		if steered {
			kind = "steered (the publisher's holder, unarmed while a publisher failpoint has not fired)"
		}
		action, err = h.killReplica(victim, hd, kind, d)
	}
	if err != nil {
		return "", err
	}
	return action + joinEvents(events), nil
}

// publishPending reports whether a publisher failpoint has not fired yet
// and may still be armed.
func (h *harness) publishPending() bool {
	for _, fp := range []string{failpoint.BeforeWrite, failpoint.AfterAck} {
		if h.stats.Kills.Failpoints[fp] == 0 && h.attempts[fp] < maxManyArmings {
			return true
		}
	}
	return false
}

// armedForPublish reports whether c is armed with a publisher failpoint
// that has not fired yet.
func (h *harness) armedForPublish(c *instance) bool {
	return (c.failpoint == failpoint.BeforeWrite || c.failpoint == failpoint.AfterAck) && h.stats.Kills.Failpoints[c.failpoint] == 0
}

// pickReplica returns the next victim, and whether it was steered rather
// than drawn. It is a random running replica that holds a lease, or any
// running one when none does (all of them just started), or any. While a
// publisher failpoint has not fired, though, the publisher lease must reach
// a replica armed with one before the journals run dry (a publisher
// failpoint fires only in the lease's holder, and only while it has rows to
// publish): an unarmed holder is the victim then, its lease going to one of
// the others, whose restarts are armed; an armed holder is spared.
func (h *harness) pickReplica(hd holdings) (*replica, bool) {
	if h.publishPending() && hd.publisher >= 0 {
		if r := h.replicas[hd.publisher]; r.c.running() && !h.armedForPublish(r.c) {
			return r, true
		}
	}
	var pool, running []*replica
	for _, r := range h.replicas {
		if !r.c.running() {
			continue
		}
		if h.publishPending() && hd.publisher == r.slot {
			continue
		}
		running = append(running, r)
		if hd.sources[r.slot] > 0 || hd.publisher == r.slot {
			pool = append(pool, r)
		}
	}
	if len(pool) == 0 {
		pool = running
	}
	if len(pool) == 0 {
		pool = h.replicas
	}
	return pool[h.rng.IntN(len(pool))], false
}

// killReplica SIGKILLs r's instance and starts the slot's next one; kind
// says how r was chosen, for the round line.
func (h *harness) killReplica(r *replica, hd holdings, kind string, after time.Duration) (string, error) {
	old := r.c.name
	how := h.sigkill(r.c, killRandom)
	countEnd(r)
	if h.fatal != nil {
		return "", h.fatal
	}
	if err := h.startReplica(r); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s: %s (held %s): %s after %v, restarted as %s%s",
		kind, old, hd.of(r.slot), how, after.Round(time.Millisecond), r.c.name, armedDesc(r.c)), nil
}

// pauseReplica SIGSTOPs r's instance until the other replicas took every
// lease it held over, SIGCONTs it, waits until it notices that it lost them
// (its stale writes are refused by the fence), and SIGKILLs it; the slot's
// next instance then starts. The checker shows whether anything it still
// wrote reached Kafka.
func (h *harness) pauseReplica(ctx context.Context, r *replica, hd holdings, events *[]string) (string, error) {
	victim := r.c
	ls, err := h.leases(ctx)
	if err != nil {
		return "", err
	}
	held := map[string]int64{}
	for _, role := range h.roles {
		if l, ok := ls[role]; ok && l.Live && l.Holder == victim.name {
			held[role] = l.Epoch
		}
	}
	if len(held) == 0 || !victim.running() {
		return h.killReplica(r, hd, "pause turned kill (the victim held no lease)", 0)
	}
	h.attempts["pause"]++
	if err := victim.signal(syscall.SIGSTOP); err != nil {
		return "", err
	}
	stopped := time.Now()
	h.stats.PauseRounds++
	// The others take each lease once it expired (one TTL after the last
	// renewal) and once their share allows it, which grows when the paused
	// instance's heartbeat expires too; replicas that die meanwhile are
	// started again, or the leases could have nowhere to go.
	othersHold := func(ls map[string]lease.State) bool {
		for role, epoch := range held {
			l := ls[role]
			if !l.Live || l.Holder == victim.name || l.Epoch <= epoch {
				return false
			}
		}
		return true
	}
	// Past one TTL and PostgreSQL's end of the frozen instance's open
	// transaction, what holds the takeover up is worth recording, as in
	// the single-account mode's pause rounds.
	stuckAfter := h.o.leaseTTL + idleInTxAllowance
	reported := false
	tookOver, err := poll(ctx, h.activeWithin(), pollEvery, func() (bool, error) {
		ev, err := h.reap()
		*events = append(*events, ev...)
		if err != nil {
			return false, err
		}
		ls, err := h.leases(ctx)
		if err != nil {
			return false, err
		}
		if othersHold(ls) {
			return true, nil
		}
		if !reported && time.Since(stopped) > stuckAfter {
			reported = true
			if err := h.reportStuckTakeover(ctx, victim, stopped, held, ls); err != nil {
				return false, err
			}
		}
		return false, nil
	})
	if err != nil {
		return "", err
	}
	tookOver = tookOver && victim.running()
	paused := time.Since(stopped).Round(time.Millisecond)
	if tookOver {
		h.stats.Takeovers++
	} else {
		h.note("round %d: the other replicas did not take the %d leases of paused %s over within %v", h.round, len(held), victim.name, paused)
	}

	mark := victim.p.Log().Mark()
	if err := victim.signal(syscall.SIGCONT); err != nil {
		return "", err
	}
	resumed := time.Now()
	// A resumed instance renews at once (its renewal tickers are overdue)
	// and is refused, or its next write is refused by the fence.
	var line string
	stepped, err := poll(ctx, 2*h.o.leaseTTL+30*time.Second, pollEvery, func() (bool, error) {
		for l := range strings.SplitSeq(victim.p.Log().Since(mark), "\n") {
			for _, m := range stepDownMarkers() {
				if strings.Contains(l, m) {
					line = l
					return true, nil
				}
			}
		}
		return !victim.running(), nil
	})
	if err != nil {
		return "", err
	}
	stepped = stepped && line != ""
	noticed := time.Since(resumed).Round(time.Millisecond)
	if stepped {
		h.stats.StepDowns++
	} else if tookOver {
		h.note("round %d: resumed %s logged no step-down within %v; its log since SIGCONT:\n%s", h.round, victim.name, noticed, victim.p.Log().Since(mark))
	}
	// What the others took must stay theirs: the resumed instance may not
	// win a lease back.
	if ls, err = h.leases(ctx); err != nil {
		return "", err
	}
	kept := !tookOver || othersHold(ls)
	if !kept {
		h.note("round %d: after %s resumed, a lease it held before its pause is back with it or lapsed", h.round, victim.name)
	}

	action := fmt.Sprintf("pause: %s (held %s) SIGSTOP at %s for %v", victim.name, hd.of(r.slot), clock(stopped), paused)
	if tookOver {
		action += fmt.Sprintf(", its %d leases taken over", len(held))
	}
	action += "; SIGCONT at " + clock(resumed)
	if stepped {
		action += fmt.Sprintf(", stepped down in %v", noticed)
	} else {
		action += ", NO step-down seen"
	}
	if !kept {
		action += " (a successor LOST a lease)"
	}
	old := victim.name
	how := h.sigkill(victim, killPaused)
	countEnd(r)
	if h.fatal != nil {
		return "", h.fatal
	}
	if err := h.startReplica(r); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s; %s: %s, restarted as %s%s", action, old, how, r.c.name, armedDesc(r.c)), nil
}

// stopReplica stops r's instance with SIGTERM once it is up: a SIGTERM
// before ingestd set its signal handlers up would kill it, and prove nothing.
// Its heartbeat in the instances table shows that it is running its sources,
// from which point SIGTERM stops it cleanly.
func (h *harness) stopReplica(ctx context.Context, r *replica) (string, error) {
	up, err := poll(ctx, h.activeWithin(), pollEvery, func() (bool, error) {
		if !r.c.running() {
			return true, nil
		}
		var beats bool
		err := h.env.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM instances WHERE holder = $1)`, r.c.name).Scan(&beats)
		if err != nil {
			return false, fmt.Errorf("read the heartbeat of %s: %w", r.c.name, err)
		}
		return beats, nil
	})
	if err != nil {
		return "", err
	}
	if !up {
		h.note("%s wrote no heartbeat within %v; stopping it anyway", r.c.name, h.activeWithin())
	}
	how, err := h.terminate(ctx, r.c)
	if err != nil {
		return "", err
	}
	countEnd(r)
	return how, nil
}

// reportStuckTakeover notes which leases of a paused instance are not taken
// over yet, how the instances see each other, and the sessions holding locks.
func (h *harness) reportStuckTakeover(ctx context.Context, victim *instance, stopped time.Time, held map[string]int64, ls map[string]lease.State) error {
	var missing []string
	for _, role := range slices.Sorted(maps.Keys(held)) {
		l := ls[role]
		if l.Live && l.Holder != victim.name && l.Epoch > held[role] {
			continue
		}
		missing = append(missing, fmt.Sprintf("%s (holder %q, epoch %d, live %v, expires %s)", role, l.Holder, l.Epoch, l.Live, clock(l.ExpiresAt)))
	}
	rows, err := h.env.pool.Query(ctx, `
SELECT i.holder, i.expires_at > now(), count(l.name) FILTER (WHERE l.expires_at > now() AND l.name LIKE 'source:%')
FROM instances i LEFT JOIN leases l ON l.holder = i.holder
GROUP BY i.holder, i.expires_at ORDER BY i.holder`)
	if err != nil {
		return fmt.Errorf("read the heartbeats: %w", err)
	}
	var beats []string
	for rows.Next() {
		var (
			holder string
			live   bool
			n      int
		)
		if err := rows.Scan(&holder, &live, &n); err != nil {
			rows.Close()
			return fmt.Errorf("read the heartbeats: %w", err)
		}
		if live {
			beats = append(beats, fmt.Sprintf("%s holds %d", holder, n))
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the heartbeats: %w", err)
	}
	locks, err := h.lockReport(ctx)
	if err != nil {
		return err
	}
	h.note("round %d: %v after pausing %s, %d of its leases are not taken over: %s; live heartbeats: %s; sessions holding locks in the schema:\n      %s",
		h.round, time.Since(stopped).Round(time.Millisecond), victim.name, len(missing), strings.Join(missing, ", "),
		strings.Join(beats, ", "), strings.Join(locks, "\n      "))
	return nil
}

// manyFinal disarms the replicas, waits until every journal is committed and
// published and the sources settled, records who holds what, and stops every
// replica with SIGTERM, which must exit 0. What goes wrong is appended to
// failures; only a cancelled context or a broken environment is an error.
func (h *harness) manyFinal(ctx context.Context, failures *[]string) error {
	// An armed replica could fire during the drain or while it stops, and
	// its final stop would then prove nothing about a clean exit: each one
	// is stopped gracefully (a hand-over) and started again unarmed.
	h.disarmed = true
	var events []string
	for _, r := range h.replicas {
		if !r.c.running() || r.c.failpoint == "" {
			continue
		}
		old := r.c.name
		how, err := h.stopReplica(ctx, r)
		if err != nil {
			return err
		}
		if err := h.startReplicaWith(r, "", ""); err != nil {
			return err
		}
		events = append(events, fmt.Sprintf("disarmed %s (%s), restarted as %s", old, how, r.c.name))
	}
	started := time.Now()
	// Whatever time is left, short of a reserve for the checker.
	within := 10 * time.Minute
	if dl, ok := ctx.Deadline(); ok {
		within = time.Until(dl) - 90*time.Second
	}
	within = max(within, 30*time.Second)
	var last progress
	drained, err := poll(ctx, within, 200*time.Millisecond, func() (bool, error) {
		ev, err := h.reap()
		events = append(events, ev...)
		if err != nil {
			return false, err
		}
		if last, err = h.progress(ctx); err != nil {
			return false, err
		}
		return last.drained(), nil
	})
	if err != nil {
		return err
	}
	took := time.Since(started).Round(time.Millisecond)
	if !drained {
		msg := fmt.Sprintf("the replicas did not drain within %v: the end reached in %d of %d accounts, %d rows unpublished (store says %d)",
			took, last.atEnd, last.accounts, last.backlog, last.storeBacklog)
		if len(last.halted) > 0 {
			msg += "; halted: " + strings.Join(last.halted, "; ")
		}
		*failures = append(*failures, msg)
	}
	// ingestd spreads the sources within one of each other about two TTLs
	// after an instance joins; the last restart may be recent.
	hd, settled, ev, err := h.waitSettled(ctx, 4*h.o.leaseTTL+10*time.Second)
	if err != nil {
		return err
	}
	events = append(events, ev...)
	if !settled {
		h.note("the sources had not settled within one of each other, every lease held, %v after the drain: %s", 4*h.o.leaseTTL+10*time.Second, hd)
	}
	end := &manyEnd{hold: hd, settled: settled, holders: hd.holders}
	// Every acquisition after a lease's first raised its epoch: a takeover
	// after a kill or pause, or a hand-over when the sources spread again
	// or an instance stopped cleanly.
	err = h.env.pool.QueryRow(ctx, `
SELECT coalesce(sum(epoch - 1) FILTER (WHERE name LIKE 'source:%'), 0)::bigint,
       coalesce(max(epoch) FILTER (WHERE name = $1), 0)::bigint
FROM leases`, lease.Publisher).Scan(&end.sourceAcquisitions, &end.publisherEpoch)
	if err != nil {
		return fmt.Errorf("read the lease epochs: %w", err)
	}
	h.manyEnd = end

	var stops []string
	for _, r := range h.replicas {
		how, err := h.stopReplica(ctx, r)
		if err != nil {
			return err
		}
		if r.c.class() != exitClean {
			*failures = append(*failures, fmt.Sprintf("replica %s did not exit 0 after SIGTERM: %s", r.c.name, how))
		}
		stops = append(stops, r.c.name+": "+how)
	}
	p, err := h.progress(ctx)
	if err != nil {
		return err
	}
	h.printf("final      committed=%d/%d  backlog=%d  kills=%d  drained after %v; held %s; %s%s",
		p.committed, h.o.events, p.backlog, h.stats.Kills.Total, took, hd, strings.Join(stops, ", "), joinEvents(events))
	return nil
}
