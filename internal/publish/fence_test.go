package publish

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ingestd/ingestd/internal/kafkaconn"
	"github.com/ingestd/ingestd/internal/kafkatest"
	"github.com/ingestd/ingestd/internal/lease"
	"github.com/ingestd/ingestd/internal/secret"
)

func TestFencedConnRefusesToWriteOnceTheLeaseLapsed(t *testing.T) {
	t.Parallel()
	l := lease.Lease{Name: "publisher", Holder: "x", Epoch: 3}
	tests := []struct {
		name  string
		held  *lease.Held
		wants error
	}{
		{"live lease writes", lease.NewHeld(l, time.Now(), time.Minute), nil},
		{"lapsed lease refuses", lease.NewHeld(l, time.Now().Add(-time.Minute), 10*time.Second), errLeaseLapsed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, b := net.Pipe()
			defer func() { _ = b.Close() }()
			go func() {
				buf := make([]byte, 4)
				_, _ = b.Read(buf)
			}()
			c := &fencedConn{Conn: a, held: tc.held}
			n, err := c.Write([]byte("ping"))
			if tc.wants == nil {
				require.NoError(t, err)
				require.Equal(t, 4, n)
				return
			}
			require.ErrorIs(t, err, tc.wants)
			require.Zero(t, n)
			_, err = a.Write([]byte("x"))
			require.Error(t, err, "the connection is closed, so nothing buffered goes out later")
		})
	}
}

// TestFenceHoldsUnderTLSAndSASL: the fence sits under the TLS layer of a
// connection that SASL authenticated, so a connection established while
// the lease was live refuses to send once the lease lapsed, and nothing
// reaches the broker.
func TestFenceHoldsUnderTLSAndSASL(t *testing.T) {
	t.Parallel()
	const pw = "fence-pw"
	certs := kafkatest.NewCerts(t, kafkatest.CertOptions{})
	kc := kafkatest.Start(t, kfake.TLS(certs.ServerTLS(false)), kfake.EnableSASL(),
		kfake.Superuser(kafkaconn.MechanismSCRAMSHA512, "ingestd", pw), kfake.SeedTopics(1, "fenced"))
	settings, err := kafkaconn.Config{CAFile: certs.CAFile, SASLMechanism: kafkaconn.MechanismSCRAMSHA512, SASLUsername: "ingestd", SASLPassword: secret.New(pw)}.Load()
	require.NoError(t, err)

	held := lease.NewHeld(lease.Lease{Name: "publisher", Holder: "x", Epoch: 1}, time.Now(), 500*time.Millisecond)
	tr := settings.Transport(5*time.Second, func(c net.Conn) net.Conn { return &fencedConn{Conn: c, held: held} })
	defer tr.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(kc.Addr), Timeout: 5 * time.Second, Transport: tr}
	produce := func() error {
		res, err := client.Produce(context.Background(), &kafka.ProduceRequest{
			Topic: "fenced", RequiredAcks: kafka.RequireAll,
			Records: kafka.NewRecordReader(kafka.Record{Value: kafka.NewBytes([]byte("v"))}),
		})
		if err == nil {
			err = res.Error
		}
		return err
	}
	end := func() int64 {
		lo, err := client.ListOffsets(context.Background(), &kafka.ListOffsetsRequest{
			Topics: map[string][]kafka.OffsetRequest{"fenced": {kafka.LastOffsetOf(0)}},
		})
		require.NoError(t, err)
		return lo.Topics["fenced"][0].LastOffset
	}
	require.NoError(t, produce(), "a live lease writes over TLS and SASL")
	require.Equal(t, int64(1), end())

	deadline := time.Now().Add(10 * time.Second)
	for held.Valid() {
		require.True(t, time.Now().Before(deadline), "the lease lapses")
		time.Sleep(10 * time.Millisecond)
	}
	err = produce()
	require.ErrorIs(t, err, errLeaseLapsed)
	require.True(t, unknownOutcome(err), "a refused socket write is of unknown outcome to the publisher")

	check := &kafka.Client{Addr: kafka.TCP(kc.Addr), Timeout: 5 * time.Second, Transport: settings.Transport(5*time.Second, nil)}
	lo, err := check.ListOffsets(context.Background(), &kafka.ListOffsetsRequest{
		Topics: map[string][]kafka.OffsetRequest{"fenced": {kafka.LastOffsetOf(0)}},
	})
	require.NoError(t, err)
	require.Equal(t, int64(1), lo.Topics["fenced"][0].LastOffset, "nothing reached the broker after the lease lapsed")
}

func unknownOutcome(err error) bool { return kafkaconn.ProduceOutcome(err) == kafkaconn.Unknown }
