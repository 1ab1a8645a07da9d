package githubapp

import (
	"encoding/json"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/google/go-github/v62/github"
	"github.com/lastmile-app/lastmile/pipeline"
)

// referencePush is how the router read a push through go-github's PushEvent
// before pushPayload: pushPayload must agree with it.
func referencePush(d *pipeline.Delivery) (pipeline.Push, error) {
	parsed, err := github.ParseWebHook("push", d.Body)
	if err != nil {
		return pipeline.Push{}, err
	}
	ev := parsed.(*github.PushEvent)
	r := ev.GetRepo()
	owner, name, _ := pipeline.SplitFullName(r.GetFullName())
	p := pipeline.Push{
		Repo:            pipeline.Repo{ID: r.GetID(), Owner: owner, Name: name, InstallationID: ev.GetInstallation().GetID()},
		DeliveryID:      d.ID,
		Ref:             ev.GetRef(),
		Before:          ev.GetBefore(),
		After:           ev.GetAfter(),
		Deleted:         ev.GetDeleted(),
		Forced:          ev.GetForced(),
		DefaultBranch:   firstNonEmpty(r.GetDefaultBranch(), r.GetMasterBranch()),
		Pusher:          firstNonEmpty(ev.GetPusher().GetName(), ev.GetSender().GetLogin()),
		PushedAt:        d.ReceivedAt,
		PushedAtGuessed: true,
		Truncated:       len(ev.Commits) >= MaxPushCommits,
	}
	if t := r.GetPushedAt(); !t.IsZero() {
		p.PushedAt, p.PushedAtGuessed = t.Time, false
	}
	for _, c := range ev.Commits {
		author := c.GetAuthor()
		p.Commits = append(p.Commits, pipeline.Commit{
			SHA:       c.GetID(),
			Author:    firstNonEmpty(author.GetLogin(), author.GetName()),
			Timestamp: c.GetTimestamp().Time,
			Title:     pipeline.Title(c.GetMessage()),
		})
	}
	return p, nil
}

func decodePush(d *pipeline.Delivery) (pipeline.Push, error) {
	var p pushPayload
	if err := json.Unmarshal(d.Body, &p); err != nil {
		return pipeline.Push{}, err
	}
	return p.push(d)
}

// pushVariants are GitHub's example push (from @octokit/webhooks-examples)
// and edits of it that exercise every field the router reads.
func pushVariants(t testing.TB) map[string][]byte {
	t.Helper()
	raw, err := os.ReadFile("testdata/push.json")
	if err != nil {
		t.Fatal(err)
	}
	edit := func(change func(p map[string]any)) []byte {
		var p map[string]any
		if err := json.Unmarshal(raw, &p); err != nil {
			t.Fatal(err)
		}
		change(p)
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	repo := func(p map[string]any) map[string]any { return p["repository"].(map[string]any) }
	commit := map[string]any{
		"id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", "message": "Fix the build\n\nLonger explanation.",
		"timestamp": "2019-05-15T15:20:30-07:00",
		"author":    map[string]any{"name": "Jane Doe", "email": "jane@example.com", "username": "jdoe"},
	}
	return map[string][]byte{
		"example": raw,
		"commits": edit(func(p map[string]any) {
			anon := map[string]any{}
			for k, v := range commit {
				anon[k] = v
			}
			anon["author"] = map[string]any{"name": "Jane Doe", "email": "jane@example.com"}
			p["commits"] = []any{commit, anon}
		}),
		"no pushed_at":          edit(func(p map[string]any) { delete(repo(p), "pushed_at") }),
		"pushed_at null":        edit(func(p map[string]any) { repo(p)["pushed_at"] = nil }),
		"pushed_at as a string": edit(func(p map[string]any) { repo(p)["pushed_at"] = "2019-05-15T15:20:57Z" }),
		"master_branch only": edit(func(p map[string]any) {
			delete(repo(p), "default_branch")
			repo(p)["master_branch"] = "trunk"
		}),
		"no pusher name": edit(func(p map[string]any) { p["pusher"] = map[string]any{"email": "x@example.com"} }),
		"deleted and forced": edit(func(p map[string]any) {
			p["deleted"], p["forced"], p["after"] = true, true, "0000000000000000000000000000000000000000"
		}),
		"installation": edit(func(p map[string]any) { p["installation"] = map[string]any{"id": 42, "node_id": "x"} }),
		"nulls": edit(func(p map[string]any) {
			p["commits"], p["head_commit"] = nil, nil
		}),
	}
}

func TestPushPayloadAgreesWithGoGitHub(t *testing.T) {
	received := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for name, body := range pushVariants(t) {
		t.Run(name, func(t *testing.T) {
			d := &pipeline.Delivery{ID: "d-1", Event: "push", Body: body, ReceivedAt: received}
			want, err := referencePush(d)
			if err != nil {
				t.Fatalf("go-github: %v", err)
			}
			got, err := decodePush(d)
			if err != nil {
				t.Fatalf("pushPayload: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("pushPayload disagrees with go-github\n got %+v\nwant %+v", got, want)
			}
		})
	}
	for name, body := range map[string]string{
		"not JSON":              `{`,
		"ref of the wrong type": `{"ref": 5}`,
		"a bad timestamp":       `{"commits":[{"id":"a","timestamp":"yesterday"}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			d := &pipeline.Delivery{ID: "d-1", Event: "push", Body: []byte(body)}
			_, gerr := referencePush(d)
			_, err := decodePush(d)
			if (err == nil) != (gerr == nil) || err == nil {
				t.Errorf("pushPayload error %v, go-github error %v: want both to refuse", err, gerr)
			}
		})
	}
}

// BenchmarkPushDecode: the worker's read of a push, against go-github's
// PushEvent it replaced (the baseline, in the same run):
//
//	go test ./githubapp -run '^$' -bench PushDecode
func BenchmarkPushDecode(b *testing.B) {
	d := &pipeline.Delivery{ID: "d-1", Event: "push", Body: pushVariants(b)["example"]}
	for name, decode := range map[string]func(*pipeline.Delivery) (pipeline.Push, error){
		"go-github": referencePush, "pushPayload": decodePush,
	} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(d.Body)))
			for b.Loop() {
				if p, err := decode(d); err != nil || p.Repo.ID == 0 {
					b.Fatal(err)
				}
			}
		})
	}
}
