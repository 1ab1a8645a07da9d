package githubapp

import (
	"maps"
	"slices"
)

// handledEvents are the webhook events lastmile acts on; the App subscribes
// to exactly these (see the manifest).
var handledEvents = map[string]bool{
	"push":                       true,
	"deployment":                 true,
	"deployment_status":          true,
	"deployment_review":          true,
	"deployment_protection_rule": true,
	"workflow_job":               true,
	"workflow_run":               true,
	"status":                     true,
	"check_suite":                true,
}

// Handles reports whether lastmile acts on deliveries of event.
func Handles(event string) bool { return handledEvents[event] }

// HandledEvents lists the events lastmile acts on.
func HandledEvents() []string {
	return []string{"push", "deployment", "deployment_status", "deployment_review", "deployment_protection_rule",
		"workflow_job", "workflow_run", "status", "check_suite"}
}

// otherEvents are further GitHub events an App may receive; they are named in
// metrics. Any other value of the (unsigned) X-GitHub-Event header is counted
// as "other", so a forged header cannot create new series.
var otherEvents = map[string]bool{
	"ping": true, "installation": true, "installation_repositories": true, "installation_target": true,
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
