package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ingestd/ingestd/internal/child"
	"github.com/ingestd/ingestd/internal/cursor"
	"github.com/ingestd/ingestd/internal/failpoint"
	"github.com/ingestd/ingestd/internal/lease"
	"github.com/ingestd/ingestd/internal/retry"
)

// Tuning of the rounds. Deadlines are generous because the machine may be
// busy with other engineers' tests: a missed deadline only ends a round early
// (and is noted), it never decides the verdict, which is the checker's.
const (
	// killDelayMin and killDelayMax bound the random delay between an
	// instance becoming active and its SIGKILL.
	killDelayMin = 100 * time.Millisecond
	killDelayMax = 2 * time.Second
	// stopWithin bounds a graceful stop after SIGTERM: above the children's
	// INGESTD_SHUTDOWN_TIMEOUT, so a healthy shutdown is never cut short.
	childShutdownTimeout = 15 * time.Second
	stopWithin           = childShutdownTimeout + 30*time.Second
	// maxFailpointAttempts bounds the rounds spent on a failpoint that does
	// not fire (for example, once the journal is drained nothing commits).
	maxFailpointAttempts = 4
	// pollEvery is the period of every wait for a state change.
	pollEvery = 50 * time.Millisecond
)

// failpoints are the crash points every run must hit at least once.
func failpoints() []string {
	return []string{failpoint.AfterCommit, failpoint.BeforeWrite, failpoint.AfterAck}
}

// killKind is why the harness counted a SIGKILL.
type killKind int

const (
	killRandom killKind = iota
	killPaused
	killFailpoint
)

// killCounts are the SIGKILLs delivered, by kind.
type killCounts struct {
	Total  int `json:"total"`
	Random int `json:"random"`
	// Failpoints counts self-kills per failpoint name.
	Failpoints map[string]int `json:"failpoints"`
	// Paused counts instances killed after being paused past their lease
	// and resumed.
	Paused int `json:"paused_then_resumed"`
}

// runStats is what the rounds did.
type runStats struct {
	Rounds      int
	DualRounds  int
	PauseRounds int
	// Takeovers counts pause rounds in which the standby took every lease of
	// the paused instance over.
	Takeovers int
	// StepDowns counts resumed instances that logged losing their lease.
	StepDowns       int
	Starts          int
	Kills           killCounts
	FailpointMisses int
	// Unexpected describes every instance that ended in a way nobody caused
	// (a crash, a non-zero exit after SIGTERM, a stop that timed out).
	Unexpected []string
	Notes      []string
}

// harness runs the rounds and the final instance, and checks the result.
type harness struct {
	o     options
	bin   string
	env   *environment
	out   io.Writer
	rng   *rand.Rand
	fleet fleet

	// childEnv is every instance's configuration; child.Start adds the
	// harness's environment without the developer's INGESTD_* variables.
	childEnv []string
	// roles are the leases: every account's source, then the publisher.
	roles []string

	// fatal is set when an instance rejects its configuration (exit status
	// 2): no later round could do better, so the run stops.
	fatal error

	round      int
	attempts   map[string]int
	plainDuals int
	stats      runStats

	// replicas are the many-accounts mode's slots (many.go); disarmed
	// stops arming their starts once the final drain began; manyEnd is
	// what the final drain saw; pauseAt are the kill counts at which the
	// pause kills come.
	replicas []*replica
	disarmed bool
	manyEnd  *manyEnd
	pauseAt  []int
}

func newHarness(o options, bin string, env *environment, out io.Writer) *harness {
	h := &harness{
		o:   o,
		bin: bin,
		env: env,
		out: out,
		// The harness's choices come from their own stream of the seed, so
		// that they do not depend on the simulator's use of it.
		rng:      rand.New(rand.NewPCG(uint64(o.seed), 0x6368616f73)),
		attempts: map[string]int{},
		stats:    runStats{Kills: killCounts{Failpoints: map[string]int{}}},
	}
	for _, fp := range failpoints() {
		h.stats.Kills.Failpoints[fp] = 0
	}
	// The first account is described by the INGESTD_YANDEX_* settings; in
	// the many-accounts mode the others come from the sources file, whose
	// entries default to the same settings.
	first := env.accounts[0]
	h.childEnv = []string{
		"INGESTD_DATABASE_URL=" + env.dsn,
		"INGESTD_KAFKA_TOPIC=" + topicName,
		"INGESTD_KAFKA_PARTITIONS=" + strconv.Itoa(partitions),
		"INGESTD_YANDEX_TOKEN=" + first.token,
		"INGESTD_YANDEX_BASE_URL=" + env.simURL,
		"INGESTD_YANDEX_ACCOUNT=" + first.name,
		"INGESTD_YANDEX_PAGE_LIMIT=" + strconv.Itoa(o.pageLimit),
		"INGESTD_YANDEX_POLL_INTERVAL=" + pollInterval,
		"INGESTD_LEASE_TTL=" + o.leaseTTL.String(),
		// ingestd requires the lease to outlive a Kafka write, so that a
		// successor takes over only after a dead publisher's last write
		// settled; the in-process broker answers in milliseconds.
		"INGESTD_KAFKA_WRITE_TIMEOUT=" + (o.leaseTTL / 2).String(),
		"INGESTD_HTTP_ADDR=127.0.0.1:0",
		"INGESTD_BACKOFF_INITIAL=50ms",
		"INGESTD_BACKOFF_MAX=500ms",
		"INGESTD_LOG_LEVEL=warn",
		"INGESTD_SHUTDOWN_TIMEOUT=" + childShutdownTimeout.String(),
	}
	h.childEnv = append(h.childEnv, env.kafkaEnv...)
	h.childEnv = append(h.childEnv, env.sourcesEnv...)
	for _, a := range env.accounts {
		h.roles = append(h.roles, lease.Source(a.sourceID))
		a.cursorPos = make(map[string]int, a.events+1)
		for n := 0; n <= a.events; n++ {
			a.cursorPos[a.y.CursorAfter(n)] = n
		}
		a.wantCursor = a.y.CursorAfter(a.events)
	}
	h.roles = append(h.roles, lease.Publisher)
	return h
}

