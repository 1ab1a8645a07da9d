package githubapp_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/storage/storagetest"

	"github.com/lastmile-app/lastmile/githubapp"
	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

const hookSecret = "whsec-for-tests-only"

// payload reads a GitHub example payload from testdata (see its README).
func payload(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// rejections is a RejectionCounter that remembers what it was told.
type rejections struct {
	mu    sync.Mutex
	calls [][2]string
}

func (r *rejections) WebhookRejected(event, outcome string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, [2]string{event, outcome})
}

func (r *rejections) list() [][2]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][2]string(nil), r.calls...)
}

// intake is the webhook endpoint as the service runs it: a real SQLite
// inbox behind a real HTTP server.
type intake struct {
	db       *storage.DB
	srv      *httptest.Server
	rejected *rejections
	notified atomic.Int64
}

func newIntake(t *testing.T) *intake {
	t.Helper()
	db := storagetest.Open(t)
	in := &intake{db: db, rejected: &rejections{}}
	hook := githubapp.NewWebhook(hookSecret, db, githubapp.Handles, in.rejected, func() { in.notified.Add(1) }, discardLog())
	in.srv = httptest.NewServer(hook)
	t.Cleanup(in.srv.Close) // before the database closes
	t.Cleanup(func() { in.checkSeriesStartAtZero(t) })
	return in
}

// checkSeriesStartAtZero checks that every series the test counted is one
// WebhookSeries lists, which lastmile exposes at 0 from start-up: an alert
// on a series Prometheus first sees at 1 never counts that first delivery.
func (in *intake) checkSeriesStartAtZero(t *testing.T) {
	t.Helper()
	listed := map[[2]string]bool{}
	for _, s := range githubapp.WebhookSeries() {
		listed[[2]string{s[0], s[1]}] = true
	}
	counted := in.rejected.list()
	// What the inbox counted, unless the test closed the database.
	if stored, err := in.db.Counters(context.Background(), storage.MetricWebhookDeliveries); err == nil {
		for _, s := range stored {
			counted = append(counted, [2]string{s.Labels[0], s.Labels[1]})
		}
	}
	for _, k := range counted {
		if !listed[k] {
			t.Errorf("counted event=%q outcome=%q, which WebhookSeries does not list: it would first appear at 1", k[0], k[1])
		}
	}
}

// delivery is one POST to /webhook.
type delivery struct {
	id, event  string
	body       []byte
	headers    map[string]string // set after the defaults; "" deletes
	added      [][2]string       // added after those: a second value of a header
	contentLen int64             // 0: the body's length; -1: chunked
	bodyReader io.Reader         // instead of body
}

func (in *intake) post(t *testing.T, d delivery) (*http.Response, map[string]string) {
	t.Helper()
	var body io.Reader = bytes.NewReader(d.body)
	if d.bodyReader != nil {
		body = d.bodyReader
	}
	req, err := http.NewRequest(http.MethodPost, in.srv.URL+"/webhook", body)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case d.contentLen > 0:
		req.ContentLength = d.contentLen
	case d.contentLen < 0:
		req.ContentLength = -1
		req.Body = io.NopCloser(body) // hide the length: chunked
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "GitHub-Hookshot/044aadd")
	req.Header.Set("X-GitHub-Delivery", d.id)
	req.Header.Set("X-GitHub-Event", d.event)
	req.Header.Set("X-Hub-Signature-256", githubapp.SignatureHeader([]byte(hookSecret), d.body))
	for k, v := range d.headers {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	for _, kv := range d.added {
		req.Header.Add(kv[0], kv[1])
	}
	resp, err := in.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("POST /webhook: %v", err)
	}
	defer resp.Body.Close()
	var msg map[string]string
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &msg); err != nil {
		t.Errorf("answer %q is not a JSON object: %v", raw, err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("answer Content-Type = %q", ct)
	}
	return resp, msg
}

