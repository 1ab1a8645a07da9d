package githubapp

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// referenceHead is what the intake read with json.Unmarshal before
// parseHead (and a push's before and after, as the router reads them):
// parseHead must agree with it on every input.
func referenceHead(body []byte, event string) (deliveryHead, error) {
	var head struct {
		Action       string `json:"action"`
		Installation *struct {
			ID int64 `json:"id"`
		} `json:"installation"`
		Repository *struct {
			ID       int64  `json:"id"`
			FullName string `json:"full_name"`
		} `json:"repository"`
	}
	var push struct {
		Before string `json:"before"`
		After  string `json:"after"`
	}
	if b := bytes.TrimLeft(body, " \t\r\n"); len(b) == 0 || b[0] != '{' {
		return deliveryHead{}, os.ErrInvalid
	}
	if err := json.Unmarshal(body, &head); err != nil {
		return deliveryHead{}, err
	}
	if event == "push" {
		if err := json.Unmarshal(body, &push); err != nil {
			return deliveryHead{}, err
		}
	}
	h := deliveryHead{Action: head.Action, Before: push.Before, After: push.After}
	if head.Installation != nil {
		h.InstallationID = head.Installation.ID
	}
	if head.Repository != nil {
		h.RepositoryID, h.Repository = head.Repository.ID, head.Repository.FullName
	}
	return h, nil
}

var headCases = []string{
	`{}`,
	` {"action":"created","installation":{"id":42},"repository":{"id":7,"full_name":"o/r"}} `,
	`{"repository":{"full_name":"o/r","id":7,"owner":{"id":1,"x":[1,2,{"id":3}]}},"action":"a"}`,
	`{"installation":null,"repository":null,"action":null}`,
	`{"installation":{"id":1},"installation":null}`,
	`{"installation":{"id":1},"installation":{"node_id":"x"}}`,
	`{"repository":{"id":1,"full_name":"a"},"repository":{"id":2}}`,
	`{"Action":"upper","ACTION":"last"}`,
	`{"inſtallation":{"Id":5}}`,
	`{"\u0061ction":"escaped key"}`,
	`{"action":"esc\"aped\u00e9\n"}`,
	"{\"action\":\"bad utf8 \xff\xfe\"}",
	`{"action":5}`,
	`{"action":{"x":1}}`,
	`{"installation":[1]}`,
	`{"installation":"1"}`,
	`{"installation":{"id":"1"}}`,
	`{"installation":{"id":1.5}}`,
	`{"installation":{"id":1e3}}`,
	`{"installation":{"id":-0}}`,
	`{"installation":{"id":99999999999999999999}}`,
	`{"repository":{"full_name":true}}`,
	`{"before":"6113728f27ae82c7b1a177c8d03f9e96e0adf246","after":"0000000000000000000000000000000000000000"}`,
	`{"BEFORE":"a","Before":null,"aFter":"b\u00e9"}`,
	`{"before":5}`, `{"after":{"id":1}}`, `{"after":["x"]}`, `{"before":"a","before":true}`,
	`{"action":5,"x":}`,
	`{"a":-}`, `{"a":01}`, `{"a":1.}`, `{"a":1e}`, `{"a":1e+}`, `{"a":-1.5E-3}`,
	`{"a":tru}`, `{"a":nul}`, `{"a":[1,]}`, `{"a":[,1]}`, `{"a":[]}`, `{"a":{}}`,
	`{"a":"\x"}`, `{"a":"\u12"}`, `{"a":"\u12G4"}`, "{\"a\":\"tab\there\"}",
	`{"a":1,}`, `{,}`, `{"a" 1}`, `{"a":1 "b":2}`, `{1:2}`, `{"a":1}}`, `{"a":1} x`, `{"a":1`, `{"a":"`, `{`,
	``, `   `, `null`, `[]`, `"s"`, `1`, `[{"action":"x"}]`,
	`{"action":"a"}` + "\n",
	"{\"a\":\"\x00\"}",
	strings.Repeat(`{"a":`, 10000) + `1` + strings.Repeat(`}`, 10000),
	strings.Repeat(`{"a":`, 10001) + `1` + strings.Repeat(`}`, 10001),
	`{"x":` + strings.Repeat(`[`, 9999) + strings.Repeat(`]`, 9999) + `}`,
	`{"x":` + strings.Repeat(`[`, 10000) + strings.Repeat(`]`, 10000) + `}`,
}

// checkHead checks parseHead against referenceHead on body, as the head of
// a push (before and after read) and of another event (not read).
func checkHead(t *testing.T, body []byte) {
	t.Helper()
	for _, event := range []string{"push", "deployment"} {
		want, wantErr := referenceHead(body, event)
		got, err := parseHead(body, event)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("parseHead(%.200q, %s): error %v, json.Unmarshal: %v", body, event, err, wantErr)
		}
		if got != want {
			t.Fatalf("parseHead(%.200q, %s) = %+v, json.Unmarshal: %+v", body, event, got, want)
		}
	}
}

