package oasvalidate

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// WebhooksFile is the path inside the module of the trimmed copy of
// WebhooksPackage's description of the webhooks (OpenAPI 3.1, under
// "webhooks"), beside SpecFile. Every webhook is checked against it as
// well as against SpecFile's x-webhooks: see testdata/README.md.
const WebhooksFile = "githubapp/simulator/testdata/github-webhooks-openapi.json"

// WebhooksPackage is the npm package WebhooksFile was trimmed from.
const WebhooksPackage = "@octokit/openapi-webhooks@12.1.0"

// WebhookException is a property of a webhook that WebhooksFile, an older
// snapshot of GitHub's description, types more narrowly than SpecFile's
// x-webhooks do and than GitHub sends it: WebhooksFile's check leaves the
// property out when its value has Example's JSON type, and checks it as
// usual when it has another (SpecFile's check always checks it). Loading
// checks that each exception is still needed and hides nothing else: the
// property is in WebhooksFile's schema and not required there,
// WebhooksFile's schema of it rejects Example, and SpecFile's accepts it.
type WebhookException struct {
	Schema   string // the webhook's body schema, as both descriptions name it
	Property string // its path in the body, "a.b" for the property b of a's object
	Example  any    // a value GitHub sends (nil for null), of the JSON type left out
	Reason   string // why GitHub sends it, and what each description says
}

// WebhookExceptions are the exceptions WebhooksFile's check makes (the
// only differences between the two descriptions that a webhook GitHub
// sends, or the simulator, runs into).
var WebhookExceptions = []WebhookException{
	{Schema: "webhook-deployment-protection-rule-requested", Property: "deployment", Example: nil,
		Reason: "deployment is null when the gated job has no deployment of its own: @octokit/openapi@23.0.2 describes it as nullable-deployment, " +
			"12.1.0 as a plain deployment (the simulator sends the job's twin deployment, and null if it has none)"},
	{Schema: "webhook-deployment-created", Property: "workflow_run.previous_attempt_url", Example: "https://api.github.com/repos/acme/shop/actions/runs/5/attempts/1",
		Reason: "the webhook's workflow_run is the run's, whose previous_attempt_url is the previous attempt's URL from a re-run's second attempt on " +
			"(a nullable uri in both descriptions' workflow_run webhooks and the REST workflow-run); 23.0.2 describes it here as nullable of any type, 12.1.0 as null only"},
	{Schema: "webhook-deployment-status-created", Property: "workflow_run.previous_attempt_url", Example: "https://api.github.com/repos/acme/shop/actions/runs/5/attempts/1",
		Reason: "as in the deployment webhook: the workflow_run of a re-run's second or later attempt has its previous attempt's URL; 23.0.2 describes it as nullable of any type, 12.1.0 as null only"},
}

// packageWebhook is the body schema of one of WebhooksFile's webhooks.
type packageWebhook struct {
	name   string // its key in webhooks, "deployment-status-created"
	schema string // its body schema's name in components/schemas
	sch    *jsonschema.Schema
}

