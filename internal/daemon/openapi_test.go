package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"go/types"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/config"
	liberrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/responses"
	"github.com/pb33f/libopenapi-validator/schema_validation"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"
	"github.com/stretchr/testify/require"

	"github.com/ingestd/ingestd/internal/admin"
	"github.com/ingestd/ingestd/internal/bts"
	"github.com/ingestd/ingestd/internal/doorbell"
	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/sim"
)

// The tests of this file hold schemas/admin-api.yaml, the OpenAPI document
// of every route under /v1/, to the daemon: they start real daemons (the
// HTTP handler the daemon builds, on a real PostgreSQL and a fake Kafka)
// rather than admin.New and doorbell.New alone, so that the routes checked
// are the ones the daemon mounts, the webhook's included, and nothing a
// daemon adds in front of them or beside them escapes. Each request and
// each answer is validated against the document with libopenapi-validator.

// apiDocFile is the document, from this package's directory.
const apiDocFile = "../../schemas/admin-api.yaml"

// Tokens of the test daemons.
const (
	apiAdminToken  = "admin-token-of-the-openapi-test"
	apiHookDefault = "webhook-token-of-bts-default"
	apiHookTash    = "webhook-token-of-bts-tashkent"
)

// apiTokens are the tokens a daemon accepts: what the document's security
// schemes stand for in a test.
type apiTokens struct {
	// admin is INGESTD_ADMIN_TOKEN; "" while the admin API is disabled,
	// when no token is right.
	admin string
	// webhook are the BTS accounts' webhook tokens.
	webhook []string
}

// authenticate tells the validator whether a request satisfies one of the
// document's security schemes: not only that a token is there, but that it
// is one the daemon accepts, so that a wrong token makes a request the
// document does not admit.
func (tok apiTokens) authenticate(_ context.Context, in *config.AuthenticationInput) error {
	r := in.Request
	var given string
	switch in.SecuritySchemeName {
	case "adminBearer":
		// RFC 9110 makes the scheme name case-insensitive; the admin
		// API also ignores spaces around the token.
		scheme, given, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || tok.admin == "" || strings.TrimSpace(given) != tok.admin {
			return errors.New("not the admin token")
		}
		return nil
	case "webhookBearer":
		// The scheme name is case-insensitive (RFC 9110), as the endpoint
		// takes it.
		if scheme, v, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " "); ok && strings.EqualFold(scheme, "Bearer") {
			given = strings.TrimSpace(v)
		}
	case "webhookTokenHeader":
		given = r.Header.Get("token")
	case "webhookTokenQuery":
		given = r.URL.Query().Get("token")
	default:
		return fmt.Errorf("unknown security scheme %s", in.SecuritySchemeName)
	}
	if given == "" || !slices.Contains(tok.webhook, given) {
		return errors.New("not a webhook token")
	}
	return nil
}

// apiSpec is the document, loaded and checked, with its validators.
type apiSpec struct {
	model *v3.Document
	// val validates requests and the answers to documented operations.
	val validator.Validator
	// schemas validates the bodies of answers the extensions describe.
	schemas schema_validation.SchemaValidator
	opts    []config.Option
}

// loadAPISpec loads the document, which must be a valid OpenAPI 3.1
// document, for a daemon accepting tok.
func loadAPISpec(t *testing.T, tok apiTokens) *apiSpec {
	t.Helper()
	raw, err := os.ReadFile(apiDocFile)
	require.NoError(t, err)
	doc, err := libopenapi.NewDocument(raw)
	require.NoError(t, err)
	require.Equal(t, "3.1.0", doc.GetVersion())
	m, err := doc.BuildV3Model()
	require.NoError(t, err)
	opts := []config.Option{
		// date-time and the like are checked, not only annotations.
		config.WithFormatAssertions(),
		// The webhook's form body is validated, and the JSON its text
		// field holds (contentSchema) as well.
		config.WithURLEncodedBodyValidation(),
		config.WithContentAssertions(),
		// The request must name the document's server, which makes the
		// validator tell /v1/sources/ from /v1/sources as the daemon does.
		config.WithStrictServerMatching(),
		// A body sent to an operation that takes none is an error.
		config.WithRejectUndeclaredRequestBody(),
		config.WithAuthenticationFunc(tok.authenticate),
	}
	v, errs := validator.NewValidator(doc, opts...)
	require.Empty(t, errs)
	ok, verrs := v.ValidateDocument()
	require.True(t, ok, "schemas/admin-api.yaml is not a valid OpenAPI document:\n%s", apiDescribe(verrs))
	spec := &apiSpec{model: &m.Model, val: v, schemas: schema_validation.NewSchemaValidator(opts...), opts: opts}

	// The extensions are the document's own: OpenAPI does not check that
	// the responses they name exist, so this does.
	for item := range m.Model.Paths.PathItems.ValuesFromOldest() {
		for status := range spec.extensionRefs(t, "x-ingestd-other-methods", item) {
			code, err := strconv.Atoi(status)
			require.NoError(t, err, "x-ingestd-other-methods maps statuses")
			spec.extensionResponse(t, "x-ingestd-other-methods", item, code)
		}
	}
	for status := range spec.extensionRefs(t, "x-ingestd-unknown-paths", nil) {
		code, err := strconv.Atoi(status)
		require.NoError(t, err, "x-ingestd-unknown-paths maps statuses")
		spec.extensionResponse(t, "x-ingestd-unknown-paths", nil, code)
	}
	return spec
}