func (in *intake) stored(t *testing.T) []*pipeline.Delivery {
	t.Helper()
	list, err := in.db.ListDeliveries(context.Background(), storage.DeliveryFilter{Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	return list
}

func (in *intake) counted(t *testing.T) map[[2]string]float64 {
	t.Helper()
	series, err := in.db.Counters(context.Background(), storage.MetricWebhookDeliveries)
	if err != nil {
		t.Fatal(err)
	}
	out := map[[2]string]float64{}
	for _, s := range series {
		out[[2]string{s.Labels[0], s.Labels[1]}] += s.Value
	}
	return out
}

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sha1Header(secret, body []byte) string {
	m := hmac.New(sha1.New, secret)
	m.Write(body)
	return "sha1=" + hex.EncodeToString(m.Sum(nil))
}

func TestWebhookRefusesBadInputAndStoresNothing(t *testing.T) {
	push := payload(t, "push.json")
	validSig := githubapp.SignatureHeader([]byte(hookSecret), push)
	oversized := append([]byte(`{"pad":"`), bytes.Repeat([]byte("x"), githubapp.MaxPayloadBytes)...)
	oversized = append(oversized, `"}`...)
	signed := func(body string) delivery {
		return delivery{id: "d-1", event: "push", body: []byte(body)}
	}
	pushWith := func(change func(p map[string]any)) delivery {
		return delivery{id: "d-1", event: "push", body: edit(t, "push.json", change)}
	}

	tests := map[string]struct {
		d          delivery
		status     int
		outcome    string
		eventLabel string
		says       string // in the message, if set
	}{
		"declared length over 25 MB": {
			d:      delivery{id: "d-1", event: "push", body: oversized, contentLen: int64(len(oversized))},
			status: http.StatusRequestEntityTooLarge, outcome: githubapp.OutcomeTooLarge, eventLabel: "push",
		},
		"chunked body over 25 MB": {
			d:      delivery{id: "d-1", event: "push", body: oversized, contentLen: -1},
			status: http.StatusRequestEntityTooLarge, outcome: githubapp.OutcomeTooLarge, eventLabel: "push",
		},
		"no signature": {
			d:      delivery{id: "d-1", event: "push", body: push, headers: map[string]string{"X-Hub-Signature-256": ""}},
			status: http.StatusUnauthorized, outcome: githubapp.OutcomeUnauthorized, eventLabel: "push",
		},
		"only the legacy SHA-1 signature": {
			d: delivery{id: "d-1", event: "push", body: push, headers: map[string]string{
				"X-Hub-Signature-256": "", "X-Hub-Signature": sha1Header([]byte(hookSecret), push)}},
			status: http.StatusUnauthorized, outcome: githubapp.OutcomeUnauthorized, eventLabel: "push",
		},
		"SHA-1 signature in the SHA-256 header": {
			d:      delivery{id: "d-1", event: "push", body: push, headers: map[string]string{"X-Hub-Signature-256": sha1Header([]byte(hookSecret), push)}},
			status: http.StatusUnauthorized, outcome: githubapp.OutcomeUnauthorized, eventLabel: "push",
		},
		"signature without the sha256= prefix": {
			d:      delivery{id: "d-1", event: "push", body: push, headers: map[string]string{"X-Hub-Signature-256": strings.TrimPrefix(validSig, "sha256=")}},
			status: http.StatusUnauthorized, outcome: githubapp.OutcomeUnauthorized, eventLabel: "push",
		},
		"signature not hex": {
			d:      delivery{id: "d-1", event: "push", body: push, headers: map[string]string{"X-Hub-Signature-256": "sha256=" + strings.Repeat("zz", 32)}},
			status: http.StatusUnauthorized, outcome: githubapp.OutcomeUnauthorized, eventLabel: "push",
		},
		"signature too short": {
			d:      delivery{id: "d-1", event: "push", body: push, headers: map[string]string{"X-Hub-Signature-256": validSig[:len(validSig)-2]}},
			status: http.StatusUnauthorized, outcome: githubapp.OutcomeUnauthorized, eventLabel: "push",
		},
		"signature with another secret": {
			d:      delivery{id: "d-1", event: "push", body: push, headers: map[string]string{"X-Hub-Signature-256": githubapp.SignatureHeader([]byte("not-the-secret"), push)}},
			status: http.StatusUnauthorized, outcome: githubapp.OutcomeUnauthorized, eventLabel: "push",
		},
		"signature of another body": {
			d:      delivery{id: "d-1", event: "push", body: push, headers: map[string]string{"X-Hub-Signature-256": githubapp.SignatureHeader([]byte(hookSecret), append(push, ' '))}},
			status: http.StatusUnauthorized, outcome: githubapp.OutcomeUnauthorized, eventLabel: "push",
		},
		"bad signature of an invented event is counted as other": {
			d:      delivery{id: "d-1", event: "invented_event", body: push, headers: map[string]string{"X-Hub-Signature-256": "sha256=00"}},
			status: http.StatusUnauthorized, outcome: githubapp.OutcomeUnauthorized, eventLabel: "other",
		},
		// Of two values of one of GitHub's headers, which is GitHub's?
		"two signatures, the first right": {
			d:      delivery{id: "d-1", event: "push", body: push, added: [][2]string{{"X-Hub-Signature-256", githubapp.SignatureHeader([]byte("not-the-secret"), push)}}},
			status: http.StatusUnauthorized, outcome: githubapp.OutcomeUnauthorized, eventLabel: "push", says: "more than one X-Hub-Signature-256 header"},
		"two signatures, the same": {
			d:      delivery{id: "d-1", event: "push", body: push, added: [][2]string{{"X-Hub-Signature-256", validSig}}},
			status: http.StatusUnauthorized, outcome: githubapp.OutcomeUnauthorized, eventLabel: "push", says: "X-Hub-Signature-256"},
		"two delivery IDs": {
			d:      delivery{id: "d-1", event: "push", body: push, added: [][2]string{{"X-GitHub-Delivery", "d-2"}}},
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push", says: "more than one X-GitHub-Delivery header"},
		"two events": {
			d:      delivery{id: "d-1", event: "push", body: push, added: [][2]string{{"x-github-event", "ping"}}},
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push", says: "more than one X-GitHub-Event header"},
		"two events, the same": {
			d:      delivery{id: "d-1", event: "push", body: push, added: [][2]string{{"X-GitHub-Event", "push"}}},
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push", says: "X-GitHub-Event"},
		"no delivery ID": {
			d:      delivery{id: "", event: "push", body: push},
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push",
		},
		"delivery ID with a space": {
			d:      delivery{id: "d 1", event: "push", body: push},
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push",
		},
		"delivery ID too long": {
			d:      delivery{id: strings.Repeat("a", 101), event: "push", body: push},
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push",
		},
		"no event": {
			d:      delivery{id: "d-1", event: "", body: push},
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "other",
		},
		"event with a non-ASCII letter": {
			d:      delivery{id: "d-1", event: "pusé", body: push},
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "other",
		},
		// GitHub never compresses a body: a proxy that did broke its
		// signature too, which is not what the answer should blame.
		"gzip body": {
			d:      delivery{id: "d-1", event: "push", body: gzipped(t, push), headers: map[string]string{"Content-Encoding": "gzip"}},
			status: http.StatusUnsupportedMediaType, outcome: githubapp.OutcomeMalformed, eventLabel: "push",
			says: "compressed bodies (Content-Encoding: gzip) are not accepted"},
		"gzip body, signed as GitHub signs the uncompressed one": {
			d:      delivery{id: "d-1", event: "push", body: gzipped(t, push), headers: map[string]string{"Content-Encoding": "gzip", "X-Hub-Signature-256": validSig}},
			status: http.StatusUnsupportedMediaType, outcome: githubapp.OutcomeMalformed, eventLabel: "push", says: "Content-Encoding: gzip"},
		"brotli after identity": {
			d:      delivery{id: "d-1", event: "push", body: push, headers: map[string]string{"Content-Encoding": "identity, br"}},
			status: http.StatusUnsupportedMediaType, outcome: githubapp.OutcomeMalformed, eventLabel: "push", says: "Content-Encoding: identity, br"},
		"form-encoded body": {
			d: delivery{id: "d-1", event: "push", body: []byte("payload=%7B%7D"),
				headers: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}},
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push",
		},
		"empty body":       {d: signed(""), status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push"},
		"truncated JSON":   {d: signed(string(push[:len(push)/2])), status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push"},
		"JSON array":       {d: signed(`[{"action":"created"}]`), status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push"},
		"JSON string":      {d: signed(`"push"`), status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push"},
		"JSON null":        {d: signed(`null`), status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push"},
		"trailing garbage": {d: signed(`{"ref":"refs/heads/main"} x`), status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push"},
		"wrong field types": {d: signed(`{"installation":{"id":"one"}}`), status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push",
			says: `push: field "installation.id": want an integer, got a string`},
		"a fraction for an ID": {d: signed(`{"repository":{"id":1.5}}`), status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push",
			says: `push: field "repository.id": want an integer, got the number 1.5`},
		"installation an array": {d: signed(`{"installation":[7]}`), status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push",
			says: `push: field "installation": want an object, got an array`},
		// Signed, JSON, of an event lastmile handles, but without what its
		// handling needs: it could only go dead in the inbox.
		"push of an empty object":        {d: signed(`{}`), status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push"},
		"push without a repository":      {d: signed(`{"ref":"refs/heads/main","installation":{"id":7}}`), status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push"},
		"push without an installation":   {d: signed(`{"ref":"refs/heads/main","repository":{"id":1,"full_name":"acme/shop"}}`), status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push", says: "push event without an installation"},
		"push with a repository unnamed": {d: signed(`{"installation":{"id":7},"repository":{"id":1,"full_name":"shop"}}`), status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push"},
		// GitHub's IDs are positive: one that is not would be queued nowhere.
		"push of a negative repository ID": {d: pushWith(func(p map[string]any) { p["repository"].(map[string]any)["id"] = -5 }),
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push", says: "repository.id -5 is not an ID GitHub gives"},
		"push of a negative installation ID": {d: pushWith(func(p map[string]any) { p["installation"].(map[string]any)["id"] = -7 }),
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push", says: "installation.id -7 is not an ID GitHub gives"},
		// GitHub's before and after are full SHAs (forty zeros for none):
		// anything else could only fail at every attempt.
		"push after not a SHA": {d: pushWith(func(p map[string]any) { p["after"] = "not-a-sha" }),
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push", says: `after "not-a-sha" is not a commit's full SHA`},
		"push before abbreviated": {d: pushWith(func(p map[string]any) { p["before"] = "6113728" }),
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push", says: `before "6113728"`},
		"push after of 41 hex digits": {d: pushWith(func(p map[string]any) { p["after"] = strings.Repeat("a", 41) }),
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push", says: "after"},
		"push after of 40 characters, one not hex": {d: pushWith(func(p map[string]any) { p["after"] = strings.Repeat("a", 39) + "g" }),
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push", says: "after"},
		"push without after": {d: pushWith(func(p map[string]any) { delete(p, "after") }),
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push", says: `after ""`},
		"push with before null": {d: pushWith(func(p map[string]any) { p["before"] = nil }),
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push", says: `before ""`},
		"push with before a number": {d: pushWith(func(p map[string]any) { p["before"] = 5 }),
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push", says: `push: field "before": want a string, got a number`},
		// A control character in a repository's name fails every request
		// naming it (net/url refuses it): C0, DEL and C1 alike.
		"push of a repository named with a tab": {d: pushWith(func(p map[string]any) { p["repository"].(map[string]any)["full_name"] = "acme/sh\top" }),
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push", says: `repository.full_name "acme/sh\top" holds a control character`},
		"push of a repository named with ESC": {d: pushWith(func(p map[string]any) { p["repository"].(map[string]any)["full_name"] = "acme/\x1b[2Jshop" }),
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push", says: "control character"},
		"push of a repository named with a newline": {d: pushWith(func(p map[string]any) { p["repository"].(map[string]any)["full_name"] = "acme\n/shop" }),
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push", says: "control character"},
		"push of a repository named with DEL": {d: pushWith(func(p map[string]any) { p["repository"].(map[string]any)["full_name"] = "acme/shop\x7f" }),
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push", says: "control character"},
		"push of a repository named with a C1 control, escaped": {d: signed(`{"before":"6113728f27ae82c7b1a177c8d03f9e96e0adf246","after":"6113728f27ae82c7b1a177c8d03f9e96e0adf246",` +
			`"installation":{"id":7},"repository":{"id":1,"full_name":"acme/sh\u0085op"}}`), // escaped in the JSON
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "push", says: "control character"},
		"deployment_status of a repository named with a C1 control": {
			d: delivery{id: "d-1", event: "deployment_status", body: edit(t, "deployment_status.json", func(p map[string]any) {
				p["repository"].(map[string]any)["full_name"] = "acme/\u009bshop"
			})},
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "deployment_status", says: "control character"},
		"deployment_status without repo":  {d: delivery{id: "d-1", event: "deployment_status", body: []byte(`{"action":"created","installation":{"id":7}}`)}, status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "deployment_status"},
		"installation without its ID":     {d: delivery{id: "d-1", event: "installation", body: []byte(`{"action":"deleted"}`)}, status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "installation"},
		"installation_repositories empty": {d: delivery{id: "d-1", event: "installation_repositories", body: []byte(`{}`)}, status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "installation_repositories"},
		// lastmile is a GitHub App: GitHub names the installation in every
		// delivery to one, and the worker acts through its client. Without
		// one (missing, null, or 0), every event lastmile handles is
		// refused, not queued to go dead at the head of its repository's
		// queue.
		"deployment_status with installation null": {d: delivery{id: "d-1", event: "deployment_status", body: []byte(`{"installation":null,"repository":{"id":3}}`)},
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "deployment_status",
			says: "deployment_status event without an installation (installation.id is missing, null or 0"},
		"deployment without an installation": {d: delivery{id: "d-1", event: "deployment", body: edit(t, "deployment.json", func(p map[string]any) { delete(p, "installation") })},
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "deployment", says: "deployment event without an installation"},
		"deployment_review of installation 0": {d: delivery{id: "d-1", event: "deployment_review", body: edit(t, "deployment_review_requested.json", func(p map[string]any) {
			p["installation"] = map[string]any{"id": 0}
		})},
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "deployment_review", says: "deployment_review event without an installation"},
		"deployment_protection_rule without an installation": {d: delivery{id: "d-1", event: "deployment_protection_rule",
			body: []byte(`{"action":"requested","environment":"production","event":"deployment","repository":{"id":3,"full_name":"acme/shop"}}`)},
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "deployment_protection_rule", says: "deployment_protection_rule event without an installation"},
		"workflow_job with installation null": {d: delivery{id: "d-1", event: "workflow_job", body: edit(t, "workflow_job_queued.json", func(p map[string]any) { p["installation"] = nil })},
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "workflow_job", says: "workflow_job event without an installation"},
		"status with an installation without its ID": {d: delivery{id: "d-1", event: "status", body: edit(t, "status.json", func(p map[string]any) { p["installation"] = map[string]any{} })},
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "status", says: "status event without an installation"},
		// What a repository's (not an App's) webhook sends: GitHub's
		// examples as they are, with no installation.
		"workflow_run of a repository webhook": {d: delivery{id: "d-1", event: "workflow_run", body: payload(t, "workflow_run_completed.json")},
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "workflow_run", says: "workflow_run event without an installation"},
		"check_suite of a repository webhook": {d: delivery{id: "d-1", event: "check_suite", body: payload(t, "check_suite_completed.json")},
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "check_suite", says: "check_suite event without an installation"},
		"installation with installation null": {d: delivery{id: "d-1", event: "installation", body: []byte(`{"action":"deleted","installation":null}`)},
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "installation", says: "installation event without an installation"},
		"ping that is not JSON": {
			d:      delivery{id: "d-1", event: "ping", body: []byte("zen")},
			status: http.StatusBadRequest, outcome: githubapp.OutcomeMalformed, eventLabel: "ping",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			in := newIntake(t)
			resp, msg := in.post(t, tc.d)
			if resp.StatusCode != tc.status {
				t.Errorf("status = %d (%q), want %d", resp.StatusCode, msg["message"], tc.status)
			}
			if msg["message"] == "" || !strings.Contains(msg["message"], tc.says) {
				t.Errorf("the answer %q does not say what is wrong (%q)", msg["message"], tc.says)
			}
			if got := resp.Header.Get("Accept-Encoding"); tc.status == http.StatusUnsupportedMediaType && got != "identity" {
				t.Errorf("a 415 for a compressed body with Accept-Encoding %q, want identity (RFC 9110 15.5.16)", got)
			}
			if got := in.stored(t); len(got) != 0 {
				t.Errorf("%d deliveries stored, want none: %+v", len(got), got[0])
			}
			if got := in.counted(t); len(got) != 0 {
				t.Errorf("stored counters changed: %v", got)
			}
			want := [][2]string{{tc.eventLabel, tc.outcome}}
			if got := in.rejected.list(); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("rejections counted = %v, want %v", got, want)
			}
			if n := in.notified.Load(); n != 0 {
				t.Errorf("worker notified %d times for a refused delivery", n)
			}
		})
	}
}

// webhookHead is what the intake reads from a payload, decoded here
// independently of the code under test.
type webhookHead struct {
	Action       string `json:"action"`
	Installation struct {
		ID int64 `json:"id"`
	} `json:"installation"`
	Repository struct {
		ID       int64  `json:"id"`
		FullName string `json:"full_name"`
	} `json:"repository"`
}

func TestWebhookAcceptsGitHubPayloads(t *testing.T) {
	tests := []struct {
		file, event string
		// repoHook: the example is a repository webhook's delivery, which
		// names no installation; an App's names the one it is for (the
		// intake refuses a delivery without), given here.
		repoHook bool
	}{
		{"push.json", "push", false},
		{"deployment.json", "deployment", false},
		{"deployment_status.json", "deployment_status", false},
		{"workflow_job_queued.json", "workflow_job", false},
		{"workflow_run_completed.json", "workflow_run", true},
		{"deployment_review_requested.json", "deployment_review", false},
		{"status.json", "status", false},
		{"check_suite_completed.json", "check_suite", true},
		{"check_suite_requested.json", "check_suite", false},
		// Sent to every App unasked; stored, to be handled, with the
		// installation (and no repository).
		{"installation_deleted.json", "installation", false},
		{"installation_suspend.json", "installation", false},
		{"installation_unsuspend.json", "installation", false},
		{"installation_repositories_removed.json", "installation_repositories", false},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			in := newIntake(t)
			body := payload(t, tc.file)
			if tc.repoHook {
				body = edit(t, tc.file, func(p map[string]any) {
					if _, ok := p["installation"]; ok {
						t.Fatalf("%s names an installation: not a repository webhook's", tc.file)
					}
					p["installation"] = map[string]any{"id": 957387, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uOTU3Mzg3"}
				})
			}
			var head webhookHead
			if err := json.Unmarshal(body, &head); err != nil {
				t.Fatal(err)
			}
			id := "guid-" + strings.TrimSuffix(tc.file, ".json")
			resp, msg := in.post(t, delivery{id: id, event: tc.event, body: body})
			if resp.StatusCode != http.StatusAccepted {
				t.Fatalf("status = %d (%q), want 202", resp.StatusCode, msg["message"])
			}
			d, err := in.db.GetDelivery(context.Background(), id)
			if err != nil {
				t.Fatalf("the accepted delivery is not in the inbox: %v", err)
			}
			if d.Event != tc.event || d.Action != head.Action || d.InstallationID != head.Installation.ID ||
				d.RepositoryID != head.Repository.ID || d.Repository != head.Repository.FullName {
				t.Errorf("stored %s/%s inst %d repo %d %q; want %s/%s inst %d repo %d %q", d.Event, d.Action, d.InstallationID,
					d.RepositoryID, d.Repository, tc.event, head.Action, head.Installation.ID, head.Repository.ID, head.Repository.FullName)
			}
			if !bytes.Equal(d.Body, body) {
				t.Error("the stored body is not the signed body")
			}
			if d.State != pipeline.DeliveryPending {
				t.Errorf("state = %s, want pending", d.State)
			}
			if n := len(in.stored(t)); n != 1 {
				t.Errorf("%d deliveries stored, want 1", n)
			}
			want := map[[2]string]float64{{tc.event, githubapp.OutcomeAccepted}: 1}
			if got := in.counted(t); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("counters = %v, want %v", got, want)
			}
			if n := in.notified.Load(); n != 1 {
				t.Errorf("worker notified %d times, want 1", n)
			}
			if got := in.rejected.list(); len(got) != 0 {
				t.Errorf("rejections counted: %v", got)
			}
		})
	}
}

// A push's before and after are taken in every form GitHub sends: a SHA-1
// or a SHA-256 repository's, in either case, and forty zeros for a branch
// created (before) or deleted (after); another event's fields of those
// names are not read.
func TestWebhookAcceptsFullSHAs(t *testing.T) {
	short, long := "6113728f27ae82c7b1a177c8d03f9e96e0adf246", strings.Repeat("0123456789abcdef", 4)
	tests := map[string]struct {
		event, file   string
		before, after any
	}{
		"SHA-1":                    {"push", "push.json", short, "ec26c3e57ca3a959ca5aad62de7213c562f8c821"},
		"upper case":               {"push", "push.json", strings.ToUpper(short), strings.ToUpper(short)},
		"SHA-256":                  {"push", "push.json", long, strings.ToUpper(long)},
		"a branch created":         {"push", "push.json", strings.Repeat("0", 40), short},
		"a branch deleted":         {"push", "push.json", short, strings.Repeat("0", 40)},
		"another event's before":   {"status", "status.json", 5, "not-a-sha"},
		"another event's no after": {"deployment", "deployment.json", nil, nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			in := newIntake(t)
			body := edit(t, tc.file, func(p map[string]any) { p["before"], p["after"] = tc.before, tc.after })
			if resp, msg := in.post(t, delivery{id: "d-1", event: tc.event, body: body}); resp.StatusCode != http.StatusAccepted {
				t.Errorf("status = %d (%q), want 202", resp.StatusCode, msg["message"])
			}
			if n := len(in.stored(t)); n != 1 {
				t.Errorf("%d deliveries stored, want 1", n)
			}
		})
	}
}

// Content-Encoding: identity (or none) is an uncompressed body.
func TestWebhookAcceptsTheIdentityEncoding(t *testing.T) {
	for _, enc := range []string{"identity", "Identity", ""} {
		in := newIntake(t)
		resp, msg := in.post(t, delivery{id: "d-1", event: "push", body: payload(t, "push.json"),
			headers: map[string]string{"Content-Encoding": enc}})
		if resp.StatusCode != http.StatusAccepted || len(in.stored(t)) != 1 {
			t.Errorf("Content-Encoding %q: status = %d (%q), %d stored; want 202 and 1", enc, resp.StatusCode, msg["message"], len(in.stored(t)))
		}
	}
}

func TestWebhookRecordsEventsItDoesNotHandle(t *testing.T) {
	tests := map[string]struct {
		event, label, outcome string
		body                  []byte
	}{
		"ping":                {event: "ping", label: "ping", outcome: githubapp.OutcomePing, body: payload(t, "ping.json")},
		"known unhandled":     {event: "issues", label: "issues", outcome: githubapp.OutcomeIgnored, body: []byte(`{"action":"opened","repository":{"id":5,"full_name":"a/b"}}`)},
		"installation target": {event: "installation_target", label: "installation_target", outcome: githubapp.OutcomeIgnored, body: []byte(`{"action":"renamed","installation":{"id":42}}`)},
		"invented event name": {event: "made_up", label: "other", outcome: githubapp.OutcomeIgnored, body: []byte(`{}`)},
		"create":              {event: "create", label: "create", outcome: githubapp.OutcomeIgnored, body: []byte(`{"ref":"v1"}`)},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			in := newIntake(t)
			var head webhookHead
			if err := json.Unmarshal(tc.body, &head); err != nil {
				t.Fatal(err)
			}
			resp, msg := in.post(t, delivery{id: "guid-" + tc.event, event: tc.event, body: tc.body,
				headers: map[string]string{"Content-Type": "application/json; charset=utf-8"}})
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status = %d (%q), want 200", resp.StatusCode, msg["message"])
			}
			if msg["message"] != tc.outcome {
				t.Errorf("message = %q, want %q", msg["message"], tc.outcome)
			}
			list := in.stored(t)
			if len(list) != 1 {
				t.Fatalf("%d deliveries stored, want 1 (recorded as ignored)", len(list))
			}
			d, err := in.db.GetDelivery(context.Background(), "guid-"+tc.event)
			if err != nil {
				t.Fatal(err)
			}
			if d.State != pipeline.DeliveryIgnored || d.Event != tc.event || d.Repository != head.Repository.FullName ||
				d.InstallationID != head.Installation.ID {
				t.Errorf("stored %+v", d)
			}
			if !bytes.Equal(d.Body, tc.body) {
				t.Errorf("an ignored delivery's body: %d bytes, want the %d bytes received", len(d.Body), len(tc.body))
			}
			next, err := in.db.NextDeliveries(context.Background(), d.ReceivedAt, nil, 10)
			if err != nil || len(next) != 0 {
				t.Errorf("an ignored delivery is work for the worker: %v, %v", next, err)
			}
			want := map[[2]string]float64{{tc.label, tc.outcome}: 1}
			if got := in.counted(t); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("counters = %v, want %v", got, want)
			}
			if n := in.notified.Load(); n != 0 {
				t.Errorf("worker notified %d times for an ignored event", n)
			}
		})
	}
}

func TestWebhookRedeliveryIsStoredOnce(t *testing.T) {
	in := newIntake(t)
	body := payload(t, "push.json")
	d := delivery{id: "72d3162e-cc78-11e3-81ab-4c9367dc0958", event: "push", body: body}

	resp, _ := in.post(t, d)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("first delivery: status %d, want 202", resp.StatusCode)
	}
	for i := range 2 {
		resp, msg := in.post(t, d)
		if resp.StatusCode != http.StatusOK || msg["message"] != githubapp.OutcomeDuplicate {
			t.Errorf("redelivery %d: status %d %q, want 200 %q", i+1, resp.StatusCode, msg["message"], githubapp.OutcomeDuplicate)
		}
	}
	if n := len(in.stored(t)); n != 1 {
		t.Errorf("%d deliveries stored, want 1", n)
	}
	want := map[[2]string]float64{{"push", githubapp.OutcomeAccepted}: 1, {"push", githubapp.OutcomeDuplicate}: 2}
	if got := in.counted(t); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("counters = %v, want %v", got, want)
	}
	if n := in.notified.Load(); n != 1 {
		t.Errorf("worker notified %d times, want once", n)
	}
}

func TestWebhookAnswers503WhenTheInboxCannotCommit(t *testing.T) {
	in := newIntake(t)
	in.db.Close() // Accept now fails: nothing can be stored
	resp, msg := in.post(t, delivery{id: "d-1", event: "push", body: payload(t, "push.json")})
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status = %d (%q), want 503 so that the delivery counts as failed", resp.StatusCode, msg["message"])
	}
	want := [][2]string{{"push", githubapp.OutcomeUnavailable}}
	if got := in.rejected.list(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("rejections = %v, want %v", got, want)
	}
	if n := in.notified.Load(); n != 0 {
		t.Errorf("worker notified %d times", n)
	}
}

// The bodies held at once, read and not stored yet, are bounded: a body
// that would pass the bound while another is still arriving is refused
// with 503 (GitHub may redeliver it), and once the first is stored the
// room is back.
func TestWebhookBoundsTheBodiesHeldAtOnce(t *testing.T) {
	db := storagetest.Open(t)
	rejected := &rejections{}
	hook := githubapp.NewWebhook(hookSecret, db, githubapp.Handles, rejected, nil, discardLog())
	body := payload(t, "push.json")
	half := len(body) / 2
	hook.MaxBodiesInFlight = int64(len(body) + half - 1) // not a whole body beside half of another
	serve := func(id string, r io.Reader) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/webhook", r)
		req.ContentLength = int64(len(body)) // as GitHub announces it
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-GitHub-Delivery", id)
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-Hub-Signature-256", githubapp.SignatureHeader([]byte(hookSecret), body))
		w := httptest.NewRecorder()
		hook.ServeHTTP(w, req)
		return w
	}
	// The first delivery arrives slowly: it holds its announced length
	// from the start (the buffer it is read into), its first half sent.
	pr, pw := io.Pipe()
	first := make(chan *httptest.ResponseRecorder, 1)
	go func() { first <- serve("slow", io.NopCloser(pr)) }()
	for _, part := range [][]byte{body[:half], body[half : half+1]} { // the second write returns once the first part was counted
		if _, err := pw.Write(part); err != nil {
			t.Fatal(err)
		}
	}
	if w := serve("meanwhile", bytes.NewReader(body)); w.Code != http.StatusServiceUnavailable {
		t.Errorf("a whole body beside half of another: %d %s, want 503", w.Code, w.Body)
	}
	if _, err := pw.Write(body[half+1:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if w := <-first; w.Code != http.StatusAccepted {
		t.Errorf("the slow delivery: %d %s", w.Code, w.Body)
	}
	if w := serve("after", bytes.NewReader(body)); w.Code != http.StatusAccepted {
		t.Errorf("a body once the slow one was stored: %d %s, want 202", w.Code, w.Body)
	}
	for id, want := range map[string]bool{"slow": true, "meanwhile": false, "after": true} {
		_, err := db.GetDelivery(context.Background(), id)
		if (err == nil) != want {
			t.Errorf("delivery %s stored: %v, want %v", id, err == nil, want)
		}
	}
	if got := fmt.Sprint(rejected.list()); got != fmt.Sprint([][2]string{{"push", githubapp.OutcomeUnavailable}}) {
		t.Errorf("rejections: %s", got)
	}
}

func TestWebhookConcurrentDistinctDeliveries(t *testing.T) {
	in := newIntake(t)
	body := payload(t, "deployment_status.json")
	const n = 100
	statuses := make(chan int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, _ := in.post(t, delivery{id: fmt.Sprintf("guid-%03d", i), event: "deployment_status", body: body})
			statuses <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != http.StatusAccepted {
			t.Errorf("status %d, want 202", s)
		}
	}
	list := in.stored(t)
	seen := map[string]int{}
	for _, d := range list {
		seen[d.ID]++
	}
	for i := range n {
		if id := fmt.Sprintf("guid-%03d", i); seen[id] != 1 {
			t.Errorf("%s stored %d times", id, seen[id])
		}
	}
	if len(list) != n {
		t.Errorf("%d rows, want %d", len(list), n)
	}
	want := map[[2]string]float64{{"deployment_status", githubapp.OutcomeAccepted}: n}
	if got := in.counted(t); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("counters = %v, want %v", got, want)
	}
	if got := in.notified.Load(); got != n {
		t.Errorf("worker notified %d times, want %d", got, n)
	}
}

func TestWebhookConcurrentCopiesOfOneDelivery(t *testing.T) {
	in := newIntake(t)
	body := payload(t, "workflow_job_queued.json")
	const n = 50
	statuses := make(chan int, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, _ := in.post(t, delivery{id: "one-guid", event: "workflow_job", body: body})
			statuses <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(statuses)
	count := map[int]int{}
	for s := range statuses {
		count[s]++
	}
	if count[http.StatusAccepted] != 1 || count[http.StatusOK] != n-1 {
		t.Errorf("answers = %v, want one 202 and %d 200", count, n-1)
	}
	if list := in.stored(t); len(list) != 1 || !bytes.Equal(mustGet(t, in.db, "one-guid").Body, body) {
		t.Errorf("%d rows stored, want 1 with the body", len(list))
	}
	want := map[[2]string]float64{{"workflow_job", githubapp.OutcomeAccepted}: 1, {"workflow_job", githubapp.OutcomeDuplicate}: n - 1}
	if got := in.counted(t); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("counters = %v, want %v", got, want)
	}
	if got := in.notified.Load(); got != 1 {
		t.Errorf("worker notified %d times, want 1", got)
	}
}

func mustGet(t *testing.T, db *storage.DB, id string) *pipeline.Delivery {
	t.Helper()
	d, err := db.GetDelivery(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestVerifySignature(t *testing.T) {
	// GitHub's documented test vector ("Validating webhook deliveries").
	secret := []byte("It's a Secret to Everybody")
	body := []byte("Hello, World!")
	const vector = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

	if got := githubapp.SignatureHeader(secret, body); got != vector {
		t.Errorf("SignatureHeader = %s, want GitHub's %s", got, vector)
	}
	tests := map[string]struct {
		secret []byte
		header string
		body   []byte
		ok     bool
	}{
		"GitHub's test vector":        {secret, vector, body, true},
		"upper-case hex digest":       {secret, "sha256=" + strings.ToUpper(strings.TrimPrefix(vector, "sha256=")), body, true},
		"other body":                  {secret, vector, []byte("Hello, World?"), false},
		"body with a trailing space":  {secret, vector, []byte("Hello, World! "), false},
		"other secret":                {[]byte("It's a Secret to Everybody!"), vector, body, false},
		"empty header":                {secret, "", body, false},
		"no prefix":                   {secret, strings.TrimPrefix(vector, "sha256="), body, false},
		"upper-case prefix":           {secret, "SHA256=" + strings.TrimPrefix(vector, "sha256="), body, false},
		"sha1 prefix":                 {secret, "sha1=" + strings.TrimPrefix(vector, "sha256="), body, false},
		"SHA-1 signature":             {secret, sha1Header(secret, body), body, false},
		"not hex":                     {secret, "sha256=" + strings.Repeat("g", 64), body, false},
		"one byte short":              {secret, vector[:len(vector)-2], body, false},
		"one byte long":               {secret, vector + "00", body, false},
		"last digit changed":          {secret, vector[:len(vector)-1] + "6", body, false},
		"whitespace around":           {secret, " " + vector, body, false},
		"no secret configured":        {nil, githubapp.SignatureHeader(nil, body), body, false},
		"empty secret configured":     {[]byte{}, githubapp.SignatureHeader([]byte{}, body), body, false},
		"empty body, right signature": {secret, githubapp.SignatureHeader(secret, nil), nil, true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := githubapp.VerifySignature(tc.secret, tc.header, tc.body)
			if (err == nil) != tc.ok {
				t.Errorf("VerifySignature = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && strings.Contains(err.Error(), string(secret)) {
				t.Errorf("error %q reveals the secret", err)
			}
		})
	}
}

// unreadable is a body that must not be read.
type unreadable struct{ reads atomic.Int64 }

func (u *unreadable) Read(p []byte) (int, error) {
	u.reads.Add(1)
	return 0, io.ErrUnexpectedEOF
}

func TestWebhookRefusesADeclaredOversizeBodyWithoutReadingIt(t *testing.T) {
	db := openStore(t)
	rejected := &rejections{}
	hook := githubapp.NewWebhook(hookSecret, db, githubapp.Handles, rejected, nil, discardLog())
	body := &unreadable{}
	req := httptest.NewRequest(http.MethodPost, "/webhook", body)
	req.ContentLength = githubapp.MaxPayloadBytes + 1
	req.Header.Set("X-GitHub-Delivery", "d-1")
	req.Header.Set("X-GitHub-Event", "push")
	rec := httptest.NewRecorder()
	hook.ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("status = %d, want 413", rec.Code)
	}
	if n := body.reads.Load(); n != 0 {
		t.Errorf("the body was read %d times before refusing it", n)
	}
	if got, want := rejected.list(), [][2]string{{"push", githubapp.OutcomeTooLarge}}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("rejections = %v, want %v", got, want)
	}
}

// A refused request's delivery header is logged bounded and printable,
// whatever an unauthenticated sender put there: a megabyte of bytes that
// are not UTF-8 must not become six megabytes of log.
func TestWebhookRefusalLogIsBounded(t *testing.T) {
	var logged bytes.Buffer
	h := githubapp.NewWebhook(hookSecret, nil, func(string) bool { return true }, &rejections{}, nil,
		slog.New(slog.NewJSONHandler(&logged, nil)))
	req := httptest.NewRequest(http.MethodPost, "/webhook", strings.NewReader(`{}`))
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", "ab\x1b[2J"+strings.Repeat("\xff", 1<<20))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401", w.Code)
	}
	var entry struct{ Delivery string }
	if err := json.Unmarshal(logged.Bytes(), &entry); err != nil {
		t.Fatalf("log %q: %v", logged.String(), err)
	}
	if want := "ab?[2J" + strings.Repeat("?", 94) + "…"; entry.Delivery != want || logged.Len() > 1000 {
		t.Errorf("logged %d bytes, delivery %q; want under 1000 bytes, delivery %q", logged.Len(), entry.Delivery, want)
	}
}

// The series exposed at 0 are bounded (KnownEvent's labels), and include
// those the signature alerts read.
func TestWebhookSeries(t *testing.T) {
	series := githubapp.WebhookSeries()
	seen := map[[2]string]bool{}
	for _, s := range series {
		if len(s) != 2 || githubapp.KnownEvent(s[0]) != s[0] {
			t.Errorf("series %q: want a KnownEvent label and an outcome", s)
			continue
		}
		if seen[[2]string{s[0], s[1]}] {
			t.Errorf("series %q listed twice", s)
		}
		seen[[2]string{s[0], s[1]}] = true
	}
	for _, want := range [][2]string{
		{"push", githubapp.OutcomeUnauthorized}, {"push", githubapp.OutcomeAccepted},
		{"deployment_status", githubapp.OutcomeUnauthorized}, {"ping", githubapp.OutcomePing},
		{"installation", githubapp.OutcomeAccepted}, {"installation_repositories", githubapp.OutcomeAccepted},
		{"installation_target", githubapp.OutcomeIgnored}, {"other", githubapp.OutcomeUnauthorized},
	} {
		if !seen[want] {
			t.Errorf("WebhookSeries lacks event=%q outcome=%q", want[0], want[1])
		}
	}
	if len(series) > 200 {
		t.Errorf("%d series: keep the exposition small", len(series))
	}
}

type timer struct {
	d time.Duration
	f func()
}

// lockedWriter writes to w under mu.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Refusals are logged one by one up to RefusalLinesPerMinute a minute,
// the rest summed up in one line at the minute's end: a flood of bad
// signatures cannot fill the disk, nor can a signed body sent again and
// again (its headers are not signed). Every refusal is counted.
func TestWebhookRefusalLogIsRateLimited(t *testing.T) {
	// What the server's goroutines log and schedule, and the time they
	// read, under mu: the test reads and sets them between requests.
	var (
		mu     sync.Mutex
		logged bytes.Buffer
		now    = time.Date(2026, 5, 4, 12, 0, 0, 0, time.UTC)
		timers []timer
	)
	db := storagetest.Open(t)
	rejected := &rejections{}
	hook := githubapp.NewWebhook(hookSecret, db, githubapp.Handles, rejected, nil,
		slog.New(slog.NewJSONHandler(lockedWriter{&mu, &logged}, nil)))
	hook.SetRefusalClock(func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
		func(d time.Duration, f func()) { mu.Lock(); defer mu.Unlock(); timers = append(timers, timer{d, f}) })
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	scheduled := func() []timer { mu.Lock(); defer mu.Unlock(); return slices.Clone(timers) }
	in := &intake{db: db, rejected: rejected}
	in.srv = httptest.NewServer(hook)
	t.Cleanup(in.srv.Close)

	type line struct {
		Msg, Delivery, Reason string
		More, Logged          int
		Outcomes              map[string]int
		LastStatus            int    `json:"last_status"`
		LastRemote            string `json:"last_remote"`
	}
	lines := func() []line { // the lines logged since the last call
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		var out []line
		dec := json.NewDecoder(&logged)
		for dec.More() {
			var l line
			if err := dec.Decode(&l); err != nil {
				t.Fatal(err)
			}
			out = append(out, l)
		}
		return out
	}
	push := payload(t, "push.json")
	unsigned := func(n int) {
		t.Helper()
		for i := range n {
			resp, _ := in.post(t, delivery{id: fmt.Sprintf("forged-%d", i), event: "push", body: push,
				headers: map[string]string{"X-Hub-Signature-256": "sha256=" + strings.Repeat("0", 64)}})
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("a forged delivery: %d, want 401", resp.StatusCode)
			}
		}
	}
	const limit = githubapp.RefusalLinesPerMinute

	// A flood: the first ones logged, the rest held for the summary — a
	// signed delivery refused after them too.
	unsigned(limit + 29)
	bad := edit(t, "push.json", func(p map[string]any) { p["after"] = "not-a-sha" })
	if resp, _ := in.post(t, delivery{id: "signed-bad", event: "push", body: bad}); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a signed delivery with a bad after: %d, want 400", resp.StatusCode)
	}
	got := lines()
	if len(got) != limit {
		t.Fatalf("%d lines logged, want the first %d forged ones: %+v", len(got), limit, got)
	}
	for i, l := range got[:limit] {
		if l.Msg != "webhook: delivery refused" || l.Delivery != fmt.Sprintf("forged-%d", i) {
			t.Errorf("line %d: %+v, want the refusal of forged-%d", i, l, i)
		}
	}
	if n := len(rejected.list()); n != limit+30 {
		t.Errorf("%d refusals counted, want every one of the %d", n, limit+30)
	}
	due := scheduled()
	if len(due) != 1 || due[0].d != time.Minute {
		t.Fatalf("summaries scheduled: %v, want one, at the end of the minute", due)
	}

	// The minute ends: one line sums up the 30 not logged.
	advance(time.Minute)
	due[0].f()
	got = lines()
	if len(got) != 1 || got[0].More != 30 || got[0].Outcomes[githubapp.OutcomeUnauthorized] != 29 || got[0].Outcomes[githubapp.OutcomeMalformed] != 1 ||
		got[0].LastStatus != http.StatusBadRequest || got[0].LastRemote == "" || got[0].Logged != limit || !strings.Contains(got[0].Msg, "more deliveries refused") {
		t.Fatalf("at the minute's end: %+v, want one summary of 29 unauthorized and the signed malformed one last", got)
	}

	// The next minute logs its first ones again. When its summary is due
	// before its timer has run, the next refusal logs it first; the timer
	// then logs nothing more.
	advance(time.Second)
	unsigned(limit + 5)
	advance(time.Minute)
	unsigned(1)
	got = lines()
	if len(got) != limit+2 || got[limit].More != 5 || got[limit+1].Msg != "webhook: delivery refused" {
		t.Fatalf("a second minute: %d lines, want %d in full, the summary of 5, then the next minute's first line: %+v", len(got), limit, got)
	}
	if due = scheduled(); len(due) != 2 {
		t.Fatalf("%d summaries scheduled, want 2", len(due))
	}
	if due[1].d != time.Minute {
		t.Errorf("the second summary scheduled in %v, want a minute", due[1].d)
	}
	due[1].f()
	due[0].f()
	if got := lines(); len(got) != 0 {
		t.Errorf("timers of summaries already logged logged %+v", got)
	}
}

// fullInbox stores nothing: the disk is full.
type fullInbox struct{}

func (fullInbox) Accept(context.Context, *pipeline.Delivery, string, string) (bool, error) {
	return false, errors.New("database or disk is full (13)")
}

// boundedLog is an intake whose bounded log lines the test reads: its
// clock stands still, and the summaries it schedules wait for fireSummary.
type boundedLog struct {
	*intake
	mu     sync.Mutex
	logged bytes.Buffer
	timers []timer
}

// loggedLine is what the bounded lines say.
type loggedLine struct {
	Level, Msg, Delivery, Reason string
	More                         int
}

func newBoundedLog(t *testing.T, inbox githubapp.Inbox, db *storage.DB) *boundedLog {
	b := &boundedLog{intake: &intake{db: db, rejected: &rejections{}}}
	hook := githubapp.NewWebhook(hookSecret, inbox, githubapp.Handles, b.rejected, nil,
		slog.New(slog.NewJSONHandler(lockedWriter{&b.mu, &b.logged}, nil)))
	now := time.Date(2026, 5, 4, 12, 0, 0, 0, time.UTC)
	hook.SetRefusalClock(func() time.Time { return now },
		func(d time.Duration, f func()) {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.timers = append(b.timers, timer{d, f})
		})
	b.srv = httptest.NewServer(hook)
	t.Cleanup(b.srv.Close)
	return b
}

// fireSummary runs the one summary scheduled, as the minute's end would.
func (b *boundedLog) fireSummary(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	due := slices.Clone(b.timers)
	b.mu.Unlock()
	if len(due) != 1 {
		t.Fatalf("summaries scheduled: %d, want one", len(due))
	}
	due[0].f()
}

// lines are the lines logged.
func (b *boundedLog) lines(t *testing.T) []loggedLine {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var got []loggedLine
	for dec := json.NewDecoder(&b.logged); dec.More(); {
		var l loggedLine
		if err := dec.Decode(&l); err != nil {
			t.Fatal(err)
		}
		got = append(got, l)
	}
	return got
}

// Deliveries that could not be stored are logged at ERROR as refusals are,
// RefusalLinesPerMinute a minute and a summary of the rest: on a full disk
// every delivery GitHub sends would otherwise add a line to what is left.
func TestWebhookStoreFailureLogIsRateLimited(t *testing.T) {
	in := newBoundedLog(t, fullInbox{}, nil)
	const limit = githubapp.RefusalLinesPerMinute
	push := payload(t, "push.json")
	for i := range limit + 7 {
		if resp, _ := in.post(t, delivery{id: fmt.Sprintf("d-%d", i), event: "push", body: push}); resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("a delivery the inbox cannot store: %d, want 503", resp.StatusCode)
		}
	}
	in.fireSummary(t)
	got := in.lines(t)
	if len(got) != limit+1 {
		t.Fatalf("%d lines logged, want %d and a summary: %+v", len(got), limit, got)
	}
	for i, l := range got[:limit] {
		if l.Level != "ERROR" || l.Msg != "webhook: store delivery" || l.Delivery != fmt.Sprintf("d-%d", i) || !strings.Contains(l.Reason, "disk is full") {
			t.Errorf("line %d: %+v", i, l)
		}
	}
	if s := got[limit]; s.Level != "ERROR" || s.More != 7 || !strings.Contains(s.Msg, "could not be stored") {
		t.Errorf("summary: %+v, want the 7 not logged, at ERROR", s)
	}
	if n := len(in.rejected.list()); n != limit+7 {
		t.Errorf("%d counted, want every one of the %d", n, limit+7)
	}
}

// A delivery received again under its delivery ID (a signed body anyone who
// saw it can send again) is answered 200 and stored once, and its lines are
// bounded as refusals are.
func TestWebhookDuplicateLogIsRateLimited(t *testing.T) {
	db := storagetest.Open(t)
	in := newBoundedLog(t, db, db)
	const limit = githubapp.RefusalLinesPerMinute
	push := payload(t, "push.json")
	for i := range limit + 5 {
		want := http.StatusOK
		if i == 0 {
			want = http.StatusAccepted
		}
		if resp, _ := in.post(t, delivery{id: "again", event: "push", body: push}); resp.StatusCode != want {
			t.Fatalf("post %d: %d, want %d", i, resp.StatusCode, want)
		}
	}
	in.fireSummary(t)
	var msgs []string
	more := 0
	for _, l := range in.lines(t) {
		msgs = append(msgs, l.Msg)
		more += l.More
	}
	if len(msgs) != limit+2 || msgs[0] != "webhook: delivery received" || more != 4 ||
		!strings.Contains(msgs[limit+1], "received again in the last minute") {
		t.Errorf("lines %q (%d more summed up), want the delivery, %d lines of it received again, and a summary of 4", msgs, more, limit)
	}
}

// GitHub's Redeliver on a delivery that lastmile parked as dead is answered
// 200 and stores nothing, as any delivery received again; since it handles
// nothing either, the line says so at WARN, with the command that does.
func TestWebhookDeadDeliveryReceivedAgainIsSaid(t *testing.T) {
	db := storagetest.Open(t)
	in := newBoundedLog(t, db, db)
	push := payload(t, "push.json")
	post := func(id string, want int) {
		t.Helper()
		if resp, _ := in.post(t, delivery{id: id, event: "push", body: push}); resp.StatusCode != want {
			t.Fatalf("post %s: %d, want %d", id, resp.StatusCode, want)
		}
	}
	post("dead-one", http.StatusAccepted)
	post("alive-one", http.StatusAccepted)
	d, err := db.GetDelivery(context.Background(), "dead-one")
	if err != nil {
		t.Fatal(err)
	}
	if err := db.FailDelivery(context.Background(), d.Seq, "GitHub answered 422", time.Now(), true); err != nil {
		t.Fatal(err)
	}
	post("dead-one", http.StatusOK)
	post("alive-one", http.StatusOK)
	var said []loggedLine
	for _, l := range in.lines(t) {
		if l.Msg != "webhook: delivery received" {
			said = append(said, l)
		}
	}
	want := []loggedLine{
		{Level: "WARN", Msg: "webhook: a dead delivery received again is not handled again", Delivery: "dead-one",
			Reason: "a delivery with this X-GitHub-Delivery is stored already, and dead: received again, it is not handled again; `lastmile deliveries retry dead-one` handles it"},
		{Level: "INFO", Msg: "webhook: delivery received again, stored once already", Delivery: "alive-one",
			Reason: "a delivery with this X-GitHub-Delivery is stored already"},
	}
	if !slices.Equal(said, want) {
		t.Errorf("lines %+v, want %+v", said, want)
	}
}
