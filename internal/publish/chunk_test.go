package publish

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestChunkLen(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		sizes []int
		max   int
		want  int
	}{
		{name: "all fit", sizes: []int{100, 100, 100}, max: batchOverhead + 300, want: 3},
		{name: "one byte short", sizes: []int{100, 100, 100}, max: batchOverhead + 299, want: 2},
		{name: "a record larger than the bound goes alone", sizes: []int{5000, 10}, max: 1024, want: 1},
		{name: "the bound counts the batch header", sizes: []int{1000, 1000}, max: 2000, want: 1},
		{name: "empty", sizes: nil, max: 1024, want: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, chunkLen(tc.sizes, tc.max))
		})
	}
}
