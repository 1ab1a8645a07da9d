package githubapp_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/githubapp"
)

// The manifest code can be exchanged for the App's private key within the
// hour: when the exchange fails, the error (which lastmile register shows
// on the page and prints) must not hold it, whatever went wrong.
func TestConvertManifestErrorsHideTheCode(t *testing.T) {
	const code = "3f2a9c0d17b84e6a5c21"
	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedURL := "http://" + refused.Addr().String() + "/"
	refused.Close() // nothing listens there any more

	for name, tc := range map[string]struct {
		handler http.HandlerFunc // nil: the connection is refused
		want    []string
		retry   bool // the same code may be tried again
	}{
		"502": {
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusBadGateway)
				io.WriteString(w, `{"message":"Server Error"}`)
			},
			want:  []string{"502 Bad Gateway: Server Error"},
			retry: true,
		},
		"404 quoting the code": {
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusNotFound)
				io.WriteString(w, `{"message":"no conversion for `+code+`"}`)
			},
			want: []string{"404 Not Found: no conversion for {code}"},
		},
		"422": {
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnprocessableEntity)
				io.WriteString(w, `{"message":"Validation Failed"}`)
			},
			want: []string{"422 Unprocessable Entity: Validation Failed"},
		},
		"rate limited": {
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-RateLimit-Remaining", "0")
				w.Header().Set("X-RateLimit-Reset", "4102444800")
				w.WriteHeader(http.StatusForbidden)
				io.WriteString(w, `{"message":"API rate limit exceeded"}`)
			},
			want:  []string{"403 Forbidden: API rate limit exceeded"},
			retry: true,
		},
		"redirected to another host": {
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "http://elsewhere.example/x", http.StatusTemporaryRedirect)
			},
			want:  []string{"GitHub redirected /app-manifests/{code}/conversions to http://elsewhere.example"},
			retry: true, // no conversion answered
		},
		"connection refused": {want: []string{"connection refused"}, retry: true},
	} {
		t.Run(name, func(t *testing.T) {
			apiURL := refusedURL
			if tc.handler != nil {
				srv := httptest.NewServer(tc.handler)
				defer srv.Close()
				apiURL = srv.URL + "/"
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			reg, err := githubapp.ConvertManifest(ctx, apiURL, code, http.DefaultTransport)
			if err == nil {
				t.Fatalf("ConvertManifest succeeded: %+v", reg)
			}
			msg := err.Error()
			if strings.Contains(msg, code) {
				t.Errorf("the error holds the code: %s", msg)
			}
			var ce *githubapp.ConversionError
			if !errors.As(err, &ce) || ce.Retryable() != tc.retry {
				t.Errorf("error %#v: want a *ConversionError, Retryable() %v", err, tc.retry)
			}
			for _, w := range append(tc.want, "POST /app-manifests/{code}/conversions") {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
		})
	}
}

// GitHub sends the installation events to every App and lets none
// subscribe to them: the manifest names only events an App subscribes to,
// each of which lastmile handles, and lastmile handles the installation
// events all the same.
func TestManifestSubscribesOnlyToWhatAnAppCan(t *testing.T) {
	m := githubapp.NewManifest("lastmile", "https://lm.example.com/webhook", "http://127.0.0.1:8787/callback")
	for _, e := range m.DefaultEvents {
		if strings.HasPrefix(e, "installation") {
			t.Errorf("the manifest subscribes to %s, which GitHub sends unasked", e)
		}
		if !githubapp.Handles(e) {
			t.Errorf("the manifest subscribes to %s, which lastmile does not handle", e)
		}
	}
	for _, e := range []string{"installation", "installation_repositories"} {
		if !githubapp.Handles(e) {
			t.Errorf("lastmile does not handle %s", e)
		}
	}
}

// The simulator installs lastmile's App with what its manifest asks for, no
// more (and the sandbox passes the manifest's permissions itself): a
// permission missing from the manifest fails the tests that need it, as it
// would fail on GitHub, which refuses a token what it does not grant.
func TestSimulatorGrantsTheManifestsPermissions(t *testing.T) {
	w := newSimWorld(t)
	clients := w.clients(t)
	tok, _, err := clients.App().Apps.CreateInstallationToken(context.Background(), w.acme, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(tok.GetPermissions())
	var granted map[string]string
	if err := json.Unmarshal(b, &granted); err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(granted, githubapp.Permissions) {
		t.Errorf("the simulator's installation grants %v, the manifest asks for %v", granted, githubapp.Permissions)
	}
}
