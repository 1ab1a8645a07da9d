// Package oasvalidate checks REST traffic and webhooks against GitHub's
// published OpenAPI descriptions: the trimmed copy of @octokit/openapi in
// githubapp/simulator/testdata (see its README.md), loaded with kin-openapi,
// whose x-webhooks describe the webhooks; and the webhooks also against the
// trimmed copy of @octokit/openapi-webhooks (WebhooksFile, OpenAPI 3.1),
// with santhosh-tekuri/jsonschema.
//
// It is for tests only: lastmile's binaries must not depend on kin-openapi
// or jsonschema, so no package but a _test.go file imports this one (TestNotInBinaries
// checks it). The simulator's conformance test uses Validator directly on
// the client side; the app and Action tests turn on Wrap, which checks every
// request that reaches the simulator and every answer it gives, and every
// webhook it sends (its handler is a simulator.WebhookObserver):
//
//	sim := simulator.New(simulator.Options{Wrap: oasvalidate.Wrap(t)})
//
// A webhook is checked against the body schema of its event and action
// in both descriptions (Validator.Webhook), formats included, with the
// same EmptyURIs (and WebhookExceptions for the older WebhooksFile).
//
// A request is checked for its operation (path and method), its parameters
// (path, query, header) and its body schema, and for query parameters and
// top-level body properties that the operation does not have (GitHub would
// ignore them); an answer for a status that the operation declares and for
// its body schema, formats included (date-time, uri, email: see EmptyURIs
// for the URLs GitHub leaves ""). Answers that GitHub gives
// to any operation although its description does not list them (a token
// refused, a rate limit, GitHub's own failures, ...) are checked against
// GitHub's error schema instead: see Exceptions.
package oasvalidate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/mail"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// SpecFile is the description's path inside the module.
const SpecFile = "githubapp/simulator/testdata/github-rest-openapi.json"

// Validator checks requests, answers and webhooks against the description,
// and webhooks against WebhooksFile too. It is safe for concurrent use.
type Validator struct {
	doc         *openapi3.T
	router      routers.Router
	webhooks    map[webhookKey]*webhookSchema
	pkgWebhooks map[webhookKey]*packageWebhook // WebhooksFile's
}

var (
	loadOnce sync.Once
	loaded   *Validator
	loadErr  error
)

// EmptyURIs are properties (schema name -> property paths, "a.b" for the
// property b of a's object) of format uri that GitHub sends as "" when they
// are unset: the REST description's own default for each is "", which is
// not a URI, and GitHub's Actions example of the deployment_status webhook
// sends "environment_url": "". They are checked as a URI or "". The
// webhook's deployment_status is its own schema, not the REST one, and its
// target_url has no format.
var EmptyURIs = map[string][]string{
	"deployment-status":                 {"environment_url", "log_url", "target_url"},
	"webhook-deployment-status-created": {"deployment_status.environment_url", "deployment_status.log_url"},
}

// uriOrEmpty is the format EmptyURIs are checked with.
const uriOrEmpty = "uri-or-empty"

// kin-openapi checks the formats date, date-time and int64 itself, not uri,
// email and uri-template, which GitHub's description uses too (uri on every
// URL of an object, uri-template on the webhooks' "..._url" templates):
// checked here. Before any validation: kin's format table is global.
func init() {
	uri := func(s string) error {
		if u, err := url.Parse(s); err != nil || !u.IsAbs() {
			return fmt.Errorf("%q is not an absolute URI", s)
		}
		return nil
	}
	openapi3.DefineStringFormatValidator("uri", openapi3.NewCallbackValidator(uri))
	openapi3.DefineStringFormatValidator(uriOrEmpty, openapi3.NewCallbackValidator(func(s string) error {
		if s == "" {
			return nil
		}
		return uri(s)
	}))
	openapi3.DefineStringFormatValidator("email", openapi3.NewCallbackValidator(func(s string) error {
		if _, err := mail.ParseAddress(s); err != nil || strings.ContainsAny(s, "<> ") {
			return fmt.Errorf("%q is not an email address", s)
		}
		return nil
	}))
	openapi3.DefineStringFormatValidator("uri-template", openapi3.NewCallbackValidator(validURITemplate))
}

// validURITemplate checks that s's braces are balanced and not nested: a
// URI template (RFC 6570) such as GitHub's
// "https://api.github.com/repos/acme/shop/issues{/number}", whose
// expansions a URI parser would not accept.
func validURITemplate(s string) error {
	open := false
	for _, ch := range s {
		switch {
		case ch == '{' && !open:
			open = true
		case ch == '}' && open:
			open = false
		case ch == '{' || ch == '}':
			return fmt.Errorf("unbalanced braces in %q", s)
		}
	}
	if open {
		return fmt.Errorf("unclosed brace in %q", s)
	}
	return nil
}