// pollInterval is INGESTD_YANDEX_POLL_INTERVAL of every source: short, so
// that a source at the end of its growing journal asks again soon.
const pollInterval = "100ms"

// available is how many journal entries the accounts serve now, together.
func (h *harness) available() int {
	n := 0
	for _, a := range h.env.accounts {
		n += a.y.Available()
	}
	return n
}

func (h *harness) printf(format string, args ...any) {
	_, _ = fmt.Fprintf(h.out, format+"\n", args...)
}

func (h *harness) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	h.stats.Notes = append(h.stats.Notes, s)
	h.printf("  note: %s", s)
}

// run plays rounds until enough kills happened, drains with a final
// instance, and checks the topic. Only a cancelled context or a broken
// environment is an error here; what the checker finds is in the summary.
func (h *harness) run(ctx context.Context, started time.Time) (*summary, error) {
	if h.o.many() {
		h.printf("ingestd chaos, many accounts: %d Yandex accounts at one address (1 from INGESTD_YANDEX_*, %d from a sources file), %d events over %d claims split among them (%d available at start, the rest appended during the rounds), %d replicas at once, seed %d, at least %d SIGKILLs of random replicas (failpoint self-kills on top, %d of them after a pause past the leases), lease TTL %v, page limit %d",
			len(h.env.accounts), len(h.env.accounts)-1, h.o.events, h.o.claims, h.o.backlog, h.o.replicas, h.o.seed, h.o.kills, h.o.pauses, h.o.leaseTTL, h.o.pageLimit)
	} else {
		h.printf("ingestd chaos: %d events over %d claims (%d available at start, the rest appended during the rounds), seed %d, at least %d SIGKILLs, lease TTL %v, page limit %d, dual rate %.2f",
			h.o.events, h.o.claims, h.o.backlog, h.o.seed, h.o.kills, h.o.leaseTTL, h.o.pageLimit, h.o.dualRate)
	}
	if h.o.cluster {
		h.printf("cluster mode: %d brokers (%s) over TLS with SASL %s; every partition's leader elected anew every %v on average, a broker removed (during a produce request to it, its connections dropped) every %v on average and added back on the same node id and port after %v..%v",
			clusterBrokers, strings.Join(h.env.kafkaAddrs, ", "), saslMechanism, h.o.moveEvery, h.o.removeEvery, brokerDownMin, brokerDownMax)
		// The brokers churn through the rounds and the final drain; the
		// checker reads a settled cluster, so that what it finds is
		// ingestd's doing.
		h.env.churn.start()
	}
	// The rounds get 60% of the time at most, so that the final drain and
	// the checker still run (and report) when the rounds are slow.
	roundsUntil := started.Add(h.o.timeout * 6 / 10)
	rounds, final := h.rounds, h.final
	if h.o.many() {
		rounds, final = h.manyRounds, h.manyFinal
	}
	if err := rounds(ctx, roundsUntil); err != nil {
		return nil, err
	}
	var finalFailures []string
	if err := final(ctx, &finalFailures); err != nil {
		return nil, err
	}
	if h.env.churn != nil {
		h.env.churn.stop()
		h.printChurn()
	}
	sum, err := h.check(ctx)
	if err != nil {
		return nil, err
	}
	sum.Failures = append(finalFailures, sum.Failures...)
	h.judge(sum)
	sum.ElapsedSeconds = time.Since(started).Seconds()
	return sum, nil
}

// enough reports whether the rounds may stop: enough kills, at least half
// the journal committed, every failpoint hit, and (when dual rounds are
// asked for) at least one dual and one pause round.
func (h *harness) enough(p progress) bool {
	if h.stats.Kills.Total < h.o.kills || p.committed*2 < int64(h.o.events) {
		return false
	}
	for _, fp := range failpoints() {
		if h.stats.Kills.Failpoints[fp] == 0 && h.attempts[fp] < maxFailpointAttempts {
			return false
		}
	}
	if h.o.dualRate > 0 && (h.stats.PauseRounds == 0 || h.plainDuals == 0) {
		return false
	}
	return true
}

// maxRounds bounds the rounds whatever happens, so that a failpoint that
// never fires cannot keep the harness busy until its timeout.
func (h *harness) maxRounds() int { return 4*h.o.kills + 40 }

