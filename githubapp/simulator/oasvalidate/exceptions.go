package oasvalidate

import (
	"encoding/json"
	"net/http"
	"strings"
)

// Exception is an answer GitHub gives although the operation's description
// does not list its status. Such an answer's body is checked against
// GitHub's error schema (Schema) instead of the operation's responses.
type Exception struct {
	Status int
	// Match narrows the exception to answers it accepts; nil accepts any
	// answer with Status.
	Match func(header http.Header, message string) bool
	// Schema names the components/schemas entry the body must fit.
	Schema string
	// Reason says, in one line, why GitHub sends this status to any
	// operation.
	Reason string
}

// Exceptions are the statuses GitHub answers to any operation that its
// description lists for some operations only, or for none. Each still has
// GitHub's error body, which is checked.
var Exceptions = []Exception{
	{Status: http.StatusUnauthorized, Schema: "basic-error",
		Reason: "bad credentials: GitHub answers 401 to any operation whose token expired or was revoked (an installation deleted), or whose JWT it cannot decode"},
	{Status: http.StatusForbidden, Match: primaryRateLimit, Schema: "basic-error",
		Reason: "primary rate limit: GitHub answers 403 or 429 with x-ratelimit-remaining: 0 to any operation once the hour's budget is spent (docs: rate limits for the REST API)"},
	{Status: http.StatusTooManyRequests, Match: primaryRateLimit, Schema: "basic-error",
		Reason: "primary rate limit: GitHub answers 403 or 429 with x-ratelimit-remaining: 0 to any operation once the hour's budget is spent (docs: rate limits for the REST API)"},
	{Status: http.StatusForbidden, Match: secondaryRateLimit, Schema: "basic-error",
		Reason: "secondary rate limit: GitHub answers 403 or 429 saying so to any operation (docs: rate limits for the REST API)"},
	{Status: http.StatusTooManyRequests, Match: secondaryRateLimit, Schema: "basic-error",
		Reason: "secondary rate limit: GitHub answers 403 or 429 saying so to any operation (docs: rate limits for the REST API)"},
	{Status: http.StatusForbidden, Match: messageIs("This installation has been suspended"), Schema: "basic-error",
		Reason: "GitHub refuses every call with a suspended installation's token with 403"},
	{Status: http.StatusNotFound, Schema: "basic-error",
		Reason: "GitHub answers 404 to any operation whose path names what is not there, or what the credentials do not reach (404, not 403, for a private resource)"},
	{Status: http.StatusInternalServerError, Schema: "basic-error", Reason: "GitHub's own failure, which any operation may answer"},
	{Status: http.StatusBadGateway, Schema: "basic-error", Reason: "GitHub's own failure, which any operation may answer"},
	{Status: http.StatusServiceUnavailable, Schema: "basic-error", Reason: "GitHub's own failure, which any operation may answer"},
	{Status: http.StatusGatewayTimeout, Schema: "basic-error", Reason: "GitHub's own failure, which any operation may answer"},
}

func primaryRateLimit(h http.Header, _ string) bool {
	return h.Get("X-RateLimit-Remaining") == "0"
}

func secondaryRateLimit(_ http.Header, message string) bool {
	return strings.Contains(message, "secondary rate limit")
}

func messageIs(want string) func(http.Header, string) bool {
	return func(_ http.Header, message string) bool { return message == want }
}

// exceptionFor returns the exception that covers an answer, or nil.
func exceptionFor(status int, header http.Header, body []byte) *Exception {
	var e struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(body, &e)
	for i := range Exceptions {
		ex := &Exceptions[i]
		if ex.Status == status && (ex.Match == nil || ex.Match(header, e.Message)) {
			return ex
		}
	}
	return nil
}

// waitingStatusOps are the REST operations whose deployment statuses may be
// in state "waiting": Actions posts it on a job's deployment while the job
// waits for its environment's protection rules (the webhook schema's state
// is any string, and octokit/webhooks.net#52 quotes such a webhook from
// GitHub; lastmile reads it as queued), but the REST description's
// deployment-status state enum lacks it. Their answers are checked with
// "waiting" read as "queued", the state that follows it.
var waitingStatusOps = map[string]bool{
	"GET /repos/{owner}/{repo}/deployments/{deployment_id}/statuses":             true,
	"GET /repos/{owner}/{repo}/deployments/{deployment_id}/statuses/{status_id}": true,
}

// waitingAsQueued returns body with the deployment statuses in state
// "waiting" read as "queued", for the operations of waitingStatusOps.
func waitingAsQueued(op string, body []byte) []byte {
	if !waitingStatusOps[op] {
		return body
	}
	var v any
	if json.Unmarshal(body, &v) != nil {
		return body
	}
	statuses, ok := v.([]any)
	if !ok {
		statuses = []any{v}
	}
	for _, st := range statuses {
		if m, ok := st.(map[string]any); ok && m["state"] == "waiting" {
			m["state"] = "queued"
		}
	}
	b, _ := json.Marshal(v)
	return b
}
