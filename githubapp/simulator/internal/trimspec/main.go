// Command trimspec cuts GitHub's published OpenAPI descriptions down to the
// operations and webhooks that the simulator implements, keeping every
// component they reference (transitively), so that the simulator's
// conformance test, and oasvalidate, run from small committed copies.
//
// Its main input is the file shipped in the npm package
// @octokit/openapi@23.0.2 (generated/api.github.com.json, OpenAPI 3.0.3):
// the REST operations under "paths", the webhooks under "x-webhooks"
// (OpenAPI 3.0 has no "webhooks"). With -webhooks, it also keeps the same
// webhooks from the file shipped in @octokit/openapi-webhooks@12.1.0
// (generated/api.github.com.json, OpenAPI 3.1, under "webhooks"), an older
// snapshot of GitHub's webhook schemas that the webhooks are checked
// against as well (see testdata/README.md). With -examples, it also keeps
// the example payloads of the events the simulator sends from
// @octokit/webhooks-examples@7.6.1 (api.github.com/index.json). All three
// are MIT-licensed.
//
// Usage:
//
//	go run ./githubapp/simulator/internal/trimspec \
//	    -rest     .../octokit-openapi-23.0.2/package/generated/api.github.com.json \
//	    -webhooks .../octokit-openapi-webhooks-12.1.0/package/generated/api.github.com.json \
//	    -examples .../octokit-webhooks-examples-7.6.1/package/api.github.com/index.json \
//	    -out githubapp/simulator/testdata
//
// The output is deterministic (object keys sorted), so running it again on
// the same inputs reproduces the committed files byte for byte; CI relies on
// that (see .ci/conformance.sh).
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// restOperations lists the REST operations the simulator serves, by path and
// lower-case method, exactly as GitHub's description spells them.
var restOperations = map[string][]string{
	"/app":                                 {"get"},
	"/app/installations/{installation_id}": {"get"},
	"/app/installations/{installation_id}/access_tokens":                     {"post"},
	"/app/hook/deliveries":                                                   {"get"},
	"/app/hook/deliveries/{delivery_id}":                                     {"get"},
	"/app/hook/deliveries/{delivery_id}/attempts":                            {"post"},
	"/repos/{owner}/{repo}/installation":                                     {"get"},
	"/repos/{owner}/{repo}/contents/{path}":                                  {"get"},
	"/repos/{owner}/{repo}/compare/{basehead}":                               {"get"},
	"/repos/{owner}/{repo}/commits/{ref}":                                    {"get"},
	"/repos/{owner}/{repo}/commits/{ref}/status":                             {"get"},
	"/repos/{owner}/{repo}/commits/{ref}/statuses":                           {"get"},
	"/repos/{owner}/{repo}/statuses/{sha}":                                   {"post"},
	"/repos/{owner}/{repo}/deployments":                                      {"get", "post"},
	"/repos/{owner}/{repo}/deployments/{deployment_id}":                      {"get"},
	"/repos/{owner}/{repo}/deployments/{deployment_id}/statuses":             {"get", "post"},
	"/repos/{owner}/{repo}/deployments/{deployment_id}/statuses/{status_id}": {"get"},
	"/repos/{owner}/{repo}/actions/runs":                                     {"get"},
	"/repos/{owner}/{repo}/actions/runs/{run_id}":                            {"get"},
	"/repos/{owner}/{repo}/actions/runs/{run_id}/deployment_protection_rule": {"post"},
	"/repos/{owner}/{repo}/actions/jobs/{job_id}/logs":                       {"get"},
}

// webhooks lists the webhook descriptions (keys of the REST description's
// "x-webhooks" object, and of the webhook description's "webhooks") of the
// webhooks the simulator sends.
var webhooks = []string{
	"push",
	"deployment-created",
	"deployment-status-created",
	"deployment-review-requested",
	"deployment-review-approved",
	"deployment-review-rejected",
	"deployment-protection-rule-requested",
	"workflow-run-requested",
	"workflow-run-in-progress",
	"workflow-run-completed",
	"workflow-job-queued",
	"workflow-job-waiting",
	"workflow-job-in-progress",
	"workflow-job-completed",
	"status",
	"check-suite-completed",
	"installation-deleted",
	"installation-suspend",
	"installation-unsuspend",
	"installation-repositories-removed",
}

