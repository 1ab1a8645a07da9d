package simulator_test

import (
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/google/go-github/v62/github"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
	"github.com/lastmile-app/lastmile/githubapp/simulator/oasvalidate"
)

const (
	testAppID  = 4242
	testSecret = "It's a Secret to Everybody"
)

// receiver is a webhook endpoint that checks signatures, checks bodies
// against GitHub's webhook schemas (oasvalidate.Validator.Webhook: the REST
// description's x-webhooks and @octokit/openapi-webhooks, as the app and
// Action tests check the webhooks of their simulators), and records them: every flow
// the simulator's own tests play has its webhooks checked, not only
// TestConformance's.
type receiver struct {
	t    *testing.T
	srv  *httptest.Server
	path string // unique per receiver

	mu     sync.Mutex
	status []int // statuses to answer, in order; then 200
	got    []received
}

type received struct {
	event, guid string
	body        []byte
	header      http.Header
}

func newReceiver(t *testing.T) *receiver {
	schemas, err := oasvalidate.Load()
	if err != nil {
		t.Fatal(err)
	}
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	rc := &receiver{t: t, path: "/webhook/" + hex.EncodeToString(nonce[:])}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != rc.path {
			// Another process's simulator delivering to a port this
			// server reused: not ours.
			http.NotFound(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return // the simulator closed and gave up on this delivery
		}
		m := hmac.New(sha256.New, []byte(testSecret))
		m.Write(body)
		if want := "sha256=" + hex.EncodeToString(m.Sum(nil)); r.Header.Get("X-Hub-Signature-256") != want {
			t.Errorf("delivery %s: bad signature", r.Header.Get("X-GitHub-Delivery"))
		}
		var head struct {
			Action string `json:"action"`
		}
		_ = json.Unmarshal(body, &head)
		if err := schemas.Webhook(r.Header.Get("X-GitHub-Event"), head.Action, body); err != nil {
			t.Errorf("delivery %s: %v\n\tbody: %.1000s", r.Header.Get("X-GitHub-Delivery"), err, body)
		}
		rc.mu.Lock()
		rc.got = append(rc.got, received{event: r.Header.Get("X-GitHub-Event"), guid: r.Header.Get("X-GitHub-Delivery"), body: body, header: r.Header.Clone()})
		code := http.StatusOK
		if len(rc.status) > 0 {
			code, rc.status = rc.status[0], rc.status[1:]
		}
		rc.mu.Unlock()
		w.WriteHeader(code)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

// url is where the simulator should deliver.
func (rc *receiver) url() string { return rc.srv.URL + rc.path }

// failNext makes the next deliveries answer these statuses.
func (rc *receiver) failNext(codes ...int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.status = append(rc.status, codes...)
}

func (rc *receiver) received() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

type harness struct {
	t    *testing.T
	sim  *simulator.Simulator
	api  string
	hook *receiver
	org  int64 // installation on the "acme" organization
}

// newHarness starts a simulator on a real listener with a webhook receiver
// and an installation for the organization "acme".
func newHarness(t *testing.T, opts simulator.Options) *harness {
	t.Helper()
	hook := newReceiver(t)
	if opts.AppID == 0 {
		opts.AppID = testAppID
	}
	opts.WebhookSecret = testSecret
	opts.WebhookURL = hook.url()
	sim := simulator.New(opts)
	api, err := sim.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	h := &harness{t: t, sim: sim, api: api, hook: hook}
	h.org = sim.CreateInstallation("acme", "Organization")
	return h
}

// ctx returns a context with a deadline for waiting on conditions.
func (h *harness) ctx() context.Context { return testCtx(h.t) }

// testCtx returns a context with a deadline, cancelled when the test ends.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// client returns a go-github client authenticated as an installation
// through ghinstallation, sending requests through base (nil: default).
func (h *harness) client(inst int64, base http.RoundTripper) *github.Client {
	h.t.Helper()
	if base == nil {
		base = http.DefaultTransport
	}
	atr, err := ghinstallation.NewAppsTransport(base, h.sim.AppID(), h.sim.AppPrivateKeyPEM())
	if err != nil {
		h.t.Fatal(err)
	}
	atr.BaseURL = strings.TrimSuffix(h.api, "/")
	itr := ghinstallation.NewFromAppsTransport(atr, inst)
	c := github.NewClient(&http.Client{Transport: itr})
	c.BaseURL = mustParse(h.t, h.api)
	return c
}

// appClient returns a go-github client authenticated as the App (JWT).
func (h *harness) appClient(base http.RoundTripper) *github.Client {
	h.t.Helper()
	if base == nil {
		base = http.DefaultTransport
	}
	atr, err := ghinstallation.NewAppsTransport(base, h.sim.AppID(), h.sim.AppPrivateKeyPEM())
	if err != nil {
		h.t.Fatal(err)
	}
	atr.BaseURL = strings.TrimSuffix(h.api, "/")
	c := github.NewClient(&http.Client{Transport: atr})
	c.BaseURL = mustParse(h.t, h.api)
	return c
}

// waitIdle waits until the simulator is idle.
func (h *harness) waitIdle() {
	h.t.Helper()
	if err := h.sim.WaitIdle(h.ctx()); err != nil {
		h.t.Fatal(err)
	}
}

// events returns "event/action" of every delivery attempt so far.
func (h *harness) events() []string {
	var out []string
	for _, d := range h.sim.Deliveries() {
		e := d.Event
		if d.Action != "" {
			e += "/" + d.Action
		}
		out = append(out, e)
	}
	return out
}

func mustParse(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// signJWT signs claims with the App's key (RS256), like ghinstallation.
func signJWT(t *testing.T, sim *simulator.Simulator, claims map[string]any) string {
	t.Helper()
	block, _ := pem.Decode(sim.AppPrivateKeyPEM())
	key, err := x509.ParsePKCS1PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signing := enc(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." + enc(claims)
	digest := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// jwt returns a valid App JWT.
func (h *harness) jwt() string { return h.jwtAt(time.Now()) }

// jwtAt returns an App JWT valid at now (a simulator's fake clock).
func (h *harness) jwtAt(now time.Time) string {
	return signJWT(h.t, h.sim, map[string]any{"iat": now.Unix() - 60, "exp": now.Unix() + 540, "iss": h.sim.AppID()})
}

// apiResponse is a raw REST answer.
type apiResponse struct {
	status int
	header http.Header
	body   []byte
}

func (r apiResponse) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	return m
}

func (r apiResponse) list(t *testing.T) []map[string]any {
	t.Helper()
	var l []map[string]any
	if err := json.Unmarshal(r.body, &l); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	return l
}

// do sends a raw request; auth is the Authorization header ("" for none).
func (h *harness) do(method, path, auth string, body any) apiResponse {
	h.t.Helper()
	var rd io.Reader
	if body != nil {
		b, ok := body.(string)
		if !ok {
			bb, _ := json.Marshal(body)
			b = string(bb)
		}
		rd = strings.NewReader(b)
	}
	req, err := http.NewRequest(method, strings.TrimSuffix(h.api, "/")+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return apiResponse{status: resp.StatusCode, header: resp.Header, body: b}
}

// token creates an installation token and returns "token <value>".
func (h *harness) token(inst int64) string {
	h.t.Helper()
	r := h.do("POST", fmt.Sprintf("/app/installations/%d/access_tokens", inst), "Bearer "+h.jwt(), nil)
	if r.status != 201 {
		h.t.Fatalf("access token: %d %s", r.status, r.body)
	}
	return "token " + r.json(h.t)["token"].(string)
}
