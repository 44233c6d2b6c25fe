package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ingestd/ingestd/internal/kafkaconn"
	"github.com/ingestd/ingestd/internal/kafkatest"
	"github.com/ingestd/ingestd/internal/promtest"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/sim"
)

// kafkaPassword is the SASL password of the tests; it must never appear in
// any output.
const kafkaPassword = "kafka-pw-7f3e9a-never-printed"

// lockedBuffer collects a daemon's log lines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// debugLog returns a logger at debug level, the most talkative, writing
// to buf, so that tests can scan everything ingestd logs.
func debugLog(buf *lockedBuffer) *zap.Logger {
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(buf), zap.DebugLevel))
}

// metric returns the sum of the series of name whose labels include want,
// read from the daemon's /metrics.
func metric(t *testing.T, r *running, name string, want map[string]string) float64 {
	t.Helper()
	body := get(t, "http://"+r.d.HTTPAddr()+"/metrics").body
	scraped := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		parser := expfmt.NewTextParser(model.UTF8Validation)
		families, err := parser.TextToMetricFamilies(strings.NewReader(body))
		out := make([]*dto.MetricFamily, 0, len(families))
		for _, f := range families {
			out = append(out, f)
		}
		return out, err
	})
	sum, _ := promtest.Sum(t, scraped, name, want)
	return sum
}

// secureCluster starts a kfake cluster that speaks TLS with certs and,
// when mechanism is set, requires SASL with a superuser "admin" and the
// given users; its ClientOpts reach it as "admin".
func secureCluster(t *testing.T, certs *kafkatest.Certs, mutual bool, mechanism string, opts ...kfake.Opt) *kafkatest.Cluster {
	t.Helper()
	all := []kfake.Opt{kfake.TLS(certs.ServerTLS(mutual))}
	if mechanism != "" {
		all = append(all, kfake.EnableSASL(), kfake.Superuser(mechanism, "admin", "admin-pw"))
	}
	kc := kafkatest.Start(t, append(all, opts...)...)
	kc.ClientOpts = append(kc.ClientOpts, kafkatest.TLSOpt(certs.ClientTLS()))
	if mechanism != "" {
		kc.ClientOpts = append(kc.ClientOpts, kafkatest.SASLOpt(mechanism, "admin", "admin-pw"))
	}
	return kc
}

// TestExactlyOnceOverTLSAndSASL runs the whole pipeline against brokers
// that require TLS and SCRAM-SHA-512, or mutual TLS: every event arrives
// once, in per-key order, and the password appears in no output.
func TestExactlyOnceOverTLSAndSASL(t *testing.T) {
	t.Parallel()
	const n = 10000
	tests := []struct {
		name    string
		cluster func(*kafkatest.Certs) *kafkatest.Cluster
		conn    func(*kafkatest.Certs) kafkaconn.Config
	}{
		{
			"TLS and SCRAM-SHA-512",
			func(c *kafkatest.Certs) *kafkatest.Cluster {
				return secureCluster(t, c, false, kafkaconn.MechanismSCRAMSHA512, kfake.Superuser(kafkaconn.MechanismSCRAMSHA512, "ingestd", kafkaPassword))
			},
			func(c *kafkatest.Certs) kafkaconn.Config {
				return kafkaconn.Config{TLS: true, CAFile: c.CAFile, SASLMechanism: kafkaconn.MechanismSCRAMSHA512, SASLUsername: "ingestd", SASLPassword: secret.New(kafkaPassword)}
			},
		},
		{
			"mutual TLS",
			func(c *kafkatest.Certs) *kafkatest.Cluster { return secureCluster(t, c, true, "") },
			func(c *kafkatest.Certs) kafkaconn.Config {
				return kafkaconn.Config{CAFile: c.CAFile, CertFile: c.ClientCertFile, KeyFile: c.ClientKeyFile}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			certs := kafkatest.NewCerts(t, kafkatest.CertOptions{})
			s := newStackOn(t, sim.YandexConfig{Seed: 31, Backlog: n, ReplayRate: 0.05}, tc.cluster(certs), tc.conn(certs))
			var logs lockedBuffer
			s.log = debugLog(&logs)
			r := s.start(t)
			require.Eventually(t, func() bool { return s.sourceState(t).Cursor == s.sim.CursorAfter(n) }, 90*time.Second, 20*time.Millisecond, logs.String())
			s.requireExactlyOnce(t, n)
			require.Positive(t, metric(t, r, "ingestd_kafka_bytes_sent_total", nil), "the producer's bytes are counted under TLS")
			ready := get(t, "http://"+r.d.HTTPAddr()+"/readyz")
			require.Equal(t, 200, ready.status, ready.body)
			r.stop(t)
			require.NotContains(t, logs.String(), kafkaPassword)
		})
	}
}

