package githubapp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
)

// installationTransport authenticates each call as installation id through
// a ghinstallation Transport, which asks for the installation's token,
// keeps it and renews it before it expires (see tokenClock), and marks the
// call with the installation, for the rate-limit metrics (the token alone
// does not say whose it is).
//
// A call GitHub answers 401 with the token kept from an earlier call (it
// was revoked, or expired all the same) drops that ghinstallation
// Transport, and its token with it, and is sent once more, its body
// replayed, through a new one, which asks for a new token: a 401 is GitHub
// refusing the request before acting on it, so even a POST can be sent
// again. Calls refused together share the one new Transport, and so its
// one new token. Only once: a 401 to a token new to the call (or to the
// second try) is the caller's answer; that Transport is dropped all the
// same. (A token ghinstallation renewed during the call is waited for as
// a new one, below, while it is that new; refused after that, it is taken
// for one kept, which costs one more try with another token.) A token
// GitHub will not give (another App's ID or key, an App uninstalled) fails
// the call with the token request's refusal, an *InstallationTokenError.
//
// GitHub's replicas may not know a token for a moment after giving it:
// calls with it are then refused (401), or, to GET and HEAD, answered
// 404 — which lastmile would take for a file or a commit that is not
// there. So a call with a token no call has had an answer to yet (not
// kept), answered so within tokenLag of GitHub giving it, is sent again
// after a pause (tokenLagPause, doubling), with the same token: a 401
// while the token is that new (three tries in all), a 404 once (GitHub's
// lag is under a second; a 404 is most often the answer, and one more
// call costs a second once an hour per installation).
type installationTransport struct {
	id int64
	// tokens is a new ghinstallation Transport, without a token yet,
	// that calls issued when GitHub gives it one.
	tokens func(id int64, issued func(time.Time)) *ghinstallation.Transport

	mu       sync.Mutex
	current  *ghinstallation.Transport // nil until a call needs one
	kept     bool                      // a call through current got an answer: it holds a token from before
	issuedAt time.Time                 // when GitHub gave the latest token (local clock)
	issues   uint64                    // how many tokens GitHub has given (a call tells a renewal within it)
}

// tokenLag is how long after GitHub gives a token a refusal of it (or a
// 404) may be its replicas not knowing it yet: @octokit/auth-app's five
// seconds. tokenLagPause is the pause before the call is sent again.
const (
	tokenLag      = 5 * time.Second
	tokenLagPause = time.Second
)

