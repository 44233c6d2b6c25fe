package sim

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestYandexAccountsServeOneJournalPerToken walks three accounts' journals
// through one server: each token reads its own account's journal, entry for
// entry, and a token no account has is refused.
func TestYandexAccountsServeOneJournalPerToken(t *testing.T) {
	t.Parallel()
	var accounts []*Yandex
	for i := range 3 {
		y, err := NewYandex(YandexConfig{Seed: int64(10 + i), Token: "tok-" + strconv.Itoa(i), Backlog: 50 * (i + 1)})
		require.NoError(t, err)
		accounts = append(accounts, y)
	}
	a, err := NewYandexAccounts(accounts...)
	require.NoError(t, err)
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)

	for i, y := range accounts {
		res := walk(t, y, srv, "tok-"+strconv.Itoa(i), 40)
		events := 0
		for _, p := range res.pages {
			events += len(p.Events)
		}
		require.Equal(t, y.Total(), events, "account %d reads its own journal", i)
		require.Equal(t, y.LastCursor(), res.pages[len(res.pages)-1].Cursor)
		require.Equal(t, int64(len(res.pages)), y.Requests(), "every request of account %d reached it and no other", i)
	}

	for _, tok := range []string{"", "tok-9"} {
		r := do(t, srv, request{token: tok})
		require.Equal(t, http.StatusUnauthorized, r.status)
		require.Equal(t, "unauthorized", decodeError(t, r.body).Code)
	}
	require.EqualValues(t, 2, a.Unknown())
}

func TestNewYandexAccountsNeedsDistinctTokens(t *testing.T) {
	t.Parallel()
	mk := func(tok string) *Yandex {
		y, err := NewYandex(YandexConfig{Seed: 1, Token: tok, Backlog: 1})
		require.NoError(t, err)
		return y
	}
	_, err := NewYandexAccounts(mk("a"), mk(""))
	require.ErrorContains(t, err, "account 1 has no token")
	_, err = NewYandexAccounts(mk("a"), mk("a"))
	require.ErrorContains(t, err, "share a token")
}

// TestBTSAccountsKeepLoginsApart serves two BTS logins from one server:
// each login's token reads its own orders, refreshes with its own account,
// and is refused by the other; a forged token naming the other login is
// refused too.
func TestBTSAccountsKeepLoginsApart(t *testing.T) {
	t.Parallel()
	clk := &btsClock{}
	var accounts []*BTS
	for i, login := range []string{"north", "south"} {
		b, err := NewBTS(BTSConfig{Seed: int64(i + 1), Login: login, Password: login + "-pw", Orders: 5, FirstOrderID: int64(4_500_000 + 1000*i), Now: clk.Now})
		require.NoError(t, err)
		accounts = append(accounts, b)
	}
	a, err := NewBTSAccounts(accounts...)
	require.NoError(t, err)
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	e := &btsEnv{clock: clk, url: srv.URL, hc: srv.Client()}

	login := func(login, password string) (int, string, string) {
		status, m, raw := e.do(t, http.MethodPost, BTSLoginPath, "", `{"login":"`+login+`","password":"`+password+`"}`)
		if status != http.StatusOK {
			return status, raw, ""
		}
		data := m["data"].(map[string]any)
		return status, data["access_token"].(string), data["refresh_token"].(string)
	}
	status, north, northRefresh := login("north", "north-pw")
	require.Equal(t, http.StatusOK, status)
	status, south, _ := login("south", "south-pw")
	require.Equal(t, http.StatusOK, status)
	status, raw, _ := login("north", "south-pw")
	require.Equal(t, http.StatusUnauthorized, status, raw)
	status, raw, _ = login("west", "west-pw")
	require.Equal(t, http.StatusUnauthorized, status, raw)

	track := func(tok, id string) int {
		status, _, _ := e.do(t, http.MethodGet, BTSTrackPath+"?orderId="+id, tok, "")
		return status
	}
	require.Equal(t, http.StatusOK, track(north, accounts[0].OrderID(0)))
	require.Equal(t, http.StatusOK, track(south, accounts[1].OrderID(4)))
	require.Equal(t, http.StatusNotFound, track(north, accounts[1].OrderID(0)), "north does not see south's orders")
	require.EqualValues(t, 1, accounts[0].Calls(accounts[0].OrderID(0)))
	require.EqualValues(t, 1, accounts[1].Calls(accounts[1].OrderID(4)))

	// A token claiming to be south's but signed by north is refused.
	forged := south[:len(south)-10] + north[len(north)-10:]
	require.Equal(t, http.StatusUnauthorized, track(forged, accounts[1].OrderID(0)))
	require.Equal(t, http.StatusUnauthorized, track("", accounts[1].OrderID(0)))

	status, m, raw2 := e.do(t, http.MethodPost, BTSRefreshPath, "", `{"refresh_token":"`+northRefresh+`"}`)
	require.Equal(t, http.StatusOK, status, raw2)
	require.Equal(t, http.StatusOK, track(m["data"].(map[string]any)["access_token"].(string), accounts[0].OrderID(1)))
	require.EqualValues(t, 1, accounts[0].Refreshes())
	require.EqualValues(t, 0, accounts[1].Refreshes())

	_, err = NewBTSAccounts(accounts[0], accounts[0])
	require.ErrorContains(t, err, "share a login")
	_, err = NewBTSAccounts()
	require.Error(t, err)
}
