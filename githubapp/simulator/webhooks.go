package simulator

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// hookshotUA is the User-Agent of webhook deliveries.
const hookshotUA = "GitHub-Hookshot/5f3b2c1"

// Delivery is one webhook delivery attempt, as recorded by GitHub and
// listed by GET /app/hook/deliveries.
type Delivery struct {
	ID             int64
	GUID           string // X-GitHub-Delivery; a redelivery keeps it
	Event          string // X-GitHub-Event
	Action         string // the payload's action ("" if none)
	Body           []byte // the raw, signed body
	Header         http.Header
	Redelivery     bool
	InstallationID int64
	RepositoryID   int64
	URL            string
	DeliveredAt    time.Time
	Duration       time.Duration
	// StatusCode is the receiver's HTTP status, 0 when no response came.
	StatusCode int
	// Status is "OK" for a 2xx answer, else e.g. "Invalid HTTP Response: 503".
	Status         string
	ResponseHeader http.Header
	ResponseBody   string
}

// OK reports whether the receiver answered 2xx.
func (d Delivery) OK() bool { return d.StatusCode >= 200 && d.StatusCode < 300 }

// outgoing is a delivery waiting in the sender queue.
type outgoing struct {
	guid           string
	event, action  string
	body           []byte
	installationID int64
	repositoryID   int64
	redelivery     bool
}

func newGUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// enqueue appends a webhook about r to the sender queue. GitHub sends an
// App's webhooks in the order the events happened; so does the single
// sender. The App hears nothing of a repository it no longer reaches
// (removed from its installation, or the App uninstalled), nor, while its
// installation is suspended, of its repositories: "the app's access to
// the GitHub API or webhook events is blocked for that account".
func (st *state) enqueue(event string, r *repo, payload obj) {
	if !st.reaches(r) {
		return
	}
	st.enqueueFor(event, r.installation, r.id, payload)
}

// enqueueFor appends a webhook of an installation (about a repository of
// it, or about the installation itself: repositoryID 0).
func (st *state) enqueueFor(event string, inst *installation, repositoryID int64, payload obj) {
	body, err := json.Marshal(payload)
	if err != nil {
		panic(fmt.Sprintf("simulator: marshal %s payload: %v", event, err))
	}
	action, _ := payload["action"].(string)
	o := &outgoing{guid: newGUID(), event: event, action: action, body: body, installationID: inst.id, repositoryID: repositoryID}
	st.queue = append(st.queue, o)
	st.s.nudgeSender()
}

func (s *Simulator) nudgeSender() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// sendLoop delivers queued webhooks one at a time, in order.
func (s *Simulator) sendLoop() {
	defer s.senderWG.Done()
	for {
		s.mu.Lock()
		for len(s.st.queue) == 0 || s.st.webhookURL == "" {
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-s.wake:
			}
			s.mu.Lock()
		}
		o := s.st.queue[0]
		s.st.queue = s.st.queue[1:]
		if s.heldLocked(o) {
			s.st.held = append(s.st.held, o)
			s.notifyLocked()
			s.mu.Unlock()
			continue
		}
		s.st.sending = true
		url := s.st.webhookURL
		s.mu.Unlock()

		if s.observer != nil {
			s.observer.ObserveWebhook(o.event, o.action, o.body)
		}
		d := s.deliver(url, o)

		s.mu.Lock()
		d.ID = s.st.id()
		s.st.deliveries = append(s.st.deliveries, d)
		s.st.sending = false
		s.notifyLocked()
		s.mu.Unlock()
	}
}

// signatures returns the X-Hub-Signature and X-Hub-Signature-256 values.
func signatures(secret string, body []byte) (string, string) {
	m1 := hmac.New(sha1.New, []byte(secret))
	m1.Write(body)
	m256 := hmac.New(sha256.New, []byte(secret))
	m256.Write(body)
	return "sha1=" + hex.EncodeToString(m1.Sum(nil)), "sha256=" + hex.EncodeToString(m256.Sum(nil))
}