// Load reads and checks the description, and WebhooksFile beside it, once
// per process.
func Load() (*Validator, error) {
	loadOnce.Do(func() {
		path, err := specPath()
		if err != nil {
			loadErr = err
			return
		}
		loaded, loadErr = loadFile(path, filepath.Join(filepath.Dir(path), filepath.Base(WebhooksFile)))
	})
	return loaded, loadErr
}

// loadFile reads the description from path, and WebhooksFile from
// webhooksPath.
func loadFile(path, webhooksPath string) (*Validator, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("oasvalidate: load %s: %w", path, err)
	}
	for name, props := range EmptyURIs {
		s := doc.Components.Schemas[name]
		if s == nil || s.Value == nil {
			return nil, fmt.Errorf("oasvalidate: %s has no schema %s (EmptyURIs)", path, name)
		}
		for _, p := range props {
			ps := s
			for _, k := range strings.Split(p, ".") {
				if ps = ps.Value.Properties[k]; ps == nil || ps.Value == nil {
					break
				}
			}
			if ps == nil || ps.Value == nil || ps.Value.Format != "uri" {
				return nil, fmt.Errorf("oasvalidate: %s.%s is not a uri (EmptyURIs)", name, p)
			}
			ps.Value.Format = uriOrEmpty
		}
	}
	if err := doc.Validate(loader.Context, openapi3.DisableExamplesValidation()); err != nil {
		return nil, fmt.Errorf("oasvalidate: %s is not a valid description: %w", path, err)
	}
	// Match operations on any host: the simulator listens on 127.0.0.1,
	// not api.github.com.
	doc.Servers = nil
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("oasvalidate: router: %w", err)
	}
	webhooks, err := indexWebhooks(doc)
	if err != nil {
		return nil, fmt.Errorf("oasvalidate: %s: %w", path, err)
	}
	pkgWebhooks, err := loadPackageWebhooks(webhooksPath, doc, webhooks, WebhookExceptions)
	if err != nil {
		return nil, fmt.Errorf("oasvalidate: %w", err)
	}
	return &Validator{doc: doc, router: router, webhooks: webhooks, pkgWebhooks: pkgWebhooks}, nil
}

// specPath finds SpecFile: beside this source file when the tests run from
// the source tree, else in the module that holds the working directory.
func specPath() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok {
		p := filepath.Join(filepath.Dir(file), "..", "testdata", filepath.Base(SpecFile))
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, filepath.FromSlash(SpecFile))
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("oasvalidate: %s not found above the working directory", SpecFile)
		}
		dir = parent
	}
}

// Operation is a request matched to an operation of the description.
type Operation struct {
	Method string
	Path   string // the description's path template
	route  *routers.Route
	in     *openapi3filter.RequestValidationInput
}

// String is "METHOD /path/{template}".
func (o *Operation) String() string { return o.Method + " " + o.Path }

var options = &openapi3filter.Options{
	AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
	IncludeResponseStatus: true,
	MultiError:            true,
	// Leave the request as it came: no defaults filled in.
	SkipSettingDefaults: true,
	// Name the field that does not conform, without dumping its schema
	// (a deployment's runs to hundreds of lines); the caller shows the body.
	SchemaValidationOptions: []openapi3.SchemaValidationOption{openapi3.DisableSchemaErrorDetails()},
}

// ErrNoOperation is wrapped by Request's error when the description has no
// operation for the request's method and path.
var ErrNoOperation = errors.New("no such operation in GitHub's REST description")

// spanning are the path parameters that GitHub lets span slashes (a file's
// path, "base...head" of branches with a slash); the router's do not.
var spanning = []string{"/contents/", "/compare/"}

// Operation finds the request's operation without checking the request.
func (v *Validator) Operation(r *http.Request) (*Operation, error) {
	find := r
	for _, seg := range spanning {
		if before, rest, ok := strings.Cut(r.URL.EscapedPath(), seg); ok && strings.HasPrefix(before, "/repos/") {
			find = r.Clone(r.Context())
			find.URL.RawPath = before + seg + strings.ReplaceAll(rest, "/", "%2F")
			find.URL.Path, _ = url.PathUnescape(find.URL.RawPath)
			break
		}
	}
	route, params, err := v.router.FindRoute(find)
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", ErrNoOperation, err)
	}
	for k, p := range params {
		params[k] = strings.ReplaceAll(p, "%2F", "/")
	}
	return &Operation{Method: r.Method, Path: route.Path, route: route,
		in: &openapi3filter.RequestValidationInput{PathParams: params, Route: route, Options: options}}, nil
}

