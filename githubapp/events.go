package githubapp

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode"

	"github.com/lastmile-app/lastmile/pipeline"
)

// subscribedEvents are the webhook events the App subscribes to (the
// manifest's) and acts on.
var subscribedEvents = []string{"push", "deployment", "deployment_status", "deployment_review", "deployment_protection_rule",
	"workflow_job", "workflow_run", "status", "check_suite"}

// appEvents are the events GitHub sends every App, unasked: what becomes of
// its installations. "All GitHub Apps receive this event by default. You
// cannot manually subscribe to this event," GitHub's webhook description
// says of both, so the manifest does not name them. lastmile acts on them:
// an uninstalled App or a removed repository stops the releases on their
// way, a suspension has deliveries wait.
var appEvents = []string{"installation", "installation_repositories"}

// handledEvents are the webhook events lastmile acts on: stored to be
// handled, and asked for again when missed.
var handledEvents = func() map[string]bool {
	m := map[string]bool{}
	for _, e := range append(slices.Clone(subscribedEvents), appEvents...) {
		m[e] = true
	}
	return m
}()

// headProblem says what a delivery of an event lastmile acts on lacks in
// its head for the worker to handle it ("" if nothing): the intake
// refuses such a delivery (400) rather than storing one that could only go
// dead. The worker checks the rest of the payload.
func headProblem(event string, h deliveryHead) string {
	if !handledEvents[event] {
		return ""
	}
	// GitHub's repository names are letters, digits and -_. : a control
	// character would fail every request naming the repository (net/url
	// refuses it), at every attempt.
	if strings.IndexFunc(h.Repository, unicode.IsControl) >= 0 {
		return fmt.Sprintf("%s event: repository.full_name %.100q holds a control character", event, h.Repository)
	}
	// GitHub's IDs are positive: a delivery of another would be queued
	// under no repository's queue nor an installation's, and never handled.
	if h.RepositoryID < 0 {
		return fmt.Sprintf("%s event: repository.id %d is not an ID GitHub gives (they are positive)", event, h.RepositoryID)
	}
	if h.InstallationID < 0 {
		return fmt.Sprintf("%s event: installation.id %d is not an ID GitHub gives (they are positive)", event, h.InstallationID)
	}
	// lastmile is a GitHub App: GitHub sends it every event with the
	// installation it is for, and the worker acts on one through that
	// installation's client. A delivery naming none (installation missing,
	// null or id 0) could only fail at every attempt until parked dead, the
	// repository's later deliveries waiting behind it.
	if h.InstallationID == 0 {
		return event + " event without an installation (installation.id is missing, null or 0; " +
			"lastmile is a GitHub App: its deliveries name their installation)"
	}
	switch {
	case slices.Contains(appEvents, event):
		// About an installation, not a repository.
	case h.RepositoryID == 0:
		return event + " event without a repository"
	case event == "push":
		if _, _, err := pipeline.SplitFullName(h.Repository); err != nil {
			return "push event: repository.full_name: " + err.Error()
		}
		if problem := shaProblem("before", h.Before); problem != "" {
			return "push event: " + problem
		}
		if problem := shaProblem("after", h.After); problem != "" {
			return "push event: " + problem
		}
	}
	return ""
}

// shaProblem says why a push's before or after (field) is not what GitHub
// sends ("" if it is): a commit's full SHA, 40 hex digits (64 in a SHA-256
// repository), forty zeros for none (before, a branch's creation; after,
// its deletion). Anything else could only fail at every attempt, the
// repository's later deliveries waiting behind it.
func shaProblem(field, sha string) string {
	if isFullSHA(sha) {
		return ""
	}
	return fmt.Sprintf("%s %.80q is not a commit's full SHA (40 or 64 hex digits)", field, sha)
}

func isFullSHA(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for i := range len(s) {
		if !isHex(s[i]) {
			return false
		}
	}
	return true
}

// Handles reports whether lastmile acts on deliveries of event.
func Handles(event string) bool { return handledEvents[event] }

// SubscribedEvents lists the events the App subscribes to, for its
// manifest: those lastmile acts on but the ones GitHub sends every App.
func SubscribedEvents() []string { return slices.Clone(subscribedEvents) }

// otherEvents are further GitHub events an App may receive; they are named in
// metrics. Any other value of the (unsigned) X-GitHub-Event header is counted
// as "other", so a forged header cannot create new series.
var otherEvents = map[string]bool{
	"ping": true, "installation_target": true,
	"github_app_authorization": true, "check_run": true, "create": true, "delete": true, "pull_request": true,
	"pull_request_review": true, "issues": true, "issue_comment": true, "repository": true, "release": true,
	"workflow_dispatch": true, "merge_group": true, "security_advisory": true, "meta": true,
}

// KnownEvent returns event if it is a known GitHub event name, else "other".
func KnownEvent(event string) string {
	if handledEvents[event] || otherEvents[event] {
		return event
	}
	return "other"
}

// WebhookSeries lists the label values (event, outcome) of every series of
// lastmile_webhook_deliveries_total the intake can count, for them to be
// exposed at 0 from start-up. The event label is KnownEvent's, so the list
// is bounded whatever senders put in X-GitHub-Event: every event label can
// be refused (before its signature is checked, or when the inbox cannot
// commit it) and redelivered (duplicate); a stored delivery is accepted
// when lastmile handles its event, ping for GitHub's hello, and ignored
// otherwise.
func WebhookSeries() [][]string {
	events := slices.Sorted(maps.Keys(handledEvents))
	events = append(events, slices.Sorted(maps.Keys(otherEvents))...)
	events = append(events, "other")
	var out [][]string
	for _, e := range events {
		stored := OutcomeIgnored
		switch {
		case e == "ping":
			stored = OutcomePing
		case handledEvents[e]:
			stored = OutcomeAccepted
		}
		for _, o := range []string{stored, OutcomeDuplicate, OutcomeUnauthorized, OutcomeTooLarge, OutcomeMalformed, OutcomeUnavailable} {
			out = append(out, []string{e, o})
		}
	}
	return out
}
