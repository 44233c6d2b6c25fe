package event

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// These tests hold docs/events.md to the code: the consumer contract must
// not drift from what the encoder and the mappings actually do.

func readContract(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../docs/events.md")
	require.NoError(t, err)
	return string(b)
}

// section returns the text under the "## <heading>" line, up to the next
// level-2 heading.
func section(t *testing.T, doc, heading string) string {
	t.Helper()
	start := strings.Index(doc, "\n## "+heading+"\n")
	require.GreaterOrEqual(t, start, 0, "docs/events.md has no section %q", heading)
	rest := doc[start+len(heading)+5:]
	if end := strings.Index(rest, "\n## "); end >= 0 {
		rest = rest[:end]
	}
	return rest
}

// rows returns the submatches of re for every line of text it matches.
func rows(text string, re *regexp.Regexp) [][]string {
	var out [][]string
	for line := range strings.SplitSeq(text, "\n") {
		if m := re.FindStringSubmatch(line); m != nil {
			out = append(out, m)
		}
	}
	return out
}

func TestDocsYandexTableMirrorsYandexStatus(t *testing.T) {
	t.Parallel()
	text := section(t, readContract(t), "Yandex status mapping")
	re := regexp.MustCompile("^\\| `([a-z_]+)` \\| `([a-z_]+)` \\| (yes|no) \\|$")
	var documented []string
	for _, m := range rows(text, re) {
		s, terminal := YandexStatus(m[1])
		require.Equal(t, Status(m[2]), s, "row for %q", m[1])
		require.Equal(t, m[3] == "yes", terminal, "row for %q", m[1])
		documented = append(documented, m[1])
	}
	require.ElementsMatch(t, yandexDocStatuses(), documented)
	require.Contains(t, text, "| any other value, including empty | `unknown` | no |")
}

func TestDocsBTSTableMirrorsBTSStatus(t *testing.T) {
	t.Parallel()
	text := section(t, readContract(t), "BTS status mapping")
	re := regexp.MustCompile("^\\| ([0-9]+) \\| [^|]+ \\| `([a-z_]+)` \\| (yes|no) \\|$")
	var codes []int
	for _, m := range rows(text, re) {
		code, err := strconv.Atoi(m[1])
		require.NoError(t, err)
		s, terminal := BTSStatus(code)
		require.Equal(t, Status(m[2]), s, "row for %d", code)
		require.Equal(t, m[3] == "yes", terminal, "row for %d", code)
		codes = append(codes, code)
	}
	require.Equal(t, []int{0, 100, 200, 300, 400, 500, 600, 700, 800, 1100, 1200, 1300, 1400}, codes)
	for _, code := range []int{900, 1000} {
		s, _ := BTSStatus(code)
		require.Equal(t, StatusUnknown, s)
	}
}

func TestDocsCanonicalStatusesMatchStatuses(t *testing.T) {
	t.Parallel()
	text := section(t, readContract(t), "Canonical statuses")
	re := regexp.MustCompile("^\\| `([a-z_]+)` \\| .+ \\|$")
	var documented []Status
	for _, m := range rows(text, re) {
		documented = append(documented, Status(m[1]))
	}
	require.Equal(t, Statuses(), documented)
}

func TestDocsHeaderTableMatchesAppendHeaders(t *testing.T) {
	t.Parallel()
	text := section(t, readContract(t), "CloudEvents headers")
	re := regexp.MustCompile("^\\| `([a-z_-]+)` \\| .+ \\|$")
	var documented []string
	for _, m := range rows(text, re) {
		documented = append(documented, m[1])
	}
	e := sampleEvent()
	m, err := e.Message()
	require.NoError(t, err)
	var keys []string
	for _, h := range m.AppendHeaders(nil) {
		keys = append(keys, h.Key)
	}
	require.Equal(t, keys, documented)
}

func TestDocsPayloadTableMatchesEncoderFieldOrder(t *testing.T) {
	t.Parallel()
	text := section(t, readContract(t), "Payload (schema v1)")
	re := regexp.MustCompile("^\\| `([a-z_]+)` \\| .+ \\| .+ \\|$")
	var documented []string
	for _, m := range rows(text, re) {
		documented = append(documented, m[1])
	}

	// Read the top-level keys of a real payload in the order they appear.
	e := sampleEvent()
	dec := json.NewDecoder(bytes.NewReader(e.AppendJSON(nil)))
	tok, err := dec.Token()
	require.NoError(t, err)
	require.Equal(t, json.Delim('{'), tok)
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		require.NoError(t, err)
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		require.NoError(t, dec.Decode(&skip))
	}
	require.Equal(t, keys, documented)
}

func TestDocsExampleIsEncoderOutput(t *testing.T) {
	t.Parallel()
	text := section(t, readContract(t), "Example")
	start := strings.Index(text, "```json\n")
	require.GreaterOrEqual(t, start, 0)
	block := text[start+len("```json\n"):]
	block = block[:strings.Index(block, "```")]

	var compact bytes.Buffer
	require.NoError(t, json.Compact(&compact, []byte(block)))
	e := sampleEvent()
	require.Equal(t, string(e.AppendJSON(nil)), compact.String())
	require.Contains(t, text, "ce_time:        2020-01-01T09:30:05Z")
	require.Contains(t, text, "ce_id:          "+e.ID)
}

func TestDocsIDNamespace(t *testing.T) {
	t.Parallel()
	require.Contains(t, section(t, readContract(t), "Idempotency: `event_id` / `ce_id`"), "`"+IDNamespace+"`")
}
