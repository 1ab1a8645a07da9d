package simulator

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
)

const docDeliveries = docsRoot + "/apps/webhooks#list-deliveries-for-an-app-webhook"

// deliveryItemJSON renders a "hook-delivery-item".
func deliveryItemJSON(d *Delivery) obj {
	var action, inst, repoID any
	if d.Action != "" {
		action = d.Action
	}
	if d.InstallationID != 0 {
		inst = d.InstallationID
	}
	if d.RepositoryID != 0 {
		repoID = d.RepositoryID
	}
	return obj{
		"id":              d.ID,
		"guid":            d.GUID,
		"delivered_at":    ts(d.DeliveredAt),
		"redelivery":      d.Redelivery,
		"duration":        d.Duration.Seconds(),
		"status":          d.Status,
		"status_code":     d.StatusCode,
		"event":           d.Event,
		"action":          action,
		"installation_id": inst,
		"repository_id":   repoID,
		"throttled_at":    nil,
	}
}

// handleListDeliveries serves GET /app/hook/deliveries: newest first,
// cursor-paginated (the Link header's next URL carries cursor=), optionally
// filtered by status=success|failure. Every delivery is listed, however
// old: GitHub documents how far back deliveries can be redelivered
// (RedeliveryWindow) and that its web page lists those of the past 3
// days, not how far back this list goes; listing them all leaves the
// cut-off to the client, as GitHub's own redelivery script has it.
func (s *Simulator) handleListDeliveries(w http.ResponseWriter, r *http.Request, a *auth) {
	q := r.URL.Query()
	perPage := 30
	if v, err := strconv.Atoi(q.Get("per_page")); err == nil && v > 0 {
		perPage = min(v, 100)
	}
	var after int64 // list items older than this id
	if c := q.Get("cursor"); c != "" {
		v, err := strconv.ParseInt(strings.TrimPrefix(c, "v1_"), 10, 64)
		if err != nil {
			writeValidation(w, "Invalid cursor", docDeliveries)
			return
		}
		after = v
	}
	filter := q.Get("status")
	s.mu.Lock()
	var items []any
	var last int64
	more := false
	for i := len(s.st.deliveries) - 1; i >= 0; i-- {
		d := s.st.deliveries[i]
		if after != 0 && d.ID >= after {
			continue
		}
		// GitHub's status filter goes by status_code: success is 200-399,
		// failure 400-599 (a delivery that got no answer is neither).
		if (filter == "success" && (d.StatusCode < 200 || d.StatusCode > 399)) ||
			(filter == "failure" && (d.StatusCode < 400 || d.StatusCode > 599)) {
			continue
		}
		if len(items) == perPage {
			more = true
			break
		}
		items = append(items, deliveryItemJSON(d))
		last = d.ID
	}
	root := s.st.apiURL
	s.mu.Unlock()
	if more {
		nq := r.URL.Query()
		nq.Set("cursor", "v1_"+strconv.FormatInt(last, 10))
		nq.Set("per_page", strconv.Itoa(perPage))
		w.Header().Set("Link", "<"+root+r.URL.Path+"?"+nq.Encode()+`>; rel="next"`)
	}
	if items == nil {
		items = []any{}
	}
	writeJSON(w, http.StatusOK, items)
}

func (s *Simulator) findDelivery(r *http.Request) *Delivery {
	id, ok := pathID(r, "delivery_id")
	if !ok {
		return nil
	}
	for _, d := range s.st.deliveries {
		if d.ID == id {
			return d
		}
	}
	return nil
}

// handleGetDelivery serves GET /app/hook/deliveries/{id}: the item plus the
// request and response.
func (s *Simulator) handleGetDelivery(w http.ResponseWriter, r *http.Request, a *auth) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.findDelivery(r)
	if d == nil {
		writeError(w, http.StatusNotFound, "Not Found", docsRoot+"/apps/webhooks#get-a-delivery-for-an-app-webhook")
		return
	}
	out := deliveryItemJSON(d)
	var payload map[string]any
	_ = json.Unmarshal(d.Body, &payload)
	out["url"] = d.URL
	out["request"] = obj{"headers": flatHeaders(d.Header), "payload": payload}
	var respHeaders any
	if d.ResponseHeader != nil {
		respHeaders = flatHeaders(d.ResponseHeader)
	}
	out["response"] = obj{"headers": respHeaders, "payload": d.ResponseBody}
	writeJSON(w, http.StatusOK, out)
}

// githubCasing spells a delivery header as GitHub shows it.
func githubCasing(k string) string {
	switch k {
	case "X-Github-Delivery":
		return "X-GitHub-Delivery"
	case "X-Github-Event":
		return "X-GitHub-Event"
	case "X-Github-Hook-Id":
		return "X-GitHub-Hook-ID"
	case "X-Github-Hook-Installation-Target-Id":
		return "X-GitHub-Hook-Installation-Target-ID"
	case "X-Github-Hook-Installation-Target-Type":
		return "X-GitHub-Hook-Installation-Target-Type"
	}
	return k
}

func flatHeaders(h http.Header) obj {
	out := obj{}
	for k, v := range h {
		out[githubCasing(k)] = strings.Join(v, ", ")
	}
	return out
}

// handleRedeliver serves POST /app/hook/deliveries/{id}/attempts: 202, and
// the same payload is sent again with the same GUID. A delivery older than
// RedeliveryWindow is refused, and stays listed: GitHub documents the
// window but not its answer past it, so this is the operation's documented
// 422 ("Validation failed"), in GitHub's words for a validation error.
func (s *Simulator) handleRedeliver(w http.ResponseWriter, r *http.Request, a *auth) {
	const doc = docsRoot + "/apps/webhooks#redeliver-a-delivery-for-an-app-webhook"
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.findDelivery(r)
	if d == nil {
		writeError(w, http.StatusNotFound, "Not Found", doc)
		return
	}
	if err := s.redeliverLocked(d.ID); errors.Is(err, errTooOld) {
		writeValidation(w, "Validation Failed", doc, obj{
			"resource": "HookDelivery", "field": "delivered_at", "code": "custom",
			"message": "Deliveries that occurred more than 3 days ago cannot be redelivered",
		})
		return
	}
	writeJSON(w, http.StatusAccepted, obj{})
}
