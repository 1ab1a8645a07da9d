package simulator

import "encoding/json"

// Webhook is a webhook waiting to be sent, as a WebhookHold sees it.
type Webhook struct {
	GUID   string // X-GitHub-Delivery, kept when the webhook is released
	Event  string // X-GitHub-Event
	Action string // the payload's action ("" if none)
	// Body is the raw payload (it is signed when sent).
	Body         []byte
	RepositoryID int64
	Redelivery   bool
}

// Field returns the payload's value at path (object keys), nil when it
// has none: w.Field("deployment_status", "state"),
// w.Field("deployment", "environment").
func (w Webhook) Field(path ...string) any {
	var v any
	if json.Unmarshal(w.Body, &v) != nil {
		return nil
	}
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// WebhookHold holds back the webhooks it matches, as GitHub, which does not
// promise to deliver webhooks in the order of their events, may: a held
// webhook is neither sent nor recorded as a delivery until
// ReleaseWebhooks, which sends it after whatever was sent meanwhile.
type WebhookHold struct {
	// Event matches X-GitHub-Event; "" matches any.
	Event string
	// Action matches the payload's action; "" matches any.
	Action string
	// Match, when set, must also accept the webhook.
	Match func(Webhook) bool
}

// HoldWebhooks arms a hold: from now on, each webhook the sender is about
// to send (redeliveries too) that matches it is set aside instead, in
// order. Holds stay armed until ReleaseWebhooks.
func (s *Simulator) HoldWebhooks(h WebhookHold) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.holds = append(s.st.holds, &h)
	s.notifyLocked()
}

// HeldWebhooks returns the webhooks held back so far, oldest first.
func (s *Simulator) HeldWebhooks() []Webhook {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Webhook, len(s.st.held))
	for i, o := range s.st.held {
		out[i] = o.view()
	}
	return out
}

// ReleaseWebhooks disarms every hold and queues the held webhooks, in the
// order they were held, behind those already queued; each keeps its GUID
// and body. It returns how many it released.
func (s *Simulator) ReleaseWebhooks() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.st.held)
	s.st.queue = append(s.st.queue, s.st.held...)
	s.st.held, s.st.holds = nil, nil
	s.nudgeSender()
	s.notifyLocked()
	return n
}

func (o *outgoing) view() Webhook {
	return Webhook{GUID: o.guid, Event: o.event, Action: o.action, Body: o.body, RepositoryID: o.repositoryID, Redelivery: o.redelivery}
}

// heldLocked reports whether a hold matches o. Call with s.mu held; Match
// runs under it, so it must not call the Simulator.
func (s *Simulator) heldLocked(o *outgoing) bool {
	for _, h := range s.st.holds {
		if (h.Event == "" || h.Event == o.event) && (h.Action == "" || h.Action == o.action) &&
			(h.Match == nil || h.Match(o.view())) {
			return true
		}
	}
	return false
}