// pace sets the journal's append rate so that what is not yet available
// arrives over the kills still to deliver, at the pace the rounds have kept
// so far: kills then keep landing while pages are fetched, committed and
// published, rather than on an idle pipeline once the journal is drained.
func (h *harness) pace(roundsStarted time.Time) {
	if h.o.backlog >= h.o.events {
		return
	}
	// The measured seconds per kill, with the assumption weighing as much
	// as a few kills: a single early self-kill after 80ms must not release
	// the whole journal at once. In the single-account mode a kill costs
	// at least a lease TTL anyway (the successor waits for the dead
	// holder's lease to expire); the many-accounts mode kills a replica
	// while the others carry on, so only its least delay bounds a kill.
	const priorKills = 3
	k := float64(h.killsCounted())
	perKill := (time.Since(roundsStarted).Seconds() + priorKills*assumedSecondsPerKill) / (k + priorKills)
	least := h.o.leaseTTL
	if h.o.many() {
		least = manyKillDelayMin
	}
	perKill = max(perKill, least.Seconds())
	killsLeft := max(h.o.kills-h.killsCounted(), 1)
	if h.o.many() {
		// A failpoint that has not fired needs rows to commit and
		// publish: the journals must outlast the kills that arm it.
		for _, fp := range failpoints() {
			if h.stats.Kills.Failpoints[fp] == 0 && h.attempts[fp] < maxManyArmings {
				killsLeft += 2
			}
		}
	}
	for _, a := range h.env.accounts {
		left := a.events - a.y.Available()
		if left <= 0 {
			continue
		}
		// The floor keeps the journal moving when the kill target is
		// reached but half the journal is not committed yet; it is the
		// account's share of 20 entries a second.
		floor := 20 * float64(a.events) / float64(h.o.events)
		rate := max(float64(left)/(float64(killsLeft)*perKill), floor)
		a.y.SetRate(min(rate, maxSimRate))
	}
}

// maxSimRate is the simulator's highest append rate: at it, every remaining
// entry is available at once.
const maxSimRate = 1e9

// releaseJournal makes every remaining entry of every account available, for
// the final instances to drain.
func (h *harness) releaseJournal() {
	for _, a := range h.env.accounts {
		if a.y.Available() < a.events {
			a.y.SetRate(maxSimRate)
		}
	}
}

func (h *harness) rounds(ctx context.Context, until time.Time) error {
	defer h.releaseJournal()
	started := time.Now()
	for {
		p, err := h.progress(ctx)
		if err != nil {
			return err
		}
		if h.enough(p) {
			return nil
		}
		if time.Now().After(until) {
			h.note("the rounds used up their share of -timeout after %d rounds; going on to the final instance", h.round)
			return nil
		}
		if h.round >= h.maxRounds() {
			h.note("stopping after %d rounds", h.round)
			return nil
		}
		h.round++
		h.pace(started)
		pl := h.plan()
		r, err := h.play(ctx, pl)
		if err != nil {
			return err
		}
		h.stats.Rounds++
		if r.instances > 1 {
			h.stats.DualRounds++
		}
		p, err = h.progress(ctx)
		if err != nil {
			return err
		}
		h.printf("round %3d  instances=%d  committed=%d/%d  available=%d  backlog=%d  kills=%d%s  %s",
			h.round, r.instances, p.committed, h.o.events, h.available(), p.backlog, h.stats.Kills.Total, h.churnCounts(), r.action)
		h.printChurn()
		if h.fatal != nil {
			return h.fatal
		}
	}
}

// churnCounts is the cluster mode's part of a round line.
func (h *harness) churnCounts() string {
	if h.env.churn == nil {
		return ""
	}
	st := h.env.churn.counts()
	return fmt.Sprintf("  shuffles=%d  removals=%d  not-leader=%d", st.Shuffles, st.Removals, h.env.produces.refusedBatches())
}

// printChurn prints the churner's events since the last call: the broker
// removals and returns, with wall-clock times to line up with the rounds.
func (h *harness) printChurn() {
	if h.env.churn == nil {
		return
	}
	for _, e := range h.env.churn.takeEvents() {
		h.printf("  %s", e)
	}
}

// writeFailureRE matches a partition write that ingestd's publisher logged
// as failed, with its outcome (internal/kafkaconn.Outcome): "moved" (its
// leader moved, and the re-sends on fresh metadata did not reach the new
// one), "unknown" (it may have landed: the partition is read back) or
// "refused".
var writeFailureRE = regexp.MustCompile(`partition \d+: (moved|unknown|refused): `)

// loggedWriteFailures counts the failed partition writes in the kept logs
// of every instance, by outcome. It is what the harness can tell of
// ingestd_publish_unknown_writes_total and its kin without scraping each
// short-lived process's metrics; a log longer than instanceLogBytes is
// counted in part.
func (h *harness) loggedWriteFailures() map[string]int {
	counts := map[string]int{"moved": 0, "unknown": 0, "refused": 0}
	h.fleet.mu.Lock()
	defer h.fleet.mu.Unlock()
	for _, c := range h.fleet.instances {
		for _, m := range writeFailureRE.FindAllStringSubmatch(c.p.Log().String(), -1) {
			counts[m[1]]++
		}
	}
	return counts
}

// roundKind is what a round does.
type roundKind int

const (
	// roundRandom: SIGKILL an active instance after a random delay.
	roundRandom roundKind = iota
	// roundFailpoint: arm a failpoint and wait for the instance to kill
	// itself there.
	roundFailpoint
	// roundPause: two instances; SIGSTOP the active one past its lease,
	// SIGCONT it once the other took over, then SIGKILL it.
	roundPause
)

type plan struct {
	kind  roundKind
	dual  bool
	point string
}

type roundResult struct {
	instances int
	action    string
}

