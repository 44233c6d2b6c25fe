package bts

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/ingestd/ingestd/internal/upstream"
)

// StatusDef is one entry of the BTS status dictionary (GET /v1/status/index).
type StatusDef struct {
	Code        int
	Name        string
	Description string
	// Next are the codes BTS lists in next_possible_statuses. Some of them
	// (900, 1000) are never defined themselves.
	Next []int
}

// Track is an order's current status as GET /v1/order/track reports it.
type Track struct {
	OrderID string
	// Code is the status code; a cancelled order, which BTS reports as
	// status {"id": 0, "name": "Cancelled Order"}, has Code 0.
	Code int
	// Name is the status name BTS sent with the code.
	Name string
	// Raw is the response's data object verbatim, for the event's raw field.
	Raw json.RawMessage
}

// Detail is the part of GET /v1/order/detail that ingestd reads; Raw keeps
// the rest.
type Detail struct {
	OrderID string
	// Code is nil when BTS sends status.code null (it does, for some
	// orders), and set from status.id when only that is present.
	Code *int
	Name string
	Raw  json.RawMessage
}

// envelope is BTS's answer shape: {status, message, status_code, data}.
type envelope struct {
	Status     json.RawMessage `json:"status"`
	Message    json.RawMessage `json:"message"`
	StatusCode json.RawMessage `json:"status_code"`
	Data       json.RawMessage `json:"data"`
}

// decodeEnvelope returns the data of a 2xx answer. An answer that is not a
// JSON object, says "status": false, or carries no data is malformed: BTS
// sometimes reports failures inside a 200, and treating those as success
// would publish nothing or garbage, while treating them as permanent would
// halt the source on what may be a passing glitch. The caller classifies
// the error as Retry.
func decodeEnvelope(body []byte) (json.RawMessage, error) {
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, fmt.Errorf("not a JSON object: %s", upstream.Excerpt(body))
	}
	if len(env.Status) > 0 && string(env.Status) != "null" {
		var ok bool
		if err := json.Unmarshal(env.Status, &ok); err != nil {
			return nil, fmt.Errorf("status is %s, not a boolean", upstream.Excerpt(env.Status))
		}
		if !ok {
			msg := upstream.JSONText(env.Message)
			if sc := upstream.JSONText(env.StatusCode); sc != "" {
				msg = "status_code " + sc + ": " + msg
			}
			return nil, fmt.Errorf("status false: %s", msg)
		}
	}
	data := bytes.TrimSpace(env.Data)
	if len(data) == 0 || string(data) == "null" {
		return nil, errors.New("no data")
	}
	return data, nil
}

// parseCode reads a status code sent as a JSON integer or a string of
// digits. ok is false for null or absent values.
func parseCode(raw json.RawMessage) (code int, ok bool, err error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return 0, false, nil
	}
	s := string(raw)
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, false, fmt.Errorf("status code %s is not a string", upstream.Excerpt(raw))
		}
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 {
		return 0, false, fmt.Errorf("status code %s is not a non-negative integer", upstream.Excerpt(raw))
	}
	return n, true, nil
}

// parseOrderID reads an order id sent as a JSON integer or string.
func parseOrderID(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", fmt.Errorf("orderId %s is not a string", upstream.Excerpt(raw))
		}
		return s, nil
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return "", fmt.Errorf("orderId %s is neither a number nor a string", upstream.Excerpt(raw))
	}
	if _, err := strconv.ParseInt(string(n), 10, 64); err != nil {
		return "", fmt.Errorf("orderId %s is not an integer", upstream.Excerpt(raw))
	}
	return string(n), nil
}

// orderStatus is the status object of track and detail answers.
type orderStatus struct {
	Code json.RawMessage `json:"code"`
	ID   json.RawMessage `json:"id"`
	Name json.RawMessage `json:"name"`
}

// orderData is the data object of track and detail answers.
type orderData struct {
	OrderID json.RawMessage `json:"orderId"`
	Status  *orderStatus    `json:"status"`
}

