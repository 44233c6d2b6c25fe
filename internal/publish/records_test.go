package publish

import (
	"bytes"
	"io"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"
)

// TestRecordBytesReadsLikeKafkaNewBytes: Len counts what is left, Read and
// WriteTo consume, and a reader reads back exactly its bytes.
func TestRecordBytesReadsLikeKafkaNewBytes(t *testing.T) {
	t.Parallel()
	want := []byte("bts:7000001")
	r := &recordBytes{b: want}
	require.Equal(t, len(want), r.Len())
	require.NoError(t, iotest.TestReader(&recordBytes{b: want}, want))

	var w bytes.Buffer
	n, err := io.Copy(&w, r)
	require.NoError(t, err)
	require.EqualValues(t, len(want), n)
	require.Equal(t, want, w.Bytes())
	require.Zero(t, r.Len(), "consumed")
	got, err := r.Read(make([]byte, 4))
	require.Zero(t, got)
	require.ErrorIs(t, err, io.EOF)
	require.NoError(t, r.Close())
}
