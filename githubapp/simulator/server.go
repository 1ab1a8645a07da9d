package simulator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const docsRoot = "https://docs.github.com/rest"

// routes builds the REST API. Paths are GitHub's, served at the root like
// api.github.com; each repository endpoint needs the repository permission
// GitHub's reference names for it ("Contents" read for contents, compare
// and commits, "Commit statuses" for statuses, "Deployments", "Actions").
func (s *Simulator) routes() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, need authNeed, h func(w http.ResponseWriter, r *http.Request, a *auth)) {
		mux.Handle(pattern, s.endpoint(need, h))
	}
	handle("GET /app", needApp, s.handleGetApp)
	handle("GET /app/installations/{installation_id}", needApp, s.handleGetInstallation)
	handle("POST /app/installations/{installation_id}/access_tokens", needApp, s.handleCreateToken)
	handle("GET /app/hook/deliveries", needApp, s.handleListDeliveries)
	handle("GET /app/hook/deliveries/{delivery_id}", needApp, s.handleGetDelivery)
	handle("POST /app/hook/deliveries/{delivery_id}/attempts", needApp, s.handleRedeliver)

	handle("GET /repos/{owner}/{repo}/installation", needApp, s.handleGetRepoInstallation)
	// Without a path GitHub lists the root directory, as with "contents/";
	// the mux would answer a redirect of its own.
	handle("GET /repos/{owner}/{repo}/contents", needRead("contents"), s.handleGetContents)
	handle("GET /repos/{owner}/{repo}/contents/{path...}", needRead("contents"), s.handleGetContents)
	handle("GET /repos/{owner}/{repo}/compare/{basehead...}", needRead("contents"), s.handleCompare)
	handle("GET /repos/{owner}/{repo}/commits/{ref}", needRead("contents"), s.handleGetCommit)
	handle("GET /repos/{owner}/{repo}/commits/{ref}/statuses", needRead("statuses"), s.handleListCommitStatuses)
	handle("GET /repos/{owner}/{repo}/commits/{ref}/status", needRead("statuses"), s.handleCombinedStatus)
	handle("POST /repos/{owner}/{repo}/statuses/{sha}", needWrite("statuses"), s.handleCreateCommitStatus)
	// A ref may span slashes (the description marks it x-multi-segment:
	// heads/main, a branch feature/x), which {ref} does not: such a path
	// comes here and goes to the endpoint its last segment names.
	getCommit := s.endpoint(needRead("contents"), s.handleGetCommit)
	listStatuses := s.endpoint(needRead("statuses"), s.handleListCommitStatuses)
	combinedStatus := s.endpoint(needRead("statuses"), s.handleCombinedStatus)
	notFound := s.endpoint(needNone, func(w http.ResponseWriter, r *http.Request, a *auth) {
		writeError(w, http.StatusNotFound, "Not Found", docsRoot)
	})
	mux.HandleFunc("GET /repos/{owner}/{repo}/commits/{ref...}", func(w http.ResponseWriter, r *http.Request) {
		ref, h := r.PathValue("ref"), getCommit
		if name, ok := strings.CutSuffix(ref, "/statuses"); ok {
			ref, h = name, listStatuses
		} else if name, ok := strings.CutSuffix(ref, "/status"); ok {
			ref, h = name, combinedStatus
		}
		if ref == "" {
			// "commits/" lists commits on GitHub, which the simulator
			// does not serve.
			h = notFound
		}
		r.SetPathValue("ref", ref)
		h.ServeHTTP(w, r)
	})

	handle("POST /repos/{owner}/{repo}/deployments", needWrite("deployments"), s.handleCreateDeployment)
	handle("GET /repos/{owner}/{repo}/deployments", needRead("deployments"), s.handleListDeployments)
	handle("GET /repos/{owner}/{repo}/deployments/{deployment_id}", needRead("deployments"), s.handleGetDeployment)
	handle("POST /repos/{owner}/{repo}/deployments/{deployment_id}/statuses", needWrite("deployments"), s.handleCreateDeploymentStatus)
	handle("GET /repos/{owner}/{repo}/deployments/{deployment_id}/statuses", needRead("deployments"), s.handleListDeploymentStatuses)
	handle("GET /repos/{owner}/{repo}/deployments/{deployment_id}/statuses/{status_id}", needRead("deployments"), s.handleGetDeploymentStatus)

	handle("POST /repos/{owner}/{repo}/actions/runs/{run_id}/deployment_protection_rule", needWrite("deployments"), s.handleReviewProtectionRule)
	handle("GET /repos/{owner}/{repo}/actions/runs", needRead("actions"), s.handleListWorkflowRuns)
	handle("GET /repos/{owner}/{repo}/actions/runs/{run_id}", needRead("actions"), s.handleGetWorkflowRun)
	handle("GET /repos/{owner}/{repo}/actions/jobs/{job_id}/logs", needRead("actions"), s.handleJobLogs)

	// Job logs are served like blob storage: no auth header needed.
	mux.HandleFunc("GET /_simulator/blobs/job-logs/{key}", s.handleLogBlob)
	mux.Handle("/", notFound)
	return mux
}