func (t *installationTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := context.WithValue(req.Context(), installationKey{}, t.id)
	body, err := snapshotBody(req) // closes req.Body
	if err != nil {
		return nil, err
	}
	lagPause, notFoundAgain := tokenLagPause, false
	tokens, kept, issues := t.transport()
	for attempt := 0; ; {
		try := req.Clone(ctx)
		if body != nil {
			try.Body = io.NopCloser(bytes.NewReader(body))
		}
		resp, err := tokens.RoundTrip(try)
		if err != nil {
			return nil, installationTokenError(t.id, err)
		}
		// A token kept from before the call, not renewed since: ghinstallation
		// may have renewed it within the call (issued), or another call
		// may have, and the new one is as new to GitHub's replicas as a
		// first.
		if (!kept || t.renewedSince(issues)) && t.tokenTooNew(resp, req.Method, lagPause, &notFoundAgain) {
			drain(resp)
			if err := Sleep(ctx, lagPause); err != nil {
				return nil, err
			}
			lagPause *= 2
			// The same attempt sent again: kept and issues stay as it
			// began (a token renewed within it and refused past the lag
			// is a kept token's refusal, which earns another token), its
			// Transport the installation's now (another call may have
			// dropped the one it had).
			tokens, _, _ = t.transport()
			continue
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
		attempt++
		tokens, kept, issues = t.transport()
	}
}

// transport is the installation's ghinstallation Transport, made now if
// there is none, and whether it holds a token from an earlier call.
func (t *installationTransport) transport() (tokens *ghinstallation.Transport, kept bool, issues uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.current == nil {
		t.current, t.kept = t.tokens(t.id, t.issued), false
	}
	return t.current, t.kept, t.issues
}

// renewedSince reports whether GitHub has given the installation a token
// since issues were given.
func (t *installationTransport) renewedSince(issues uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.issues != issues
}

// issued records that GitHub gave the installation a token at: a new
// Transport's first, or one ghinstallation renewed. Until a call with it
// gets an answer, the token is not kept.
func (t *installationTransport) issued(at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.issuedAt, t.kept = at, false
	t.issues++
}

// tokenTooNew reports whether resp, the answer to a call of method, may
// be GitHub's replicas not knowing the installation's token yet, to be
// sent again after pause, still within tokenLag of GitHub giving the
// token: a 401, or a 404 to GET or HEAD unless *notFoundAgain (set here:
// a 404 is sent again once).
func (t *installationTransport) tokenTooNew(resp *http.Response, method string, pause time.Duration, notFoundAgain *bool) bool {
	t.mu.Lock()
	fresh := !t.issuedAt.IsZero() && time.Since(t.issuedAt)+pause <= tokenLag
	t.mu.Unlock()
	switch {
	case !fresh:
		return false
	case resp.StatusCode == http.StatusUnauthorized:
		return true
	case resp.StatusCode == http.StatusNotFound && (method == http.MethodGet || method == http.MethodHead) && !*notFoundAgain:
		*notFoundAgain = true
		return true
	}
	return false
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

// tokenRenewal is how long before an installation token expires, by
// GitHub's clock, ghinstallation is to renew it: longer than a call is held
// in the transport with its retries and rate-limit waits (MaxWait, the
// backoff, slow answers), so that a call does not start with a token that
// expires on the way. GitHub's tokens last an hour.
const tokenRenewal = 5 * time.Minute

// ghinstallationRenewal is how long before a token's expires_at, by the
// local clock (time.Now), ghinstallation renews it (v2.11.0).
const ghinstallationRenewal = time.Minute

// tokenClock is the transport under ghinstallation's installation
// Transports: it passes every call to lastmile's Transport, and changes one
// thing, in the answer to a token request (POST
// /app/installations/{id}/access_tokens). Its expires_at is GitHub's
// clock, and ghinstallation measures it against the local clock: with a
// local clock more than its minute of margin behind GitHub's, the token
// went on being sent, and refused, until the local clock caught up.
// tokenClock puts expires_at on the local clock — the token's life is
// counted from the answer's Date, GitHub's time when it answered — and
// tokenRenewal less ghinstallation's minute earlier, so that ghinstallation
// renews the token tokenRenewal before it expires by GitHub's clock. The
// rest of the answer is left as it is, and an answer without an expires_at
// that reads is not changed.
// It also tells issued, if set, when GitHub gave a token (local clock).
type tokenClock struct {
	next   http.RoundTripper
	issued func(time.Time)
}

func (t tokenClock) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil || req.Method != http.MethodPost || !strings.HasSuffix(req.URL.Path, "/access_tokens") || resp.StatusCode/100 != 2 {
		return resp, err
	}
	local := time.Now() // ghinstallation's clock, not the Transport's
	if t.issued != nil {
		t.issued(local)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("read GitHub's answer (%s): %w", resp.Status, err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(localExpiry(body, githubNow(resp.Header, local), local)))
	resp.ContentLength = -1
	resp.Header.Del("Content-Length")
	return resp, nil
}

// localExpiry is a token answer with its expires_at moved from GitHub's
// clock (github, when it answered) to the local one (local, then), less
// tokenRenewal and ghinstallationRenewal's difference.
func localExpiry(body []byte, github, local time.Time) []byte {
	var answer map[string]json.RawMessage
	var expires time.Time
	if json.Unmarshal(body, &answer) != nil || json.Unmarshal(answer["expires_at"], &expires) != nil || expires.IsZero() {
		return body
	}
	at := local.Add(expires.Sub(github) - (tokenRenewal - ghinstallationRenewal))
	answer["expires_at"], _ = json.Marshal(at.UTC().Truncate(time.Second))
	out, err := json.Marshal(answer)
	if err != nil {
		return body
	}
	return out
}
