package bts

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ingestd/ingestd/internal/secret"
	"github.com/ingestd/ingestd/internal/upstream"
)

// API paths relative to the base URL.
const (
	LoginPath   = "/auth/login"
	RefreshPath = "/auth/refresh"
	StatusPath  = "/v1/status/index"
	TrackPath   = "/v1/order/track"
	DetailPath  = "/v1/order/detail"
)

const (
	// refreshFraction is the part of an access token's life after which it
	// is refreshed, so that a slow or failed refresh still leaves time to
	// retry before requests start failing.
	refreshFraction = 0.8
	// defaultRefreshTokenTTL is the assumed life of a refresh token that
	// carries no exp claim. BTS documents about 30 days; a day less keeps
	// ingestd from presenting a token BTS has just expired.
	defaultRefreshTokenTTL = 29 * 24 * time.Hour
	// authRetryDelay spaces retries of a proactive renewal that failed while
	// the current token was still valid: requests keep using that token
	// meanwhile rather than every one of them hammering the auth endpoints.
	authRetryDelay = time.Minute
	// maxStatusPages bounds the dictionary walk, so that a server whose
	// pagination links loop cannot keep the client busy forever.
	maxStatusPages = 100
)

// Client talks to the BTS API. It is safe for concurrent use: requests run
// in parallel, and logins and refreshes are serialized so that a burst of
// requests finding the token expired renews it once.
type Client struct {
	core     *upstream.Client
	login    string
	password secret.String
	tokenTTL time.Duration
	// now is the clock that decides when the token is refreshed; tests
	// replace it.
	now func() time.Time

	// authSem is a one-slot semaphore held during a login or refresh. It is
	// a channel rather than a mutex so that a caller waiting for another's
	// renewal can give up when its context ends.
	authSem chan struct{}
	mu      sync.Mutex
	tok     token // guarded by mu

	logins, refreshes, refreshFailures atomic.Int64
}

// token is the client's credentials and when to renew them.
type token struct {
	access  string
	refresh string
	// gen grows with every renewal, so that a caller whose request was
	// rejected can tell whether someone else already renewed the token.
	gen              uint64
	refreshAt        time.Time
	expiresAt        time.Time
	refreshExpiresAt time.Time
	// retryAt is the earliest next attempt after a failed proactive
	// renewal.
	retryAt time.Time
}

// NewClient returns a client for cfg, which must be valid and enabled. The
// caller supplies hc because TLS and proxy settings live there; nil means a
// client with http.DefaultTransport. Redirects are not followed (see
// upstream.NewClient): following one would turn a POST into a GET or move
// the credentials to another host.
func NewClient(cfg Config, hc *http.Client) (*Client, error) {
	if !cfg.Enabled() {
		return nil, fmt.Errorf("bts client: %s and %s are not set", EnvLogin, EnvPassword)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bts client: %w", err)
	}
	core, err := upstream.NewClient(upstream.ClientConfig{
		BaseURL:   cfg.BaseURL,
		Timeout:   cfg.RequestTimeout,
		MaxBody:   cfg.MaxResponseBytes,
		Header:    http.Header{"Language": {cfg.Language}},
		ErrorBody: providerError,
		Status:    orderNotFound,
	}, hc)
	if err != nil {
		return nil, fmt.Errorf("bts client: %s: %w", EnvBaseURL, err)
	}
	return &Client{
		core:     core,
		login:    cfg.Login,
		password: cfg.Password,
		tokenTTL: cfg.TokenTTL,
		now:      time.Now,
		authSem:  make(chan struct{}, 1),
	}, nil
}

// AuthStats counts the client's authentication calls since it was created.
type AuthStats struct {
	// Logins counts successful logins, Refreshes successful refreshes.
	Logins, Refreshes int64
	// RefreshFailures counts refreshes that failed and fell back to a login.
	RefreshFailures int64
}

// AuthStats returns the authentication counters, for metrics and tests.
func (c *Client) AuthStats() AuthStats {
	return AuthStats{Logins: c.logins.Load(), Refreshes: c.refreshes.Load(), RefreshFailures: c.refreshFailures.Load()}
}

