package main

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/go-github/v62/github"
)

func TestPayloads(t *testing.T) {
	for _, size := range []int{7800, 8000, 8192, 9000, 12000} {
		p, err := NewPayloads(size, 3)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(1, 2))
		seen := map[string]bool{}
		for i := 0; i < 50; i++ {
			body := p.Next(rng, nil)
			if len(body) < size || len(body) > size+1 {
				t.Fatalf("size %d: body is %d bytes", size, len(body))
			}
			if !json.Valid(body) {
				t.Fatalf("size %d: invalid JSON", size)
			}
			if strings.Contains(string(body), "feedfacec0ffee") && strings.Count(string(body), "feedfacec0ff") > 2 {
				t.Fatalf("size %d: a marker was left in the body", size)
			}
			ev, err := github.ParseWebHook("push", body)
			if err != nil {
				t.Fatal(err)
			}
			push := ev.(*github.PushEvent)
			if push.GetInstallation().GetID() != installationID {
				t.Errorf("installation.id = %d", push.GetInstallation().GetID())
			}
			if !strings.HasPrefix(push.GetRepo().GetFullName(), "Codertocat/service-") || push.GetRef() != "refs/heads/master" ||
				push.GetRepo().GetDefaultBranch() != "master" {
				t.Errorf("repo %q ref %q", push.GetRepo().GetFullName(), push.GetRef())
			}
			if n := len(push.Commits); n != p.Commits || push.GetHeadCommit().GetID() != push.GetAfter() ||
				push.Commits[n-1].GetID() != push.GetAfter() {
				t.Errorf("commits: %d, head %s, after %s", n, push.GetHeadCommit().GetID(), push.GetAfter())
			}
			for _, c := range push.Commits {
				if len(c.GetID()) != 40 || seen[c.GetID()] {
					t.Fatalf("commit id %q is not a fresh SHA", c.GetID())
				}
				seen[c.GetID()] = true
			}
		}
		t.Logf("size %d: %d commits", size, p.Commits)
	}
}

func TestDeliveryID(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	id := newDeliveryID(rng)
	if len(id) != 36 || id[14] != '4' || strings.Count(id, "-") != 4 {
		t.Fatalf("not a v4 UUID: %s", id)
	}
}
