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

// Packages of the Dockerfile's two images.
const (
	ingestdPkg = "./cmd/ingestd"
	simPkg     = "./tools/ingestd-sim"
	// distroless has CA certificates, tzdata and the nonroot user, and no
	// shell.
	distroless = "gcr.io/distroless/static-debian12:nonroot"
)

// image is one image stage of the Dockerfile: what it holds and runs.
type image struct {
	// paths are the files copied in; pkgs the Go packages they were built
	// from, path by path.
	paths, pkgs []string
	entrypoint  []string
}

// dockerfile is what the compose checks need to know of the Dockerfile.
type dockerfile struct {
	// production is the default target, the last stage: what `docker
	// build .` produces and what ships.
	production     image
	productionName string
	// targets are the image stages by name (--target).
	targets map[string]image
	// built are the packages the builder stages compile.
	built []string
}

// dockerStage is one FROM of a Dockerfile and its instructions.
type dockerStage struct {
	from, name string
	ins        [][2]string
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

// dockerStages groups a Dockerfile's instructions by stage. from is the
// FROM argument without --platform and AS.
func dockerStages(data string) []dockerStage {
	var stages []dockerStage
	for _, ins := range dockerInstructions(data) {
		if ins[0] == "FROM" {
			var st dockerStage
			f := strings.Fields(ins[1])
			for i := 0; i < len(f); i++ {
				switch {
				case strings.HasPrefix(f[i], "--"):
				case strings.EqualFold(f[i], "AS") && i+1 < len(f):
					st.name = f[i+1]
					i++
				default:
					st.from = f[i]
				}
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) > 0 {
			stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, ins)
		}
	}
	return stages
}

// checkDockerfile checks the Dockerfile's contract: a Go 1.26 builder
// producing static, trimmed, version-stamped binaries, and distroless
// nonroot image stages: the production one last (the default target),
// holding ingestd alone and running it as UID 65532, and a sim target
// holding the simulator alone. The simulator must never ship in the
// production image.
func checkDockerfile(data string) (*dockerfile, error) {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	stages := dockerStages(data)
	if len(stages) < 2 {
		return nil, fmt.Errorf("want builder and image stages, got %d stages", len(stages))
	}
	if first := stages[0]; first.from != "golang:1.26" || first.name != "build" {
		fail("the first stage is FROM %s AS %s, want golang:1.26 AS build", first.from, first.name)
	}

	// The builder stages: the first one and those built FROM a builder.
	// outputs maps "stage:path" to the package compiled there.
	builders := map[string]bool{}
	isBuilder := make([]bool, len(stages))
	outputs := map[string]string{}
	built := map[string]bool{}
	var versionArg bool
	for i, st := range stages {
		if i > 0 && !builders[st.from] {
			continue
		}
		isBuilder[i] = true
		if st.name != "" {
			builders[st.name] = true
		}
		for _, ins := range st.ins {
			switch ins[0] {
			case "ARG":
				versionArg = versionArg || strings.HasPrefix(ins[1], "VERSION")
			case "RUN":
				for _, cmd := range strings.Split(ins[1], "&&") {
					if !strings.Contains(cmd, "go build") {
						continue
					}
					for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-s -w"} {
						if !strings.Contains(cmd, want) {
							fail("go build without %s: %s", want, cmd)
						}
					}
					f := strings.Fields(cmd)
					pkg := f[len(f)-1]
					built[pkg] = true
					if o := slices.Index(f, "-o"); o >= 0 && o+1 < len(f) {
						outputs[st.name+":"+f[o+1]] = pkg
					}
					if pkg == ingestdPkg && !strings.Contains(cmd, "-X main.version=${VERSION}") {
						fail("ingestd is not version-stamped: %s", cmd)
					}
				}
			}
		}
	}
	if !versionArg {
		fail("the builder has no VERSION build argument")
	}
	df := &dockerfile{targets: map[string]image{}}
	for _, pkg := range []string{ingestdPkg, simPkg} {
		if !built[pkg] {
			fail("the builder does not build %s", pkg)
		}
	}
	df.built = slices.Sorted(maps.Keys(built))

	// The image stages.
	for i, st := range stages {
		if isBuilder[i] {
			continue
		}
		what := "stage " + st.name
		if i == len(stages)-1 {
			what = "the production stage (the last one, the default target)"
		}
		if st.from != distroless {
			fail("%s is FROM %s, want %s", what, st.from, distroless)
		}
		var img image
		user := ""
		for _, ins := range st.ins {
			switch ins[0] {
			case "COPY":
				f := strings.Fields(ins[1])
				from, ok := strings.CutPrefix(f[0], "--from=")
				if !ok || len(f) != 3 {
					fail("%s copies from the build context, or more than one file: %s", what, ins[1])
					continue
				}
				pkg, ok := outputs[from+":"+f[1]]
				if !ok {
					fail("%s copies %s from %s, which no go build there produces", what, f[1], from)
				}
				img.paths = append(img.paths, f[2])
				img.pkgs = append(img.pkgs, pkg)
			case "USER":
				user = ins[1]
			case "ENTRYPOINT":
				if err := json.Unmarshal([]byte(ins[1]), &img.entrypoint); err != nil {
					fail("%s: ENTRYPOINT must be in exec form (no shell in distroless): %v", what, err)
				}
			case "RUN":
				fail("%s has a RUN: distroless has no shell", what)
			}
		}
		if user != "65532" && user != "65532:65532" {
			fail("%s: USER %q, want the numeric nonroot 65532", what, user)
		}
		if len(img.entrypoint) == 0 || !slices.Contains(img.paths, img.entrypoint[0]) {
			fail("%s: ENTRYPOINT %q is not a binary it holds (%v)", what, img.entrypoint, img.paths)
		}
		if st.name != "" {
			df.targets[st.name] = img
		}
		if i == len(stages)-1 {
			df.production, df.productionName = img, st.name
		}
	}

	if isBuilder[len(stages)-1] {
		fail("the last stage, the default target, must be the production image, not a builder")
	}
	if !slices.Equal(df.production.pkgs, []string{ingestdPkg}) {
		fail("the production image (the default target) must hold ingestd alone, built from %s; it holds %v built from %v", ingestdPkg, df.production.paths, df.production.pkgs)
	}
	if !slices.Equal(df.production.entrypoint, []string{"/ingestd"}) {
		fail("the production image's ENTRYPOINT is %q, want [\"/ingestd\"]", df.production.entrypoint)
	}
	if sim, ok := df.targets["sim"]; !ok {
		fail("no sim target: docker-compose builds the simulator with --target sim")
	} else if !slices.Equal(sim.pkgs, []string{simPkg}) {
		fail("the sim image must hold the simulator alone, built from %s; it holds %v built from %v", simPkg, sim.paths, sim.pkgs)
	}
	return df, errors.Join(errs...)
}

