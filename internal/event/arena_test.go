package event

import (
	"fmt"
	"strings"
	"testing"
	"unsafe"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/race"
)

func TestArena(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("b", 3*arenaBlock)
	u := uuid.MustParse("0d2a7f7e-2b8c-5f3e-9a61-0123456789ab")
	tests := []struct {
		name string
		get  func(a *Arena) string
		want string
	}{
		{"bytes", func(a *Arena) string { return a.String([]byte("claim-1")) }, "claim-1"},
		{"empty bytes", func(a *Arena) string { return a.String(nil) }, ""},
		{"concat", func(a *Arena) string { return a.Concat("yandex", ":", "claim-1") }, "yandex:claim-1"},
		{"concat of nothing", func(a *Arena) string { return a.Concat() }, ""},
		{"larger than a block", func(a *Arena) string { return a.String([]byte(big)) }, big},
		{"uuid", func(a *Arena) string { return a.UUID(u) }, u.String()},
		{"intern", func(a *Arena) string { return a.Intern([]byte("delivered")) }, "delivered"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var a Arena
			require.Equal(t, tc.want, tc.get(&a), "arena")
			require.Equal(t, tc.want, tc.get(nil), "nil arena")
		})
	}
}

// TestArenaStringsNeverChange writes many strings over many blocks and then
// checks every one: a later write must never change an earlier string.
func TestArenaStringsNeverChange(t *testing.T) {
	t.Parallel()
	var a Arena
	const n = 20_000 // about 20 blocks
	got := make([]string, n)
	for i := range got {
		s := fmt.Sprintf("%08d-%s", i, strings.Repeat("x", i%97))
		if i%2 == 0 {
			got[i] = a.String([]byte(s))
		} else {
			got[i] = a.Concat(s[:4], s[4:])
		}
	}
	for i, s := range got {
		require.Equal(t, fmt.Sprintf("%08d-%s", i, strings.Repeat("x", i%97)), s)
	}
}

func TestArenaAllocatesPerBlock(t *testing.T) {
	if race.Enabled {
		t.Skip("the race detector changes allocation counts")
	}
	var a Arena
	b := []byte("0123456789abcdef0123456789abcdef") // 32 bytes
	perBlock := arenaBlock / len(b)
	allocs := testing.AllocsPerRun(10, func() {
		for range 4 * perBlock {
			_ = a.String(b)
		}
	})
	require.LessOrEqual(t, allocs, 4.0, "4 blocks of strings cost at most 4 allocations")
}

// TestArenaInternSharesUpToItsBound: a repeated value is the same string,
// not a copy, for up to maxInterned values; beyond them values are still
// right, only no longer shared.
func TestArenaInternSharesUpToItsBound(t *testing.T) {
	t.Parallel()
	var a Arena
	first := a.Intern([]byte("yandex/default"))
	again := a.Intern([]byte("yandex/default"))
	require.Equal(t, "yandex/default", again)
	require.Same(t, unsafe.StringData(first), unsafe.StringData(again))

	for i := range maxInterned + 10 {
		require.Equal(t, fmt.Sprint(i), a.Intern([]byte(fmt.Sprint(i))))
	}
	require.Len(t, a.interned, maxInterned)
	over := []byte(fmt.Sprint(maxInterned + 5))
	require.Equal(t, string(over), a.Intern(over))
	require.NotSame(t, unsafe.StringData(a.Intern(over)), unsafe.StringData(a.Intern(over)))
}
