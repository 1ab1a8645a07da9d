package githubapp

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// A spent quota is the installation's, not its token's: after ghinstallation
// refreshes the token, calls still wait for the reset instead of going out
// (GitHub bans integrations that keep calling through a limit). Another
// installation's calls go out.
func TestSpentQuotaHoldsTheInstallationWhateverItsToken(t *testing.T) {
	sent := map[string]int{}
	reset := time.Now().Add(time.Hour).Unix()
	tr := &Transport{MaxRetries: 1, Base: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		sent[r.Header.Get("Authorization")]++
		h := http.Header{}
		h.Set("X-RateLimit-Remaining", "0")
		h.Set("X-RateLimit-Limit", "5000")
		h.Set("X-RateLimit-Resource", "core")
		h.Set("X-RateLimit-Reset", strconv.FormatInt(reset, 10))
		return &http.Response{StatusCode: http.StatusForbidden, Header: h, Request: r,
			Body: io.NopCloser(strings.NewReader(`{"message":"API rate limit exceeded"}`))}, nil
	})}
	call := func(installation int64, token string) error {
		ctx := context.WithValue(context.Background(), installationKey{}, installation)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://github.test/repos/acme/shop", nil)
		req.Header.Set("Authorization", token)
		resp, err := tr.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	var rl *RateLimitedError
	if err := call(7, "token ghs_first"); !errors.As(err, &rl) {
		t.Fatalf("first call: %v, want a rate-limit error", err)
	}
	if err := call(7, "token ghs_refreshed"); !errors.As(err, &rl) {
		t.Fatalf("call with the refreshed token: %v, want a rate-limit error", err)
	}
	if n := sent["token ghs_refreshed"]; n != 0 {
		t.Errorf("the installation's refreshed token went out %d times during the wait", n)
	}
	if err := call(8, "token ghs_other"); !errors.As(err, &rl) || sent["token ghs_other"] != 1 {
		t.Errorf("another installation: %v, sent %d times; want it sent once", err, sent["token ghs_other"])
	}
}

// The App's JWT draws on the App's quota; a token — an installation's or
// the Action's GITHUB_TOKEN, in GitHub's older form or its newer stateless
// one (ghs_APPID_JWT, two dots in it) — on its own.
func TestQuotaNameTellsTheAppsJWTFromATokenWithDots(t *testing.T) {
	for auth, want := range map[string]string{
		"Bearer eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOjQyfQ.c2ln": "app",
		"Bearer ghs_42_eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOjQyfQ.c2ln":          "token",
		"Bearer ghs_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghij":                 "token",
		"token ghs_42_eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOjQyfQ.c2ln":           "token",
	} {
		req, _ := http.NewRequest(http.MethodGet, "http://github.test/repos/acme/shop", nil)
		req.Header.Set("Authorization", auth)
		if got := quotaName(req); got != want {
			t.Errorf("%s: quota %q, want %q", auth, got, want)
		}
	}
}