// apiDescribe renders validation errors for a failure message.
func apiDescribe(errs []*liberrors.ValidationError) string {
	var b strings.Builder
	for _, e := range errs {
		b.WriteString(e.Error())
		for _, f := range e.SchemaValidationErrors {
			fmt.Fprintf(&b, "\n\t%s at %s", f.Reason, f.InstancePath)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// apiMethods are the methods a route is probed with: every method
// OpenAPI 3.1 can describe, and one it cannot.
var apiMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete, http.MethodOptions, http.MethodTrace, "PROPFIND",
}

// apiOperation returns the path item's operation for method, or nil.
func apiOperation(item *v3.PathItem, method string) *v3.Operation {
	if item == nil {
		return nil
	}
	return item.GetOperations().GetOrZero(strings.ToLower(method))
}

// documented returns the document's routes, "METHOD /path/{param}".
func (s *apiSpec) documented() []string {
	var out []string
	for path, item := range s.model.Paths.PathItems.FromOldest() {
		for method := range item.GetOperations().FromOldest() {
			out = append(out, strings.ToUpper(method)+" "+path)
		}
	}
	slices.Sort(out)
	return out
}

// pathItem returns the document's path template matching path (a
// request's decoded path), and its item; nil when none matches.
func (s *apiSpec) pathItem(path string) (string, *v3.PathItem) {
	segs := strings.Split(path, "/")
	for tmpl, item := range s.model.Paths.PathItems.FromOldest() {
		tsegs := strings.Split(tmpl, "/")
		if len(tsegs) != len(segs) {
			continue
		}
		match := true
		for i, ts := range tsegs {
			param := strings.HasPrefix(ts, "{") && strings.HasSuffix(ts, "}")
			if (param && segs[i] == "") || (!param && ts != segs[i]) {
				match = false
				break
			}
		}
		if match {
			return tmpl, item
		}
	}
	return "", nil
}

// extensionRefs returns the extension ext of item (of the document when
// item is nil): statuses and the component responses describing them.
func (s *apiSpec) extensionRefs(t *testing.T, ext string, item *v3.PathItem) map[string]string {
	t.Helper()
	exts := s.model.Extensions
	if item != nil {
		exts = item.Extensions
	}
	node := exts.GetOrZero(ext)
	require.NotNil(t, node, "the document has no %s here", ext)
	var refs map[string]string
	require.NoError(t, node.Decode(&refs), "%s maps statuses to component responses", ext)
	require.NotEmpty(t, refs, ext)
	return refs
}

// extensionResponse returns the component response that the extension
// ext of item (of the document when item is nil) names for status.
func (s *apiSpec) extensionResponse(t *testing.T, ext string, item *v3.PathItem, status int) *v3.Response {
	t.Helper()
	ref, ok := s.extensionRefs(t, ext, item)[strconv.Itoa(status)]
	require.True(t, ok, "%s lists no %d", ext, status)
	name, ok := strings.CutPrefix(ref, "#/components/responses/")
	require.True(t, ok, "%s: %s is not a component response", ext, ref)
	resp := s.model.Components.Responses.GetOrZero(name)
	require.NotNil(t, resp, "%s: no component response %s", ext, name)
	return resp
}

// apiExchange is one request to a daemon and the answer it must get.
type apiExchange struct {
	name   string
	method string
	// target is the path and query.
	target string
	header map[string]string
	body   string
	status int
	// conforms says whether the document admits the request. Requests it
	// does not admit must still get an answer it describes.
	conforms bool
}

// request builds ex's request to the daemon at base.
func (ex apiExchange) request(t *testing.T, base string) *http.Request {
	t.Helper()
	var body io.Reader
	if ex.body != "" {
		body = strings.NewReader(ex.body)
	}
	req, err := http.NewRequest(ex.method, base+ex.target, body)
	require.NoError(t, err)
	for k, v := range ex.header {
		req.Header.Set(k, v)
	}
	return req
}

// check sends ex to the daemon at base and validates the request and the
// answer against the document.
func (s *apiSpec) check(t *testing.T, base string, ex apiExchange) {
	t.Helper()
	// The validator reads the body, so it gets a request of its own.
	ok, errs := s.val.ValidateHttpRequestSync(ex.request(t, base))
	if ex.conforms {
		require.True(t, ok, "the document does not admit the request:\n%s", apiDescribe(errs))
	} else {
		require.False(t, ok, "the document admits a request it should not")
	}

	req := ex.request(t, base)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, ex.status, resp.StatusCode, "%s", raw)
	resp.Body = io.NopCloser(bytes.NewReader(raw))
	s.checkResponse(t, req, resp, raw)
}

// checkResponse validates an answer against what the document says of
// its request: the operation's response, or the one an extension names
// for a method the path does not list or a path the document does not.
func (s *apiSpec) checkResponse(t *testing.T, req *http.Request, resp *http.Response, raw []byte) {
	t.Helper()
	tmpl, item := s.pathItem(req.URL.Path)
	op := apiOperation(item, req.Method)
	var declared *v3.Response
	switch {
	case op != nil:
		ok, errs := s.val.ValidateHttpResponse(req, resp)
		require.True(t, ok, "the answer does not match the document:\n%s\n%s", apiDescribe(errs), raw)
		declared = op.Responses.Codes.GetOrZero(strconv.Itoa(resp.StatusCode))
		require.NotNil(t, declared)
	case item != nil:
		declared = s.extensionResponse(t, "x-ingestd-other-methods", item, resp.StatusCode)
	default:
		tmpl = req.URL.Path
		declared = s.extensionResponse(t, "x-ingestd-unknown-paths", nil, resp.StatusCode)
	}

	// Every header the answer carries is declared, beyond those HTTP
	// itself adds: a header the handler adds must be documented.
	for name := range resp.Header {
		switch http.CanonicalHeaderKey(name) {
		case "Content-Type", "Content-Length", "Date":
			continue
		}
		ok := false
		for k := range declared.Headers.KeysFromOldest() {
			ok = ok || strings.EqualFold(k, name)
		}
		require.True(t, ok, "%s %s: the %d answer's header %s is not in the document", req.Method, tmpl, resp.StatusCode, name)
	}
	if op == nil && declared.Headers != nil {
		ok, errs := responses.ValidateResponseHeaders(req, resp, declared.Headers, tmpl, strconv.Itoa(resp.StatusCode), s.opts...)
		require.True(t, ok, "the answer's headers do not match the document:\n%s", apiDescribe(errs))
	}

	if req.Method == http.MethodHead {
		require.Empty(t, raw, "HEAD is answered without a body")
		return
	}
	require.NotZero(t, declared.Content.Len(), "%s %s: the document's %d answer has no body, the daemon's does: %s", req.Method, tmpl, resp.StatusCode, raw)
	mt, ok := declared.Content.Get(resp.Header.Get("Content-Type"))
	require.True(t, ok, "%s %s: the %d answer's content type %q is not in the document", req.Method, tmpl, resp.StatusCode, resp.Header.Get("Content-Type"))
	if op == nil {
		ok, errs := s.schemas.ValidateSchemaBytes(mt.Schema.Schema(), raw)
		require.True(t, ok, "the answer's body does not match the document:\n%s\n%s", apiDescribe(errs), raw)
	}
}

// apiBearer is an Authorization header value.
func apiBearer(tok string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + tok}
}

