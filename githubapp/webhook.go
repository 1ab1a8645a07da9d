// Package githubapp is everything in lastmile that speaks GitHub: the webhook
// intake, the translation of payloads into pipeline events, the REST clients
// (App and installations) with their retrying, rate-limit-aware transport,
// the redelivery of missed deliveries, and the GitHub simulator (subpackage
// simulator) that tests and the demo run against.
package githubapp

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

// MaxPayloadBytes is GitHub's own cap on webhook payloads (25 MB): GitHub
// does not deliver larger events, so a larger body is not from GitHub.
const MaxPayloadBytes = 25 << 20

// DefaultBodiesInFlight bounds the bytes of request bodies the intake holds
// at once, not stored yet (their signatures unchecked, some of them): the
// buffers they are read into, counted before they are allocated. Without a bound, N connections sending 25 MB each would hold
// N × 25 MB. GitHub's deliveries are mostly a few KB; past the bound the
// intake answers 503 until bodies are stored, and the redelivery of missed
// deliveries asks GitHub for those again.
const DefaultBodiesInFlight = 256 << 20

// Outcomes of a delivery, the outcome label of lastmile_webhook_deliveries_total.
const (
	OutcomeAccepted     = "accepted"     // stored for the worker
	OutcomeDuplicate    = "duplicate"    // a redelivery of a stored delivery
	OutcomeIgnored      = "ignored"      // an event lastmile does not handle
	OutcomePing         = "ping"         // GitHub's hello
	OutcomeUnauthorized = "unauthorized" // missing or wrong signature
	OutcomeTooLarge     = "too_large"    // body over MaxPayloadBytes
	OutcomeMalformed    = "malformed"    // missing headers, a body that is not JSON (or compressed: 415), or lacks what its handling needs
	OutcomeUnavailable  = "unavailable"  // the inbox could not commit it
)

// Inbox stores deliveries durably.
type Inbox interface {
	// Accept commits d and returns once it is durable; duplicate reports a
	// delivery ID already stored, which is not stored again. eventLabel and
	// outcome are the labels it is counted under.
	Accept(ctx context.Context, d *pipeline.Delivery, eventLabel, outcome string) (duplicate bool, err error)
}

// deadTeller is an Inbox that tells whether a stored delivery is dead:
// GitHub's redelivery of one (an operator pressing Redeliver, as GitHub's
// documentation says to do) is then said at WARN, as it handles nothing.
type deadTeller interface {
	DeliveryDead(ctx context.Context, deliveryID string) (bool, error)
}

// storedDead tells whether the inbox tells, and says, that the delivery
// stored under id is dead.
func (h *Webhook) storedDead(ctx context.Context, id string) bool {
	dt, ok := h.inbox.(deadTeller)
	if !ok {
		return false
	}
	dead, err := dt.DeliveryDead(ctx, id)
	return err == nil && dead
}

// RejectionCounter counts deliveries refused before anything was stored.
type RejectionCounter interface {
	WebhookRejected(event, outcome string)
}

// Webhook is the POST /webhook handler: it verifies GitHub's signature over
// the raw body and commits the delivery to the inbox before answering 2xx.
// The work a delivery causes happens later, in the worker.
type Webhook struct {
	secret  []byte
	inbox   Inbox
	handles func(event string) bool
	counter RejectionCounter
	notify  func()
	log     *slog.Logger
	// refusals logs the refusals, those of unsigned requests bounded
	// (RefusalLinesPerMinute); storeFailures and duplicates, bounded
	// likewise, the deliveries that could not be stored and those
	// received again (deadAgain: those whose stored copy is dead).
	refusals, storeFailures, duplicates, deadAgain *refusalLog
	held                                           atomic.Int64 // bytes of buffers held for bodies not yet stored

	// MaxBodiesInFlight is the bound on held (DefaultBodiesInFlight), its
	// last quarter kept for small bodies (1/256 of it, 16 KB at most); set it
	// before serving, to at least 4/3 × MaxPayloadBytes (+1) for the
	// largest body to fit.
	MaxBodiesInFlight int64
}

