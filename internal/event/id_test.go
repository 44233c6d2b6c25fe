package event

import (
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

func TestIDNamespaceLiteralMatchesConstant(t *testing.T) {
	t.Parallel()
	require.Equal(t, uuid.MustParse(IDNamespace), idNamespace())
}

func TestIDKnownValues(t *testing.T) {
	t.Parallel()
	// Expected values were computed independently with Python's
	// uuid.uuid5(UUID(IDNamespace), "yandex\x00main\x00...").
	tests := []struct {
		name              string
		provider, account string
		parts             []string
		want              string
	}{
		{
			name:     "yandex journal entry",
			provider: ProviderYandex, account: "main",
			parts: []string{"3b8d1af142664fde824626a7c19e2bd9", "4242", "status_changed", "7"},
			want:  "3f3000b8-1d52-54cb-950a-9923ae433f17",
		},
		{
			name:     "bts status change",
			provider: ProviderBTS, account: "tashkent",
			parts: []string{"123456", "1200", "3"},
			want:  "131e6a16-d6da-5829-863e-aabe863e5523",
		},
		{
			name:     "no parts",
			provider: ProviderYandex, account: "main",
			want: "4a8de357-77d6-5305-8587-609dfc1572d5",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := ID(tt.provider, tt.account, tt.parts...)
			require.Equal(t, tt.want, got)
			u := uuid.MustParse(got)
			require.Equal(t, uuid.Version(5), u.Version())
			require.Equal(t, uuid.RFC4122, u.Variant())
		})
	}
}

func TestIDIsDeterministic(t *testing.T) {
	t.Parallel()
	a := ID(ProviderYandex, "main", "claim", "1", "status_changed", "2")
	for range 10 {
		require.Equal(t, a, ID(ProviderYandex, "main", "claim", "1", "status_changed", "2"))
	}
}

func TestIDSeparatesInputs(t *testing.T) {
	t.Parallel()
	// Every pair of these must differ: moving bytes across a boundary, or
	// changing any single component, is a different upstream change.
	inputs := [][]string{
		{"yandex", "main", "a", "bc"},
		{"yandex", "main", "ab", "c"},
		{"yandex", "main", "abc"},
		{"yandex", "main", "abc", ""},
		{"yandex", "mainabc"},
		{"yandexmain", "abc"},
		{"yandex", "main", "a", "bc", "1"},
		{"bts", "main", "a", "bc"},
		{"yandex", "other", "a", "bc"},
		{"yandex", "main", "claim", "1", "status_changed", "2"},
		{"yandex", "main", "claim", "1", "price_changed", "2"},
		{"yandex", "main", "claim", "1", "status_changed", "3"},
		{"yandex", "main", "claim", "2", "status_changed", "2"},
	}
	seen := map[string][]string{}
	for _, in := range inputs {
		id := ID(in[0], in[1], in[2:]...)
		prev, dup := seen[id]
		require.False(t, dup, "%q and %q give the same ID %s", prev, in, id)
		seen[id] = in
	}
}
