package bts

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseBTSIntervals(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    map[int]time.Duration // probes; 0 = use the default
		wantDef time.Duration
		wantErr string
	}{
		{in: "100=2h,800=15m,1100=2m,default=30m", want: map[int]time.Duration{100: 2 * time.Hour, 800: 15 * time.Minute, 1100: 2 * time.Minute, 200: 30 * time.Minute, 0: 30 * time.Minute}, wantDef: 30 * time.Minute},
		{in: " default = 1m , 0=5s ,", want: map[int]time.Duration{0: 5 * time.Second, 1200: time.Minute}, wantDef: time.Minute},
		{in: "default=90ms", want: map[int]time.Duration{100: 90 * time.Millisecond}, wantDef: 90 * time.Millisecond},
		{in: "100=2h", wantErr: "missing default"},
		{in: "", wantErr: "missing default"},
		{in: "default=1m,default=2m", wantErr: "default is given twice"},
		{in: "100=1m,100=2m,default=1m", wantErr: "code 100 is given twice"},
		{in: "100,default=1m", wantErr: `"100" is not code=duration`},
		{in: "abc=1m,default=1m", wantErr: "not a BTS status code"},
		{in: "-100=1m,default=1m", wantErr: "not a BTS status code"},
		{in: "0100=1m,default=1m", wantErr: "not a BTS status code"},
		{in: "100=soon,default=1m", wantErr: "not a duration"},
		{in: "100=0s,default=1m", wantErr: "must be positive"},
		{in: "100=-1m,default=1m", wantErr: "must be positive"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			iv, err := ParseIntervals(tc.in)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			for code, d := range tc.want {
				require.Equal(t, d, iv.For(code), "code %d", code)
			}
			require.Equal(t, tc.wantDef, iv.For(123456))
			again, err := ParseIntervals(iv.String())
			require.NoError(t, err)
			require.Equal(t, iv, again, "String round-trips")
		})
	}
}

func TestBTSIntervalsDefaultsAndScaling(t *testing.T) {
	t.Parallel()
	iv := DefaultIntervals()
	require.Equal(t, time.Hour, iv.For(100))
	require.Equal(t, 30*time.Second, iv.For(1100))
	require.Equal(t, 10*time.Minute, iv.For(1000), "undefined codes after 800 are polled like 800")
	require.Equal(t, 30*time.Minute, iv.For(4242))

	fast := iv.Scaled(3600)
	require.Equal(t, time.Second, fast.For(100))
	require.Equal(t, 8333333*time.Nanosecond, fast.For(1100))
	require.Equal(t, time.Millisecond, iv.Scaled(1e12).For(100), "never below a millisecond")

	var flagged Intervals
	require.True(t, flagged.IsZero())
	require.Empty(t, flagged.String())
	require.NoError(t, flagged.Set("1100=1m,default=10m"))
	require.Equal(t, "1100=1m,default=10m", flagged.String())
	require.Equal(t, DefaultPollIntervals, iv.String(), "the default prints as written, so flag defaults match the docs")
	require.Error(t, flagged.Set("nope"))
	require.Equal(t, time.Minute, flagged.For(1100), "a failed Set keeps the value")
	require.NoError(t, flagged.Set("0=1h30m,1=90s,2=1.5s,3=250ms,default=2h0m1s"))
	require.Equal(t, "0=1h30m,1=1m30s,2=1.5s,3=250ms,default=2h0m1s", flagged.String())
}