// NewWebhook returns the intake handler. handles reports the events lastmile
// acts on (others are recorded as ignored); notify, if not nil, is called
// after a delivery was stored for the worker.
func NewWebhook(secret string, inbox Inbox, handles func(event string) bool, counter RejectionCounter, notify func(), log *slog.Logger) *Webhook {
	if notify == nil {
		notify = func() {}
	}
	return &Webhook{secret: []byte(secret), inbox: inbox, handles: handles, counter: counter, notify: notify, log: log,
		refusals: newRefusalLog(log), storeFailures: newStoreFailureLog(log), duplicates: newDuplicateLog(log), deadAgain: newDeadAgainLog(log),
		MaxBodiesInFlight: DefaultBodiesInFlight}
}

// webhookError is a refusal: an HTTP status, the outcome counted, and the
// message the sender sees.
type webhookError struct {
	status  int
	outcome string
	msg     string
}

func (e *webhookError) Error() string { return e.msg }

func (h *Webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	event := r.Header.Get("X-GitHub-Event")
	d, outcome, err := h.receive(w, r)
	if err != nil {
		// The header as sent, before it was checked: bounded and printable
		// in the log, whatever an unauthenticated sender put there.
		delivery := forLog(r.Header.Get("X-GitHub-Delivery"))
		var we *webhookError
		if !errors.As(err, &we) {
			we = &webhookError{status: http.StatusServiceUnavailable, outcome: OutcomeUnavailable, msg: "the delivery could not be stored; GitHub may redeliver it"}
			h.storeFailures.refused(refusedLine{delivery: delivery, event: KnownEvent(event), status: we.status, outcome: we.outcome,
				reason: err.Error(), remote: r.RemoteAddr})
		} else {
			rf := refusedLine{delivery: delivery, event: KnownEvent(event), status: we.status, outcome: we.outcome,
				reason: we.msg, remote: r.RemoteAddr}
			// Signed ones too: a signed body can be sent again by anyone
			// who saw it (a proxy's log, the App's Recent Deliveries),
			// with headers of their choosing, which the signature does
			// not cover.
			h.refusals.refused(rf)
		}
		h.counter.WebhookRejected(KnownEvent(event), we.outcome)
		writeJSON(w, we.status, map[string]string{"message": we.msg})
		return
	}
	if outcome == OutcomeDuplicate {
		line := refusedLine{delivery: d.ID, event: KnownEvent(d.Event), status: http.StatusOK, outcome: outcome,
			reason: "a delivery with this X-GitHub-Delivery is stored already", remote: r.RemoteAddr}
		if h.storedDead(r.Context(), d.ID) {
			line.reason = "a delivery with this X-GitHub-Delivery is stored already, and dead: received again, it is not handled again; `lastmile deliveries retry " + d.ID + "` handles it"
			h.deadAgain.refused(line)
		} else {
			h.duplicates.refused(line)
		}
	} else {
		h.log.Info("webhook: delivery received", "delivery", d.ID, "event", d.Event, "action", d.Action,
			"installation", d.InstallationID, "repo", d.Repository, "outcome", outcome)
	}
	switch outcome {
	case OutcomeAccepted:
		h.notify()
		writeJSON(w, http.StatusAccepted, map[string]string{"message": "queued"})
	default:
		writeJSON(w, http.StatusOK, map[string]string{"message": outcome})
	}
}

