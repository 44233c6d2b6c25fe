package deploy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/stretchr/testify/require"
)

const (
	composeFile    = "../docker-compose.yml"
	dockerfilePath = "../Dockerfile"
	dockerignore   = "../.dockerignore"
)

// loadCompose loads a compose file the way `docker compose config` does:
// the compose-spec JSON schema is enforced (unknown keys fail), then
// interpolation, normalization and the consistency checks (depends_on
// naming a missing service, ...). The environment is empty so that the
// result does not depend on the machine running the test.
func loadCompose(t *testing.T, content []byte) (*types.Project, error) {
	t.Helper()
	wd, err := filepath.Abs("..")
	require.NoError(t, err)
	return loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  wd,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(wd, "docker-compose.yml"), Content: content}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) { o.SetProjectName("ingestd", true) })
}

// env returns a service's environment as plain strings.
func env(s types.ServiceConfig) map[string]string {
	out := map[string]string{}
	for k, v := range s.Environment {
		if v != nil {
			out[k] = *v
		}
	}
	return out
}

// dockerfile is what the compose checks need to know of the Dockerfile.
type dockerfile struct {
	// finalPaths are the files copied into the final stage.
	finalPaths []string
	entrypoint []string
}

// dockerInstructions splits a Dockerfile into instructions: comments
// dropped, continuation lines joined.
func dockerInstructions(data string) [][2]string {
	var out [][2]string
	var cur strings.Builder
	sc := bufio.NewScanner(strings.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if l, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(l + " ")
			continue
		}
		cur.WriteString(line)
		ins, rest, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		out = append(out, [2]string{strings.ToUpper(ins), strings.Join(strings.Fields(rest), " ")})
		cur.Reset()
	}
	return out
}

// checkDockerfile checks the Dockerfile's contract: a Go 1.26 builder
// producing static, trimmed, version-stamped binaries, and a distroless
// nonroot final stage running /ingestd as UID 65532.
func checkDockerfile(data string) (*dockerfile, error) {
	var (
		errs   []error
		stages [][][2]string
		froms  []string
	)
	for _, ins := range dockerInstructions(data) {
		if ins[0] == "FROM" {
			froms = append(froms, ins[1])
			stages = append(stages, nil)
			continue
		}
		if len(stages) > 0 {
			stages[len(stages)-1] = append(stages[len(stages)-1], ins)
		}
	}
	if len(stages) != 2 {
		return nil, fmt.Errorf("want a builder and a final stage, got %d stages", len(stages))
	}
	if !strings.Contains(froms[0], "golang:1.26 ") || !strings.HasSuffix(froms[0], " AS build") {
		errs = append(errs, fmt.Errorf("builder stage is FROM %s, want golang:1.26 AS build", froms[0]))
	}
	if froms[1] != "gcr.io/distroless/static-debian12:nonroot" {
		errs = append(errs, fmt.Errorf("final stage is FROM %s, want gcr.io/distroless/static-debian12:nonroot", froms[1]))
	}

	var builds, args []string
	for _, ins := range stages[0] {
		switch ins[0] {
		case "RUN":
			for _, cmd := range strings.Split(ins[1], "&&") {
				if strings.Contains(cmd, "go build") {
					builds = append(builds, cmd)
				}
			}
		case "ARG":
			args = append(args, ins[1])
		}
	}
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "VERSION") }) {
		errs = append(errs, errors.New("builder has no VERSION build argument"))
	}
	built := map[string]bool{}
	for _, b := range builds {
		for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-s -w"} {
			if !strings.Contains(b, want) {
				errs = append(errs, fmt.Errorf("go build without %s: %s", want, b))
			}
		}
		f := strings.Fields(b)
		pkg := f[len(f)-1]
		built[pkg] = true
		if pkg == "./cmd/ingestd" && !strings.Contains(b, "-X main.version=${VERSION}") {
			errs = append(errs, fmt.Errorf("ingestd is not version-stamped: %s", b))
		}
	}
	for _, pkg := range []string{"./cmd/ingestd", "./tools/ingestd-sim"} {
		if !built[pkg] {
			errs = append(errs, fmt.Errorf("the builder does not build %s", pkg))
		}
	}

	df := &dockerfile{}
	user := ""
	for _, ins := range stages[1] {
		switch ins[0] {
		case "COPY":
			f := strings.Fields(ins[1])
			if !strings.HasPrefix(f[0], "--from=") {
				errs = append(errs, fmt.Errorf("final stage copies from the build context: %s", ins[1]))
			}
			df.finalPaths = append(df.finalPaths, f[len(f)-1])
		case "USER":
			user = ins[1]
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(ins[1]), &df.entrypoint); err != nil {
				errs = append(errs, fmt.Errorf("ENTRYPOINT must be in exec form (no shell in distroless): %w", err))
			}
		case "RUN":
			errs = append(errs, errors.New("final stage has a RUN: distroless has no shell"))
		}
	}
	if user != "65532" && user != "65532:65532" {
		errs = append(errs, fmt.Errorf("final stage USER %q, want the numeric nonroot 65532", user))
	}
	if !slices.Equal(df.entrypoint, []string{"/ingestd"}) {
		errs = append(errs, fmt.Errorf("ENTRYPOINT %q, want [\"/ingestd\"]", df.entrypoint))
	}
	return df, errors.Join(errs...)
}

