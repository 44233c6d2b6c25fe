package secret

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestStringNeverPrints(t *testing.T) {
	t.Parallel()
	const value = "s3cr3t-token"
	s := New(value)
	type wrapper struct {
		Token String
	}
	w := wrapper{Token: s}

	for name, out := range map[string]string{
		"%v":   fmt.Sprintf("%v", s),
		"%s":   fmt.Sprintf("%s", s),
		"%q":   fmt.Sprintf("%q", s),
		"%x":   fmt.Sprintf("%x", s),
		"%#v":  fmt.Sprintf("%#v", s),
		"%+v":  fmt.Sprintf("%+v", w),
		"%#vw": fmt.Sprintf("%#v", w),
		"flag": Flag{S: &s}.String(),
	} {
		require.NotContains(t, out, value, name)
	}
	b, err := json.Marshal(w)
	require.NoError(t, err)
	require.NotContains(t, string(b), value)
	require.Equal(t, value, s.Reveal())
	require.True(t, s.IsSet())
	require.False(t, String{}.IsSet())
}

func TestFlagSet(t *testing.T) {
	t.Parallel()
	var s String
	require.NoError(t, Flag{S: &s}.Set("abc"))
	require.Equal(t, "abc", s.Reveal())
}
