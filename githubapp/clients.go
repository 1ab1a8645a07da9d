package githubapp

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/google/go-github/v62/github"

	"github.com/lastmile-app/lastmile/pipeline"
)

// Clients hands out GitHub API clients: one for the App itself (JWT auth, for
// /app endpoints) and one cached client per installation, whose token
// ghinstallation keeps and renews before it expires, and which a token
// GitHub refuses sends for a new one (see installationTransport). Every
// call goes through one Transport (retries, rate limits, metrics).
type Clients struct {
	baseURL   *url.URL
	appID     int64
	key       *rsa.PrivateKey
	transport *Transport
	app       *github.Client

	mu       sync.Mutex
	installs map[int64]*github.Client
}

// NewClients builds the clients for the App appID with its private key,
// against the REST API root apiURL (https://api.github.com/, a GitHub
// Enterprise Server's https://HOST/api/v3/, or the simulator).
func NewClients(apiURL string, appID int64, key *rsa.PrivateKey, transport *Transport) (*Clients, error) {
	base, err := url.Parse(apiURL)
	if err != nil {
		return nil, fmt.Errorf("GitHub API URL %q: %w", apiURL, err)
	}
	if !strings.HasSuffix(base.Path, "/") {
		base.Path += "/"
	}
	if transport.Base == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.ResponseHeaderTimeout = 30 * time.Second
		t.MaxIdleConnsPerHost = 16
		transport.Base = t
	}
	c := &Clients{baseURL: base, appID: appID, key: key, transport: transport, installs: map[int64]*github.Client{}}
	c.app = c.newClient(c.appsTransport(transport))
	return c, nil
}

// appsTransport authenticates as the App (its JWT) over tr.
func (c *Clients) appsTransport(tr http.RoundTripper) *ghinstallation.AppsTransport {
	apps := ghinstallation.NewAppsTransportFromPrivateKey(tr, c.appID, c.key)
	// ghinstallation wants scheme, host and the API prefix without the slash.
	apps.BaseURL = strings.TrimSuffix(c.baseURL.String(), "/")
	return apps
}

// installationTokens is a new ghinstallation Transport for installation
// id: it asks for the installation's token with the App's JWT at its first
// call, keeps it, and renews it tokenRenewal before it expires by GitHub's
// clock (see tokenClock, under it), calling issued when GitHub gives it
// one. Each has an AppsTransport of its own: ghinstallation writes the
// AppsTransport's BaseURL and Client at every token request, a data race
// between installations sharing one.
func (c *Clients) installationTokens(id int64, issued func(time.Time)) *ghinstallation.Transport {
	return ghinstallation.NewFromAppsTransport(c.appsTransport(tokenClock{next: c.transport, issued: issued}), id)
}

func (c *Clients) newClient(rt http.RoundTripper) *github.Client {
	gh := github.NewClient(httpClient(rt))
	u := *c.baseURL
	gh.BaseURL = &u
	gh.UploadURL = &u
	return gh
}

// App returns the client authenticated as the App (JWT).
func (c *Clients) App() *github.Client { return c.app }

// Installation returns the client for an installation, creating it once.
func (c *Clients) Installation(id int64) (*github.Client, error) {
	if id <= 0 {
		// Not an App's delivery (a repository's own webhook pointed at
		// lastmile?): handling it again will not help.
		return nil, fmt.Errorf("%w: no installation in this event: is lastmile installed as a GitHub App on the repository?", ErrMalformed)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gh, ok := c.installs[id]; ok {
		return gh, nil
	}
	gh := c.newClient(&installationTransport{id: id, tokens: c.installationTokens})
	c.installs[id] = gh
	return gh, nil
}

// Forget drops the client of an installation that was uninstalled or
// suspended: its token, minted before, is refused now — GitHub revokes an
// uninstalled installation's tokens (401, which costs each call a second
// try with a new token), and refuses a suspended one's calls (403) until
// the token expires, up to an hour later. The next call asks for a new
// token, and GitHub's refusal of that says what became of the
// installation (see InstallationGone, InstallationSuspended).
func (c *Clients) Forget(id int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.installs, id)
}

// InstallationTokenError is a failure to get an installation's token.
// Its message ends with GitHub's answer — "GitHub answered 401
// Unauthorized: A JSON web token could not be decoded" — or the reason no
// answer came, so that the cause stays when a long error is cut in the
// middle; it does not repeat the token endpoint's URL.
type InstallationTokenError struct {
	Installation int64
	Status       string // GitHub's answer ("401 Unauthorized"); "" when none came
	Code         int    // its HTTP status code; 0 when no answer came
	Message      string // GitHub's message, if its answer had one
	Err          error  // why no answer came (the transport's error: a rate limit, the network)
}

func (e *InstallationTokenError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "installation token for installation %d: ", e.Installation)
	switch {
	case e.Status != "":
		b.WriteString("GitHub answered " + e.Status)
		if e.Message != "" {
			b.WriteString(": " + e.Message)
		}
	case e.Err != nil:
		b.WriteString(e.Err.Error())
	default:
		b.WriteString("failed")
	}
	return b.String()
}

func (e *InstallationTokenError) Unwrap() error { return e.Err }

