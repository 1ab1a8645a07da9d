package oasvalidate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// ErrNoWebhook is wrapped by Webhook's error when the description has no
// webhook for the event and action.
var ErrNoWebhook = errors.New("no such webhook in GitHub's description")

// webhookKey is an event (X-GitHub-Event) and the payload's action ("" for
// an event without actions: push, status).
type webhookKey struct{ event, action string }

func (k webhookKey) String() string {
	if k.action == "" {
		return k.event
	}
	return k.event + "/" + k.action
}

// webhookSchema is the body schema of one of the description's webhooks.
type webhookSchema struct {
	name   string // its key in x-webhooks, "deployment-status-created"
	schema string // its body schema's name in components/schemas
	ref    *openapi3.SchemaRef
}

// indexWebhooks maps each webhook of doc's x-webhooks (GitHub's REST
// description has them there: OpenAPI 3.0 has no webhooks) to its body
// schema, by its event (x-github's subcategory, the X-GitHub-Event
// GitHub sends) and its action (the only value of the schema's action
// enum, "" when the schema has no action).
func indexWebhooks(doc *openapi3.T) (map[webhookKey]*webhookSchema, error) {
	all, _ := doc.Extensions["x-webhooks"].(map[string]any)
	if len(all) == 0 {
		return nil, errors.New("no x-webhooks")
	}
	index := map[webhookKey]*webhookSchema{}
	for name, item := range all {
		post, _ := item.(map[string]any)["post"].(map[string]any)
		event, _ := path(post, "x-github", "subcategory").(string)
		ref, _ := path(post, "requestBody", "content", "application/json", "schema", "$ref").(string)
		schema, ok := strings.CutPrefix(ref, "#/components/schemas/")
		if event == "" || !ok {
			return nil, fmt.Errorf("x-webhooks %s: no event (x-github.subcategory) or no body schema reference", name)
		}
		sref := doc.Components.Schemas[schema]
		if sref == nil || sref.Value == nil {
			return nil, fmt.Errorf("x-webhooks %s: no schema %s", name, schema)
		}
		key := webhookKey{event: event}
		if a := sref.Value.Properties["action"]; a != nil && a.Value != nil {
			if len(a.Value.Enum) != 1 {
				return nil, fmt.Errorf("x-webhooks %s: action is not one value: %v", name, a.Value.Enum)
			}
			key.action, _ = a.Value.Enum[0].(string)
		}
		if prev := index[key]; prev != nil {
			return nil, fmt.Errorf("x-webhooks %s and %s are both %s", prev.name, name, key)
		}
		index[key] = &webhookSchema{name: name, schema: schema, ref: sref}
	}
	return index, nil
}

// path returns v's value at the keys, nil when it has none.
func path(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// Webhooks lists the webhooks the description has, as "event/action" (or
// "event" for one without actions), sorted.
func (v *Validator) Webhooks() []string {
	out := make([]string, 0, len(v.webhooks))
	for k := range v.webhooks {
		out = append(out, k.String())
	}
	sort.Strings(out)
	return out
}

// Webhook checks a webhook's body against the schema of its event
// (X-GitHub-Event) and action (the payload's, "" for none), formats
// included, in both descriptions: the x-webhooks of SpecFile
// (@octokit/openapi) and WebhooksFile (@octokit/openapi-webhooks, an older
// snapshot, with WebhookExceptions). The error names the
// webhook, the description, its schema and the fields that do not conform,
// one line for each description the body does not conform to; it wraps
// ErrNoWebhook when the description has no such webhook.
func (v *Validator) Webhook(event, action string, body []byte) error {
	key := webhookKey{event, action}
	ws := v.webhooks[key]
	if ws == nil {
		return fmt.Errorf("webhook %s: %w", key, ErrNoWebhook)
	}
	var value any
	if err := json.Unmarshal(body, &value); err != nil {
		return fmt.Errorf("webhook %s: body is not JSON: %w", key, err)
	}
	if got, _ := path(value, "action").(string); got != action {
		return fmt.Errorf("webhook %s: the payload's action is %q", key, got)
	}
	var errs []error
	if err := ws.ref.Value.VisitJSON(value, openapi3.MultiErrors(), openapi3.DisableSchemaErrorDetails()); err != nil {
		errs = append(errs, fmt.Errorf("webhook %s does not conform to %s (x-webhooks %s) of GitHub's description: %w", key, ws.schema, ws.name, err))
	}
	// jsonschema's own reading of the body (json.Number for numbers), which
	// webhookPackage may change.
	pkgValue, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook %s: body is not JSON: %w", key, err)
	}
	if err := v.webhookPackage(key, pkgValue); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
