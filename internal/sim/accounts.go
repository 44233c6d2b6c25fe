package sim

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
)

// YandexAccounts serves the journals of many Yandex accounts at one
// address, as the real API does: the journal a request reads is the one of
// the corporate client its Bearer token belongs to. A token no account has
// is answered 401, like a revoked one.
type YandexAccounts struct {
	byToken map[string]*Yandex
	// unknown counts requests whose token no account has.
	unknown atomic.Int64
}

// NewYandexAccounts routes every request to the account whose Token it
// carries. Each account needs a token of its own.
func NewYandexAccounts(accounts ...*Yandex) (*YandexAccounts, error) {
	a := &YandexAccounts{byToken: make(map[string]*Yandex, len(accounts))}
	for i, y := range accounts {
		tok := y.cfg.Token
		switch {
		case tok == "":
			return nil, fmt.Errorf("sim: Yandex account %d has no token; many accounts at one address are told apart by their tokens", i)
		case a.byToken[tok] != nil:
			return nil, fmt.Errorf("sim: Yandex accounts share a token (account %d)", i)
		}
		a.byToken[tok] = y
	}
	return a, nil
}

// Unknown returns how many requests carried a token no account has.
func (a *YandexAccounts) Unknown() int64 { return a.unknown.Load() }

func (a *YandexAccounts) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if y := a.byToken[tok]; y != nil {
		y.ServeHTTP(w, r)
		return
	}
	a.unknown.Add(1)
	if r.URL.Path != YandexJournalPath {
		writeError(w, http.StatusNotFound, "not_found", "Not found")
		return
	}
	writeError(w, http.StatusUnauthorized, "unauthorized", "Not authorized request")
}

// BTSAccounts serves many BTS logins at one address, each with its own
// orders: a login request goes to the account of its login, every other
// request to the account that issued its token. Tokens are signed by the
// account that issued them, so one account's token is refused by another.
type BTSAccounts struct {
	byLogin map[string]*BTS
	first   *BTS
}

// NewBTSAccounts routes requests among accounts, which need distinct logins.
func NewBTSAccounts(accounts ...*BTS) (*BTSAccounts, error) {
	if len(accounts) == 0 {
		return nil, fmt.Errorf("sim: no BTS accounts")
	}
	a := &BTSAccounts{byLogin: make(map[string]*BTS, len(accounts)), first: accounts[0]}
	for i, b := range accounts {
		if a.byLogin[b.cfg.Login] != nil {
			return nil, fmt.Errorf("sim: BTS accounts share a login (account %d)", i)
		}
		a.byLogin[b.cfg.Login] = b
	}
	return a, nil
}

func (a *BTSAccounts) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var sub string
	switch r.URL.Path {
	case BTSLoginPath, BTSRefreshPath:
		// The account is named in the body, which is read here and handed
		// on intact. A body too large or unreadable goes to any account,
		// which refuses it as BTS does.
		raw, err := io.ReadAll(io.LimitReader(r.Body, maxAuthBody+1))
		if err == nil {
			r.Body = io.NopCloser(bytes.NewReader(raw))
			var req struct {
				Login        string `json:"login"`
				RefreshToken string `json:"refresh_token"`
			}
			if json.Unmarshal(raw, &req) == nil {
				sub = req.Login
				if r.URL.Path == BTSRefreshPath {
					sub = tokenSubject(req.RefreshToken)
				}
			}
		}
	default:
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sub = tokenSubject(tok)
	}
	if b := a.byLogin[sub]; b != nil {
		b.ServeHTTP(w, r)
		return
	}
	// No account matches: any of them refuses the request as BTS would (an
	// unknown login, an invalid token), since none can verify it.
	a.first.ServeHTTP(w, r)
}

// tokenSubject returns the sub claim of a JWT without verifying it; the
// account it names verifies the token itself.
func tokenSubject(tok string) string {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		Sub string `json:"sub"`
	}
	if json.Unmarshal(payload, &c) != nil {
		return ""
	}
	return c.Sub
}