// TestLeadersMoveDuringCatchUp publishes a 50,000-event catch-up to three
// brokers whose partition leaders are shuffled every few hundred
// milliseconds, one of which is removed and added back mid-run: nothing is
// lost, duplicated or reordered, and moved leaders are re-sent to rather
// than read back.
func TestLeadersMoveDuringCatchUp(t *testing.T) {
	t.Parallel()
	const n = 50000
	kc := kafkatest.Start(t, kfake.NumBrokers(3))
	s := newStackOn(t, sim.YandexConfig{Seed: 32, Backlog: n}, kc, kafkaconn.Config{})
	s.cfg.Kafka.Partitions = 6
	r := s.start(t)

	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg                 sync.WaitGroup
		shuffles, removals int
	)
	wg.Go(func() {
		removedAt := time.Time{}
		var removedPort int
		const removed = int32(1)
		for ctx.Err() == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(150+mrand.IntN(250)) * time.Millisecond):
			}
			kc.ShufflePartitionLeaders()
			shuffles++
			switch {
			case removals == 0 && s.published(t) > n/4:
				removedPort = portOf(t, kc.Addrs[removed])
				if kc.RemoveNode(removed) == nil {
					removals++
					removedAt = time.Now()
				}
			case !removedAt.IsZero() && time.Since(removedAt) > 2*time.Second:
				_, _, err := kc.AddNode(removed, removedPort)
				if err == nil {
					removedAt = time.Time{}
				}
			}
		}
	})
	require.Eventually(t, func() bool { return s.sourceState(t).Cursor == s.sim.CursorAfter(n) }, 3*time.Minute, 50*time.Millisecond)
	require.Eventually(t, func() bool { return s.published(t) == n }, 3*time.Minute, 50*time.Millisecond)
	cancel()
	wg.Wait()
	s.requireExactlyOnce(t, n)
	retried := metric(t, r, "ingestd_publish_retried_writes_total", nil)
	unknown := metric(t, r, "ingestd_publish_unknown_writes_total", nil)
	readbacks := metric(t, r, "ingestd_publish_readbacks_total", nil)
	t.Logf("%d leader shuffles, %d broker removals: %.0f produce requests re-sent to a moved leader, %.0f of unknown outcome, %.0f partition read-backs (6 at the start)",
		shuffles, removals, retried, unknown, readbacks)
	require.Equal(t, 1, removals, "a broker was removed mid-run")
	require.Positive(t, retried, "leader moves were seen and re-sent")
	require.LessOrEqual(t, unknown, math.Max(3, float64(shuffles)/20), "moved leaders are not writes of unknown outcome")
	r.stop(t)
}

