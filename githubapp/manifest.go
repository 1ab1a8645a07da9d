package githubapp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/google/go-github/v62/github"
)

// Manifest is a GitHub App manifest: what lastmile asks GitHub to create
// when an organisation registers it (the manifest flow).
type Manifest struct {
	Name               string            `json:"name"`
	URL                string            `json:"url"`
	Description        string            `json:"description"`
	HookAttributes     HookAttributes    `json:"hook_attributes"`
	RedirectURL        string            `json:"redirect_url,omitempty"`
	Public             bool              `json:"public"`
	DefaultPermissions map[string]string `json:"default_permissions"`
	DefaultEvents      []string          `json:"default_events"`
}

// HookAttributes is where GitHub sends the App's webhooks.
type HookAttributes struct {
	URL    string `json:"url"`
	Active bool   `json:"active"`
}

// Permissions are the repository permissions lastmile needs, each for a
// reason: contents (read .github/lastmile.yml and compare commits),
// deployments (create deployments and statuses, answer protection rules),
// statuses (the lastmile/config commit status, and the status event),
// actions (workflow runs and jobs, and their logs), checks (the check_suite
// event, which says required checks went green), metadata (always).
var Permissions = map[string]string{
	"contents":    "read",
	"deployments": "write",
	"statuses":    "write",
	"actions":     "read",
	"checks":      "read",
	"metadata":    "read",
}

// NewManifest describes lastmile's App for webhookURL; GitHub redirects the
// browser to redirectURL with a code once the App exists ("" leaves it out:
// a manifest printed to fill GitHub's form by hand has nowhere to go back to).
func NewManifest(name, webhookURL, redirectURL string) *Manifest {
	return &Manifest{
		Name:               name,
		URL:                "https://github.com/lastmile-app/lastmile",
		Description:        "Carries every merge to main through test, staging and production, with GitHub approvals and an audit record.",
		HookAttributes:     HookAttributes{URL: webhookURL, Active: true},
		RedirectURL:        redirectURL,
		Public:             false,
		DefaultPermissions: Permissions,
		DefaultEvents:      SubscribedEvents(),
	}
}

// ManifestFormURL is the page where GitHub takes a manifest: the personal
// account's, or an organisation's. webURL is GitHub's web root
// (https://github.com, or a GitHub Enterprise Server's).
func ManifestFormURL(webURL, org string) string {
	base := strings.TrimSuffix(webURL, "/")
	if org == "" {
		return base + "/settings/apps/new"
	}
	return base + "/organizations/" + url.PathEscape(org) + "/settings/apps/new"
}

// Registration is what GitHub returns once the App exists: the settings
// lastmile needs.
type Registration struct {
	AppID         int64
	Slug          string
	HTMLURL       string
	WebhookSecret string
	PrivateKeyPEM string
}

// ConvertManifest exchanges the code GitHub gave the browser for the new
// App's ID, webhook secret and private key (POST /app-manifests/{code}/conversions;
// no authentication: the code is the proof, valid for one hour).
func ConvertManifest(ctx context.Context, apiURL, code string, transport http.RoundTripper) (*Registration, error) {
	gh := github.NewClient(httpClient(transport))
	base, err := url.Parse(apiURL)
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(base.Path, "/") {
		base.Path += "/"
	}
	gh.BaseURL = base
	cfg, resp, err := gh.Apps.CompleteAppManifest(ctx, code)
	if err != nil {
		e := &ConversionError{msg: "exchange the manifest code (POST /app-manifests/{code}/conversions): " + conversionFailure(err, code)}
		if resp != nil && resp.Response != nil {
			e.Status = resp.StatusCode
		}
		var rl *github.RateLimitError
		var arl *github.AbuseRateLimitError
		e.rateLimited = errors.As(err, &rl) || errors.As(err, &arl) || e.Status == http.StatusTooManyRequests
		return nil, e
	}
	if cfg.GetID() == 0 || cfg.GetPEM() == "" || cfg.GetWebhookSecret() == "" {
		return nil, fmt.Errorf("GitHub's answer lacks the App ID, key or webhook secret")
	}
	return &Registration{AppID: cfg.GetID(), Slug: cfg.GetSlug(), HTMLURL: cfg.GetHTMLURL(),
		WebhookSecret: cfg.GetWebhookSecret(), PrivateKeyPEM: cfg.GetPEM()}, nil
}

// ConversionError is a failed exchange of a manifest code.
type ConversionError struct {
	// Status is GitHub's HTTP status; 0 when no answer came (the
	// connection failed or closed, the call timed out).
	Status      int
	rateLimited bool
	msg         string
}

func (e *ConversionError) Error() string { return e.msg }

// Retryable reports whether the same code may be tried again: GitHub did
// not answer, answered with a server error or a redirect (not followed),
// or refused the call for its rate limit. A code is good for one conversion, within the hour after
// GitHub made it; one GitHub did not get, or did not act on, is still
// good (one it did act on is answered 404 the next time). Any other answer
// (a 404 or 422 for a used or expired code) is final.
func (e *ConversionError) Retryable() bool {
	return e.Status == 0 || (e.Status >= 300 && e.Status < 400) || e.Status >= 500 || e.rateLimited
}

// conversionFailure says why the conversion failed without the request's
// URL, which holds the code: whoever reads it within the hour (on the
// registration page, in a terminal's scrollback, in a log) can exchange it
// for the App's private key. GitHub's answer gives its status and message;
// a call that got no answer gives the transport's error without the URL.
// Whatever still quotes the code (a refused redirect names its path) has
// it replaced by {code}.
func conversionFailure(err error, code string) string {
	var (
		er  *github.ErrorResponse
		rl  *github.RateLimitError
		arl *github.AbuseRateLimitError
		ue  *url.Error
	)
	msg := err.Error()
	switch {
	case errors.As(err, &er) && er.Response != nil:
		msg = answer(er.Response, er.Message)
		if len(er.Errors) > 0 {
			msg += fmt.Sprintf(" %+v", er.Errors)
		}
	case errors.As(err, &rl) && rl.Response != nil:
		msg = answer(rl.Response, rl.Message)
	case errors.As(err, &arl) && arl.Response != nil:
		msg = answer(arl.Response, arl.Message)
	case errors.As(err, &ue):
		msg = ue.Err.Error()
	}
	if code != "" {
		msg = strings.ReplaceAll(msg, code, "{code}")
		msg = strings.ReplaceAll(msg, url.PathEscape(code), "{code}")
	}
	return msg
}

// answer is GitHub's status and message.
func answer(resp *http.Response, message string) string {
	status := resp.Status
	if status == "" {
		status = strconv.Itoa(resp.StatusCode)
	}
	if message == "" {
		return status
	}
	return status + ": " + message
}
