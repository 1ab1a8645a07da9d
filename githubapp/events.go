package githubapp

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