// TestKafkaAccessFailures: a wrong password, a missing ACL, an untrusted
// or misnamed server certificate each give one clear error naming the
// topic or the principal, a 503 from /readyz with that reason, and a
// metric; nothing is lost, and where the broker side can be fixed while
// ingestd runs, publishing resumes by itself. The password appears in no
// output, at debug level.
func TestKafkaAccessFailures(t *testing.T) {
	t.Parallel()
	const topic = "delivery.status-changes"
	const n = 600
	scram := kafkaconn.Config{TLS: true, SASLMechanism: kafkaconn.MechanismSCRAMSHA512, SASLUsername: "ingestd", SASLPassword: secret.New(kafkaPassword)}
	// rotated is set when the broker side of the wrong-password case has
	// been given ingestd's password.
	var rotated atomic.Bool
	allow := func(ops ...kmsg.ACLOperation) []kfake.ACL {
		var acls []kfake.ACL
		for _, op := range ops {
			acls = append(acls, kfake.ACL{Resource: kmsg.ACLResourceTypeTopic, Name: topic, Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: op, Allow: true})
		}
		return acls
	}
	tests := []struct {
		name string
		// cluster starts the brokers; conn is how ingestd reaches them.
		cluster func(t *testing.T, c *kafkatest.Certs) *kafkatest.Cluster
		conn    func(c *kafkatest.Certs) kafkaconn.Config
		kind    string
		reason  []string // in /readyz's kafka check
		// fix, when set, repairs the broker side while ingestd runs.
		fix func(t *testing.T, kc *kafkatest.Cluster)
	}{
		{
			// The broker side has another password until the operator
			// rotates it to ingestd's (kafkatest's FailSASL answers as
			// Kafka does meanwhile).
			name: "wrong password",
			cluster: func(t *testing.T, c *kafkatest.Certs) *kafkatest.Cluster {
				kc := secureCluster(t, c, false, kafkaconn.MechanismSCRAMSHA512, kfake.Superuser(kafkaconn.MechanismSCRAMSHA512, "ingestd", kafkaPassword))
				kc.FailSASL(func() bool { return !rotated.Load() })
				return kc
			},
			conn:   func(c *kafkatest.Certs) kafkaconn.Config { s := scram; s.CAFile = c.CAFile; return s },
			kind:   kafkaconn.KindAuthentication,
			reason: []string{"SASL authentication", "User:ingestd"},
			fix:    func(*testing.T, *kafkatest.Cluster) { rotated.Store(true) },
		},
		{
			name: "no WRITE on the topic",
			cluster: func(t *testing.T, c *kafkatest.Certs) *kafkatest.Cluster {
				return secureCluster(t, c, false, kafkaconn.MechanismSCRAMSHA512, kfake.EnableACLs(), kfake.SeedTopics(4, topic),
					kfake.User(kafkaconn.MechanismSCRAMSHA512, "ingestd", kafkaPassword, allow(kmsg.ACLOperationDescribe, kmsg.ACLOperationRead)...))
			},
			conn:   func(c *kafkatest.Certs) kafkaconn.Config { s := scram; s.CAFile = c.CAFile; return s },
			kind:   kafkaconn.KindAuthorization,
			reason: []string{"WRITE", `"` + topic + `"`, "User:ingestd"},
			fix: func(t *testing.T, kc *kafkatest.Cluster) {
				grant(t, kc, "User:ingestd", topic, kmsg.ACLOperationWrite)
			},
		},
		{
			name: "no CREATE for a missing topic",
			cluster: func(t *testing.T, c *kafkatest.Certs) *kafkatest.Cluster {
				return secureCluster(t, c, false, kafkaconn.MechanismSCRAMSHA512, kfake.EnableACLs(),
					kfake.User(kafkaconn.MechanismSCRAMSHA512, "ingestd", kafkaPassword, allow(kmsg.ACLOperationDescribe, kmsg.ACLOperationRead, kmsg.ACLOperationWrite)...))
			},
			conn:   func(c *kafkatest.Certs) kafkaconn.Config { s := scram; s.CAFile = c.CAFile; return s },
			kind:   kafkaconn.KindAuthorization,
			reason: []string{"CREATE", `"` + topic + `"`, "User:ingestd"},
			fix: func(t *testing.T, kc *kafkatest.Cluster) {
				grant(t, kc, "User:ingestd", topic, kmsg.ACLOperationCreate)
			},
		},
		{
			name: "untrusted server certificate",
			cluster: func(t *testing.T, c *kafkatest.Certs) *kafkatest.Cluster {
				return secureCluster(t, c, false, kafkaconn.MechanismSCRAMSHA512, kfake.Superuser(kafkaconn.MechanismSCRAMSHA512, "ingestd", kafkaPassword))
			},
			conn: func(*kafkatest.Certs) kafkaconn.Config {
				s := scram
				s.CAFile = kafkatest.NewCerts(t, kafkatest.CertOptions{}).CAFile
				return s
			},
			kind:   kafkaconn.KindTLS,
			reason: []string{"TLS handshake", "INGESTD_KAFKA_TLS_CA_FILE", "unknown authority"},
		},
		{
			name: "server certificate for another host",
			cluster: func(t *testing.T, c *kafkatest.Certs) *kafkatest.Cluster {
				other := kafkatest.NewCerts(t, kafkatest.CertOptions{ServerHosts: []string{"10.9.8.7", "kafka.elsewhere.example"}})
				kc := kafkatest.Start(t, kfake.TLS(other.ServerTLS(false)), kfake.EnableSASL(),
					kfake.Superuser(kafkaconn.MechanismSCRAMSHA512, "ingestd", kafkaPassword))
				// The test's own CA must be the one trusted, so that only
				// the host name is wrong.
				*c = *other
				return kc
			},
			conn:   func(c *kafkatest.Certs) kafkaconn.Config { s := scram; s.CAFile = c.CAFile; return s },
			kind:   kafkaconn.KindTLS,
			reason: []string{"TLS handshake", "INGESTD_KAFKA_BROKERS", "valid for 10.9.8.7", "not 127.0.0.1"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			certs := kafkatest.NewCerts(t, kafkatest.CertOptions{})
			kc := tc.cluster(t, certs)
			s := newStackOn(t, sim.YandexConfig{Seed: 33, Backlog: n}, kc, tc.conn(certs))
			var logs lockedBuffer
			s.log = debugLog(&logs)
			r := s.start(t)
			base := "http://" + r.d.HTTPAddr()

			var ready response
			deadline := time.Now().Add(30 * time.Second)
			for ready = get(t, base+"/readyz"); ready.status != 503 || !strings.Contains(ready.body, tc.reason[0]); ready = get(t, base+"/readyz") {
				if time.Now().After(deadline) {
					t.Fatalf("readyz never gave the reason %q: %d %s\nlog: %s", tc.reason[0], ready.status, ready.body, logs.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			var checks map[string]string
			require.NoError(t, json.Unmarshal([]byte(ready.body), &checks))
			for _, w := range tc.reason {
				require.Contains(t, checks["kafka"], w)
			}
			require.Eventually(t, func() bool {
				return metric(t, r, "ingestd_kafka_access_errors_total", map[string]string{"kind": tc.kind}) >= 2
			}, 30*time.Second, 20*time.Millisecond, "retried with backoff, each refusal counted")
			require.Equal(t, 1, strings.Count(logs.String(), "kafka refused access"), "one error, however often it is retried:\n%s", logs.String())
			require.Zero(t, metric(t, r, "ingestd_events_published_total", nil), "nothing was published")

			if tc.fix != nil {
				tc.fix(t, kc)
				require.Eventually(t, func() bool {
					return s.sourceState(t).Cursor == s.sim.CursorAfter(n) && s.published(t) == n
				}, 60*time.Second, 20*time.Millisecond, logs.String())
				require.Eventually(t, func() bool { return get(t, base+"/readyz").status == 200 }, 30*time.Second, 20*time.Millisecond)
				require.Contains(t, logs.String(), "kafka access restored")
				s.requireExactlyOnce(t, n)
			}
			metrics := get(t, base+"/metrics").body
			r.stop(t)
			for what, out := range map[string]string{"log": logs.String(), "readyz": ready.body, "metrics": metrics} {
				require.NotContains(t, out, kafkaPassword, "the password leaked into the %s", what)
			}
		})
	}
}

// published is the number of outbox rows Kafka acknowledged.
func (s *stack) published(t *testing.T) int64 {
	t.Helper()
	st, err := s.store.Outbox.Stats(context.Background())
	require.NoError(t, err)
	return st.Rows - st.Backlog.Rows
}

// adminClient is a franz-go client of kc as its superuser.
func adminClient(t *testing.T, kc *kafkatest.Cluster) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(kc.Addrs...)}, kc.ClientOpts...)...)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return cl
}

// grant allows principal op on topic.
func grant(t *testing.T, kc *kafkatest.Cluster, principal, topic string, op kmsg.ACLOperation) {
	t.Helper()
	req := kmsg.NewPtrCreateACLsRequest()
	c := kmsg.NewCreateACLsRequestCreation()
	c.ResourceType, c.ResourceName, c.ResourcePatternType = kmsg.ACLResourceTypeTopic, topic, kmsg.ACLResourcePatternTypeLiteral
	c.Principal, c.Host, c.Operation, c.PermissionType = principal, "*", op, kmsg.ACLPermissionTypeAllow
	req.Creations = append(req.Creations, c)
	resp, err := req.RequestWith(context.Background(), adminClient(t, kc))
	require.NoError(t, err)
	for _, r := range resp.Results {
		require.Zero(t, r.ErrorCode, "create ACL")
	}
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	require.Positive(t, i, addr)
	p := 0
	for _, c := range addr[i+1:] {
		p = p*10 + int(c-'0')
	}
	return p
}