// decodeOrder reads the order id and status of a track or detail answer,
// checking that the answer is about the order that was asked for: an
// answer about another order would publish its status under the wrong key.
func decodeOrder(data json.RawMessage, want string) (id string, code *int, name string, err error) {
	if len(data) == 0 || data[0] != '{' {
		return "", nil, "", fmt.Errorf("data is not an object: %s", upstream.Excerpt(data))
	}
	var od orderData
	if err := json.Unmarshal(data, &od); err != nil {
		return "", nil, "", fmt.Errorf("data: %v", err)
	}
	id, err = parseOrderID(od.OrderID)
	if err != nil {
		return "", nil, "", err
	}
	switch {
	case id == "":
		id = want
	case id != want:
		return "", nil, "", fmt.Errorf("answer is about order %q, not %q", upstream.Excerpt([]byte(id)), want)
	}
	if od.Status == nil {
		return "", nil, "", errors.New("data has no status")
	}
	c, ok, err := parseCode(od.Status.Code)
	if err != nil {
		return "", nil, "", err
	}
	if !ok {
		// A cancelled order comes as {"id": 0, "name": "Cancelled Order"}
		// without a code.
		if c, ok, err = parseCode(od.Status.ID); err != nil {
			return "", nil, "", err
		}
	}
	if ok {
		code = &c
	}
	return id, code, upstream.JSONText(od.Status.Name), nil
}

// decodeTrack parses the data of GET /v1/order/track for order want.
func decodeTrack(data json.RawMessage, want string) (Track, error) {
	id, code, name, err := decodeOrder(data, want)
	if err != nil {
		return Track{}, err
	}
	if code == nil {
		return Track{}, errors.New("status has neither code nor id")
	}
	return Track{OrderID: id, Code: *code, Name: name, Raw: data}, nil
}

// decodeDetail parses the data of GET /v1/order/detail for order want.
func decodeDetail(data json.RawMessage, want string) (Detail, error) {
	id, code, name, err := decodeOrder(data, want)
	if err != nil {
		return Detail{}, err
	}
	return Detail{OrderID: id, Code: code, Name: name, Raw: data}, nil
}

// statusPage is the data of one page of GET /v1/status/index, Yii2 style.
type statusPage struct {
	Items []struct {
		Code        json.RawMessage `json:"code"`
		Name        json.RawMessage `json:"name"`
		Description json.RawMessage `json:"description"`
		Next        []int           `json:"next_possible_statuses"`
	} `json:"items"`
	Links struct {
		Next json.RawMessage `json:"next"`
	} `json:"_links"`
	Meta struct {
		PageCount   int `json:"pageCount"`
		CurrentPage int `json:"currentPage"`
	} `json:"_meta"`
}

// decodeStatusPage parses one dictionary page and returns its entries and
// the number of the next page, 0 when it is the last one.
func decodeStatusPage(data json.RawMessage, page int) ([]StatusDef, int, error) {
	var sp statusPage
	if err := json.Unmarshal(data, &sp); err != nil {
		return nil, 0, fmt.Errorf("status page %d: %v", page, err)
	}
	if sp.Items == nil {
		return nil, 0, fmt.Errorf("status page %d has no items", page)
	}
	defs := make([]StatusDef, 0, len(sp.Items))
	for i, it := range sp.Items {
		code, ok, err := parseCode(it.Code)
		if err != nil || !ok {
			return nil, 0, fmt.Errorf("status page %d item %d: code %s is not an integer", page, i, upstream.Excerpt(it.Code))
		}
		defs = append(defs, StatusDef{
			Code:        code,
			Name:        upstream.JSONText(it.Name),
			Description: upstream.JSONText(it.Description),
			Next:        append([]int{}, it.Next...),
		})
	}
	next, err := nextPage(sp.Links.Next)
	if err != nil {
		return nil, 0, fmt.Errorf("status page %d: %v", page, err)
	}
	if next == 0 && sp.Meta.PageCount > 0 {
		cur := sp.Meta.CurrentPage
		if cur == 0 {
			cur = page
		}
		if cur < sp.Meta.PageCount {
			next = cur + 1
		}
	}
	return defs, next, nil
}

// nextPage reads the page number out of a Yii2 _links.next, which is a URL
// string or {"href": URL}, or null on the last page. Only the page number
// is taken: requesting the link itself could leave the configured base URL
// (a proxy prefix, another host).
func nextPage(raw json.RawMessage) (int, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	var link string
	if raw[0] == '{' {
		var obj struct {
			Href string `json:"href"`
		}
		if err := json.Unmarshal(raw, &obj); err != nil {
			return 0, fmt.Errorf("_links.next: %v", err)
		}
		link = obj.Href
	} else if err := json.Unmarshal(raw, &link); err != nil {
		return 0, fmt.Errorf("_links.next is neither a string nor an object: %s", upstream.Excerpt(raw))
	}
	if link == "" {
		return 0, nil
	}
	u, err := url.Parse(link)
	if err != nil {
		return 0, fmt.Errorf("_links.next is not a URL: %s", upstream.Excerpt([]byte(link)))
	}
	p, err := strconv.Atoi(u.Query().Get("page"))
	if err != nil || p < 1 {
		return 0, fmt.Errorf("_links.next has no page number: %s", upstream.Excerpt([]byte(link)))
	}
	return p, nil
}