// plan picks the next round. The failpoints come first, while the journal
// still has pages to commit and the outbox rows to publish, then one pause
// round and one plain dual round; after that the mix is random.
func (h *harness) plan() plan {
	for _, fp := range failpoints() {
		if h.stats.Kills.Failpoints[fp] == 0 && h.attempts[fp] < maxFailpointAttempts {
			return plan{kind: roundFailpoint, point: fp, dual: h.rng.Float64() < h.o.dualRate}
		}
	}
	if h.o.dualRate > 0 && h.stats.PauseRounds == 0 && h.attempts["pause"] < maxFailpointAttempts {
		return plan{kind: roundPause, dual: true}
	}
	if h.o.dualRate > 0 && h.plainDuals == 0 {
		return plan{kind: roundRandom, dual: true}
	}
	fps := failpoints()
	if h.rng.Float64() < h.o.dualRate {
		switch x := h.rng.Float64(); {
		case x < 0.3:
			return plan{kind: roundPause, dual: true}
		case x < 0.55:
			return plan{kind: roundFailpoint, dual: true, point: fps[h.rng.IntN(len(fps))]}
		default:
			return plan{kind: roundRandom, dual: true}
		}
	}
	if h.rng.Float64() < 0.35 {
		return plan{kind: roundFailpoint, point: fps[h.rng.IntN(len(fps))]}
	}
	return plan{kind: roundRandom}
}

func (h *harness) play(ctx context.Context, p plan) (roundResult, error) {
	switch p.kind {
	case roundFailpoint:
		return h.playFailpoint(ctx, p.point, p.dual)
	case roundPause:
		return h.playPause(ctx)
	default:
		return h.playRandom(ctx, p.dual)
	}
}

// instanceName is the INGESTD_INSTANCE_ID of the i-th instance of the
// current round.
func (h *harness) instanceName(i int) string {
	return fmt.Sprintf("chaos-%03d%c", h.round, 'a'+i)
}

// start runs the ingestd binary. spec is INGESTD_FAILPOINTS ("" for none)
// and point the failpoint it arms. The fleet kills it on every exit path of
// the harness, and the kernel does should the harness itself be SIGKILLed.
func (h *harness) start(name, point, spec string) (*instance, error) {
	env := append(slices.Clip(h.childEnv), "INGESTD_INSTANCE_ID="+name)
	if spec != "" {
		env = append(env, "INGESTD_FAILPOINTS="+spec)
	}
	p, err := child.Start(h.bin, child.Options{Env: env, LogBytes: instanceLogBytes})
	if err != nil {
		return nil, fmt.Errorf("ingestd %s: %w", name, err)
	}
	c := &instance{name: name, failpoint: point, p: p, started: time.Now()}
	h.fleet.add(c)
	h.stats.Starts++
	return c, nil
}

// startRound starts one or two instances, the second after a short random
// stagger so that they race for the leases in both orders.
func (h *harness) startRound(ctx context.Context, n int, point, spec string) ([]*instance, error) {
	var cs []*instance
	for i := range n {
		if i > 0 {
			if err := sleep(ctx, h.randDuration(0, 500*time.Millisecond)); err != nil {
				return cs, err
			}
		}
		c, err := h.start(h.instanceName(i), point, spec)
		if err != nil {
			return cs, err
		}
		cs = append(cs, c)
	}
	return cs, nil
}

func (h *harness) randDuration(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(h.rng.Int64N(int64(hi-lo)+1))
}

// activeWithin bounds the wait for an instance to take its leases: a
// SIGKILLed predecessor blocks them for one TTL, one frozen inside a
// transaction until PostgreSQL ends its session (ingestd sets
// idle_in_transaction_session_timeout), and a busy machine may take a while
// to start a process.
func (h *harness) activeWithin() time.Duration { return 3*h.o.leaseTTL + 30*time.Second }

// killsCounted is the number of kills that count against -kills: every
// SIGKILL in the single-account modes; in the many-accounts mode the ones the
// harness sent to a random replica (after a pause or not), since the
// failpoints there fire on top of them, as often as the replicas' starts are
// armed.
func (h *harness) killsCounted() int {
	if h.o.many() {
		return h.stats.Kills.Random + h.stats.Kills.Paused
	}
	return h.stats.Kills.Total
}

// countKill records a SIGKILL.
func (h *harness) countKill(kind killKind, c *instance) {
	h.stats.Kills.Total++
	switch kind {
	case killRandom:
		h.stats.Kills.Random++
	case killPaused:
		h.stats.Kills.Paused++
	case killFailpoint:
		h.stats.Kills.Failpoints[c.failpoint]++
	}
}

// sigkill kills c and accounts for how it ended; it returns a description
// for the round line.
func (h *harness) sigkill(c *instance, kind killKind) string {
	if c.kill() {
		h.countKill(kind, c)
		c.outcome = "SIGKILL"
		c.accounted = true
		return c.outcome
	}
	return h.settle(c)
}

// settle accounts for an instance that ended without the harness's SIGKILL: a
// failpoint's self-kill, a clean exit after SIGTERM, or something
// unexpected.
func (h *harness) settle(c *instance) string {
	if c.accounted {
		return c.outcome
	}
	c.accounted = true
	switch c.class() {
	case exitSelfKill:
		h.countKill(killFailpoint, c)
		c.outcome = "killed itself at " + c.failpoint
	case exitClean:
		c.outcome = "SIGTERM, exit 0"
	case exitHarnessKill:
		c.outcome = "SIGKILL"
	default:
		if ws, ok := c.waitStatus(); ok && ws.Exited() && ws.ExitStatus() == 2 && h.fatal == nil {
			h.fatal = fmt.Errorf("ingestd rejected the harness's configuration: %s", c.describe())
		}
		h.stats.Unexpected = append(h.stats.Unexpected, c.describe())
		c.outcome = "UNEXPECTED EXIT (" + c.status() + ")"
		h.printf("  unexpected exit: %s", c.describe())
	}
	return c.outcome
}