// listeners parses Kafka's NAME://host:port,... listener lists.
func listeners(s string) map[string]string {
	out := map[string]string{}
	for _, l := range strings.Split(s, ",") {
		if name, addr, ok := strings.Cut(strings.TrimSpace(l), "://"); ok {
			out[name] = addr
		}
	}
	return out
}

// checkCompose checks that the stack is wired up as `docker compose up`
// needs it: images, start order, and every address, credential and
// setting that one service uses of another.
func checkCompose(p *types.Project, readme map[string]string, df *dockerfile) error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	want := []string{"ingestd", "kafka", "migrate", "postgres", "sim", "track"}
	if got := p.ServiceNames(); !slices.Equal(got, want) {
		return fmt.Errorf("services %v, want %v (plus the consumer profile)", got, want)
	}
	if _, ok := p.DisabledServices["consumer"]; !ok {
		fail("the consumer service must exist, behind a profile")
	}
	svc := func(name string) types.ServiceConfig { return p.Services[name] }
	dependsOn := func(from, to, condition string) {
		d, ok := svc(from).DependsOn[to]
		if !ok || d.Condition != condition {
			fail("%s must depend on %s with condition %s, got %+v", from, to, condition, d)
		}
	}

	// Every INGESTD_* variable is one ingestd reads: it ignores unknown ones,
	// so a typo would silently fall back to a default.
	for _, s := range p.AllServices() {
		for k := range s.Environment {
			if strings.HasPrefix(k, "INGESTD_") && !knownSetting(readme, k) {
				fail("%s sets %s, which is not in README.md's configuration table", s.Name, k)
			}
			if slices.Contains(forbiddenSettings, k) {
				fail("%s sets %s, which is for tests only", s.Name, k)
			}
		}
	}

	// One image, built from this repository, for ingestd, migrate, track and sim.
	var image string
	for _, name := range []string{"migrate", "track", "sim", "ingestd"} {
		s := svc(name)
		if s.Build == nil || filepath.Clean(s.Build.Context) != filepath.Clean(p.WorkingDir) {
			fail("%s must build the repository's Dockerfile, got %+v", name, s.Build)
		} else if s.Build.Dockerfile != "" && s.Build.Dockerfile != "Dockerfile" {
			fail("%s builds %s, not the Dockerfile", name, s.Build.Dockerfile)
		}
		if image == "" {
			image = s.Image
		}
		if s.Image == "" || s.Image != image {
			fail("%s runs image %q; ingestd, migrate and sim must share one image name (%q)", name, s.Image, image)
		}
	}

	// PostgreSQL, and the DSN that ingestd and migrate use for it.
	pg := svc("postgres")
	if pg.Image != "postgres:16" {
		fail("postgres image %q, want postgres:16", pg.Image)
	}
	if pg.HealthCheck == nil || pg.HealthCheck.Disable || len(pg.HealthCheck.Test) == 0 {
		fail("postgres needs a healthcheck: migrate waits for it")
	}
	pgEnv := env(pg)
	for _, name := range []string{"migrate", "track", "ingestd"} {
		dsn := env(svc(name))["INGESTD_DATABASE_URL"]
		u, err := url.Parse(dsn)
		if err != nil || u.Hostname() != "postgres" {
			fail("%s INGESTD_DATABASE_URL %q must point at the postgres service", name, dsn)
			continue
		}
		pw, _ := u.User.Password()
		if u.User.Username() != pgEnv["POSTGRES_USER"] || pw != pgEnv["POSTGRES_PASSWORD"] || strings.TrimPrefix(u.Path, "/") != pgEnv["POSTGRES_DB"] {
			fail("%s INGESTD_DATABASE_URL does not match POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB", name)
		}
		if u.Port() != "" && u.Port() != "5432" {
			fail("%s INGESTD_DATABASE_URL port %s, PostgreSQL listens on 5432", name, u.Port())
		}
	}

	// Kafka in KRaft mode, one node, reachable from the containers and the
	// host.
	kafka := svc("kafka")
	if kafka.Image != "apache/kafka:3.9.0" {
		fail("kafka image %q, want apache/kafka:3.9.0", kafka.Image)
	}
	if kafka.HealthCheck == nil || kafka.HealthCheck.Disable || len(kafka.HealthCheck.Test) == 0 {
		fail("kafka needs a healthcheck: ingestd waits for it")
	}
	ke := env(kafka)
	for k, v := range map[string]string{
		"KAFKA_PROCESS_ROLES":                            "broker,controller",
		"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":         "1",
		"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
		"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":            "1",
	} {
		if ke[k] != v {
			fail("kafka %s = %q, want %q", k, ke[k], v)
		}
	}
	for _, k := range []string{"KAFKA_NODE_ID", "KAFKA_CONTROLLER_QUORUM_VOTERS", "KAFKA_CONTROLLER_LISTENER_NAMES",
		"KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS", "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "KAFKA_INTER_BROKER_LISTENER_NAME"} {
		if ke[k] == "" {
			fail("kafka needs %s", k)
		}
	}
	if voter := ke["KAFKA_NODE_ID"] + "@kafka:"; !strings.HasPrefix(ke["KAFKA_CONTROLLER_QUORUM_VOTERS"], voter) {
		fail("KAFKA_CONTROLLER_QUORUM_VOTERS %q must name node %s", ke["KAFKA_CONTROLLER_QUORUM_VOTERS"], voter)
	}
	bound, advertised := listeners(ke["KAFKA_LISTENERS"]), listeners(ke["KAFKA_ADVERTISED_LISTENERS"])
	protocols := listeners(strings.ReplaceAll(ke["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"], ":", "://"))
	for name := range bound {
		if _, ok := protocols[name]; !ok {
			fail("listener %s has no security protocol", name)
		}
	}
	if _, ok := bound[ke["KAFKA_CONTROLLER_LISTENER_NAMES"]]; !ok {
		fail("the controller listener %s is not bound", ke["KAFKA_CONTROLLER_LISTENER_NAMES"])
	}
	if _, ok := advertised[ke["KAFKA_INTER_BROKER_LISTENER_NAME"]]; !ok {
		fail("the inter-broker listener %s is not advertised", ke["KAFKA_INTER_BROKER_LISTENER_NAME"])
	}
	hostReachable := false
	for _, a := range advertised {
		host, port, _ := net.SplitHostPort(a)
		if host == "localhost" && port == "9092" {
			hostReachable = slices.ContainsFunc(kafka.Ports, func(pc types.ServicePortConfig) bool {
				return pc.Published == "9092" && pc.Target == 9092
			})
		}
	}
	if !hostReachable {
		fail("kafka must advertise localhost:9092 and publish it on the host")
	}
	brokers := env(svc("ingestd"))["INGESTD_KAFKA_BROKERS"]
	for _, b := range strings.Split(brokers, ",") {
		if !slices.Contains(slices.Collect(maps.Values(advertised)), b) || !strings.HasPrefix(b, "kafka:") {
			fail("INGESTD_KAFKA_BROKERS %q is not one of kafka's advertised in-network listeners %v", b, advertised)
		}
	}

	// The migration step.
	mig := svc("migrate")
	if !slices.Equal(mig.Command, []string{"migrate"}) || mig.Entrypoint != nil {
		fail("migrate must run the image's ingestd with [migrate], got entrypoint %q command %q", mig.Entrypoint, mig.Command)
	}
	dependsOn("migrate", "postgres", types.ServiceConditionHealthy)

	// The simulator, and ingestd's way to it.
	sim, se := svc("sim"), env(svc("sim"))
	if len(sim.Entrypoint) != 1 || !slices.Contains(df.finalPaths, sim.Entrypoint[0]) {
		fail("sim entrypoint %q is not a binary the Dockerfile copies into the image (%v)", sim.Entrypoint, df.finalPaths)
	}
	_, simPort, err := net.SplitHostPort(se["SIM_ADDR"])
	if err != nil {
		fail("SIM_ADDR %q: %v", se["SIM_ADDR"], err)
	}

	ing, ie := svc("ingestd"), env(svc("ingestd"))
	if ing.Entrypoint != nil || (len(ing.Command) > 0 && !slices.Equal(ing.Command, []string{"run"})) {
		fail("ingestd must run the daemon, got entrypoint %q command %q", ing.Entrypoint, ing.Command)
	}
	if u, err := url.Parse(ie["INGESTD_YANDEX_BASE_URL"]); err != nil || u.Hostname() != "sim" || u.Port() != simPort {
		fail("INGESTD_YANDEX_BASE_URL %q must point at the sim service on port %s", ie["INGESTD_YANDEX_BASE_URL"], simPort)
	}
	if ie["INGESTD_YANDEX_TOKEN"] == "" || ie["INGESTD_YANDEX_TOKEN"] != se["SIM_YANDEX_TOKEN"] {
		fail("INGESTD_YANDEX_TOKEN must be set and equal SIM_YANDEX_TOKEN, or every request is a 401")
	}
	if ie["INGESTD_LOG_FORMAT"] != "console" {
		fail("ingestd logs for humans here: INGESTD_LOG_FORMAT=console, got %q", ie["INGESTD_LOG_FORMAT"])
	}
	dependsOn("ingestd", "migrate", types.ServiceConditionCompletedSuccessfully)

	// track puts exactly the simulator's BTS orders on the watch-list, and
	// ingestd logs in to the simulator with the credentials it accepts.
	dependsOn("track", "migrate", types.ServiceConditionCompletedSuccessfully)
	simEnv, ingEnv := env(svc("sim")), env(svc("ingestd"))
	first, err1 := strconv.Atoi(simEnv["SIM_BTS_FIRST_ORDER_ID"])
	n, err2 := strconv.Atoi(simEnv["SIM_BTS_ORDERS"])
	if err1 != nil || err2 != nil || n <= 0 {
		fail("sim must serve BTS orders from a fixed first id (SIM_BTS_ORDERS, SIM_BTS_FIRST_ORDER_ID)")
	} else {
		wantCmd := []string{"bts", "track"}
		for i := range n {
			wantCmd = append(wantCmd, strconv.Itoa(first+i))
		}
		if got := []string(svc("track").Command); !slices.Equal(got, wantCmd) {
			fail("track command %v, want %v (the simulator's orders)", got, wantCmd)
		}
	}
	if ingEnv["INGESTD_BTS_LOGIN"] != simEnv["SIM_BTS_LOGIN"] || ingEnv["INGESTD_BTS_PASSWORD"] != simEnv["SIM_BTS_PASSWORD"] {
		fail("ingestd's BTS credentials must be the ones the simulator accepts")
	}
	if u, err := url.Parse(ingEnv["INGESTD_BTS_BASE_URL"]); err != nil || u.Hostname() != "sim" {
		fail("INGESTD_BTS_BASE_URL must point at the sim service")
	}
	dependsOn("ingestd", "kafka", types.ServiceConditionHealthy)
	dependsOn("ingestd", "sim", types.ServiceConditionStarted)

	// Compose's SIGKILL must come after ingestd's own shutdown bound.
	shutdownSetting := ie["INGESTD_SHUTDOWN_TIMEOUT"]
	if shutdownSetting == "" {
		shutdownSetting = readme["INGESTD_SHUTDOWN_TIMEOUT"]
	}
	shutdown, err := time.ParseDuration(shutdownSetting)
	if err != nil {
		fail("INGESTD_SHUTDOWN_TIMEOUT %q: %v", shutdownSetting, err)
	}
	grace := 10 * time.Second // Compose's default
	if ing.StopGracePeriod != nil {
		grace = time.Duration(*ing.StopGracePeriod)
	}
	if grace <= shutdown {
		fail("ingestd stop_grace_period %s must exceed INGESTD_SHUTDOWN_TIMEOUT %s", grace, shutdown)
	}
	for _, pc := range ing.Ports {
		if _, port, _ := net.SplitHostPort(ie["INGESTD_HTTP_ADDR"]); ie["INGESTD_HTTP_ADDR"] != "" && strconv.Itoa(int(pc.Target)) != port {
			fail("ingestd publishes port %d but INGESTD_HTTP_ADDR is %q", pc.Target, ie["INGESTD_HTTP_ADDR"])
		}
	}
	return errors.Join(errs...)
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(dockerfilePath)
	require.NoError(t, err)
	df, err := checkDockerfile(string(data))
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"/ingestd", "/ingestd-sim"}, df.finalPaths)

	// The build context must keep what the build needs.
	ignore, err := os.ReadFile(dockerignore)
	require.NoError(t, err)
	var patterns []string
	for _, l := range strings.Split(string(ignore), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, l)
		}
	}
	require.Contains(t, patterns, ".git")
	for _, needed := range []string{"go.mod", "go.sum", "cmd", "internal", "migrations", "schemas", "tools"} {
		for _, p := range patterns {
			ok, err := filepath.Match(p, needed)
			require.NoError(t, err)
			require.False(t, ok, ".dockerignore pattern %q excludes %s, which the build needs", p, needed)
		}
	}
}