func TestParseHeadAgreesWithEncodingJSON(t *testing.T) {
	for _, c := range headCases {
		checkHead(t, []byte(c))
	}
	// GitHub's own examples: every field found.
	files, err := filepath.Glob("testdata/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, f := range files {
		body, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		checkHead(t, body)
		if h, _ := parseHead(body, "push"); filepath.Base(f) == "push.json" && (h.InstallationID == 0 || h.Repository == "" || h.Before == "" || h.After == "") {
			t.Fatalf("%s: head %+v lacks the installation, the repository, before or after", f, h)
		}
	}
}

// FuzzParseHead holds parseHead to json.Unmarshal's verdict and values:
//
//	go test ./githubapp -run '^$' -fuzz FuzzParseHead -fuzztime 1m
func FuzzParseHead(f *testing.F) {
	for _, c := range headCases {
		if len(c) < 1000 { // not the 10,000-deep ones: they slow fuzzing to a crawl
			f.Add([]byte(c))
		}
	}
	if body, err := os.ReadFile("testdata/push.json"); err == nil {
		f.Add(body)
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkHead(t, body) })
}

// BenchmarkParseHead: the intake's read of a push body, against the
// json.Unmarshal it replaced (the baseline, in the same run):
//
//	go test ./githubapp -run '^$' -bench ParseHead
func BenchmarkParseHead(b *testing.B) {
	body, err := os.ReadFile("testdata/push.json")
	if err != nil {
		b.Fatal(err)
	}
	b.Run("json.Unmarshal", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			// The head as the intake read it then: without before and after.
			if h, err := referenceHead(body, ""); err != nil || h.InstallationID == 0 {
				b.Fatal(err)
			}
		}
	})
	b.Run("parseHead", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if h, err := parseHead(body, "push"); err != nil || h.InstallationID == 0 {
				b.Fatal(err)
			}
		}
	})
}

// A sender that announces a large body and sends a few bytes gets no more
// memory set aside than presizeMax, which is small: many connections that
// announce a megabyte and send nothing must not hold a megabyte each.
func TestReadBodyDoesNotTrustALargeContentLength(t *testing.T) {
	for _, announced := range []int64{MaxPayloadBytes, 1 << 20} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range 10 {
			if _, err := readBody(strings.NewReader(`{"action":`), announced, nil); err == nil {
				t.Fatal("a body shorter than announced was read without error")
			}
		}
		runtime.ReadMemStats(&after)
		if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
			t.Errorf("10 short bodies announcing %d bytes allocated %d bytes, want under 1 MiB", announced, got)
		}
	}
}

func TestReadBody(t *testing.T) {
	body := []byte(`{"action":"created"}`)
	for name, tc := range map[string]struct {
		announced int64
		sent      []byte
		wantErr   bool
	}{
		"announced exactly":        {int64(len(body)), body, false},
		"not announced (chunked)":  {-1, body, false},
		"empty":                    {0, nil, false},
		"shorter than announced":   {int64(len(body)) + 5, body, true},
		"longer than announced":    {int64(len(body)) - 5, body, false}, // read whole: the signature decides
		"announced over the limit": {MaxPayloadBytes + 1, body, false},  // not trusted: read as it comes
		"large, and sent":          {presizeMax + 10, bytes.Repeat([]byte("x"), presizeMax+10), false},
		"large, and short":         {presizeMax + 10, bytes.Repeat([]byte("x"), presizeMax), true},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := readBody(bytes.NewReader(tc.sent), tc.announced, nil)
			if (err != nil) != tc.wantErr {
				t.Fatalf("readBody: error %v, want error %v", err, tc.wantErr)
			}
			if err == nil && !bytes.Equal(got, tc.sent) {
				t.Fatalf("readBody = %q, want %q", got, tc.sent)
			}
		})
	}
}

// readBody asks hold for each buffer before allocating it: what a body
// holds is its buffer's capacity (at least its bytes read), an honest body
// ends in a buffer of its announced length, and a refusal ends the read.
func TestReadBodyHoldsItsBuffers(t *testing.T) {
	for name, tc := range map[string]struct {
		announced int64
		sent      int
		maxHeld   int64
	}{
		"presized":                   {1000, 1000, 1001},
		"announced large":            {1 << 20, 1 << 20, 1<<20 + 1},
		"announced large, sent less": {MaxPayloadBytes, 100 << 10, 2 * (100 << 10)},
		"not announced":              {-1, 100 << 10, 2 * (100 << 10)},
	} {
		t.Run(name, func(t *testing.T) {
			var held int64
			b, _ := readBody(bytes.NewReader(make([]byte, tc.sent)), tc.announced, func(total int64) error {
				held = max(held, total)
				return nil
			})
			if int64(cap(b)) > held || held > tc.maxHeld {
				t.Errorf("a buffer of %d bytes for %d bytes sent, %d held; want at most %d held", cap(b), len(b), held, tc.maxHeld)
			}
		})
	}
	refuse := func(total int64) error {
		if total > 4096 {
			return errBusy
		}
		return nil
	}
	if _, err := readBody(bytes.NewReader(make([]byte, 10000)), 10000, refuse); err != errBusy {
		t.Errorf("presized past the bound: %v, want errBusy", err)
	}
	if _, err := readBody(bytes.NewReader(make([]byte, 10000)), -1, refuse); err != errBusy {
		t.Errorf("growing past the bound: %v, want errBusy", err)
	}
}