func (s *Simulator) deliveryHeader(o *outgoing) http.Header {
	sig1, sig256 := signatures(s.opts.WebhookSecret, o.body)
	h := http.Header{}
	h.Set("Accept", "*/*")
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", hookshotUA)
	h.Set("X-GitHub-Delivery", o.guid)
	h.Set("X-GitHub-Event", o.event)
	h.Set("X-GitHub-Hook-ID", fmt.Sprint(s.opts.HookID))
	h.Set("X-GitHub-Hook-Installation-Target-ID", fmt.Sprint(s.opts.AppID))
	h.Set("X-GitHub-Hook-Installation-Target-Type", "integration")
	h.Set("X-Hub-Signature", sig1)
	h.Set("X-Hub-Signature-256", sig256)
	return h
}

// deliver POSTs one webhook. GitHub does not retry failed deliveries, and
// neither does this.
func (s *Simulator) deliver(url string, o *outgoing) *Delivery {
	d := &Delivery{
		GUID:           o.guid,
		Event:          o.event,
		Action:         o.action,
		Body:           o.body,
		Header:         s.deliveryHeader(o),
		Redelivery:     o.redelivery,
		InstallationID: o.installationID,
		RepositoryID:   o.repositoryID,
		URL:            url,
		DeliveredAt:    s.clock(),
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(o.body))
	if err != nil {
		d.Status = "Invalid URL"
		return d
	}
	req.Header = d.Header.Clone()
	start := time.Now()
	resp, err := s.client.Do(req)
	d.Duration = time.Since(start)
	if err != nil {
		// GitHub's wording for deliveries that got no answer.
		reason := "failed to connect to host"
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			reason = "timed out"
		}
		d.Status = "We couldn't deliver this payload: " + reason
		s.log.Debug("webhook delivery failed", "event", o.event, "guid", o.guid, "err", err)
		return d
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	d.StatusCode = resp.StatusCode
	d.ResponseHeader = resp.Header.Clone()
	d.ResponseBody = string(b)
	if d.OK() {
		d.Status = "OK"
	} else {
		d.Status = fmt.Sprintf("Invalid HTTP Response: %d", resp.StatusCode)
	}
	s.log.Debug("webhook delivered", "event", o.event, "action", o.action, "guid", o.guid, "status", resp.StatusCode)
	return d
}

// Deliveries returns every delivery attempt so far, oldest first.
func (s *Simulator) Deliveries() []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Delivery, len(s.st.deliveries))
	for i, d := range s.st.deliveries {
		out[i] = *d
	}
	return out
}

// Queued returns how many webhooks wait to be sent.
func (s *Simulator) Queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.st.queue)
}

// WaitForDelivery waits for the first delivery attempt of event (and action,
// if not "") whose index in Deliveries() is at least from, and returns it.
func (s *Simulator) WaitForDelivery(ctx context.Context, from int, event, action string) (Delivery, error) {
	var found Delivery
	err := s.WaitFor(ctx, func(s *Simulator) bool {
		ds := s.Deliveries()
		for i := from; i < len(ds); i++ {
			if ds[i].Event == event && (action == "" || ds[i].Action == action) {
				found = ds[i]
				return true
			}
		}
		return false
	})
	return found, err
}

// RedeliveryWindow is how far back a delivery can be redelivered: "You can
// redeliver webhook deliveries that occurred in the past 3 days" (GitHub's
// docs, "Redelivering webhooks"; 7 days on GitHub Enterprise Server).
const RedeliveryWindow = 3 * 24 * time.Hour

// errTooOld is Redeliver's error for a delivery older than RedeliveryWindow.
var errTooOld = errors.New("simulator: the delivery is older than the redelivery window")

// Redeliver sends a recorded delivery again with the same GUID, as
// POST /app/hook/deliveries/{id}/attempts does; a delivery made more than
// RedeliveryWindow ago (by Options.Clock) is not redelivered.
func (s *Simulator) Redeliver(deliveryID int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.redeliverLocked(deliveryID)
}

func (s *Simulator) redeliverLocked(deliveryID int64) error {
	for _, d := range s.st.deliveries {
		if d.ID == deliveryID {
			if d.DeliveredAt.Before(s.clock().Add(-RedeliveryWindow)) {
				return errTooOld
			}
			s.st.queue = append(s.st.queue, &outgoing{
				guid: d.GUID, event: d.Event, action: d.Action, body: d.Body,
				installationID: d.InstallationID, repositoryID: d.RepositoryID, redelivery: true,
			})
			s.nudgeSender()
			s.notifyLocked()
			return nil
		}
	}
	return fmt.Errorf("simulator: no delivery %d", deliveryID)
}