// firstOf is the first of s, "" for none.
func firstOf(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
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

	// Two images built from this repository's Dockerfile: the production
	// one (the default target) for ingestd, migrate and track, sharing one
	// image name so that whichever service Compose builds first, the others
	// find it and never try to pull it; and the simulator's (--target sim)
	// under a name of its own, since one name cannot hold two images.
	target := func(name string) (image, bool) {
		s := svc(name)
		if s.Build == nil || filepath.Clean(s.Build.Context) != filepath.Clean(p.WorkingDir) {
			fail("%s must build the repository's Dockerfile, got %+v", name, s.Build)
			return image{}, false
		}
		if s.Build.Dockerfile != "" && s.Build.Dockerfile != "Dockerfile" {
			fail("%s builds %s, not the Dockerfile", name, s.Build.Dockerfile)
		}
		if s.Build.Target == "" || s.Build.Target == df.productionName {
			return df.production, true
		}
		img, ok := df.targets[s.Build.Target]
		if !ok {
			fail("%s builds target %q, which the Dockerfile does not have", name, s.Build.Target)
		}
		return img, ok
	}
	var ingestdImage string
	for _, name := range []string{"migrate", "track", "ingestd"} {
		s := svc(name)
		if s.Build != nil && s.Build.Target != "" && s.Build.Target != df.productionName {
			fail("%s must build the production image (the default target), not %q", name, s.Build.Target)
		}
		target(name)
		if ingestdImage == "" {
			ingestdImage = s.Image
		}
		if s.Image == "" || s.Image != ingestdImage {
			fail("%s runs image %q; ingestd, migrate and track must share one image name (%q)", name, s.Image, ingestdImage)
		}
	}
	simImage, simOK := target("sim")
	if b := svc("sim").Build; b == nil || b.Target != "sim" {
		fail("sim must build the Dockerfile's sim target: the production image holds no simulator")
	}
	if img := svc("sim").Image; img == "" || img == ingestdImage {
		fail("sim runs image %q; it needs an image name of its own, not ingestd's %q", img, ingestdImage)
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

	// The simulator, and ingestd's way to it. Without an entrypoint of its
	// own, the service runs its image's.
	sim, se := svc("sim"), env(svc("sim"))
	simEntrypoint := []string(sim.Entrypoint)
	if simEntrypoint == nil {
		simEntrypoint = simImage.entrypoint
	}
	if i := slices.Index(simImage.paths, firstOf(simEntrypoint)); simOK && (i < 0 || simImage.pkgs[i] != simPkg) {
		fail("sim entrypoint %q is not the simulator binary of its image (%v)", simEntrypoint, simImage.paths)
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
	require.Equal(t, []string{"/ingestd"}, df.production.paths, "the production image")
	require.Equal(t, []string{"/ingestd-sim"}, df.targets["sim"].paths, "the sim image")

	// The build context must keep what the build needs: the module files,
	// the embedded files, and every package the Dockerfile builds (with
	// what it imports from internal/).
	ignore, err := os.ReadFile(dockerignore)
	require.NoError(t, err)
	var patterns []string
	for _, l := range strings.Split(string(ignore), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, l)
		}
	}
	require.Contains(t, patterns, ".git")
	needed := []string{"go.mod", "go.sum", "internal", "migrations", "schemas"}
	for _, pkg := range df.built {
		needed = append(needed, strings.TrimPrefix(pkg, "./"))
	}
	for _, path := range needed {
		// A pattern excludes a directory with everything below it, so
		// every leading part of the path counts.
		parts := strings.Split(path, "/")
		for i := range parts {
			prefix := strings.Join(parts[:i+1], "/")
			for _, p := range patterns {
				ok, err := filepath.Match(p, prefix)
				require.NoError(t, err)
				require.False(t, ok, ".dockerignore pattern %q excludes %s, which the build needs", p, path)
			}
		}
	}
}