// apiWithJSON adds a JSON content type to h.
func apiWithJSON(h map[string]string) map[string]string {
	return apiWithHeader(h, "Content-Type", "application/json")
}

// apiWithHeader returns h with one more header.
func apiWithHeader(h map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for hk, hv := range h {
		out[hk] = hv
	}
	return out
}

// apiForm is a webhook call's form body.
func apiForm(payload string) string { return url.Values{"text": {payload}}.Encode() }

const apiFormType = "application/x-www-form-urlencoded"

// apiStack is a stack whose daemon serves the document's routes.
type apiStack struct {
	*stack
	base string
}

// newAPIStack prepares a stack on its own schema and Kafka with configure
// applied, starts its daemon and waits until ready says it runs every
// source.
func newAPIStack(t *testing.T, seed int64, configure func(*stack), ready func(base string) bool) *apiStack {
	t.Helper()
	s := newStack(t, sim.YandexConfig{Seed: seed, Backlog: 20})
	configure(s)
	r := s.start(t)
	a := &apiStack{stack: s, base: "http://" + r.d.HTTPAddr()}
	require.Eventually(t, func() bool { return ready(a.base) }, 30*time.Second, 20*time.Millisecond, "the daemon runs its sources")
	return a
}

// apiBTSServer serves a BTS simulator accepting login ingestd, password pw,
// whose orders are 4293644 to 4293648. The tests track those, so that a
// poll of theirs does not mark them not_found, which tracking them again
// would count as adding them.
func apiBTSServer(t *testing.T, seed int64) string {
	t.Helper()
	b, err := sim.NewBTS(sim.BTSConfig{Seed: seed, Login: "ingestd", Password: "pw", Orders: 5, FirstOrderID: 4293644, TokenTTL: time.Hour})
	require.NoError(t, err)
	srv := httptest.NewServer(b)
	t.Cleanup(srv.Close)
	return srv.URL
}