// Statuses returns the whole status dictionary, following the pagination
// of GET /v1/status/index. Every failure is an *upstream.Error, except that
// when ctx is done the error satisfies errors.Is(err, ctx.Err()).
func (c *Client) Statuses(ctx context.Context) ([]StatusDef, error) {
	var (
		all  []StatusDef
		seen = map[int]bool{}
	)
	page := 1
	for n := 0; ; n++ {
		if n == maxStatusPages {
			return nil, upstream.Malformed(opStatuses, "response", 0, fmt.Errorf("more than %d pages", maxStatusPages))
		}
		data, err := c.get(ctx, opStatuses, StatusPath, url.Values{"page": {strconv.Itoa(page)}})
		if err != nil {
			return nil, err
		}
		defs, next, err := decodeStatusPage(data, page)
		if err != nil {
			return nil, upstream.Malformed(opStatuses, "response", http.StatusOK, err)
		}
		for _, d := range defs {
			if !seen[d.Code] {
				seen[d.Code] = true
				all = append(all, d)
			}
		}
		if next == 0 {
			return all, nil
		}
		if next <= page {
			return nil, upstream.Malformed(opStatuses, "response", http.StatusOK, fmt.Errorf("page %d links back to page %d", page, next))
		}
		page = next
	}
}

// Track returns an order's current status (GET /v1/order/track). A missing
// order is an *upstream.Error of class NotFound.
func (c *Client) Track(ctx context.Context, orderID string) (Track, error) {
	data, err := c.order(ctx, opTrack, TrackPath, orderID)
	if err != nil {
		return Track{}, err
	}
	t, err := decodeTrack(data, orderID)
	if err != nil {
		return Track{}, upstream.Malformed(opTrack, "response", http.StatusOK, err)
	}
	return t, nil
}

// Detail returns an order's details (GET /v1/order/detail), whose status
// code may be null.
func (c *Client) Detail(ctx context.Context, orderID string) (Detail, error) {
	data, err := c.order(ctx, opDetail, DetailPath, orderID)
	if err != nil {
		return Detail{}, err
	}
	d, err := decodeDetail(data, orderID)
	if err != nil {
		return Detail{}, upstream.Malformed(opDetail, "response", http.StatusOK, err)
	}
	return d, nil
}

// order fetches an order endpoint for orderID.
func (c *Client) order(ctx context.Context, op, path, orderID string) (json.RawMessage, error) {
	if !ValidOrderID(orderID) {
		// The watch-list only holds valid ids (a CHECK constraint), so this
		// is a bug; halting makes it visible.
		return nil, upstream.Internal(op, fmt.Errorf("invalid order id %q", upstream.Excerpt([]byte(orderID))))
	}
	return c.get(ctx, op, path, url.Values{"orderId": {orderID}})
}

// get performs an authenticated GET and returns the answer's data. A 401
// renews the token once (refresh, or login when the refresh fails) and
// retries the request once; a second 401 is an Auth error.
func (c *Client) get(ctx context.Context, op, path string, q url.Values) (json.RawMessage, error) {
	for attempt := 0; ; attempt++ {
		access, gen, err := c.accessToken(ctx)
		if err != nil {
			return nil, err
		}
		data, err := c.exchange(ctx, upstream.Request{Op: op, Method: http.MethodGet, URL: c.core.URL(path, q), Bearer: access})
		if err == nil {
			return data, nil
		}
		var ue *upstream.Error
		if attempt == 0 && errors.As(err, &ue) && ue.StatusCode == http.StatusUnauthorized {
			if _, _, err := c.renew(ctx, gen, true); err != nil {
				return nil, err
			}
			continue
		}
		return nil, redact(err, access)
	}
}

// exchange sends one request to BTS and returns the data of a successful
// answer. Every failure is classified (see upstream.Client.Do); an answer
// that BTS marks failed inside a 2xx is malformed (see decodeEnvelope).
func (c *Client) exchange(ctx context.Context, r upstream.Request) (json.RawMessage, error) {
	resp, err := c.core.Do(ctx, r)
	if err != nil {
		return nil, err
	}
	data, err := decodeEnvelope(resp.Body)
	if err != nil {
		return nil, upstream.Malformed(r.Op, "response", resp.Status, err)
	}
	return data, nil
}

// accessToken returns a token to send, renewing it first when it is due.
func (c *Client) accessToken(ctx context.Context) (string, uint64, error) {
	c.mu.Lock()
	t := c.tok
	c.mu.Unlock()
	if t.usable(c.now()) {
		return t.access, t.gen, nil
	}
	return c.renew(ctx, t.gen, false)
}

// usable reports whether t can be sent at now without renewing it first:
// it is before its refresh point, or a renewal failed recently and the
// token has not expired yet.
func (t *token) usable(now time.Time) bool {
	if t.access == "" {
		return false
	}
	return now.Before(t.refreshAt) || (now.Before(t.expiresAt) && now.Before(t.retryAt))
}

