package publish

import (
	"io"

	"github.com/segmentio/kafka-go"
)

// recordBytes is a record's key or value handed to kafka-go's produce API.
// kafka.NewBytes allocates one reader per key and per value; a batch keeps
// all of its readers in one slice instead (see write).
type recordBytes struct {
	b   []byte
	off int
}

var (
	_ kafka.Bytes = (*recordBytes)(nil)
	_ io.WriterTo = (*recordBytes)(nil)
)

// Len returns the number of bytes not read yet, as kafka.Bytes requires.
func (r *recordBytes) Len() int { return len(r.b) - r.off }

func (r *recordBytes) Read(p []byte) (int, error) {
	if r.off >= len(r.b) {
		return 0, io.EOF
	}
	n := copy(p, r.b[r.off:])
	r.off += n
	return n, nil
}

// WriteTo lets io.Copy, which kafka-go's encoder uses, write the bytes
// without an intermediate buffer.
func (r *recordBytes) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(r.b[r.off:])
	r.off += n
	return int64(n), err
}

func (r *recordBytes) Close() error { return nil }