// apiAnswer sends a request outside the document's checks and returns its
// status and body, to wait for a daemon's state.
func apiAnswer(base, method, target string, header map[string]string) (int, []byte) {
	req, err := http.NewRequest(method, base+target, nil)
	if err != nil {
		return 0, nil
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil
	}
	defer func() { _ = resp.Body.Close() }()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// apiSourcesReady reports whether GET /v1/sources lists n sources, the
// Yandex one having committed, so that the answer shows a commit's time
// and age as well as the nulls of sources without one.
func apiSourcesReady(base string, n int) bool {
	status, raw := apiAnswer(base, http.MethodGet, "/v1/sources", apiBearer(apiAdminToken))
	if status != http.StatusOK {
		return false
	}
	var body struct {
		Sources []struct {
			Provider     string  `json:"provider"`
			LastCommitAt *string `json:"last_commit_at"`
		} `json:"sources"`
	}
	if json.Unmarshal(raw, &body) != nil || len(body.Sources) != n {
		return false
	}
	for _, src := range body.Sources {
		if src.Provider == "yandex" && src.LastCommitAt == nil {
			return false
		}
	}
	return true
}

// TestAdminAPIMatchesOpenAPI drives a daemon with the admin API on and two
// BTS accounts taking webhooks through every documented route, with good
// and bad requests, then probes every path and method for a route the
// document lacks.
func TestAdminAPIMatchesOpenAPI(t *testing.T) {
	t.Parallel()
	spec := loadAPISpec(t, apiTokens{admin: apiAdminToken, webhook: []string{apiHookDefault, apiHookTash}})
	a := newAPIStack(t, 61, func(s *stack) {
		s.cfg.AdminToken = secret.New(apiAdminToken)
		s.cfg.BTS.BaseURL = apiBTSServer(t, 61)
		s.cfg.BTS.Login = "ingestd"
		s.cfg.BTS.Password = secret.New("pw")
		s.cfg.BTS.WebhookToken = secret.New(apiHookDefault)
		env := map[string]string{"TASH_LOGIN": "ingestd", "TASH_PASSWORD": "pw", "TASH_HOOK": apiHookTash}
		s.cfg.Getenv = func(k string) string { return env[k] }
		s.cfg.SourcesFile = filepath.Join(t.TempDir(), "sources.yaml")
		doc := fmt.Sprintf("sources:\n  - provider: bts\n    account: tashkent\n    login_env: TASH_LOGIN\n    password_env: TASH_PASSWORD\n    webhook_token_env: TASH_HOOK\n    base_url: %s\n", apiBTSServer(t, 62))
		require.NoError(t, os.WriteFile(s.cfg.SourcesFile, []byte(doc), 0o600))
	}, func(base string) bool { return apiSourcesReady(base, 3) })

	auth := apiBearer(apiAdminToken)
	tooMany := `{"order_ids":["` + strings.Repeat(`1","`, admin.MaxOrdersPerRequest) + `1"]}`
	tooLarge := `{"order_ids":["` + strings.Repeat("x", admin.MaxBodyBytes) + `"]}`
	// The webhook's size limit is in the document's words only: JSON
	// Schema cannot bound a body's bytes, so this call conforms.
	hookTooLarge := `{"orderId":1,"barcode":"` + strings.Repeat("x", doorbell.MaxBody) + `"}`
	hook := doorbell.DefaultPath
	// The exchanges run in order: later ones see what earlier ones
	// tracked and untracked.
	tests := []apiExchange{
		// Authentication comes first, on every route.
		{"no token", "GET", "/v1/bts/orders?account=default", nil, "", 401, false},
		{"wrong token", "GET", "/v1/bts/orders?account=default", apiBearer("nope"), "", 401, false},
		{"basic scheme", "GET", "/v1/bts/orders?account=default", map[string]string{"Authorization": "Basic " + apiAdminToken}, "", 401, false},
		{"webhook token", "GET", "/v1/bts/orders?account=default", apiBearer(apiHookDefault), "", 401, false},
		{"scheme is case-insensitive", "GET", "/v1/bts/orders?account=default", map[string]string{"Authorization": "bearer " + apiAdminToken}, "", 200, true},
		{"no token on an order", "DELETE", "/v1/bts/orders/4293644?account=default", nil, "", 401, false},
		{"no token on sources", "GET", "/v1/sources", nil, "", 401, false},
		{"no token with a wrong method", "PUT", "/v1/bts/orders", nil, "", 401, false},
		{"no token on an unknown path", "GET", "/v1/yandex/cursor", nil, "", 401, false},

		// POST /v1/bts/orders.
		{"track", "POST", "/v1/bts/orders?account=default", apiWithJSON(auth), `{"order_ids":["4293644","4293645","4293644"]}`, 201, true},
		{"track again", "POST", "/v1/bts/orders?account=default", apiWithJSON(auth), `{"order_ids":["4293644"]}`, 200, true},
		{"track with a charset", "POST", "/v1/bts/orders?account=tashkent", apiWithHeader(auth, "Content-Type", "application/json; charset=utf-8"), `{"order_ids":["A-7_x"]}`, 201, true},
		// The handler reads a body without a content type as JSON; the
		// document asks for one.
		{"track without a content type", "POST", "/v1/bts/orders?account=default", auth, `{"order_ids":["A-7_x"]}`, 201, false},
		{"track in several accounts", "POST", "/v1/bts/orders", apiWithJSON(auth), `{"order_ids":["1"]}`, 400, true},
		{"track in an unknown account", "POST", "/v1/bts/orders?account=shop", apiWithJSON(auth), `{"order_ids":["1"]}`, 404, true},
		{"track as text", "POST", "/v1/bts/orders?account=default", apiWithHeader(auth, "Content-Type", "text/plain"), `{"order_ids":["1"]}`, 415, false},
		{"empty list", "POST", "/v1/bts/orders?account=default", apiWithJSON(auth), `{"order_ids":[]}`, 400, false},
		{"missing list", "POST", "/v1/bts/orders?account=default", apiWithJSON(auth), `{}`, 400, false},
		{"null list", "POST", "/v1/bts/orders?account=default", apiWithJSON(auth), `{"order_ids":null}`, 400, false},
		{"typo in field", "POST", "/v1/bts/orders?account=default", apiWithJSON(auth), `{"orders":["1"]}`, 400, false},
		{"ids are numbers", "POST", "/v1/bts/orders?account=default", apiWithJSON(auth), `{"order_ids":[4293644]}`, 400, false},
		{"id with a space", "POST", "/v1/bts/orders?account=default", apiWithJSON(auth), `{"order_ids":["12 34"]}`, 400, false},
		{"id too long", "POST", "/v1/bts/orders?account=default", apiWithJSON(auth), `{"order_ids":["` + strings.Repeat("9", bts.MaxOrderIDLen+1) + `"]}`, 400, false},
		{"too many ids", "POST", "/v1/bts/orders?account=default", apiWithJSON(auth), tooMany, 400, false},
		{"not JSON", "POST", "/v1/bts/orders?account=default", apiWithJSON(auth), `order_ids=1`, 400, false},
		{"empty body", "POST", "/v1/bts/orders?account=default", apiWithJSON(auth), ``, 400, false},
		{"two values", "POST", "/v1/bts/orders?account=default", apiWithJSON(auth), `{"order_ids":["1"]} {}`, 400, false},
		{"body too large", "POST", "/v1/bts/orders?account=default", apiWithJSON(auth), tooLarge, 413, false},

		// GET and HEAD /v1/bts/orders.
		{"list", "GET", "/v1/bts/orders?account=default", auth, "", 200, true},
		{"list a full page", "GET", "/v1/bts/orders?account=default&limit=1", auth, "", 200, true},
		{"list the next page", "GET", "/v1/bts/orders?account=default&limit=1&after=4293645", auth, "", 200, true},
		{"list a state", "GET", "/v1/bts/orders?account=tashkent&state=active&limit=1000", auth, "", 200, true},
		{"list several accounts", "GET", "/v1/bts/orders", auth, "", 400, true},
		{"list an unknown account", "GET", "/v1/bts/orders?account=shop", auth, "", 404, true},
		{"bad state", "GET", "/v1/bts/orders?account=default&state=done", auth, "", 400, false},
		{"limit 0", "GET", "/v1/bts/orders?account=default&limit=0", auth, "", 400, false},
		{"limit over the bound", "GET", "/v1/bts/orders?account=default&limit=1001", auth, "", 400, false},
		{"limit not a number", "GET", "/v1/bts/orders?account=default&limit=ten", auth, "", 400, false},
		{"bad after", "GET", "/v1/bts/orders?account=default&after=%27%3B--", auth, "", 400, false},
		{"head", "HEAD", "/v1/bts/orders?account=default", auth, "", 200, true},
		{"head with a bad limit", "HEAD", "/v1/bts/orders?account=default&limit=0", auth, "", 400, false},
		{"head without a token", "HEAD", "/v1/bts/orders?account=default", nil, "", 401, false},

		// DELETE /v1/bts/orders/{id}.
		{"untrack", "DELETE", "/v1/bts/orders/4293644?account=default", auth, "", 200, true},
		{"untrack again", "DELETE", "/v1/bts/orders/4293644?account=default", auth, "", 404, true},
		{"untrack in several accounts", "DELETE", "/v1/bts/orders/4293645", auth, "", 400, true},
		{"untrack in an unknown account", "DELETE", "/v1/bts/orders/4293645?account=shop", auth, "", 404, true},
		{"untrack a bad id", "DELETE", "/v1/bts/orders/a%20b?account=default", auth, "", 400, false},

		// GET and HEAD /v1/sources.
		{"sources", "GET", "/v1/sources", auth, "", 200, true},
		{"head sources", "HEAD", "/v1/sources", auth, "", 200, true},

		// Methods a path does not list, and paths the document does not.
		{"put orders", "PUT", "/v1/bts/orders", apiWithJSON(auth), `{}`, 405, false},
		{"delete orders", "DELETE", "/v1/bts/orders", auth, "", 405, false},
		{"options orders", "OPTIONS", "/v1/bts/orders", auth, "", 405, false},
		{"get an order", "GET", "/v1/bts/orders/1", auth, "", 405, false},
		{"head an order", "HEAD", "/v1/bts/orders/1", auth, "", 405, false},
		{"post to an order", "POST", "/v1/bts/orders/1", apiWithJSON(auth), `{}`, 405, false},
		{"post sources", "POST", "/v1/sources", auth, "", 405, false},
		{"patch sources", "PATCH", "/v1/sources", auth, "", 405, false},
		{"unknown path", "GET", "/v1/yandex/cursor", auth, "", 404, false},
		{"the root", "GET", "/v1/", auth, "", 404, false},
		{"orders with a slash", "GET", "/v1/bts/orders/", auth, "", 404, false},
		{"an order's subpath", "DELETE", "/v1/bts/orders/1/x", auth, "", 404, false},
		{"webhook with a slash", "POST", hook + "/", apiWithJSON(apiBearer(apiHookDefault)), `{"orderId":1}`, 401, false},

		// POST /v1/bts/webhook.
		{"hook as form with a token header", "POST", hook, map[string]string{"token": apiHookDefault, "Content-Type": apiFormType}, apiForm(`{"clientId":100,"orderId":4293644,"barcode":"B1","status":{"id":800,"name":"x"},"date":"2026-11-22 10:00:00"}`), 200, true},
		{"hook as JSON with a bearer token", "POST", hook, apiWithJSON(apiBearer(apiHookTash)), `{"orderId":"ABC-1"}`, 200, true},
		{"hook with a query token", "POST", hook + "?token=" + apiHookDefault, apiWithJSON(nil), `{"orderId":4293645}`, 200, true},
		{"hook with a form charset", "POST", hook, map[string]string{"token": apiHookTash, "Content-Type": apiFormType + "; charset=utf-8"}, apiForm(`{"orderId":7}`), 200, true},
		// The handler reads a body without a content type as JSON; the
		// document asks for one.
		{"hook without a content type", "POST", hook, apiBearer(apiHookDefault), `{"orderId":8}`, 200, false},
		{"hook without a token", "POST", hook, apiWithJSON(nil), `{"orderId":1}`, 401, false},
		{"hook with a wrong token", "POST", hook, map[string]string{"token": "forged-forged-forged", "Content-Type": "application/json"}, `{"orderId":1}`, 401, false},
		{"hook with the admin token", "POST", hook, apiWithJSON(apiBearer(apiAdminToken)), `{"orderId":1}`, 401, false},
		{"hook with a lower-case scheme", "POST", hook, apiWithJSON(map[string]string{"Authorization": "bearer " + apiHookDefault}), `{"orderId":1}`, 200, true},
		{"hook order id an object", "POST", hook, apiWithJSON(apiBearer(apiHookDefault)), `{"orderId":{}}`, 400, false},
		{"hook order id negative", "POST", hook, apiWithJSON(apiBearer(apiHookDefault)), `{"orderId":-1}`, 400, false},
		{"hook order id with a space", "POST", hook, apiWithJSON(apiBearer(apiHookDefault)), `{"orderId":"12 34"}`, 400, false},
		{"hook without an order id", "POST", hook, apiWithJSON(apiBearer(apiHookDefault)), `{"clientId":1}`, 400, false},
		{"hook payload an array", "POST", hook, apiWithJSON(apiBearer(apiHookDefault)), `[1]`, 400, false},
		{"hook payload not JSON", "POST", hook, apiWithJSON(apiBearer(apiHookDefault)), `orderId=1`, 400, false},
		{"hook form without text", "POST", hook, map[string]string{"token": apiHookDefault, "Content-Type": apiFormType}, "orderId=1", 400, false},
		{"hook form with a bad payload", "POST", hook, map[string]string{"token": apiHookDefault, "Content-Type": apiFormType}, apiForm(`{"orderId":{}}`), 400, false},
		{"hook form with text not JSON", "POST", hook, map[string]string{"token": apiHookDefault, "Content-Type": apiFormType}, apiForm(`orderId=1`), 400, false},
		{"hook form with empty text", "POST", hook, map[string]string{"token": apiHookDefault, "Content-Type": apiFormType}, "text=", 400, false},
		{"hook as XML", "POST", hook, map[string]string{"token": apiHookDefault, "Content-Type": "text/xml"}, "<orderId>1</orderId>", 415, false},
		{"hook too large", "POST", hook, apiWithJSON(apiBearer(apiHookDefault)), hookTooLarge, 413, true},
		{"hook with GET", "GET", hook, apiBearer(apiHookDefault), "", 405, false},
		{"hook with HEAD", "HEAD", hook, apiBearer(apiHookDefault), "", 405, false},
		{"hook with PUT", "PUT", hook, apiWithJSON(apiBearer(apiHookDefault)), `{"orderId":1}`, 405, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { spec.check(t, a.base, tc) })
	}

	t.Run("every route served is documented", func(t *testing.T) {
		served := apiProbeRoutes(t, spec, a.base)
		require.Equal(t, spec.documented(), served, "the routes the daemon serves (right) and the document's (left)")
	})
}

// apiProbeRoutes returns the routes the daemon at base serves, as
// "METHOD /path/{param}": it sends every method to every path of the
// document, of the handlers' source (see apiRegisteredRoutes) and of a list
// of likely ones, with the right token, and counts every answer but a 405
// and the admin API's "no such endpoint" as a route.
func apiProbeRoutes(t *testing.T, spec *apiSpec, base string) []string {
	t.Helper()
	paths := []string{
		"/v1/", "/v1/bts", "/v1/bts/", "/v1/bts/orders/", "/v1/bts/orders/probe-1/", "/v1/bts/orders/probe-1/history",
		"/v1/sources/", "/v1/sources/yandex", "/v1/bts/webhook/", "/v1/bts/accounts", "/v1/yandex", "/v1/cursors",
		"/v1/outbox", "/v1/leases", "/v1/instances", "/v1/status", "/v1/healthz", "/v1/readyz", "/v1/metrics", "/v1/admin",
	}
	for path := range spec.model.Paths.PathItems.KeysFromOldest() {
		paths = append(paths, path)
	}
	routes, _ := apiRegisteredRoutes(t)
	for _, r := range routes {
		_, path, _ := strings.Cut(r, " ")
		paths = append(paths, path)
	}
	param := regexp.MustCompile(`\{[^}]+\}`)
	seen := map[string]bool{}
	var served []string
	for _, tmpl := range paths {
		path := param.ReplaceAllString(tmpl, "probe-1")
		if seen[path] {
			continue
		}
		seen[path] = true
		auth := apiBearer(apiAdminToken)
		if path == doorbell.DefaultPath {
			auth = apiBearer(apiHookDefault)
		}
		// A HEAD answer has no body to tell "no such endpoint" by: it is
		// read from GET's, which apiMethods sends first.
		var getError string
		for _, method := range apiMethods {
			status, raw := apiAnswer(base, method, path+"?account=default", auth)
			require.NotZero(t, status, "%s %s", method, path)
			var body struct {
				Error string `json:"error"`
			}
			_ = json.Unmarshal(raw, &body)
			if method == http.MethodGet {
				getError = body.Error
			} else if method == http.MethodHead {
				body.Error = getError
			}
			if status == http.StatusMethodNotAllowed || (status == http.StatusNotFound && body.Error == "no such endpoint") {
				continue
			}
			route := method + " " + path
			if docPath, item := spec.pathItem(path); item != nil {
				route = method + " " + docPath
			}
			served = append(served, route)
		}
	}
	slices.Sort(served)
	return served
}

// TestAdminAPIDisabledMatchesOpenAPI checks the answers of a daemon
// without INGESTD_ADMIN_TOKEN (403 to everything under /v1/ but the
// webhook) and of a webhook endpoint over its rate (429).
func TestAdminAPIDisabledMatchesOpenAPI(t *testing.T) {
	t.Parallel()
	spec := loadAPISpec(t, apiTokens{webhook: []string{apiHookDefault}})
	hook := doorbell.DefaultPath
	a := newAPIStack(t, 63, func(s *stack) {
		s.cfg.BTS.BaseURL = apiBTSServer(t, 63)
		s.cfg.BTS.Login = "ingestd"
		s.cfg.BTS.Password = secret.New("pw")
		s.cfg.BTS.WebhookToken = secret.New(apiHookDefault)
		// One call per thousand seconds: the first call is accepted, the
		// next is over the rate.
		s.cfg.Webhook.Rate = 0.001
	}, func(base string) bool {
		// The webhook answers 401 rather than 404 once the BTS account
		// that takes webhooks runs.
		status, _ := apiAnswer(base, http.MethodPost, hook, nil)
		return status == http.StatusUnauthorized
	})

	auth := apiBearer(apiAdminToken)
	// The exchanges run in order: the webhook's rate is spent by the first
	// accepted call.
	tests := []apiExchange{
		{"no token", "GET", "/v1/bts/orders", nil, "", 403, false},
		{"any token", "GET", "/v1/bts/orders", auth, "", 403, false},
		{"track", "POST", "/v1/bts/orders", apiWithJSON(auth), `{"order_ids":["1"]}`, 403, false},
		{"untrack", "DELETE", "/v1/bts/orders/1", auth, "", 403, false},
		{"sources", "GET", "/v1/sources", auth, "", 403, false},
		{"head sources", "HEAD", "/v1/sources", auth, "", 403, false},
		{"a wrong method", "PUT", "/v1/sources", auth, "", 403, false},
		{"an unknown path", "GET", "/v1/nothing", nil, "", 403, false},
		{"hook", "POST", hook, apiWithJSON(apiBearer(apiHookDefault)), `{"orderId":4293644}`, 200, true},
		{"hook over the rate", "POST", hook, apiWithJSON(apiBearer(apiHookDefault)), `{"orderId":4293645}`, 429, true},
		{"hook over the rate without a token", "POST", hook, apiWithJSON(nil), `{"orderId":4293645}`, 401, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { spec.check(t, a.base, tc) })
	}
}

// TestAdminAPIWithoutBTSMatchesOpenAPI checks the answers of a daemon that
// runs no BTS account: the watch-list is the default account's, the
// webhook endpoint answers 404, and a PostgreSQL failure is a 500.
func TestAdminAPIWithoutBTSMatchesOpenAPI(t *testing.T) {
	t.Parallel()
	spec := loadAPISpec(t, apiTokens{admin: apiAdminToken})
	hook := doorbell.DefaultPath
	a := newAPIStack(t, 64, func(s *stack) {
		s.cfg.AdminToken = secret.New(apiAdminToken)
	}, func(base string) bool { return apiSourcesReady(base, 1) })

	auth := apiBearer(apiAdminToken)
	// The exchanges run in order: later ones see what earlier ones
	// tracked.
	tests := []apiExchange{
		{"track", "POST", "/v1/bts/orders", apiWithJSON(auth), `{"order_ids":["1","2"]}`, 201, true},
		{"track in the default account", "POST", "/v1/bts/orders?account=default", apiWithJSON(auth), `{"order_ids":["1"]}`, 200, true},
		{"track in an unknown account", "POST", "/v1/bts/orders?account=shop", apiWithJSON(auth), `{"order_ids":["1"]}`, 404, true},
		{"list", "GET", "/v1/bts/orders", auth, "", 200, true},
		{"untrack", "DELETE", "/v1/bts/orders/2", auth, "", 200, true},
		{"sources", "GET", "/v1/sources", auth, "", 200, true},
		{"hook", "POST", hook, apiWithJSON(apiBearer(apiHookDefault)), `{"orderId":1}`, 404, false},
		{"hook without a token", "POST", hook, apiWithJSON(nil), `{"orderId":1}`, 404, false},
		{"hook with GET", "GET", hook, nil, "", 404, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { spec.check(t, a.base, tc) })
	}

	// PostgreSQL failing under the admin API: each table the routes read
	// is renamed away for their requests, and back. Without a BTS source
	// nothing else reads bts_orders; the Yandex poller, which writes
	// source_cursors, retries meanwhile as after any database error.
	conn, err := pgx.Connect(context.Background(), a.store.DSN)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	failing := []struct {
		table string
		tests []apiExchange
	}{
		{"bts_orders", []apiExchange{
			{"track failing", "POST", "/v1/bts/orders", apiWithJSON(auth), `{"order_ids":["3"]}`, 500, true},
			{"list failing", "GET", "/v1/bts/orders", auth, "", 500, true},
			{"head failing", "HEAD", "/v1/bts/orders", auth, "", 500, true},
			{"untrack failing", "DELETE", "/v1/bts/orders/1", auth, "", 500, true},
		}},
		{"source_cursors", []apiExchange{
			{"sources failing", "GET", "/v1/sources", auth, "", 500, true},
			{"head sources failing", "HEAD", "/v1/sources", auth, "", 500, true},
		}},
	}
	for _, f := range failing {
		apiRenameTable(t, conn, f.table, f.table+"_away")
		for _, tc := range f.tests {
			t.Run(tc.name, func(t *testing.T) { spec.check(t, a.base, tc) })
		}
		apiRenameTable(t, conn, f.table+"_away", f.table)
	}
	t.Run("sources again", func(t *testing.T) {
		spec.check(t, a.base, apiExchange{"sources", "GET", "/v1/sources", auth, "", 200, true})
	})
}

// apiRenameTable renames a table of the test's schema.
func apiRenameTable(t *testing.T, conn *pgx.Conn, from, to string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := conn.Exec(ctx, "ALTER TABLE "+pgx.Identifier{from}.Sanitize()+" RENAME TO "+pgx.Identifier{to}.Sanitize())
	require.NoError(t, err)
}

// apiRegisteredRoutes reads the routes the daemon's HTTP handler registers
// under /v1/ from the source of internal/daemon and internal/admin: the
// patterns with a method ("GET /v1/sources", GET also meaning HEAD), and
// the paths registered for every method (the webhook's; the admin API's
// 405 answers are not routes). A pattern that is not a string literal
// fails the test unless it is the webhook's path, which this test knows.
func apiRegisteredRoutes(t *testing.T) (routes, anyMethod []string) {
	t.Helper()
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	more, err := filepath.Glob("../admin/*.go")
	require.NoError(t, err)
	for _, f := range append(files, more...) {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(gotoken.NewFileSet(), f, nil, parser.SkipObjectResolution)
		require.NoError(t, err)
		ast.Inspect(af, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) != 2 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc") {
				return true
			}
			var pattern string
			switch arg := call.Args[0].(type) {
			case *ast.BasicLit:
				pattern, err = strconv.Unquote(arg.Value)
				require.NoError(t, err)
			default:
				// The webhook's path is a setting; the document shows its
				// default.
				require.Equal(t, "bell.Path()", types.ExprString(arg), "%s: a route whose pattern this test cannot read; teach it what the route is", f)
				pattern = doorbell.DefaultConfig().Path
			}
			method, path, ok := strings.Cut(pattern, " ")
			if !ok {
				method, path = "", pattern
			}
			if !strings.HasPrefix(path, "/v1/") || path == "/v1/" {
				// Outside /v1/, or the admin API's mount point.
				return true
			}
			handler := types.ExprString(call.Args[1])
			switch {
			case method != "":
				routes = append(routes, method+" "+path)
				if method == http.MethodGet {
					routes = append(routes, http.MethodHead+" "+path)
				}
			case strings.HasPrefix(handler, "methodNotAllowed("):
				// The 405 of the other methods.
			default:
				anyMethod = append(anyMethod, path)
			}
			return true
		})
	}
	slices.Sort(routes)
	slices.Sort(anyMethod)
	return routes, anyMethod
}