// response captures what a handler writes, so that faults can drop it and
// the request log can record its status.
type response struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *response) Header() http.Header { return r.header }
func (r *response) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}
func (r *response) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}

type authKey struct{}

// endpoint wraps a handler with what every GitHub response has: request id,
// authentication, rate-limit accounting and headers, fault injection and the
// request log.
func (s *Simulator) endpoint(need authNeed, h func(w http.ResponseWriter, r *http.Request, a *auth)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		// Read the body first: a delayed or lost answer must not keep the
		// request from taking effect once the client has gone.
		if req.Body != nil {
			body, _ := io.ReadAll(io.LimitReader(req.Body, 2<<20))
			req.Body = io.NopCloser(bytes.NewReader(body))
			req.ContentLength = int64(len(body))
		}
		now := s.clock()
		s.mu.Lock()
		if !s.st.urlKnown && req.Host != "" {
			// Mounted by someone else without SetURL: learn our address.
			s.st.apiURL, s.st.urlKnown = "http://"+req.Host, true
		}
		s.st.requestSeq++
		reqID := fmt.Sprintf("%04X:%04X:%06X:%06X:%08X", s.st.requestSeq&0xffff, s.opts.AppID&0xffff, s.st.requestSeq*7919&0xffffff, s.st.requestSeq*104729&0xffffff, now.Unix()&0xffffffff)
		a := s.authenticate(req)
		fault := s.matchFault(req)
		rate := s.rateFor(a, now)
		if fault != nil && fault.Kind == FaultPrimaryRateLimit {
			rate = s.spendLocked(rate, now.Add(fault.reset()))
		}
		s.mu.Unlock()

		rec := &response{header: http.Header{}}
		rec.header.Set("X-GitHub-Request-Id", reqID)
		rec.header.Set("X-GitHub-Api-Version-Selected", "2022-11-28")
		rec.header.Set("X-GitHub-Media-Type", "github.v3; format=json")
		rec.header.Set("Server", "github.com")
		// GitHub's clock, which clients read (lastmile's redelivery
		// keeps its checkpoint in it): Options.Clock's, not the host's.
		rec.header.Set("Date", now.Format(http.TimeFormat))
		rate.setHeaders(rec.header)

		if fault != nil && fault.Kind == FaultDelay {
			select {
			case <-time.After(fault.Delay):
			case <-req.Context().Done():
			}
			fault = nil
		}
		switch {
		case fault != nil && fault.Kind != FaultAppliedLost:
			s.writeFault(rec, fault, rate)
		case rate.exceeded():
			rate.writeExceeded(rec, http.StatusForbidden)
		case a.unreplicated && (req.Method == http.MethodGet || req.Method == http.MethodHead):
			writeError(rec, http.StatusNotFound, "Not Found", docsRoot)
		case a.err != "":
			writeError(rec, http.StatusUnauthorized, a.err, docsRoot)
		default:
			if ok := s.authorize(rec, req, need, a); ok {
				h(rec, req.WithContext(context.WithValue(req.Context(), authKey{}, a)), a)
			}
		}
		if rec.status == 0 {
			rec.status = http.StatusOK
		}

		s.mu.Lock()
		record := RequestRecord{
			Method: req.Method, Path: req.URL.Path, Query: req.URL.RawQuery,
			Status: rec.status, Time: now, Auth: a.kind, InstallationID: a.installationID,
			Fault: fault != nil,
		}
		if fault != nil && fault.Kind == FaultAppliedLost {
			record.AppliedStatus = rec.status
			rec = s.lostAnswer(rec, fault, reqID)
			record.Status = 0
			if rec != nil {
				record.Status = rec.status
			}
		}
		s.st.requests = append(s.st.requests, record)
		s.notifyLocked()
		s.mu.Unlock()

		if fault != nil && fault.Kind == FaultAppliedLost && fault.Delay > 0 {
			// Applied and recorded; the answer hangs (until the client
			// gives up or dies) before it is lost.
			select {
			case <-time.After(fault.Delay):
			case <-req.Context().Done():
			}
		}
		if rec == nil {
			// The connection is closed without an answer.
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					conn.Close()
					return
				}
			}
			panic(http.ErrAbortHandler)
		}
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.status)
		_, _ = w.Write(rec.body.Bytes())
	})
}