// exampleEvents are the events whose example payloads are kept.
var exampleEvents = []string{
	"check_suite", "deployment", "deployment_review", "deployment_status",
	"installation", "installation_repositories",
	"push", "status", "workflow_job", "workflow_run",
}

// Output file names inside -out.
const (
	restOut     = "github-rest-openapi.json"
	webhooksOut = "github-webhooks-openapi.json"
	examplesOut = "github-webhook-examples.json"
)

func main() {
	rest := flag.String("rest", "", "description from @octokit/openapi@23.0.2 (generated/api.github.com.json): its REST operations and x-webhooks")
	hooks := flag.String("webhooks", "", "webhook description from @octokit/openapi-webhooks@12.1.0 (generated/api.github.com.json); optional")
	examples := flag.String("examples", "", "example payloads from @octokit/webhooks-examples@7.6.1 (api.github.com/index.json); optional")
	out := flag.String("out", "", "output directory")
	flag.Parse()
	if *rest == "" || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*rest, *hooks, *examples, *out); err != nil {
		fmt.Fprintln(os.Stderr, "trimspec:", err)
		os.Exit(1)
	}
}

func run(restPath, hooksPath, examplesPath, outDir string) error {
	if examplesPath != "" {
		if err := trimExamples(examplesPath, filepath.Join(outDir, examplesOut)); err != nil {
			return err
		}
	}
	if hooksPath != "" {
		hooksDoc, err := load(hooksPath)
		if err != nil {
			return err
		}
		trimmed, err := trimWebhookDescription(hooksDoc)
		if err != nil {
			return fmt.Errorf("%s: %w", hooksPath, err)
		}
		if err := write(filepath.Join(outDir, webhooksOut), trimmed); err != nil {
			return err
		}
	}
	restDoc, err := load(restPath)
	if err != nil {
		return err
	}
	trimmed, err := trim(restDoc)
	if err != nil {
		return fmt.Errorf("%s: %w", restPath, err)
	}
	return write(filepath.Join(outDir, restOut), trimmed)
}

// trimExamples keeps the entries of exampleEvents from the examples index
// (an array of {name, actions, description, examples, properties}).
func trimExamples(in, out string) error {
	b, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var all []map[string]any
	if err := dec.Decode(&all); err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	keep := map[string]bool{}
	for _, e := range exampleEvents {
		keep[e] = true
	}
	var kept []any
	for _, e := range all {
		if name, _ := e["name"].(string); keep[name] {
			kept = append(kept, map[string]any{"name": name, "examples": e["examples"]})
		}
	}
	if len(kept) != len(exampleEvents) {
		return fmt.Errorf("%s: found %d of %d events", in, len(kept), len(exampleEvents))
	}
	return write(out, map[string]any{
		"x-trimmed-from": "npm package @octokit/webhooks-examples@7.6.1, file api.github.com/index.json (MIT license), trimmed by githubapp/simulator/internal/trimspec",
		"events":         kept,
	})
}

func load(path string) (map[string]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return doc, nil
}

func write(path string, doc map[string]any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", " ")
	if err := enc.Encode(doc); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// trim keeps the operations of restOperations (paths) and the webhooks of
// webhooks (x-webhooks), and every component either references.
func trim(doc map[string]any) (map[string]any, error) {
	keptPaths, err := trimPaths(doc)
	if err != nil {
		return nil, err
	}
	keptHooks, err := trimWebhooks(doc, "x-webhooks")
	if err != nil {
		return nil, err
	}
	out := map[string]any{
		"openapi":            doc["openapi"],
		"info":               doc["info"],
		"servers":            doc["servers"],
		"paths":              keptPaths,
		"x-webhooks":         keptHooks,
		"x-trimmed-from":     "npm package @octokit/openapi@23.0.2, file generated/api.github.com.json (MIT license), trimmed by githubapp/simulator/internal/trimspec",
		"x-trimmed-paths":    sortedKeys(restOperations),
		"x-trimmed-webhooks": sortedKeys(keptHooks),
	}
	comps, err := referencedComponents(doc, map[string]any{"paths": keptPaths, "x-webhooks": keptHooks})
	if err != nil {
		return nil, err
	}
	out["components"] = comps
	return out, nil
}

func trimPaths(doc map[string]any) (map[string]any, error) {
	paths, _ := doc["paths"].(map[string]any)
	if paths == nil {
		return nil, errors.New("no paths")
	}
	keptPaths := map[string]any{}
	for p, methods := range restOperations {
		item, ok := paths[p].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("path %s not found", p)
		}
		kept := map[string]any{}
		for k, v := range item {
			// Path-level parameters and the like apply to every method.
			if !isMethod(k) {
				kept[k] = v
			}
		}
		for _, m := range methods {
			op, ok := item[m]
			if !ok {
				return nil, fmt.Errorf("%s %s not found", strings.ToUpper(m), p)
			}
			kept[m] = op
		}
		keptPaths[p] = kept
	}
	return keptPaths, nil
}

