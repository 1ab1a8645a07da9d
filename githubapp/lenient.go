package githubapp

import (
	"bytes"
	"encoding/json"
	"reflect"

	"github.com/google/go-github/v62/github"
)

// go-github v62 declares a repository's custom_properties as strings by
// name, but GitHub's values may also be arrays of strings (a multi_select
// property) or null: decoding a repository object of a repository that has
// a multi_select property into go-github's types fails, and every event of
// the repository but its pushes (decoded into lastmile's own type) would be
// malformed (google/go-github#3229, fixed in v64). lastmile reads none of
// them: where decoding fails and the body has custom_properties, they are
// taken out and the body decoded again. A body that decodes pays nothing.

// parseWebHook is github.ParseWebHook, lenient on custom_properties.
func parseWebHook(event string, body []byte) (any, error) {
	ev, err := github.ParseWebHook(event, body)
	if err == nil {
		return ev, nil
	}
	if plain, ok := withoutCustomProperties(body); ok {
		if ev, again := github.ParseWebHook(event, plain); again == nil {
			return ev, nil
		}
	}
	return nil, err
}

// decodeJSON is json.Unmarshal into v (a pointer), lenient on
// custom_properties. The error is the first decoding's.
func decodeJSON(body []byte, v any) error {
	err := json.Unmarshal(body, v)
	if err == nil {
		return nil
	}
	if plain, ok := withoutCustomProperties(body); ok {
		// What the failed decoding filled in goes: v is decoded anew.
		reflect.ValueOf(v).Elem().SetZero()
		if json.Unmarshal(plain, v) == nil {
			return nil
		}
	}
	return err
}

var customPropertiesKey = []byte(`"custom_properties"`)

// withoutCustomProperties is body without the custom_properties objects
// of the JSON objects in it, at any depth; ok is false when body has none
// (or is not JSON). Numbers are kept as written, not made float64.
func withoutCustomProperties(body []byte) (plain []byte, ok bool) {
	if !bytes.Contains(body, customPropertiesKey) {
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return nil, false
	}
	if !dropCustomProperties(v) {
		return nil, false
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if enc.Encode(v) != nil {
		return nil, false
	}
	return b.Bytes(), true
}

// dropCustomProperties deletes the custom_properties members whose value
// is an object from v's objects, at any depth, and reports whether it
// deleted any.
func dropCustomProperties(v any) bool {
	dropped := false
	switch v := v.(type) {
	case map[string]any:
		if _, isObject := v["custom_properties"].(map[string]any); isObject {
			delete(v, "custom_properties")
			dropped = true
		}
		for _, member := range v {
			dropped = dropCustomProperties(member) || dropped
		}
	case []any:
		for _, item := range v {
			dropped = dropCustomProperties(item) || dropped
		}
	}
	return dropped
}