// TestDockerfileCheckCatchesMistakes proves checkDockerfile fails on the
// mistakes it is meant to catch.
func TestDockerfileCheckCatchesMistakes(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(dockerfilePath)
	require.NoError(t, err)
	cases := []struct{ old, new, wantErr string }{
		{"USER 65532:65532", "USER nonroot", "numeric nonroot"},
		{`ENTRYPOINT ["/ingestd"]`, "ENTRYPOINT /ingestd", "exec form"},
		{"FROM gcr.io/distroless/static-debian12:nonroot", "FROM gcr.io/distroless/static-debian12", "final stage is FROM"},
		{"CGO_ENABLED=0 GOOS", "CGO_ENABLED=1 GOOS", "CGO_ENABLED=0"},
		{"-o /out/ingestd-sim ./tools/ingestd-sim", "-o /out/ingestd-sim ./tools/ingestd-demo", "does not build ./tools/ingestd-sim"},
		{"-X main.version=${VERSION}", "", "version-stamped"},
	}
	for _, tc := range cases {
		t.Run(tc.new, func(t *testing.T) {
			t.Parallel()
			require.Contains(t, string(data), tc.old, "the mutation no longer applies; update the case")
			_, err := checkDockerfile(strings.Replace(string(data), tc.old, tc.new, 1))
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

func TestComposeFile(t *testing.T) {
	t.Parallel()
	readme := readmeSettings(t)
	dfData, err := os.ReadFile(dockerfilePath)
	require.NoError(t, err)
	df, err := checkDockerfile(string(dfData))
	require.NoError(t, err)
	content, err := os.ReadFile(composeFile)
	require.NoError(t, err)

	p, err := loadCompose(t, content)
	require.NoError(t, err)
	require.NoError(t, checkCompose(p, readme, df))

	// Each case breaks the file the way a typo or a careless edit would;
	// loading or checking it must fail.
	cases := []struct {
		name, old, new, wantErr string
	}{
		{"unknown service key", "  sim:\n", "  sim:\n    bogus: true\n", "bogus"},
		{"misspelt depends_on", "    depends_on:\n      migrate:", "    depend_on:\n      migrate:", "depend_on"},
		{"unknown condition", "condition: service_completed_successfully", "condition: service_completed", "service_completed"},
		{"undefined dependency", "      sim:\n        condition: service_started", "      simulator:\n        condition: service_started", "simulator"},
		{"unknown top-level key", "\nvolumes:\n", "\nvolume:\n", "volume"},
		{"ingestd not waiting for migrations", "condition: service_completed_successfully", "condition: service_started", "ingestd must depend on migrate"},
		{"unknown INGESTD variable", "INGESTD_KAFKA_PARTITIONS:", "INGESTD_KAFKA_PARTITION:", "INGESTD_KAFKA_PARTITION,"},
		{"token mismatch", "SIM_YANDEX_TOKEN: compose-yandex-token", "SIM_YANDEX_TOKEN: other", "equal SIM_YANDEX_TOKEN"},
		{"brokers on the host listener", "INGESTD_KAFKA_BROKERS: kafka:29092", "INGESTD_KAFKA_BROKERS: kafka:9092", "advertised"},
		{"wrong database password", "POSTGRES_PASSWORD: ingestd", "POSTGRES_PASSWORD: secret", "POSTGRES_PASSWORD"},
		{"short stop grace period", "stop_grace_period: 30s", "stop_grace_period: 15s", "stop_grace_period"},
		{"sim binary not in image", `entrypoint: ["/ingestd-sim"]`, `entrypoint: ["/sim"]`, "not a binary"},
		{"track missing an order", `"7000019"]`, `"7000018"]`, "the simulator's orders"},
		{"wrong BTS password", "INGESTD_BTS_PASSWORD: compose-bts-password", "INGESTD_BTS_PASSWORD: other", "BTS credentials"},
		{"kafka without KRaft roles", "KAFKA_PROCESS_ROLES: broker,controller", "KAFKA_PROCESS_ROLES: broker", "KAFKA_PROCESS_ROLES"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Contains(t, string(content), tc.old, "the mutation no longer applies; update the case")
			p, err := loadCompose(t, []byte(strings.Replace(string(content), tc.old, tc.new, 1)))
			if err == nil {
				err = checkCompose(p, readme, df)
			}
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}
