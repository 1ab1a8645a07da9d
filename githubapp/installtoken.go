package githubapp

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"

	"github.com/bradleyfalzon/ghinstallation/v2"
)

// installationTransport authenticates each call as installation id through
// a ghinstallation Transport, which asks for the installation's token,
// keeps it and renews it before it expires, and marks the call with the
// installation, for the rate-limit metrics (the token alone does not say
// whose it is).
//
// A call GitHub answers 401 with the token kept from an earlier call (it
// was revoked, or expired all the same) drops that ghinstallation
// Transport, and its token with it, and is sent once more, its body
// replayed, through a new one, which asks for a new token: a 401 is GitHub
// refusing the request before acting on it, so even a POST can be sent
// again. Calls refused together share the one new Transport, and so its
// one new token. Only once: a 401 to a token new to the call (or to the
// second try) is the caller's answer; that Transport is dropped all the
// same. (A token ghinstallation renewed during the call is taken for one
// kept: GitHub refusing a token it just gave costs one more try.) A token
// GitHub will not give (another App's ID or key, an App uninstalled) fails
// the call with the token request's refusal, an *InstallationTokenError.
type installationTransport struct {
	id     int64
	tokens func(id int64) *ghinstallation.Transport // a new one, without a token yet

	mu      sync.Mutex
	current *ghinstallation.Transport // nil until a call needs one
	kept    bool                      // a call through current got an answer: it holds a token from before
}

func (t *installationTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := context.WithValue(req.Context(), installationKey{}, t.id)
	body, err := snapshotBody(req) // closes req.Body
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		tokens, kept := t.transport()
		try := req.Clone(ctx)
		if body != nil {
			try.Body = io.NopCloser(bytes.NewReader(body))
		}
		resp, err := tokens.RoundTrip(try)
		if err != nil {
			return nil, installationTokenError(t.id, err)
		}
		if resp.StatusCode != http.StatusUnauthorized {
			t.gotToken(tokens)
			return resp, nil
		}
		// GitHub refused the token: no later call is to use it.
		t.drop(tokens)
		if !kept || attempt > 0 || ctx.Err() != nil {
			return resp, nil
		}
		drain(resp)
	}
}

// transport is the installation's ghinstallation Transport, made now if
// there is none, and whether it holds a token from an earlier call.
func (t *installationTransport) transport() (tokens *ghinstallation.Transport, kept bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.current == nil {
		t.current, t.kept = t.tokens(t.id), false
	}
	return t.current, t.kept
}

// gotToken records that tokens, if it is still the installation's
// Transport, holds a token: a call through it got an answer.
func (t *installationTransport) gotToken(tokens *ghinstallation.Transport) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.current == tokens {
		t.kept = true
	}
}

// drop forgets tokens, and its token, if it is still the installation's
// Transport (a concurrent call refused too may have dropped it already):
// the next call makes a new one.
func (t *installationTransport) drop(tokens *ghinstallation.Transport) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.current == tokens {
		t.current = nil
	}
}