// loadPackageWebhooks reads WebhooksFile from file, compiles the body schema
// of each of its webhooks with JSON Schema 2020-12 (OpenAPI 3.1's dialect),
// formats asserted, and checks that it describes the same webhooks as
// rest's x-webhooks (restDoc) and that EmptyURIs and exceptions
// (WebhookExceptions) hold for it.
func loadPackageWebhooks(file string, restDoc *openapi3.T, rest map[webhookKey]*webhookSchema, exceptions []WebhookException) (map[webhookKey]*packageWebhook, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	// The library's uri-template check splits at "/" and so rejects
	// GitHub's own "{/number}" templates: the same check as kin-openapi's.
	c.RegisterFormat(&jsonschema.Format{Name: "uri-template", Validate: func(v any) error {
		if s, ok := v.(string); ok {
			return validURITemplate(s)
		}
		return nil
	}})
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, err
	}
	resource := "file://" + filepath.ToSlash(abs)
	if err := c.AddResource(resource, doc); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	schemas, _ := path(doc, "components", "schemas").(map[string]any)
	all, _ := path(doc, "webhooks").(map[string]any)
	if len(all) == 0 {
		return nil, fmt.Errorf("%s: no webhooks", file)
	}
	index := map[webhookKey]*packageWebhook{}
	for _, name := range sortedKeys(all) {
		post := path(all[name], "post")
		event, _ := path(post, "x-github", "subcategory").(string)
		ref, _ := path(post, "requestBody", "content", "application/json", "schema", "$ref").(string)
		schema, ok := strings.CutPrefix(ref, "#/components/schemas/")
		if event == "" || !ok || schemas[schema] == nil {
			return nil, fmt.Errorf("%s: webhooks %s: no event (x-github.subcategory) or no body schema", file, name)
		}
		key := webhookKey{event: event}
		if enum, ok := path(schemas[schema], "properties", "action", "enum").([]any); ok {
			if len(enum) != 1 {
				return nil, fmt.Errorf("%s: webhooks %s: action is not one value: %v", file, name, enum)
			}
			key.action, _ = enum[0].(string)
		}
		if prev := index[key]; prev != nil {
			return nil, fmt.Errorf("%s: webhooks %s and %s are both %s", file, prev.name, name, key)
		}
		sch, err := c.Compile(resource + "#/components/schemas/" + schema)
		if err != nil {
			return nil, fmt.Errorf("%s: webhooks %s: %w", file, name, err)
		}
		index[key] = &packageWebhook{name: name, schema: schema, sch: sch}
	}
	for key, ws := range rest {
		if pw := index[key]; pw == nil || pw.schema != ws.schema {
			return nil, fmt.Errorf("%s has no webhook %s with the schema %s, which x-webhooks %s has", file, key, ws.schema, ws.name)
		}
	}
	if len(index) != len(rest) {
		return nil, fmt.Errorf("%s has %d webhooks, x-webhooks %d", file, len(index), len(rest))
	}
	for name, props := range EmptyURIs {
		if !strings.HasPrefix(name, "webhook-") {
			continue // a REST schema
		}
		for _, p := range props {
			if s, _ := property(schemas, name, p); s["format"] != "uri" {
				return nil, fmt.Errorf("%s: %s.%s is not a uri (EmptyURIs)", file, name, p)
			}
		}
	}
	for _, e := range exceptions {
		if err := checkException(c, resource, schemas, restDoc, e); err != nil {
			return nil, fmt.Errorf("%s: WebhookExceptions %s.%s: %w", file, e.Schema, e.Property, err)
		}
	}
	return index, nil
}

// checkException checks that e is still needed and hides nothing else
// (see WebhookException).
func checkException(c *jsonschema.Compiler, resource string, schemas map[string]any, restDoc *openapi3.T, e WebhookException) error {
	parent, last := "", e.Property
	if i := strings.LastIndex(e.Property, "."); i >= 0 {
		parent, last = e.Property[:i], e.Property[i+1:]
	}
	ps, _ := property(schemas, e.Schema, parent)
	required, _ := ps["required"].([]any)
	s, ptr := property(schemas, e.Schema, e.Property)
	if s == nil || slices.Contains(required, any(last)) {
		return errors.New("not an optional property of the schema")
	}
	sch, err := c.Compile(resource + ptr)
	if err != nil {
		return err
	}
	if sch.Validate(e.Example) == nil {
		return fmt.Errorf("%s's schema accepts %#v: the exception is not needed", WebhooksPackage, e.Example)
	}
	rs := restProperty(restDoc, e.Schema, e.Property)
	if rs == nil {
		return errors.New("not a property of the schema in x-webhooks")
	}
	if err := rs.VisitJSON(e.Example); err != nil {
		return fmt.Errorf("x-webhooks' schema rejects %#v: %w", e.Example, err)
	}
	return nil
}

