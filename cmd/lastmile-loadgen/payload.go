package main

import (
	"bytes"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// pushExample is GitHub's own example of a push delivery to a branch
// (@octokit/webhooks-examples 7.6.1, api.github.com/index.json, entry
// "push", example 6 of 7 — the one with an installation), copied verbatim.
//
//go:embed testdata/push.json
var pushExample []byte

// installationID is the installation every generated delivery names; the
// GitHub stub hands out tokens for any installation.
const installationID = 4242424

// shaLen is the length of a hex commit SHA, the width of every marker.
const shaLen = 40

// Payloads makes push deliveries of one exact size from GitHub's example:
// the repository is one of Repos copies ("Codertocat/service-007"),
// commits are added (and the first commit's message padded) until the
// minified body is Size bytes, and every SHA (before, after, each commit's
// id) is fresh for each delivery, so that no two bodies are alike.
type Payloads struct {
	Size    int // bytes of every body
	Repos   int
	Commits int // commits per push

	templates []payloadTemplate // one per repository
}

type payloadTemplate struct {
	body    []byte
	markers [][]int // per SHA marker, the offsets where it occurs
}

// marker returns the placeholder for SHA number i: hex, 40 characters,
// unlike anything in the example.
func marker(i int) string { return fmt.Sprintf("feedfacec0ffee%026x", i) }

// NewPayloads prepares bodies of size bytes spread over repos repositories.
func NewPayloads(size, repos int) (*Payloads, error) {
	if repos < 1 || repos > 999 {
		return nil, fmt.Errorf("-repos %d: use 1 to 999", repos)
	}
	p := &Payloads{Size: size, Repos: repos}
	for r := 0; r < repos; r++ {
		t, commits, err := buildTemplate(r, size)
		if err != nil {
			return nil, err
		}
		p.templates = append(p.templates, t)
		p.Commits = commits
	}
	return p, nil
}

// Next returns a new body (for a random repository) into buf, reusing its
// storage when it is large enough.
func (p *Payloads) Next(rng *rand.Rand, buf []byte) []byte {
	t := &p.templates[rng.IntN(len(p.templates))]
	buf = append(buf[:0], t.body...)
	var raw [shaLen / 2]byte
	for _, offsets := range t.markers {
		for i := 0; i < len(raw); i += 8 {
			v := rng.Uint64()
			for j := 0; j < 8 && i+j < len(raw); j++ {
				raw[i+j] = byte(v >> (8 * j))
			}
		}
		var sha [shaLen]byte
		hex.Encode(sha[:], raw[:])
		for _, off := range offsets {
			copy(buf[off:off+shaLen], sha[:])
		}
	}
	return buf
}

// field is one member of a JSON object, kept in the order GitHub sends it.
type field struct {
	Key   string
	Value json.RawMessage
}

type object []field

func parseObject(data []byte) (object, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	var obj object
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		obj = append(obj, field{Key: tok.(string), Value: v})
	}
	return obj, nil
}

func (o object) get(key string) json.RawMessage {
	for _, f := range o {
		if f.Key == key {
			return f.Value
		}
	}
	return nil
}

func (o object) set(key string, v any) object {
	raw, ok := v.(json.RawMessage)
	if !ok {
		b, err := json.Marshal(v)
		if err != nil {
			panic(err)
		}
		raw = b
	}
	for i := range o {
		if o[i].Key == key {
			o[i].Value = raw
			return o
		}
	}
	return append(o, field{Key: key, Value: raw})
}

