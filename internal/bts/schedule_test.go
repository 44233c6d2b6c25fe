package bts

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestScheduleValidate(t *testing.T) {
	t.Parallel()
	require.NoError(t, DefaultSchedule().Validate())
	tests := []struct {
		name    string
		mutate  func(*Schedule)
		wantEnv string
	}{
		{"no intervals", func(c *Schedule) { c.Intervals = Intervals{} }, EnvPollIntervals},
		{"zero rate", func(c *Schedule) { c.Rate = 0 }, EnvRate},
		{"huge rate", func(c *Schedule) { c.Rate = 1e9 }, EnvRate},
		{"zero concurrency", func(c *Schedule) { c.Concurrency = 0 }, EnvConcurrency},
		{"zero claim timeout", func(c *Schedule) { c.ClaimTimeout = 0 }, EnvClaimTimeout},
		{"zero refresh", func(c *Schedule) { c.DictionaryRefresh = 0 }, EnvDictionaryRefresh},
		{"zero idle poll", func(c *Schedule) { c.IdlePoll = 0 }, EnvIdlePoll},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := DefaultSchedule()
			tc.mutate(&c)
			err := c.Validate()
			require.Error(t, err)
			require.True(t, strings.HasPrefix(err.Error(), tc.wantEnv+": "), "%v", err)
		})
	}
}