// installationTokenError rewrites ghinstallation's failure to get a token
// ("could not refresh installation id N's token: received non 2xx response
// status "401 Unauthorized" when fetching URL"), whose cause sits in the
// middle, as an *InstallationTokenError; it closes the answer's body,
// which ghinstallation leaves open. Other errors are returned as they are.
func installationTokenError(id int64, err error) error {
	var he *ghinstallation.HTTPError
	if !errors.As(err, &he) {
		return err
	}
	e := &InstallationTokenError{Installation: id, Err: he.RootCause}
	if resp := he.Response; resp != nil && he.RootCause == nil {
		e.Status, e.Code = resp.Status, resp.StatusCode
		if resp.Body != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			var answer struct {
				Message string `json:"message"`
			}
			if json.Unmarshal(body, &answer) == nil && answer.Message != http.StatusText(resp.StatusCode) {
				e.Message = oneLine(answer.Message, 300)
			}
		}
	}
	if e.Status == "" && e.Err == nil {
		return err
	}
	return e
}

// InstallationGone reports whether err is GitHub refusing an
// installation's token because it has no such installation (404), and
// which installation. That is what GitHub answers once the App was
// uninstalled — and also when lastmile runs with another App's ID and key,
// or against another GitHub, so it does not prove the installation gone:
// the worker takes it so only for an installation recorded as uninstalled.
func InstallationGone(err error) (installation int64, ok bool) {
	var te *InstallationTokenError
	if errors.As(err, &te) && te.Code == http.StatusNotFound {
		return te.Installation, true
	}
	return 0, false
}

// InstallationSuspended reports whether err is GitHub refusing an
// installation because it is suspended — 403 "This installation has been
// suspended" — for its token, or for a call made with a token minted
// before the suspension.
func InstallationSuspended(err error) bool {
	var te *InstallationTokenError
	if errors.As(err, &te) {
		return te.Code == http.StatusForbidden && suspendedMessage(te.Message)
	}
	var er *github.ErrorResponse
	return errors.As(err, &er) && er.Response != nil && er.Response.StatusCode == http.StatusForbidden && suspendedMessage(er.Message)
}

// Unreachable reports whether err is GitHub not answering, once the
// transport's own retries are spent: a server error (5xx), or no answer —
// the connection refused, reset or cut short, a host or network
// unreachable, a name its resolver could not look up for now — for the
// installation's token or for the call itself. Not a rate limit, nor a
// refusal (4xx), nor what waiting would not mend: a host name that does
// not exist, a certificate the machine does not trust, a redirect loop, a
// plain-HTTP answer to HTTPS (LASTMILE_GITHUB_URL or the machine's set-up
// wrong); nor a context's end — lastmile's own time limit for a handling,
// or its shutdown.
func Unreachable(err error) bool {
	if _, limited := IsRateLimited(err); limited {
		return false
	}
	var te *InstallationTokenError
	if errors.As(err, &te) {
		return te.Code >= 500 || te.Code == 0 && te.Err != nil && noAnswer(te.Err)
	}
	var er *github.ErrorResponse
	if errors.As(err, &er) {
		return er.Response != nil && er.Response.StatusCode >= 500
	}
	var refused *pipeline.RefusedError
	if errors.As(err, &refused) {
		return refused.Status >= 500
	}
	return noAnswer(err)
}

// noAnswer reports whether err is a call that got no answer for a reason
// that passes: see Unreachable.
func noAnswer(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return !dns.IsNotFound
	}
	var certErr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var badCert x509.CertificateInvalidError
	if errors.As(err, &certErr) || errors.As(err, &unknownCA) || errors.As(err, &badHost) || errors.As(err, &badCert) {
		return false
	}
	var op *net.OpError
	return errors.As(err, &op) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED)
}

func suspendedMessage(msg string) bool {
	return strings.Contains(strings.ToLower(msg), "installation has been suspended")
}

// oneLine is s on one line (runs of white space made one space), cut
// after n bytes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "") + "…"
	}
	return s
}

// BaseURL is the REST API root the clients call.
func (c *Clients) BaseURL() *url.URL { u := *c.baseURL; return &u }

// httpClient is the HTTP client of lastmile's GitHub clients. Their
// transports add the token to every request, a redirect's too, so a
// redirect to another host is not followed: the token would go there.
// (GitHub's own redirects to other hosts, a job log's, are read as
// answers and fetched without it.)
func httpClient(rt http.RoundTripper) *http.Client {
	return &http.Client{Transport: rt, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		if from := via[0].URL; req.URL.Host != from.Host || req.URL.Scheme != from.Scheme {
			notFollowed(req.Response, fmt.Sprintf("GitHub redirected %s to %s://%s: not followed, so that the token does not go to another host",
				from.Path, req.URL.Scheme, req.URL.Host))
			return http.ErrUseLastResponse
		}
		return nil
	}}
}

// notFollowed makes a redirect response that is not followed the answer,
// an error saying why (msg, as GitHub's errors say theirs) that go-github
// reports with the request GitHub answered. An error from CheckRedirect
// would carry the redirect's whole address to the logs and the inbox's
// errors — a signed download's signature with it, in its query.
func notFollowed(resp *http.Response, msg string) {
	resp.Body.Close()
	body, _ := json.Marshal(struct {
		Message string `json:"message"`
	}{msg})
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Type", "application/json")
	resp.Header.Del("Content-Length")
	resp.Header.Del("Location")
}
