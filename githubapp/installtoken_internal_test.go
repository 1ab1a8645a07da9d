package githubapp

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// ghinstallation renews an installation token five minutes (tokenRenewal)
// before it expires by GitHub's clock, whichever way the local clock is
// off, and keeps the rest of the token's answer. (It renewed a token a
// minute before its expires_at by the local clock: with GitHub's clock 10
// minutes ahead, the token went on being sent, and refused, for 9 minutes.)
// The time it renews at is read from ghinstallation (Expiry): waiting for
// it would take an hour.
func TestInstallationTokenRenewedByGitHubsClock(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, skew := range []time.Duration{0, 30 * time.Second, 2 * time.Minute, 10 * time.Minute, 30 * time.Minute, -10 * time.Minute} {
		t.Run(fmt.Sprintf("GitHub %v ahead", skew), func(t *testing.T) {
			var mu sync.Mutex
			var expires time.Time // GitHub's clock
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				now := time.Now().Add(skew) // GitHub's clock
				w.Header().Set("Date", now.UTC().Format(http.TimeFormat))
				w.Header().Set("Content-Type", "application/json")
				if r.Method == http.MethodPost {
					mu.Lock()
					expires = now.Add(time.Hour).Truncate(time.Second)
					mu.Unlock()
					w.WriteHeader(http.StatusCreated)
					fmt.Fprintf(w, `{"token":"ghs_1","expires_at":%q,"permissions":{"contents":"read"},"repositories":[{"full_name":"o/r"}]}`,
						expires.UTC().Format(time.RFC3339))
					return
				}
				fmt.Fprint(w, `{"full_name":"o/r"}`)
			}))
			defer srv.Close()
			clients, err := NewClients(srv.URL+"/", 1, key, &Transport{})
			if err != nil {
				t.Fatal(err)
			}
			gh, err := clients.Installation(7)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := gh.Repositories.Get(context.Background(), "o", "r"); err != nil {
				t.Fatal(err)
			}
			tokens, _, _ := gh.Client().Transport.(*installationTransport).transport()
			_, renewAt, err := tokens.Expiry()
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			left := expires.Sub(renewAt.Add(skew)) // by GitHub's clock, when ghinstallation renews it
			mu.Unlock()
			if d := left - tokenRenewal; d < -time.Second || d > 2*time.Second {
				t.Errorf("renewed when GitHub's clock says %v is left of the token, want %v", left, tokenRenewal)
			}
			if p, _ := tokens.Permissions(); p.GetContents() != "read" {
				t.Errorf("token's permissions %+v, want contents: read", p)
			}
			if r, _ := tokens.Repositories(); len(r) != 1 || r[0].GetFullName() != "o/r" {
				t.Errorf("token's repositories %v, want o/r", r)
			}
		})
	}
}

// An answer without an expires_at that reads is left as it is.
func TestLocalExpiryLeavesOtherAnswers(t *testing.T) {
	now := time.Now()
	for _, body := range []string{`{"token":"ghs_1"}`, `{"token":"ghs_1","expires_at":"soon"}`, `{"token":"ghs_1","expires_at":null}`, `not JSON`} {
		if got := localExpiry([]byte(body), now, now); string(got) != body {
			t.Errorf("%s: %s", body, got)
		}
	}
}