func (o object) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(f.Key)
		b.Write(k)
		b.WriteByte(':')
		if err := json.Compact(&b, f.Value); err != nil {
			return nil, err
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// commitTitles are the first lines of the generated commits' messages.
var commitTitles = []string{
	"Retry the deploy step when the registry answers 503",
	"Bump golang.org/x/net from 0.58.0 to 0.59.0",
	"Add staging smoke test for the checkout service",
	"Fix flaky TestPromoteNewestRelease on slow runners",
	"Document the rollback procedure for production",
	"Cache Go modules in the build workflow",
}

var commitFiles = [][]string{
	{"deploy/retry.go", "deploy/retry_test.go"},
	{"go.mod", "go.sum"},
	{"tests/smoke/checkout_test.go"},
	{"pipeline/engine_test.go"},
	{"docs/rollback.md"},
	{".github/workflows/build.yml"},
}

// buildTemplate makes repository r's template of exactly size bytes (or
// one byte more when only an even pad fits).
func buildTemplate(r, size int) (payloadTemplate, int, error) {
	base, err := parseObject(pushExample)
	if err != nil {
		return payloadTemplate{}, 0, fmt.Errorf("push example: %w", err)
	}
	var exampleCommits []json.RawMessage
	if err := json.Unmarshal(base.get("commits"), &exampleCommits); err != nil || len(exampleCommits) == 0 {
		return payloadTemplate{}, 0, errors.New("push example: no commits to copy")
	}
	commitTmpl, err := parseObject(exampleCommits[0])
	if err != nil {
		return payloadTemplate{}, 0, fmt.Errorf("push example commit: %w", err)
	}

	// The same length as the example's "Hello-World", so that the body's
	// size does not depend on the repository.
	name := fmt.Sprintf("service-%03d", r)
	fullName := "Codertocat/" + name
	repo, err := parseObject(bytes.ReplaceAll(base.get("repository"), []byte("Codertocat/Hello-World"), []byte(fullName)))
	if err != nil {
		return payloadTemplate{}, 0, fmt.Errorf("push example repository: %w", err)
	}
	repo = repo.set("id", 186853002+r).set("name", name).set("full_name", fullName)

	beforeMarker, headMarker := marker(0), marker(1)
	when := time.Date(2026, 3, 2, 14, 0, 0, 0, time.UTC)
	mkCommit := func(i, n, pad int) object {
		id := marker(2 + i)
		if i == n-1 {
			id = headMarker
		}
		msg := commitTitles[i%len(commitTitles)]
		if pad > 0 {
			body := strings.Repeat("The previous behaviour is kept behind a flag until the next release. ", pad/69+1)[:pad]
			msg += "\n\n" + body
		}
		c := append(object(nil), commitTmpl...)
		c = c.set("id", id).set("tree_id", marker(1000+i)).set("message", msg).
			set("timestamp", when.Add(time.Duration(i-n)*7*time.Minute).Format(time.RFC3339)).
			set("url", "https://github.com/"+fullName+"/commit/"+id).
			set("added", []string{}).set("removed", []string{}).set("modified", commitFiles[i%len(commitFiles)])
		return c
	}
	build := func(n, pad int) (object, error) {
		commits := make([]object, n)
		for i := range commits {
			p := 0
			if i == 0 {
				p = pad
			}
			commits[i] = mkCommit(i, n, p)
		}
		o := append(object(nil), base...)
		o = o.set("before", beforeMarker).set("after", headMarker).set("created", false).
			set("compare", "https://github.com/"+fullName+"/compare/"+beforeMarker[:12]+"..."+headMarker[:12]).
			set("repository", mustJSON(repo)).
			set("installation", map[string]any{"id": installationID, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uNDI0MjQyNA=="}).
			set("commits", mustJSON(commits)).set("head_commit", mustJSON(commits[n-1]))
		return o, nil
	}
	sizeOf := func(n, pad int) int {
		o, _ := build(n, pad)
		return len(mustJSON(o))
	}
	n := 1
	if sizeOf(1, 0) > size {
		return payloadTemplate{}, 0, fmt.Errorf("-size %d: a push with one commit is already %d bytes", size, sizeOf(1, 0))
	}
	for sizeOf(n+1, 0) <= size && n < 2048 {
		n++
	}
	// The smallest pad of the first commit's message that reaches size
	// (one byte over when the message appears twice and size-s is odd).
	lo, hi := 0, size
	for lo < hi {
		mid := (lo + hi) / 2
		if sizeOf(n, mid) >= size {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	o, _ := build(n, lo)
	body := mustJSON(o)

	t := payloadTemplate{body: body}
	for i := 0; ; i++ {
		var m string
		switch {
		case i < 2+n:
			m = marker(i)
		case i < 2+n+n:
			m = marker(1000 + i - 2 - n)
		default:
			return t, n, nil
		}
		var offs []int
		for at := 0; ; {
			j := bytes.Index(body[at:], []byte(m))
			if j < 0 {
				break
			}
			offs = append(offs, at+j)
			at += j + len(m)
		}
		// The compare URL carries 12-character prefixes of before and
		// after: they stay the marker's prefix (fine: GitHub's compare URL
		// is informational).
		if len(offs) > 0 {
			t.markers = append(t.markers, offs)
		}
	}
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// newDeliveryID returns a random UUID (version 4), as GitHub's
// X-GitHub-Delivery is.
func newDeliveryID(rng *rand.Rand) string {
	var b [16]byte
	hi, lo := rng.Uint64(), rng.Uint64()
	for i := 0; i < 8; i++ {
		b[i], b[8+i] = byte(hi>>(8*i)), byte(lo>>(8*i))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}