// receive checks the request and stores it; it returns the stored delivery
// and its outcome, or a *webhookError saying why it was refused.
func (h *Webhook) receive(w http.ResponseWriter, r *http.Request) (*pipeline.Delivery, string, error) {
	if r.ContentLength > MaxPayloadBytes {
		return nil, "", &webhookError{http.StatusRequestEntityTooLarge, OutcomeTooLarge, "payload larger than 25 MB"}
	}
	if enc, ok := encoded(r.Header); ok {
		// Refused before the body is read, or its signature checked: a
		// proxy that compressed GitHub's body also broke the signature,
		// which would be refused as if the secret were wrong.
		w.Header().Set("Accept-Encoding", "identity")
		return nil, "", &webhookError{http.StatusUnsupportedMediaType, OutcomeMalformed,
			"compressed bodies (Content-Encoding: " + forLog(enc) + ") are not accepted: GitHub sends webhook bodies uncompressed, " +
				"and signs those bytes; a proxy must pass them through unchanged"}
	}
	budget := &heldReader{r: http.MaxBytesReader(w, r.Body, MaxPayloadBytes), h: h}
	defer budget.release() // once the delivery is stored, or refused
	body, err := readBody(budget, r.ContentLength, budget.hold)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, "", &webhookError{http.StatusRequestEntityTooLarge, OutcomeTooLarge, "payload larger than 25 MB"}
		}
		if errors.Is(err, errBusy) {
			// Answered at once, and the connection closed: net/http would
			// otherwise read the rest of a small body before answering,
			// waiting for a sender that sends nothing — and, after the
			// answer, before closing: a second for what has arrived, then
			// the connection is let go.
			w.Header().Set("Connection", "close")
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(time.Second))
			return nil, "", &webhookError{http.StatusServiceUnavailable, OutcomeUnavailable,
				"lastmile holds too many bodies at once; GitHub may redeliver this one"}
		}
		return nil, "", &webhookError{http.StatusBadRequest, OutcomeMalformed, "could not read the body"}
	}
	// One of each of GitHub's headers: of two, which is GitHub's? (A
	// signature is the sender's proof: two are a signature problem.)
	if len(r.Header.Values("X-Hub-Signature-256")) > 1 {
		return nil, "", &webhookError{http.StatusUnauthorized, OutcomeUnauthorized, "more than one X-Hub-Signature-256 header"}
	}
	if err := VerifySignature(h.secret, r.Header.Get("X-Hub-Signature-256"), body); err != nil {
		return nil, "", &webhookError{http.StatusUnauthorized, OutcomeUnauthorized, err.Error()}
	}
	return h.admit(r, body)
}