// writeJSON writes v as a JSON response.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("simulator: marshal response: %v", err))
	}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeError writes GitHub's error body.
func writeError(w http.ResponseWriter, status int, message, docURL string) {
	body := obj{"message": message, "documentation_url": docURL}
	if status >= 400 {
		body["status"] = strconv.Itoa(status)
	}
	writeJSON(w, status, body)
}

// writeValidation writes a 422 validation_failed body.
func writeValidation(w http.ResponseWriter, message, docURL string, errs ...obj) {
	body := obj{"message": message, "documentation_url": docURL, "status": "422"}
	if len(errs) > 0 {
		list := make([]any, len(errs))
		for i, e := range errs {
			list[i] = e
		}
		body["errors"] = list
	}
	writeJSON(w, http.StatusUnprocessableEntity, body)
}

// page holds page/per_page pagination.
type page struct {
	page, perPage int
}

// parsePage reads page and per_page (default 30, at most 100).
func parsePage(r *http.Request, defPerPage int) page {
	p := page{page: 1, perPage: defPerPage}
	if v, err := strconv.Atoi(r.URL.Query().Get("page")); err == nil && v > 0 {
		p.page = v
	}
	if v, err := strconv.Atoi(r.URL.Query().Get("per_page")); err == nil && v > 0 {
		p.perPage = min(v, 100)
	}
	return p
}

// bounds returns the slice bounds of this page among n items.
func (p page) bounds(n int) (int, int) {
	lo := min((p.page-1)*p.perPage, n)
	return lo, min(lo+p.perPage, n)
}

// setLink writes GitHub's Link header for page-based pagination.
func (s *Simulator) setLink(w http.ResponseWriter, r *http.Request, p page, n int) {
	last := max(1, (n+p.perPage-1)/p.perPage)
	link := func(pg int, rel string) string {
		q := r.URL.Query()
		q.Set("page", strconv.Itoa(pg))
		q.Set("per_page", strconv.Itoa(p.perPage))
		return fmt.Sprintf("<%s%s?%s>; rel=%q", s.apiRoot(), r.URL.Path, q.Encode(), rel)
	}
	var parts []string
	if p.page > 1 {
		parts = append(parts, link(min(p.page-1, last), "prev"))
	}
	if p.page < last {
		parts = append(parts, link(p.page+1, "next"), link(last, "last"))
	}
	if p.page > 1 {
		parts = append(parts, link(1, "first"))
	}
	if len(parts) > 0 {
		w.Header().Set("Link", strings.Join(parts, ", "))
	}
}

func (s *Simulator) apiRoot() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.apiURL
}

// decodeBody reads a JSON object body. It writes GitHub's 400 answer and
// returns false when the body is not a JSON object.
func decodeBody(w http.ResponseWriter, r *http.Request, docURL string) (map[string]json.RawMessage, bool) {
	var body map[string]json.RawMessage
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	if err := dec.Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "Problems parsing JSON", docURL)
		return nil, false
	}
	if body == nil {
		body = map[string]json.RawMessage{}
	}
	return body, true
}

// fieldString reads an optional string field. present is false if absent or
// null; ok is false if it has another type.
func fieldString(body map[string]json.RawMessage, name string) (val string, present, ok bool) {
	raw, found := body[name]
	if !found || string(raw) == "null" {
		return "", false, true
	}
	if err := json.Unmarshal(raw, &val); err != nil {
		return "", true, false
	}
	return val, true, true
}

func fieldBool(body map[string]json.RawMessage, name string) (val, present, ok bool) {
	raw, found := body[name]
	if !found || string(raw) == "null" {
		return false, false, true
	}
	if err := json.Unmarshal(raw, &val); err != nil {
		return false, true, false
	}
	return val, true, true
}

// typeError is GitHub's message for a body field of the wrong type.
func typeError(field string, raw json.RawMessage, want string) string {
	return fmt.Sprintf("Invalid request.\n\nFor 'properties/%s', %s is not %s.", field, string(raw), want)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func pathID(r *http.Request, name string) (int64, bool) {
	v, err := strconv.ParseInt(r.PathValue(name), 10, 64)
	return v, err == nil
}