// TestDockerfileCheckCatchesMistakes proves checkDockerfile fails on the
// mistakes it is meant to catch.
func TestDockerfileCheckCatchesMistakes(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(dockerfilePath)
	require.NoError(t, err)
	const (
		productionCopy = "COPY --from=build-ingestd /out/ingestd /ingestd\n"
		simCopy        = "COPY --from=build-sim /out/ingestd-sim /ingestd-sim\n"
	)
	cases := []struct{ name, old, new, wantErr string }{
		{"a named user", "USER 65532:65532", "USER nonroot", "numeric nonroot"},
		{"a shell-form entrypoint", `ENTRYPOINT ["/ingestd"]`, "ENTRYPOINT /ingestd", "exec form"},
		{"a distroless image with a root user", "FROM gcr.io/distroless/static-debian12:nonroot", "FROM gcr.io/distroless/static-debian12", "is FROM gcr.io/distroless/static-debian12, want"},
		{"cgo on", "CGO_ENABLED=0 GOOS", "CGO_ENABLED=1 GOOS", "CGO_ENABLED=0"},
		{"the wrong tool built", "-o /out/ingestd-sim ./tools/ingestd-sim", "-o /out/ingestd-sim ./tools/ingestd-demo", "does not build ./tools/ingestd-sim"},
		{"no version stamp", "-X main.version=${VERSION}", "", "version-stamped"},
		// The layout before the simulator got its own target: one image
		// with both binaries.
		{"the simulator in the production image", productionCopy, productionCopy + simCopy, "the production image (the default target) must hold ingestd alone"},
		{"ingestd in the sim image", simCopy, simCopy + productionCopy, "the sim image must hold the simulator alone"},
		{"no sim target", "AS sim\n", "AS simulator\n", "no sim target"},
		{"a simulator stage last, so the default target", `ENTRYPOINT ["/ingestd"]`,
			`ENTRYPOINT ["/ingestd"]` + "\nFROM gcr.io/distroless/static-debian12:nonroot AS sim-again\n" + simCopy + "USER 65532\nENTRYPOINT [\"/ingestd-sim\"]",
			"the production image (the default target) must hold ingestd alone"},
		{"a builder last, so the default target", `ENTRYPOINT ["/ingestd"]`, `ENTRYPOINT ["/ingestd"]` + "\nFROM build-sim AS debug",
			"the last stage, the default target, must be the production image"},
		{"a binary from the build context", simCopy, "COPY ingestd-sim /ingestd-sim\n", "copies from the build context"},
		{"a binary nobody built", "/out/ingestd /ingestd\n", "/out/ingestd-debug /ingestd\n", "which no go build there produces"},
		{"an entrypoint the image does not hold", `ENTRYPOINT ["/ingestd-sim"]`, `ENTRYPOINT ["/ingestd"]`, "is not a binary it holds"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
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
		{"sim from the production image", "      target: sim\n", "", "sim must build the Dockerfile's sim target"},
		{"sim from a target that does not exist", "target: sim\n", "target: simulator\n", `target "simulator"`},
		{"sim under ingestd's image name", "image: ingestd-sim:local", "image: ingestd:local", "an image name of its own"},
		{"ingestd from the sim target", "    <<: *ingestd-image\n    environment:\n      INGESTD_DATABASE_URL: postgres://ingestd:ingestd@postgres:5432/ingestd?sslmode=disable\n      INGESTD_KAFKA_BROKERS",
			"    <<: *ingestd-image\n    build:\n      context: .\n      target: sim\n    environment:\n      INGESTD_DATABASE_URL: postgres://ingestd:ingestd@postgres:5432/ingestd?sslmode=disable\n      INGESTD_KAFKA_BROKERS",
			"ingestd must build the production image"},
		{"sim binary not in its image", "  sim:\n", "  sim:\n    entrypoint: [\"/sim\"]\n", "not the simulator binary"},
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