// admit checks and stores a delivery whose signature was verified.
func (h *Webhook) admit(r *http.Request, body []byte) (*pipeline.Delivery, string, error) {
	for _, name := range []string{"X-GitHub-Delivery", "X-GitHub-Event"} {
		if len(r.Header.Values(name)) > 1 {
			return nil, "", &webhookError{http.StatusBadRequest, OutcomeMalformed, "more than one " + name + " header"}
		}
	}
	d := &pipeline.Delivery{ID: r.Header.Get("X-GitHub-Delivery"), Event: r.Header.Get("X-GitHub-Event")}
	if d.ID == "" || len(d.ID) > 100 || !printable(d.ID) {
		return nil, "", &webhookError{http.StatusBadRequest, OutcomeMalformed, "missing or invalid X-GitHub-Delivery header"}
	}
	if d.Event == "" || len(d.Event) > 100 || !printable(d.Event) {
		return nil, "", &webhookError{http.StatusBadRequest, OutcomeMalformed, "missing or invalid X-GitHub-Event header"}
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "application/x-www-form-urlencoded" {
		return nil, "", &webhookError{http.StatusBadRequest, OutcomeMalformed, "form-encoded payloads are not accepted: set the webhook content type to application/json"}
	}
	head, err := parseHead(body, d.Event)
	if te := (*headTypeError)(nil); errors.As(err, &te) {
		return nil, "", &webhookError{http.StatusBadRequest, OutcomeMalformed, d.Event + ": " + te.Error()}
	}
	if err != nil {
		return nil, "", &webhookError{http.StatusBadRequest, OutcomeMalformed, "body is not a JSON object: " + err.Error()}
	}
	if problem := headProblem(d.Event, head); problem != "" {
		return nil, "", &webhookError{http.StatusBadRequest, OutcomeMalformed, problem}
	}
	d.Action, d.InstallationID, d.RepositoryID, d.Repository = head.Action, head.InstallationID, head.RepositoryID, head.Repository
	// Every delivery keeps its raw body, an ignored one too: the record of
	// what GitHub sent (pruned with the others by the retention setting).
	d.Body = body
	outcome := OutcomeAccepted
	switch {
	case d.Event == "ping":
		outcome, d.State = OutcomePing, pipeline.DeliveryIgnored
	case !h.handles(d.Event):
		outcome, d.State = OutcomeIgnored, pipeline.DeliveryIgnored
	default:
		d.State = pipeline.DeliveryPending
	}
	duplicate, err := h.inbox.Accept(r.Context(), d, KnownEvent(d.Event), outcome)
	if err != nil {
		return nil, "", err
	}
	if duplicate {
		outcome = OutcomeDuplicate
	}
	return d, outcome, nil
}

// encoded reports a Content-Encoding other than identity (RFC 9110 8.4),
// and the header as sent. GitHub never compresses a webhook's body.
func encoded(h http.Header) (string, bool) {
	values := h.Values("Content-Encoding")
	for _, v := range values {
		for coding := range strings.SplitSeq(v, ",") {
			if c := strings.TrimSpace(coding); c != "" && !strings.EqualFold(c, "identity") {
				return strings.Join(values, ", "), true
			}
		}
	}
	return "", false
}

var errBusy = errors.New("too many bytes of bodies held at once")

// heldReader counts the memory a body holds into the webhook's held total,
// and refuses to hold more past its bound: readBody takes the buffers it
// allocates from it (hold) before allocating them, a presized one too; a
// read past what the body holds (a caller that did not) is counted as it
// comes.
type heldReader struct {
	r    io.Reader
	h    *Webhook
	held int64 // counted in h.held for this body: the most of its buffer's capacity and its bytes read
	read int64
}

func (hr *heldReader) Read(p []byte) (int, error) {
	n, err := hr.r.Read(p)
	if n > 0 {
		hr.read += int64(n)
		if herr := hr.hold(hr.read); herr != nil {
			return 0, herr
		}
	}
	return n, err
}

// The share of the budget kept for small bodies: a body may hold more than
// a small one — 1/smallBodyShare of MaxBodiesInFlight, at most
// smallBodyMax (16 KB of the default 256 MB) — only while the bodies held
// stay within all but 1/reserveShare of it. Senders of larger bodies, who
// need no secret to send them slowly, cannot take the last quarter: it is
// there for GitHub's small deliveries (a push of a few commits is 7–8 KB).
// Nor can senders of small ones: the default budget's quarter, 64 MB,
// holds 16 KB on every one of the 4096 connections the webhook's address
// takes at once.
const (
	smallBodyShare = 256
	smallBodyMax   = 16 << 10
	reserveShare   = 4
)

// hold makes the body hold total bytes in all, if that fits in the bound
// (for a body larger than a small one, in the bound less the reserve); what
// it holds already is not counted again.
func (hr *heldReader) hold(total int64) error {
	add := total - hr.held
	if add <= 0 {
		return nil
	}
	limit := hr.h.MaxBodiesInFlight
	if total > min(limit/smallBodyShare, smallBodyMax) {
		limit -= limit / reserveShare
	}
	// Added only if it fits: a refused hold never counts, not even for a
	// moment another body would see.
	for {
		cur := hr.h.held.Load()
		if cur+add > limit {
			return errBusy
		}
		if hr.h.held.CompareAndSwap(cur, cur+add) {
			break
		}
	}
	hr.held = total
	return nil
}

func (hr *heldReader) release() {
	hr.h.held.Add(-hr.held)
	hr.held = 0
}

// VerifySignature checks an X-Hub-Signature-256 value against the raw body,
// in constant time. The legacy SHA-1 signature is not accepted.
func VerifySignature(secret []byte, header string, body []byte) error {
	if len(secret) == 0 {
		return errors.New("no webhook secret is configured")
	}
	if header == "" {
		return errors.New("missing X-Hub-Signature-256 header")
	}
	hexSig, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return errors.New("X-Hub-Signature-256 must start with sha256=")
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil || len(got) != sha256.Size {
		return errors.New("X-Hub-Signature-256 is not a hex SHA-256 digest")
	}
	if !hmac.Equal(got, Sign(secret, body)) {
		return errors.New("signature does not match the body")
	}
	return nil
}

// Sign returns the HMAC-SHA256 of body with secret.
func Sign(secret, body []byte) []byte {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return mac.Sum(nil)
}

// SignatureHeader is the X-Hub-Signature-256 value GitHub sends for body.
func SignatureHeader(secret, body []byte) string {
	return "sha256=" + hex.EncodeToString(Sign(secret, body))
}

// forLog is an unchecked header value as it may be logged: at most 100
// bytes, anything but printable ASCII replaced by '?'.
func forLog(s string) string {
	cut := len(s) > 100
	if cut {
		s = s[:100]
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	if cut {
		return string(b) + "…"
	}
	return string(b)
}

func printable(s string) bool {
	for _, r := range s {
		if r < 0x21 || r > 0x7e {
			return false
		}
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