// terminate stops c with SIGTERM; anything but exit status 0 within
// stopWithin is unexpected.
func (h *harness) terminate(ctx context.Context, c *instance) (string, error) {
	if !c.running() {
		return h.settle(c), nil
	}
	c.sentTerm = true
	err := c.p.Stop(ctx, stopWithin)
	if late := (*child.StopTimeoutError)(nil); errors.As(err, &late) {
		c.accounted = true
		c.outcome = fmt.Sprintf("UNEXPECTED: no exit within %v of SIGTERM (then SIGKILLed)", late.Within)
		h.stats.Unexpected = append(h.stats.Unexpected, c.outcome+": "+c.describe())
		return c.outcome, nil
	}
	if err != nil {
		return "", fmt.Errorf("stop %s: %w", c.name, err)
	}
	return h.settle(c), nil
}

// end finishes a surviving instance: SIGKILL or SIGTERM, half and half, so
// that graceful hand-overs are exercised between the crashes.
func (h *harness) end(ctx context.Context, c *instance) (string, error) {
	if !c.running() {
		return h.settle(c), nil
	}
	if h.rng.IntN(2) == 0 {
		return h.sigkill(c, killRandom), nil
	}
	return h.terminate(ctx, c)
}

// leases returns the lease table by role name.
func (h *harness) leases(ctx context.Context) (map[string]lease.State, error) {
	ls, err := h.env.store.Leases.List(ctx)
	if err != nil {
		return nil, err
	}
	m := make(map[string]lease.State, len(ls))
	for _, l := range ls {
		m[l.Name] = l
	}
	return m, nil
}

// waitActive waits until every role's lease is live and held by one of cs,
// and returns who holds what. It gives up (returning what it saw) after
// activeWithin, or when none of cs runs any more.
func (h *harness) waitActive(ctx context.Context, cs []*instance) (map[string]*instance, error) {
	var holders map[string]*instance
	_, err := poll(ctx, h.activeWithin(), pollEvery, func() (bool, error) {
		holders = map[string]*instance{}
		if !slices.ContainsFunc(cs, (*instance).running) {
			return true, nil
		}
		ls, err := h.leases(ctx)
		if err != nil {
			return false, err
		}
		for _, role := range h.roles {
			l, ok := ls[role]
			if !ok || !l.Live {
				continue
			}
			for _, c := range cs {
				if c.name == l.Holder && c.running() {
					holders[role] = c
				}
			}
		}
		return len(holders) == len(h.roles), nil
	})
	return holders, err
}

// describeHolders is "a holds source+publisher" for round lines.
func (h *harness) describeHolders(holders map[string]*instance) string {
	if len(holders) == 0 {
		return "no lease taken"
	}
	by := map[*instance][]string{}
	var order []*instance
	for _, role := range h.roles {
		if c := holders[role]; c != nil {
			if by[c] == nil {
				order = append(order, c)
			}
			by[c] = append(by[c], shortRole(role))
		}
	}
	var parts []string
	for _, c := range order {
		parts = append(parts, c.name+" holds "+strings.Join(by[c], "+"))
	}
	if len(holders) < len(h.roles) {
		parts = append(parts, "a lease not taken in time")
	}
	return strings.Join(parts, ", ")
}

func shortRole(role string) string {
	if strings.HasPrefix(role, "source:") {
		return "source"
	}
	return role
}

// pickHolder returns a random instance among those holding a lease, or among
// all of cs when none does, so that a kill rarely hits an idle standby.
func (h *harness) pickHolder(cs []*instance, holders map[string]*instance) *instance {
	var pool []*instance
	for _, c := range cs {
		for _, hc := range holders {
			if hc == c && c.running() {
				pool = append(pool, c)
				break
			}
		}
	}
	if len(pool) == 0 {
		pool = cs
	}
	return pool[h.rng.IntN(len(pool))]
}

// playRandom: one or two instances; once they hold the leases, SIGKILL a
// holder after a random delay. With two, the survivor takes over (after the
// TTL) and is then killed or stopped.
func (h *harness) playRandom(ctx context.Context, dual bool) (roundResult, error) {
	n := 1
	if dual {
		n = 2
		h.plainDuals++
	}
	cs, err := h.startRound(ctx, n, "", "")
	if err != nil {
		return roundResult{}, err
	}
	holders, err := h.waitActive(ctx, cs)
	if err != nil {
		return roundResult{}, err
	}
	d := h.randDuration(killDelayMin, killDelayMax)
	if err := sleep(ctx, d); err != nil {
		return roundResult{}, err
	}
	victim := h.pickHolder(cs, holders)
	action := fmt.Sprintf("random: %s; %s: %s after %v", h.describeHolders(holders), victim.name, h.sigkill(victim, killRandom), d.Round(time.Millisecond))
	rest, err := h.finishSurvivors(ctx, cs, victim)
	if err != nil {
		return roundResult{}, err
	}
	return roundResult{instances: n, action: action + rest}, nil
}

// finishSurvivors finishes every instance of cs but the one killed, and
// returns what happened to each, every entry after "; ".
func (h *harness) finishSurvivors(ctx context.Context, cs []*instance, killed *instance) (string, error) {
	var out strings.Builder
	for _, c := range cs {
		if c == killed {
			continue
		}
		s, err := h.finishSurvivor(ctx, c)
		if err != nil {
			return "", err
		}
		out.WriteString("; " + s)
	}
	return out.String(), nil
}