// TestOpenAPIDocumentsEveryRegisteredRoute compares the routes registered
// in the handlers' source with the document's, both ways: a route added to
// admin.go or daemon.go fails here until it is documented.
func TestOpenAPIDocumentsEveryRegisteredRoute(t *testing.T) {
	t.Parallel()
	spec := loadAPISpec(t, apiTokens{})
	routes, anyMethod := apiRegisteredRoutes(t)
	require.Equal(t, []string{doorbell.DefaultPath}, anyMethod, "the paths served for every method: the webhook's (which answers 405 but to POST)")
	require.NotEmpty(t, routes)

	documented := spec.documented()
	for _, r := range routes {
		require.Contains(t, documented, r, "the handler registers %s, the document lacks it", r)
	}
	for _, d := range documented {
		_, path, _ := strings.Cut(d, " ")
		require.True(t, slices.Contains(routes, d) || slices.Contains(anyMethod, path), "the document has %s, which no handler registers", d)
	}
	for path := range spec.model.Paths.PathItems.KeysFromOldest() {
		require.True(t, strings.HasPrefix(path, "/v1/"), "%s is not under /v1/", path)
	}
}

// TestOpenAPIDocumentKeepsTheCodesBounds checks the bounds the document
// states against the constants the handlers enforce, so that a change of
// either shows here rather than as a surprise to a client.
func TestOpenAPIDocumentKeepsTheCodesBounds(t *testing.T) {
	t.Parallel()
	spec := loadAPISpec(t, apiTokens{})
	schemas := spec.model.Components.Schemas
	orders := spec.model.Paths.PathItems.GetOrZero("/v1/bts/orders")
	require.NotNil(t, orders)

	var limit *v3.Parameter
	for _, p := range orders.Get.Parameters {
		if p.Name == "limit" {
			limit = p
		}
	}
	require.NotNil(t, limit)
	ls := limit.Schema.Schema()
	require.EqualValues(t, 1, *ls.Minimum)
	require.EqualValues(t, admin.MaxListLimit, *ls.Maximum)
	require.Equal(t, strconv.Itoa(admin.DefaultListLimit), ls.Default.Value)

	ids := schemas.GetOrZero("TrackRequest").Schema().Properties.GetOrZero("order_ids").Schema()
	require.EqualValues(t, admin.MaxOrdersPerRequest, *ids.MaxItems)
	require.Equal(t, fmt.Sprintf("^[A-Za-z0-9_-]{1,%d}$", bts.MaxOrderIDLen), schemas.GetOrZero("OrderID").Schema().Pattern)

	// Descriptions are compared with their lines joined.
	words := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	require.Contains(t, words(orders.Post.Description), fmt.Sprintf("at most %d bytes", admin.MaxBodyBytes))
	hook := spec.model.Paths.PathItems.GetOrZero(doorbell.DefaultPath)
	require.NotNil(t, hook, "the document shows the webhook at its default path")
	require.Contains(t, words(hook.Post.Description), fmt.Sprintf("at most %d bytes", doorbell.MaxBody))
	require.Contains(t, hook.Description, doorbell.EnvPath)
}
