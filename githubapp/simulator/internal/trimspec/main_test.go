package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestReferencedComponentsIsTransitive(t *testing.T) {
	doc := map[string]any{"components": map[string]any{
		"schemas": map[string]any{
			"a":      map[string]any{"properties": map[string]any{"b": map[string]any{"$ref": "#/components/schemas/b"}}},
			"b":      map[string]any{"items": map[string]any{"$ref": "#/components/schemas/c~1d"}},
			"c/d":    map[string]any{"type": "string"},
			"unused": map[string]any{"type": "string"},
		},
		"responses": map[string]any{"r": map[string]any{"$ref": "#/components/schemas/a"}},
	}}
	root := map[string]any{"get": map[string]any{"responses": map[string]any{"200": map[string]any{"$ref": "#/components/responses/r"}}}}
	got, err := referencedComponents(doc, root)
	if err != nil {
		t.Fatal(err)
	}
	schemas := got["schemas"].(map[string]any)
	if len(schemas) != 3 || schemas["c/d"] == nil || schemas["unused"] != nil || got["responses"] == nil {
		t.Errorf("kept %v", sortedKeys(schemas))
	}
	if _, err := referencedComponents(doc, map[string]any{"$ref": "#/components/schemas/missing"}); err == nil || !strings.Contains(err.Error(), "dangling") {
		t.Errorf("dangling ref: %v", err)
	}
}

func TestTrimKeepsOnlyListedOperationsAndWebhooks(t *testing.T) {
	paths := map[string]any{}
	for p := range restOperations {
		paths[p] = map[string]any{"get": map[string]any{}, "post": map[string]any{}, "delete": map[string]any{}, "parameters": []any{}}
	}
	hooks := map[string]any{"issues-opened": map[string]any{"post": map[string]any{}}}
	for _, name := range webhooks {
		hooks[name] = map[string]any{"post": map[string]any{"requestBody": map[string]any{"$ref": "#/components/requestBodies/" + name}}}
	}
	bodies := map[string]any{"issues-opened": map[string]any{}}
	for _, name := range webhooks {
		bodies[name] = map[string]any{"content": map[string]any{}}
	}
	doc := map[string]any{"openapi": "3.0.3", "paths": paths, "x-webhooks": hooks,
		"components": map[string]any{"requestBodies": bodies}}
	out, err := trim(doc)
	if err != nil {
		t.Fatal(err)
	}
	item := out["paths"].(map[string]any)["/repos/{owner}/{repo}/deployments"].(map[string]any)
	if !reflect.DeepEqual(sortedKeys(item), []string{"get", "parameters", "post"}) {
		t.Errorf("kept %v", sortedKeys(item))
	}
	keptHooks := out["x-webhooks"].(map[string]any)
	keptBodies := out["components"].(map[string]any)["requestBodies"].(map[string]any)
	if len(keptHooks) != len(webhooks) || keptHooks["issues-opened"] != nil || keptHooks["deployment-protection-rule-requested"] == nil ||
		len(keptBodies) != len(webhooks) || keptBodies["issues-opened"] != nil {
		t.Errorf("kept webhooks %v and request bodies %v", sortedKeys(keptHooks), sortedKeys(keptBodies))
	}
	delete(hooks, "push")
	if _, err := trim(doc); err == nil || !strings.Contains(err.Error(), "push") {
		t.Errorf("a missing webhook: %v", err)
	}
	delete(paths, "/app/hook/deliveries")
	if _, err := trim(doc); err == nil {
		t.Error("a missing path was not reported")
	}
}

func TestTrimWebhookDescriptionKeepsOnlyListedWebhooks(t *testing.T) {
	hooks := map[string]any{"issues-opened": map[string]any{"post": map[string]any{}}}
	schemas := map[string]any{"webhook-issues-opened": map[string]any{}}
	for _, name := range webhooks {
		hooks[name] = map[string]any{"post": map[string]any{"requestBody": map[string]any{"content": map[string]any{"application/json": map[string]any{
			"schema": map[string]any{"$ref": "#/components/schemas/webhook-" + name}}}}}}
		schemas["webhook-"+name] = map[string]any{"type": "object"}
	}
	doc := map[string]any{"openapi": "3.1.0", "info": map[string]any{}, "webhooks": hooks, "x-webhooks": map[string]any{},
		"components": map[string]any{"schemas": schemas}}
	out, err := trimWebhookDescription(doc)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(sortedKeys(out), []string{"components", "info", "openapi", "webhooks", "x-trimmed-from"}) {
		t.Errorf("top-level keys %v", sortedKeys(out))
	}
	keptHooks := out["webhooks"].(map[string]any)
	keptSchemas := out["components"].(map[string]any)["schemas"].(map[string]any)
	if len(keptHooks) != len(webhooks) || keptHooks["issues-opened"] != nil || keptHooks["deployment-protection-rule-requested"] == nil ||
		len(keptSchemas) != len(webhooks) || keptSchemas["webhook-issues-opened"] != nil {
		t.Errorf("kept webhooks %v and schemas %v", sortedKeys(keptHooks), sortedKeys(keptSchemas))
	}
	delete(hooks, "status")
	if _, err := trimWebhookDescription(doc); err == nil || !strings.Contains(err.Error(), "status") {
		t.Errorf("a missing webhook: %v", err)
	}
	if _, err := trimWebhookDescription(map[string]any{"x-webhooks": hooks}); err == nil || !strings.Contains(err.Error(), "no webhooks") {
		t.Errorf("no webhooks section: %v", err)
	}
}