// finishSurvivor lets a surviving instance take the leases over, run for a
// random while, and then ends it.
func (h *harness) finishSurvivor(ctx context.Context, c *instance) (string, error) {
	if !c.running() {
		return c.name + ": " + h.settle(c), nil
	}
	started := time.Now()
	holders, err := h.waitActive(ctx, []*instance{c})
	if err != nil {
		return "", err
	}
	took := time.Since(started).Round(time.Millisecond)
	if !c.running() {
		return fmt.Sprintf("%s: %s after %v", c.name, h.settle(c), took), nil
	}
	d := h.randDuration(killDelayMin, killDelayMax)
	if err := sleep(ctx, d); err != nil {
		return "", err
	}
	how, err := h.end(ctx, c)
	if err != nil {
		return "", err
	}
	if len(holders) < len(h.roles) {
		return fmt.Sprintf("%s: did not take every lease within %v (%s); %s", c.name, took, h.describeHolders(holders), how), nil
	}
	return fmt.Sprintf("%s: took over in %v, %s after %v", c.name, took, how, d.Round(time.Millisecond)), nil
}

// playFailpoint arms point on one instance (or two, each of which hits it
// only while it holds the lease) and waits for it to kill itself there.
func (h *harness) playFailpoint(ctx context.Context, point string, dual bool) (roundResult, error) {
	h.attempts[point]++
	nth := 1 + h.rng.IntN(5)
	if h.attempts[point] > 1 && h.stats.Kills.Failpoints[point] == 0 {
		// An earlier attempt did not fire: the journal or the outbox may be
		// running dry, so fire at the first opportunity.
		nth = 1
	}
	spec := point + "=" + strconv.Itoa(nth)
	n := 1
	if dual {
		n = 2
	}
	cs, err := h.startRound(ctx, n, point, spec)
	if err != nil {
		return roundResult{}, err
	}
	within := h.activeWithin()
	first, err := firstExit(ctx, cs, within)
	if err != nil {
		return roundResult{}, err
	}
	if first == nil {
		h.stats.FailpointMisses++
		var parts []string
		for _, c := range cs {
			parts = append(parts, c.name+": "+h.sigkill(c, killRandom))
		}
		return roundResult{instances: n, action: fmt.Sprintf("failpoint %s did not fire within %v; %s", spec, within, strings.Join(parts, ", "))}, nil
	}
	action := fmt.Sprintf("failpoint %s: %s %s after %v", spec, first.name, h.settle(first), time.Since(first.started).Round(time.Millisecond))
	rest, err := h.finishSurvivors(ctx, cs, first)
	if err != nil {
		return roundResult{}, err
	}
	return roundResult{instances: n, action: action + rest}, nil
}

// stepDownMarkers are the log texts of an instance giving a lease up after
// it was taken over (internal/lease) or of a write refused by its fence.
func stepDownMarkers() []string {
	return []string{"stepping down", "standing by", "fenced"}
}