// property returns the JSON schema of schema's property at p ("a.b"; ""
// for schema itself), following references to components/schemas, and
// its location ("#/components/schemas/..."); nil if it has none.
func property(schemas map[string]any, schema, p string) (map[string]any, string) {
	esc := strings.NewReplacer("~", "~0", "/", "~1")
	s, _ := schemas[schema].(map[string]any)
	ptr := "#/components/schemas/" + esc.Replace(schema)
	keys := []string{""}
	if p != "" {
		keys = append(keys, strings.Split(p, ".")...)
	}
	for _, k := range keys {
		if k != "" && s != nil {
			s, _ = path(s, "properties", k).(map[string]any)
			ptr += "/properties/" + esc.Replace(k)
		}
		for s != nil {
			ref, ok := s["$ref"].(string)
			if !ok {
				break
			}
			name, _ := strings.CutPrefix(ref, "#/components/schemas/")
			s, _ = schemas[name].(map[string]any)
			ptr = ref
		}
	}
	return s, ptr
}

// jsonType is the JSON type of a value read by jsonschema.UnmarshalJSON.
func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "boolean"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	}
	return "number"
}

// restProperty returns the kin-openapi schema of SpecFile's schema's
// property at p ("a.b"), nil if it has none.
func restProperty(doc *openapi3.T, schema, p string) *openapi3.Schema {
	s := doc.Components.Schemas[schema]
	for _, k := range strings.Split(p, ".") {
		if s == nil || s.Value == nil {
			return nil
		}
		s = s.Value.Properties[k]
	}
	if s == nil {
		return nil
	}
	return s.Value
}

// dropIf deletes the property at p ("a.b") of the object v when drop says
// its value is to go.
func dropIf(v any, p string, drop func(any) bool) {
	keys := strings.Split(p, ".")
	if m, ok := path(v, keys[:len(keys)-1]...).(map[string]any); ok {
		if val, ok := m[keys[len(keys)-1]]; ok && drop(val) {
			delete(m, keys[len(keys)-1])
		}
	}
}

// webhookPackage checks a webhook's body (value, parsed by
// jsonschema.UnmarshalJSON, which it modifies) against WebhooksFile's body
// schema of its event and action, leaving out EmptyURIs that are "" and
// the properties of WebhookExceptions of the JSON type of their Example.
func (v *Validator) webhookPackage(key webhookKey, value any) error {
	pw := v.pkgWebhooks[key]
	if pw == nil {
		return fmt.Errorf("webhook %s: %w (%s)", key, ErrNoWebhook, WebhooksPackage)
	}
	for _, p := range EmptyURIs[pw.schema] {
		dropIf(value, p, func(x any) bool { return x == "" })
	}
	for _, e := range WebhookExceptions {
		if e.Schema == pw.schema {
			dropIf(value, e.Property, func(x any) bool { return jsonType(x) == jsonType(e.Example) })
		}
	}
	if err := pw.sch.Validate(value); err != nil {
		var verr *jsonschema.ValidationError
		if errors.As(err, &verr) {
			// Its first line names the schema (by file), which the error
			// does; the others, one each, the fields that do not conform,
			// in no set order: sorted, so that Wrap counts a mismatch seen
			// twice as one.
			_, causes, _ := strings.Cut(verr.Error(), "\n")
			var lines []string
			for _, l := range strings.Split(causes, "\n") {
				if l = strings.TrimPrefix(strings.TrimSpace(l), "- "); l != "" {
					lines = append(lines, l)
				}
			}
			slices.Sort(lines)
			err = errors.New(strings.Join(lines, "; "))
		}
		return fmt.Errorf("webhook %s does not conform to %s (webhooks %s) of %s: %w", key, pw.schema, pw.name, WebhooksPackage, err)
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