// renew refreshes the access token, falling back to a fresh login when
// there is no usable refresh token or the refresh fails. seen is the
// generation of the token the caller holds: if another caller renewed it
// meanwhile, that token is returned without another call. rejected says
// that BTS answered 401 to the caller's token, which therefore must not be
// used again even if it looks valid.
func (c *Client) renew(ctx context.Context, seen uint64, rejected bool) (string, uint64, error) {
	select {
	case c.authSem <- struct{}{}:
	case <-ctx.Done():
		return "", 0, fmt.Errorf("%s: %w", opLogin, ctx.Err())
	}
	defer func() { <-c.authSem }()

	c.mu.Lock()
	t := c.tok
	c.mu.Unlock()
	now := c.now()
	if t.gen != seen && t.access != "" && now.Before(t.expiresAt) {
		return t.access, t.gen, nil
	}
	if !rejected && t.usable(now) {
		return t.access, t.gen, nil
	}

	var (
		nt  token
		err error
	)
	if t.refresh != "" && now.Before(t.refreshExpiresAt) {
		body, _ := json.Marshal(map[string]string{"refresh_token": t.refresh})
		nt, err = c.authenticate(ctx, opRefresh, RefreshPath, body)
		if err == nil {
			c.refreshes.Add(1)
		} else if ctx.Err() != nil {
			return "", 0, err
		} else {
			c.refreshFailures.Add(1)
		}
	}
	if t.refresh == "" || !now.Before(t.refreshExpiresAt) || err != nil {
		body, _ := json.Marshal(map[string]string{"login": c.login, "password": c.password.Reveal()})
		nt, err = c.authenticate(ctx, opLogin, LoginPath, body)
		if err == nil {
			c.logins.Add(1)
		}
	}
	if err != nil {
		if !rejected && ctx.Err() == nil && t.access != "" && now.Before(t.expiresAt) {
			// The token still works: keep using it and try again later,
			// rather than failing requests that would succeed.
			c.mu.Lock()
			c.tok.retryAt = now.Add(authRetryDelay)
			t = c.tok
			c.mu.Unlock()
			return t.access, t.gen, nil
		}
		return "", 0, err
	}
	if nt.refresh == "" {
		nt.refresh, nt.refreshExpiresAt = t.refresh, t.refreshExpiresAt
	}
	nt.gen = t.gen + 1
	c.mu.Lock()
	c.tok = nt
	c.mu.Unlock()
	return nt.access, nt.gen, nil
}

// authenticate calls a login or refresh endpoint and returns the new token.
func (c *Client) authenticate(ctx context.Context, op, path string, body []byte) (token, error) {
	data, err := c.exchange(ctx, upstream.Request{Op: op, Method: http.MethodPost, URL: c.core.URL(path, nil), Body: body})
	if err != nil {
		return token{}, redact(err, c.password.Reveal(), c.tokenSecrets())
	}
	var td struct {
		Access  string `json:"access_token"`
		Refresh string `json:"refresh_token"`
	}
	if err := json.Unmarshal(data, &td); err != nil || td.Access == "" {
		// The message must not quote data: it holds tokens.
		return token{}, upstream.Malformed(op, "response", http.StatusOK, errors.New("data has no access_token"))
	}
	now := c.now()
	t := token{access: td.Access, refresh: td.Refresh}
	life := c.tokenTTL
	if exp, ok := jwtExpiry(td.Access); ok && exp.After(now) {
		life = exp.Sub(now)
	}
	t.expiresAt = now.Add(life)
	t.refreshAt = now.Add(time.Duration(float64(life) * refreshFraction))
	if td.Refresh != "" {
		t.refreshExpiresAt = now.Add(defaultRefreshTokenTTL)
		if exp, ok := jwtExpiry(td.Refresh); ok && exp.After(now) {
			t.refreshExpiresAt = exp
		}
	}
	return t, nil
}

// tokenSecrets returns the refresh token currently held, to be kept out of
// error messages.
func (c *Client) tokenSecrets() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tok.refresh
}

// jwtExpiry reads the exp claim of a JWT without verifying it: the token is
// BTS's to verify, ingestd only wants to know when to renew it. ok is false
// for anything that is not a JWT with a numeric exp.
func jwtExpiry(tok string) (time.Time, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp json.Number `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == "" {
		return time.Time{}, false
	}
	secs, err := claims.Exp.Float64()
	if err != nil || secs <= 0 || secs > math.MaxInt32*4 {
		return time.Time{}, false
	}
	whole, frac := math.Modf(secs)
	return time.Unix(int64(whole), int64(frac*1e9)), true
}

// redact removes secrets from a classified error's provider text, in case a
// server echoes what it was sent.
func redact(err error, secrets ...string) error {
	var ue *upstream.Error
	if !errors.As(err, &ue) {
		return err
	}
	for _, s := range secrets {
		if len(s) < 4 {
			// Replacing a very short secret would mangle ordinary text
			// without protecting anything.
			continue
		}
		ue.Message = strings.ReplaceAll(ue.Message, s, "[REDACTED]")
		ue.Code = strings.ReplaceAll(ue.Code, s, "[REDACTED]")
	}
	return err
}