// trimWebhookDescription keeps the webhooks of webhooks from the webhook
// description of @octokit/openapi-webhooks (OpenAPI 3.1: under "webhooks"),
// and every component they reference. Its output is what trimspec wrote
// before the REST description's x-webhooks were used too, byte for byte.
func trimWebhookDescription(doc map[string]any) (map[string]any, error) {
	kept, err := trimWebhooks(doc, "webhooks")
	if err != nil {
		return nil, err
	}
	out := map[string]any{
		"openapi":        doc["openapi"],
		"info":           doc["info"],
		"webhooks":       kept,
		"x-trimmed-from": "npm package @octokit/openapi-webhooks@12.1.0, file generated/api.github.com.json (MIT license), trimmed by githubapp/simulator/internal/trimspec",
	}
	comps, err := referencedComponents(doc, kept)
	if err != nil {
		return nil, err
	}
	out["components"] = comps
	return out, nil
}

// trimWebhooks keeps the webhooks of webhooks from doc's section key
// ("x-webhooks" in the REST description, "webhooks" in the webhook one).
func trimWebhooks(doc map[string]any, key string) (map[string]any, error) {
	all, _ := doc[key].(map[string]any)
	if all == nil {
		return nil, errors.New("no " + key)
	}
	kept := map[string]any{}
	for _, name := range webhooks {
		w, ok := all[name]
		if !ok {
			return nil, fmt.Errorf("webhook %s not found", name)
		}
		kept[name] = w
	}
	return kept, nil
}

// referencedComponents returns the components section holding every
// component that root references, directly or through other components.
func referencedComponents(doc map[string]any, root any) (map[string]any, error) {
	src, _ := doc["components"].(map[string]any)
	out := map[string]any{}
	seen := map[string]bool{}
	queue := collectRefs(root, nil)
	for len(queue) > 0 {
		ref := queue[0]
		queue = queue[1:]
		if seen[ref] {
			continue
		}
		seen[ref] = true
		const prefix = "#/components/"
		if !strings.HasPrefix(ref, prefix) {
			return nil, fmt.Errorf("unsupported $ref %q", ref)
		}
		parts := strings.Split(strings.TrimPrefix(ref, prefix), "/")
		if len(parts) != 2 {
			return nil, fmt.Errorf("unsupported $ref %q", ref)
		}
		kind, name := parts[0], unescapePointer(parts[1])
		section, _ := src[kind].(map[string]any)
		val, ok := section[name]
		if !ok {
			return nil, fmt.Errorf("dangling $ref %q", ref)
		}
		dst, _ := out[kind].(map[string]any)
		if dst == nil {
			dst = map[string]any{}
			out[kind] = dst
		}
		dst[name] = val
		queue = collectRefs(val, queue)
	}
	return out, nil
}

func collectRefs(v any, acc []string) []string {
	switch v := v.(type) {
	case map[string]any:
		if r, ok := v["$ref"].(string); ok {
			acc = append(acc, r)
		}
		for _, k := range sortedKeys(v) {
			acc = collectRefs(v[k], acc)
		}
	case []any:
		for _, e := range v {
			acc = collectRefs(e, acc)
		}
	}
	return acc
}

func unescapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
}

func isMethod(k string) bool {
	switch k {
	case "get", "put", "post", "delete", "options", "head", "patch", "trace":
		return true
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