// playPause: two instances; SIGSTOP a lease holder until the other took its
// leases over, SIGCONT it, wait until it notices that it lost them (its
// stale writes are refused by the fence), and SIGKILL it. The checker then
// shows whether anything it still wrote reached Kafka.
func (h *harness) playPause(ctx context.Context) (roundResult, error) {
	h.attempts["pause"]++
	cs, err := h.startRound(ctx, 2, "", "")
	if err != nil {
		return roundResult{}, err
	}
	holders, err := h.waitActive(ctx, cs)
	if err != nil {
		return roundResult{}, err
	}
	if len(holders) == 0 || !cs[0].running() || !cs[1].running() {
		var parts []string
		for _, c := range cs {
			parts = append(parts, c.name+": "+h.sigkill(c, killRandom))
		}
		return roundResult{instances: 2, action: "pause: not both running with a lease taken; " + strings.Join(parts, ", ")}, nil
	}
	if err := sleep(ctx, h.randDuration(killDelayMin, time.Second)); err != nil {
		return roundResult{}, err
	}
	victim := h.pickHolder(cs, holders)
	other := cs[0]
	if other == victim {
		other = cs[1]
	}
	ls, err := h.leases(ctx)
	if err != nil {
		return roundResult{}, err
	}
	held := map[string]int64{}
	for _, role := range h.roles {
		if l, ok := ls[role]; ok && l.Live && l.Holder == victim.name {
			held[role] = l.Epoch
		}
	}
	if err := victim.signal(syscall.SIGSTOP); err != nil {
		return roundResult{}, err
	}
	stopped := time.Now()
	h.stats.PauseRounds++

	// The standby takes each lease once it expired: one TTL after the last
	// renewal, plus its retry interval, or once PostgreSQL ended the frozen
	// instance's open transaction. Past both, what holds the takeover up is
	// worth recording.
	stuckAfter := h.o.leaseTTL + idleInTxAllowance
	reported := false
	tookOver, err := poll(ctx, h.activeWithin(), pollEvery, func() (bool, error) {
		if !other.running() {
			return true, nil
		}
		if !reported && time.Since(stopped) > stuckAfter {
			reported = true
			lines, err := h.lockReport(ctx)
			if err != nil {
				return false, err
			}
			h.note("round %d: %s still has not taken over %v after pausing %s; sessions holding locks in the schema:\n      %s",
				h.round, other.name, stuckAfter, victim.name, strings.Join(lines, "\n      "))
		}
		ls, err := h.leases(ctx)
		if err != nil {
			return false, err
		}
		for role, epoch := range held {
			l := ls[role]
			if !l.Live || l.Holder != other.name || l.Epoch <= epoch {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return roundResult{}, err
	}
	tookOver = tookOver && other.running() && len(held) > 0
	tookAt := time.Now()
	paused := time.Since(stopped).Round(time.Millisecond)
	if tookOver {
		h.stats.Takeovers++
	} else {
		h.note("round %d: %s did not take over the leases of paused %s within %v", h.round, other.name, victim.name, paused)
	}

	mark := victim.p.Log().Mark()
	if err := victim.signal(syscall.SIGCONT); err != nil {
		return roundResult{}, err
	}
	resumed := time.Now()
	// A resumed instance renews at once (its renewal ticker is overdue) and
	// is refused, or its next write is refused by the fence.
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
		return roundResult{}, err
	}
	stepped = stepped && line != ""
	noticed := time.Since(resumed).Round(time.Millisecond)
	if stepped {
		h.stats.StepDowns++
	} else if tookOver {
		h.note("round %d: resumed %s logged no step-down within %v; its log since SIGCONT:\n%s", h.round, victim.name, noticed, victim.p.Log().Since(mark))
	}

	// The successor must still hold what it took: the resumed instance may
	// not win it back.
	ls, err = h.leases(ctx)
	if err != nil {
		return roundResult{}, err
	}
	kept := true
	for role := range held {
		if l := ls[role]; tookOver && l.Holder != other.name {
			kept = false
			h.note("round %d: after %s resumed, lease %s is held by %q (epoch %d), not by its successor %s", h.round, victim.name, role, l.Holder, l.Epoch, other.name)
		}
	}

	var roles []string
	for _, role := range h.roles {
		if _, ok := held[role]; ok {
			roles = append(roles, shortRole(role))
		}
	}
	// Wall-clock times, to line up with the record timestamps in the
	// checker's evidence.
	action := fmt.Sprintf("pause: %s (%s) SIGSTOP at %s for %v", victim.name, strings.Join(roles, "+"), clock(stopped), paused)
	if tookOver {
		action += ", " + other.name + " took over (seen at " + clock(tookAt) + ")"
	}
	action += "; SIGCONT at " + clock(resumed)
	switch {
	case stepped:
		action += fmt.Sprintf(", stepped down in %v", noticed)
	default:
		action += ", NO step-down seen"
	}
	if !kept {
		action += " (successor LOST a lease)"
	}
	action += "; " + victim.name + ": " + h.sigkill(victim, killPaused)
	s, err := h.finishSurvivor(ctx, other)
	if err != nil {
		return roundResult{}, err
	}
	return roundResult{instances: 2, action: action + "; " + s}, nil
}

// idleInTxAllowance is ingestd's idle_in_transaction_session_timeout (5s)
// plus slack: by then PostgreSQL has ended any transaction a frozen instance
// left open, and its locks are gone.
const idleInTxAllowance = 8 * time.Second

// lockReport lists the sessions holding or awaiting locks on the run's
// tables, with what they are doing and who blocks them.
func (h *harness) lockReport(ctx context.Context) ([]string, error) {
	rows, err := h.env.pool.Query(ctx, `
SELECT a.pid, coalesce(a.state, ''), coalesce(a.wait_event_type || ':' || a.wait_event, ''),
       coalesce(to_char(a.xact_start, 'HH24:MI:SS.MS'), ''), coalesce(to_char(a.state_change, 'HH24:MI:SS.MS'), ''),
       pg_blocking_pids(a.pid)::text,
       string_agg(DISTINCT c.relname || ' ' || l.mode || CASE WHEN l.granted THEN '' ELSE ' (waiting)' END, ', '),
       left(regexp_replace(coalesce(a.query, ''), '\s+', ' ', 'g'), 160)
FROM pg_locks l
JOIN pg_class c ON c.oid = l.relation
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_stat_activity a ON a.pid = l.pid
WHERE n.nspname = $1 AND a.pid <> pg_backend_pid()
GROUP BY 1, 2, 3, 4, 5, 6, 8
ORDER BY 1`, h.env.schema)
	if err != nil {
		return nil, fmt.Errorf("list lock holders: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var (
			pid                                            int32
			state, wait, xactStart, stateChange, blockedBy string
			locks, query                                   string
		)
		if err := rows.Scan(&pid, &state, &wait, &xactStart, &stateChange, &blockedBy, &locks, &query); err != nil {
			return nil, fmt.Errorf("list lock holders: %w", err)
		}
		out = append(out, fmt.Sprintf("pid %d %s (wait %s) xact since %s, state since %s, blocked by %s; locks: %s; query: %s",
			pid, state, wait, xactStart, stateChange, blockedBy, locks, query))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list lock holders: %w", err)
	}
	if len(out) == 0 {
		out = append(out, "(none)")
	}
	return out, nil
}

// final runs one instance without failpoints until the whole journal is
// committed and published, then stops it with SIGTERM, which must exit 0.
// What goes wrong is appended to failures; only a cancelled context is an
// error.
func (h *harness) final(ctx context.Context, failures *[]string) error {
	c, err := h.start("chaos-final", "", "")
	if err != nil {
		return err
	}
	started := time.Now()
	// The final instance must take both roles over before its drain counts:
	// the journal may well be committed and published already, and a
	// SIGTERM before it even set up its signal handlers would prove
	// nothing (and kill it).
	holders, err := h.waitActive(ctx, []*instance{c})
	if err != nil {
		return err
	}
	if c.running() && len(holders) < len(h.roles) {
		*failures = append(*failures, fmt.Sprintf("the final instance did not take its leases within %v: %s", h.activeWithin(), h.describeHolders(holders)))
	}
	// Whatever time is left, short of a reserve for the checker.
	within := 10 * time.Minute
	if dl, ok := ctx.Deadline(); ok {
		within = time.Until(dl) - 90*time.Second
	}
	within = max(within, 30*time.Second)
	var last progress
	drained, err := poll(ctx, within, 200*time.Millisecond, func() (bool, error) {
		if !c.running() {
			return true, nil
		}
		p, err := h.progress(ctx)
		if err != nil {
			return false, err
		}
		last = p
		return p.drained(), nil
	})
	if err != nil {
		return err
	}
	took := time.Since(started).Round(time.Millisecond)
	if !c.running() {
		*failures = append(*failures, "the final instance exited on its own: "+h.settle(c))
		if h.fatal != nil {
			return h.fatal
		}
		h.printf("final      instances=1  the final instance exited on its own after %v: %s", took, c.describe())
		return nil
	}
	if !drained {
		*failures = append(*failures, fmt.Sprintf("the final instance did not drain within %v: cursor at %s of %d entries, %d rows unpublished (store says %d)",
			took, h.describePos(last), h.o.events, last.backlog, last.storeBacklog))
	}
	how, err := h.terminate(ctx, c)
	if err != nil {
		return err
	}
	if c.class() != exitClean {
		*failures = append(*failures, "the final instance did not exit 0 after SIGTERM: "+how)
	}
	p, err := h.progress(ctx)
	if err != nil {
		return err
	}
	h.printf("final      instances=1  committed=%d/%d  backlog=%d  kills=%d%s  cursor at %s after %v; %s",
		p.committed, h.o.events, p.backlog, h.stats.Kills.Total, h.churnCounts(), h.describePos(p), took, how)
	return nil
}

// progress is the stored state of the pipeline.
type progress struct {
	// committed is events_total of every source together: events
	// inserted.
	committed int64
	// cursor is the first account's stored cursor (the single-account
	// mode's only one); atEnd counts the accounts whose stored cursor is
	// after their last entry, of accounts.
	cursor   string
	atEnd    int
	accounts int
	// halted lists the sources that halted, with their reasons: none
	// should, since the simulator serves no bad cursor or token.
	halted []string
	// backlog counts outbox rows above their partition's watermark;
	// storeBacklog is cursor.Store.Backlog's count of the same.
	backlog      int64
	storeBacklog int64
}

// drained reports whether every account's journal is committed and the
// outbox published.
func (p progress) drained() bool {
	return p.atEnd == p.accounts && p.backlog == 0 && p.storeBacklog == 0
}

func (h *harness) progress(ctx context.Context) (progress, error) {
	p := progress{accounts: len(h.env.accounts)}
	// Every source's state in one query: the many-accounts mode has dozens.
	sts, err := h.env.store.Cursors.Sources(ctx)
	if err != nil {
		return progress{}, err
	}
	byID := make(map[string]cursor.State, len(sts))
	for _, st := range sts {
		byID[st.SourceID] = st
	}
	for i, a := range h.env.accounts {
		st := byID[a.sourceID]
		p.committed += st.EventsTotal
		if i == 0 {
			p.cursor = st.Cursor
		}
		if st.Cursor == a.wantCursor {
			p.atEnd++
		}
		if st.HaltedAt != nil {
			p.halted = append(p.halted, a.sourceID+": "+st.HaltedReason)
		}
	}
	b, err := h.env.store.Outbox.Backlog(ctx)
	if err != nil {
		return progress{}, err
	}
	p.storeBacklog = b.Rows
	// Counted independently of the store's query, with partitions that
	// have no progress row yet counting from zero.
	err = h.env.pool.QueryRow(ctx, `
SELECT count(*) FROM outbox o LEFT JOIN publish_progress p ON p.partition = o.partition
WHERE o.seq > coalesce(p.last_seq, 0)`).Scan(&p.backlog)
	if err != nil {
		return progress{}, fmt.Errorf("count unpublished outbox rows: %w", err)
	}
	return p, nil
}

// describePos reads the stored cursors as journal positions: the one
// account's position, or how many accounts are at their end.
func (h *harness) describePos(p progress) string {
	if len(h.env.accounts) > 1 {
		return fmt.Sprintf("the end in %d of %d accounts", p.atEnd, p.accounts)
	}
	if p.cursor == "" {
		return "the start (no cursor)"
	}
	return h.env.accounts[0].posOf(p.cursor)
}

// poll calls cond every period until it reports true, returns an error, or
// within passes (false, nil). An error after ctx ended is ctx's error.
func poll(ctx context.Context, within, every time.Duration, cond func() (bool, error)) (bool, error) {
	deadline := time.Now().Add(within)
	for {
		ok, err := cond()
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if err != nil {
			return false, err
		}
		if ok {
			return true, nil
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		if err := sleep(ctx, every); err != nil {
			return false, err
		}
	}
}

// sleep waits d, or until ctx ends, and then returns ctx's error.
func sleep(ctx context.Context, d time.Duration) error {
	if !retry.Sleep(ctx, d) {
		return ctx.Err()
	}
	return nil
}

// firstExit waits until one of cs exits and returns it; nil when within
// passed first.
func firstExit(ctx context.Context, cs []*instance, within time.Duration) (*instance, error) {
	var first *instance
	_, err := poll(ctx, within, 20*time.Millisecond, func() (bool, error) {
		for _, c := range cs {
			if !c.running() {
				first = c
				return true, nil
			}
		}
		return false, nil
	})
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil, err
	}
	return first, err
}
