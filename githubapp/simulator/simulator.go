package simulator

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// DefaultPushCommitLimit is the number of commits GitHub puts in a push
// webhook at most: "The array includes a maximum of 2048 commits" (webhook
// description of push.commits).
const DefaultPushCommitLimit = 2048

// DefaultRateLimit is the primary rate limit of an installation token per hour.
const DefaultRateLimit = 5000

// Options configures a Simulator. Only AppID is required in practice; every
// other field has a default.
type Options struct {
	// AppID is the GitHub App's ID: the JWT issuer and the value of the
	// X-GitHub-Hook-Installation-Target-ID header. Default 1.
	AppID int64
	// AppSlug names the App; its bot user is "<slug>[bot]". Default "lastmile".
	AppSlug string
	// WebhookSecret signs webhook deliveries (X-Hub-Signature-256).
	WebhookSecret string
	// WebhookURL receives webhook deliveries. While it is empty, deliveries
	// wait in the queue (see SetWebhookURL).
	WebhookURL string
	// Clock tells the time for timestamps, token expiry and JWT checks.
	// Default time.Now.
	Clock func() time.Time
	// Logger receives debug logs. Default: discard.
	Logger *slog.Logger
	// PushCommitLimit caps the commits listed in a push webhook.
	// Default DefaultPushCommitLimit.
	PushCommitLimit int
	// RateLimit is the primary rate limit per token and hour.
	// Default DefaultRateLimit.
	RateLimit int
	// Permissions are the App's installation permissions, reported with
	// installation tokens, which are refused what they do not grant (reads
	// too). Default: what lastmile's App manifest asks for
	// (githubapp.Permissions): actions read, checks read, contents read,
	// deployments write, metadata read, statuses write.
	Permissions map[string]string
	// HookID is the App webhook's ID (X-GitHub-Hook-ID). Default 100001.
	HookID int64
	// DeliveryTimeout bounds one webhook POST. GitHub gives up after 10 s,
	// which is the default.
	DeliveryTimeout time.Duration
	// Wrap, if set, wraps the REST API's handler (what Handler returns and
	// Start serves), so that a test can observe or check every request and
	// every answer. If the handler it returns is also a WebhookObserver,
	// it sees every webhook too.
	Wrap func(http.Handler) http.Handler
}

// WebhookObserver is implemented by a handler that Options.Wrap returns to
// see the webhooks as well as the REST traffic (oasvalidate's checks both
// against GitHub's description). The Simulator calls ObserveWebhook from
// its sender, without its lock held, with every webhook it is about to
// POST (each delivery attempt, redeliveries too; not one held back by a
// WebhookHold until it is released), before it is sent: event is its
// X-GitHub-Event, action its payload's action ("" if none), body the
// payload as signed, which ObserveWebhook must not modify.
type WebhookObserver interface {
	ObserveWebhook(event, action string, body []byte)
}

// Simulator is a stateful fake of the parts of GitHub that lastmile uses:
// the REST API, webhook deliveries and an Actions workflow player. All
// methods are safe for concurrent use.
type Simulator struct {
	opts   Options
	clock  func() time.Time
	log    *slog.Logger
	key    *rsa.PrivateKey
	keyPEM []byte

	handler  http.Handler
	observer WebhookObserver // Options.Wrap's handler, if it is one
	client   *http.Client    // for webhook deliveries

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every state change
	closed  bool
	st      *state

	srv      *http.Server
	listener *closeNotifier
	fresh    freshConns

	wake     chan struct{} // nudges the webhook sender
	stop     chan struct{}
	senderWG sync.WaitGroup
	runWG    sync.WaitGroup
}

// New returns a running Simulator (its webhook sender is started; the HTTP
// API is available through Handler, or on a listener after Start).
func New(opts Options) *Simulator {
	if opts.AppID == 0 {
		opts.AppID = 1
	}
	if opts.AppSlug == "" {
		opts.AppSlug = "lastmile"
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.PushCommitLimit <= 0 {
		opts.PushCommitLimit = DefaultPushCommitLimit
	}
	if opts.RateLimit <= 0 {
		opts.RateLimit = DefaultRateLimit
	}
	if opts.Permissions == nil {
		opts.Permissions = map[string]string{
			"actions":     "read",
			"checks":      "read",
			"contents":    "read",
			"deployments": "write",
			"metadata":    "read",
			"statuses":    "write",
		}
	}
	if opts.HookID == 0 {
		opts.HookID = 100001
	}
	if opts.DeliveryTimeout <= 0 {
		opts.DeliveryTimeout = 10 * time.Second
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		// crypto/rand does not fail on supported platforms.
		panic(fmt.Sprintf("simulator: generate RSA key: %v", err))
	}
	s := &Simulator{
		opts:    opts,
		clock:   func() time.Time { return opts.Clock().UTC() },
		log:     opts.Logger.With("component", "github-simulator"),
		key:     key,
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
		changed: make(chan struct{}),
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		client: &http.Client{
			Timeout: opts.DeliveryTimeout,
			// GitHub does not follow redirects for webhook deliveries.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	s.st = newState(s)
	s.st.webhookURL = opts.WebhookURL
	s.handler = s.routes()
	if opts.Wrap != nil {
		s.handler = opts.Wrap(s.handler)
		s.observer, _ = s.handler.(WebhookObserver)
	}
	s.senderWG.Add(1)
	go s.sendLoop()
	return s
}

// AppPrivateKeyPEM returns the App's private key, PEM-encoded (PKCS#1), as
// GitHub offers it for download.
func (s *Simulator) AppPrivateKeyPEM() []byte { return append([]byte(nil), s.keyPEM...) }

// AppID returns the App's ID.
func (s *Simulator) AppID() int64 { return s.opts.AppID }

// WebhookSecret returns the secret that signs deliveries.
func (s *Simulator) WebhookSecret() string { return s.opts.WebhookSecret }

// Handler returns the REST API as an http.Handler, served at the root path
// like api.github.com. When it is mounted on a server the Simulator did not
// start itself (httptest.NewServer), call SetURL with that server's URL so
// that URLs in responses and webhooks point at it.
func (s *Simulator) Handler() http.Handler { return s.handler }

// Start serves the API on addr (for example "127.0.0.1:0") and returns its
// root URL, "http://127.0.0.1:PORT/".
func (s *Simulator) Start(addr string) (string, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("simulator: listen: %w", err)
	}
	srv := &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second, ConnState: s.fresh.track}
	u := "http://" + ln.Addr().String() + "/"
	s.mu.Lock()
	if s.srv != nil {
		s.mu.Unlock()
		ln.Close()
		return "", errors.New("simulator: already started")
	}
	notifier := &closeNotifier{Listener: ln, closed: make(chan struct{})}
	s.srv, s.listener = srv, notifier
	ln = notifier
	s.st.apiURL, s.st.urlKnown = strings.TrimSuffix(u, "/"), true
	s.mu.Unlock()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("serve", "err", err)
		}
	}()
	return u, nil
}