// Request finds r's operation and checks r, whose body is body (r.Body is
// not read). The operation is nil when none matches; the error then wraps
// ErrNoOperation. Errors do not name r's method and path: the caller does.
func (v *Validator) Request(r *http.Request, body []byte) (*Operation, error) {
	op, err := v.Operation(r)
	if err != nil {
		return nil, err
	}
	check := r.Clone(context.WithoutCancel(r.Context()))
	check.Body, check.ContentLength = http.NoBody, 0
	if len(body) > 0 {
		check.Body = readCloser{bytes.NewReader(body)}
		check.ContentLength = int64(len(body))
	}
	if bytes.Equal(bytes.TrimSpace(body), []byte("null")) {
		// ghinstallation v2.11.0 sends the JSON text null as the body of
		// POST /app/installations/{id}/access_tokens; GitHub accepts it as
		// no body.
		check.Body, check.ContentLength = http.NoBody, 0
		check.Header.Del("Content-Type")
	}
	op.in.Request = check
	err = openapi3filter.ValidateRequest(check.Context(), op.in)
	if err == nil {
		err = undeclared(op, r, body)
	}
	if err != nil {
		return op, fmt.Errorf("request does not conform to %s of GitHub's REST description: %w", op, err)
	}
	return op, nil
}

// undeclared reports a query parameter, or a top-level property of a JSON
// object body, that the operation does not declare. The schemas allow them
// (GitHub ignores what it does not know), which is why they are checked:
// a misspelt or misplaced field would be dropped without a word.
func undeclared(op *Operation, r *http.Request, body []byte) error {
	declared := map[string]bool{}
	for _, params := range []openapi3.Parameters{op.route.PathItem.Parameters, op.route.Operation.Parameters} {
		for _, p := range params {
			if p.Value != nil && p.Value.In == openapi3.ParameterInQuery {
				declared[p.Value.Name] = true
			}
		}
	}
	var errs []string
	for name := range r.URL.Query() {
		if !declared[name] {
			errs = append(errs, fmt.Sprintf("query parameter %q is not one of the operation's", name))
		}
	}
	if rb := op.route.Operation.RequestBody; rb != nil && rb.Value != nil {
		if mt := rb.Value.Content.Get("application/json"); mt != nil && mt.Schema != nil && mt.Schema.Value != nil {
			schema := mt.Schema.Value
			var fields map[string]json.RawMessage
			if len(schema.Properties) > 0 && (schema.AdditionalProperties.Has == nil || !*schema.AdditionalProperties.Has) &&
				schema.AdditionalProperties.Schema == nil && json.Unmarshal(body, &fields) == nil {
				for name := range fields {
					if _, ok := schema.Properties[name]; !ok {
						errs = append(errs, fmt.Sprintf("body property %q is not one of the operation's", name))
					}
				}
			}
		}
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

// Response checks the answer to op's request: its status must be one the
// operation declares, its body the schema of that status, unless an
// Exception covers it (its body is then checked against GitHub's error
// schema).
func (v *Validator) Response(op *Operation, status int, header http.Header, body []byte) error {
	if op.route.Operation.Responses.Status(status) == nil {
		if ex := exceptionFor(status, header, body); ex != nil {
			if err := v.errorBody(ex.Schema, body); err != nil {
				return fmt.Errorf("answer %d to %s (not in GitHub's REST description, but %s): body is not GitHub's %s: %w", status, op, ex.Reason, ex.Schema, err)
			}
			return nil
		}
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: op.in, Status: status, Header: header,
		Body: readCloser{bytes.NewReader(waitingAsQueued(op.String(), body))}, Options: options,
	}
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		return fmt.Errorf("answer %d does not conform to %s of GitHub's REST description: %w", status, op, err)
	}
	return nil
}

// errorBody checks body against the description's schema name
// (components/schemas), one of GitHub's error bodies, and that it has a
// message, as every error body of GitHub's has.
func (v *Validator) errorBody(name string, body []byte) error {
	ref := v.doc.Components.Schemas[name]
	if ref == nil || ref.Value == nil {
		return fmt.Errorf("the description has no schema %s", name)
	}
	var value any
	if err := json.Unmarshal(body, &value); err != nil {
		return err
	}
	if err := ref.Value.VisitJSON(value, openapi3.MultiErrors(), openapi3.DisableSchemaErrorDetails()); err != nil {
		return err
	}
	if m, _ := value.(map[string]any)["message"].(string); m == "" {
		return errors.New("no message")
	}
	return nil
}
