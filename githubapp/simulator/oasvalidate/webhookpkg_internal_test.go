package oasvalidate

import (
	"path/filepath"
	"strings"
	"testing"
)

// Loading refuses an exception that is not needed (12.1.0 accepts its
// example), one that would hide a required property, and one whose example
// the x-webhooks reject too.
func TestWebhookExceptionsAreChecked(t *testing.T) {
	v, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	rest, err := specPath()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(filepath.Dir(rest), filepath.Base(WebhooksFile))
	if _, err := loadPackageWebhooks(file, v.doc, v.webhooks, WebhookExceptions); err != nil {
		t.Fatalf("WebhookExceptions: %v", err)
	}
	for _, c := range []struct {
		e    WebhookException
		want string
	}{
		{WebhookException{Schema: "webhook-deployment-protection-rule-requested", Property: "environment", Example: "production"}, `accepts "production": the exception is not needed`},
		{WebhookException{Schema: "webhook-deployment-protection-rule-requested", Property: "sender", Example: nil}, "not an optional property"},
		{WebhookException{Schema: "webhook-deployment-created", Property: "workflow_run.no_such_field", Example: nil}, "not an optional property"},
		{WebhookException{Schema: "webhook-deployment-protection-rule-requested", Property: "event", Example: 5}, "x-webhooks' schema rejects 5"},
	} {
		_, err := loadPackageWebhooks(file, v.doc, v.webhooks, []WebhookException{c.e})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s.%s: %v, want an error about %q", c.e.Schema, c.e.Property, err, c.want)
		}
	}
}