// URL returns the REST API root with a trailing slash (what lastmile puts in
// LASTMILE_GITHUB_URL).
func (s *Simulator) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.apiURL + "/"
}

// SetURL tells the Simulator where its Handler is served, for URLs in
// responses and webhooks. Start sets it itself.
func (s *Simulator) SetURL(u string) {
	s.mu.Lock()
	s.st.apiURL, s.st.urlKnown = strings.TrimSuffix(u, "/"), true
	s.notifyLocked()
	s.mu.Unlock()
}

// SetWebhookURL changes where webhooks are delivered. Deliveries queued while
// no URL was set are sent once one is.
func (s *Simulator) SetWebhookURL(u string) {
	s.mu.Lock()
	s.st.webhookURL = u
	s.notifyLocked()
	s.mu.Unlock()
	s.nudgeSender()
}

// Close stops the listener (if started), cancels running workflow runs and
// stops the webhook sender. Deliveries still queued are dropped.
func (s *Simulator) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	srv, ln := s.srv, s.listener
	for _, r := range s.st.runs {
		r.cancel()
	}
	s.notifyLocked()
	s.mu.Unlock()
	close(s.stop)
	var err error
	if srv != nil {
		// net/http counts a connection that has sent no request yet as
		// active for its first 5 s, and Shutdown waits for it: a client's
		// transport may have dialed one that it keeps idle, unused (dialed
		// for a request that another connection then took). Once Shutdown
		// has closed the listener, those are closed: a simulator that
		// stops takes no more requests.
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			done <- srv.Shutdown(ctx)
		}()
		<-ln.closed
		s.fresh.closeAll()
		err = <-done
	}
	s.runWG.Wait()
	s.senderWG.Wait()
	return err
}

// notifyLocked wakes every WaitFor. Call it with s.mu held after any change.
func (s *Simulator) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// WaitFor blocks until cond returns true or ctx ends. cond is evaluated
// without the Simulator's lock held, so it may call any accessor
// (Deliveries, Deployments, Idle, ...). It is re-evaluated after every state
// change, never by polling.
func (s *Simulator) WaitFor(ctx context.Context, cond func(*Simulator) bool) error {
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if cond(s) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("simulator: condition not met: %w", ctx.Err())
		}
	}
}

// Idle reports whether nothing will happen without outside input: the
// webhook queue is drained (or no webhook URL is set), no delivery is in
// flight, and every workflow run has finished or waits for a review or a
// protection-rule decision.
func (s *Simulator) Idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.idleLocked()
}

func (s *Simulator) idleLocked() bool {
	st := s.st
	if st.sending || (len(st.queue) > 0 && st.webhookURL != "") {
		return false
	}
	for _, r := range st.runs {
		if r.active && !r.blocked {
			return false
		}
	}
	return true
}

// WaitIdle waits until Idle is true.
func (s *Simulator) WaitIdle(ctx context.Context) error {
	return s.WaitFor(ctx, (*Simulator).Idle)
}

// closeNotifier is a listener that says when it was closed.
type closeNotifier struct {
	net.Listener
	once   sync.Once
	closed chan struct{}
}

func (l *closeNotifier) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { close(l.closed) })
	return err
}

// freshConns are the server's connections that have sent no request yet.
type freshConns struct {
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool // closeAll was called: one accepted since is closed at once
}

// track is the server's ConnState hook.
func (f *freshConns) track(c net.Conn, state http.ConnState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if state != http.StateNew {
		delete(f.conns, c)
		return
	}
	if f.closed {
		c.Close()
		return
	}
	if f.conns == nil {
		f.conns = map[net.Conn]struct{}{}
	}
	f.conns[c] = struct{}{}
}

func (f *freshConns) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for c := range f.conns {
		c.Close()
	}
}
