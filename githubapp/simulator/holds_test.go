package simulator_test

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
)

// A held webhook is delivered after the ones sent while it was held, with
// its own X-GitHub-Delivery and a valid signature (the receiver checks
// it), and none is lost.
func TestHeldWebhookIsDeliveredAfterLaterOnes(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	h.sim.HoldWebhooks(simulator.WebhookHold{Event: "push", Match: func(w simulator.Webhook) bool {
		return w.Field("ref") == "refs/heads/main"
	}})
	first := h.sim.Push("acme/shop", "main", simulator.CommitSpec{Message: "one"})
	h.sim.Push("acme/shop", "feature", simulator.CommitSpec{Message: "two"})
	h.sim.SetCommitStatus("acme/shop", first.After, "ci", "success")
	h.waitIdle() // held webhooks do not keep the simulator busy

	held := h.sim.HeldWebhooks()
	if len(held) != 1 || held[0].Event != "push" || held[0].Field("after") != first.After {
		t.Fatalf("held: %+v", held)
	}
	if got, want := h.events(), []string{"push", "status"}; !slices.Equal(got, want) {
		t.Fatalf("delivered while held: %q, want %q", got, want)
	}
	// Holds stay armed until released: a later match is held too.
	second := h.sim.Push("acme/shop", "main", simulator.CommitSpec{Message: "three"})
	h.waitIdle()
	if held = h.sim.HeldWebhooks(); len(held) != 2 {
		t.Fatalf("held after a second push to main: %d", len(held))
	}

	if n := h.sim.ReleaseWebhooks(); n != 2 {
		t.Fatalf("released %d, want 2", n)
	}
	h.waitIdle()
	if got, want := h.events(), []string{"push", "status", "push", "push"}; !slices.Equal(got, want) {
		t.Fatalf("deliveries: %q, want %q", got, want)
	}
	if n := len(h.sim.HeldWebhooks()); n != 0 {
		t.Errorf("still held after release: %d", n)
	}
	ds := h.sim.Deliveries()
	got := h.hook.received()
	if len(got) != 4 {
		t.Fatalf("received %d webhooks, want 4", len(got))
	}
	// Released in the order they were held, each with the GUID and body it
	// was held with.
	for i, w := range held {
		d := ds[2+i]
		if d.GUID != w.GUID || got[2+i].guid != w.GUID || string(got[2+i].body) != string(w.Body) || d.Redelivery {
			t.Errorf("released webhook %d: guid %s (delivery %s), want %s", i, got[2+i].guid, d.GUID, w.GUID)
		}
	}
	var after []string
	for _, r := range got[2:] {
		var p struct{ After string }
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatal(err)
		}
		after = append(after, p.After)
	}
	if want := []string{first.After, second.After}; !slices.Equal(after, want) {
		t.Errorf("released pushes: %q, want %q", after, want)
	}
	guids := map[string]bool{}
	for _, r := range got {
		guids[r.guid] = true
	}
	if len(guids) != 4 {
		t.Errorf("%d distinct GUIDs among 4 deliveries", len(guids))
	}

	// Released, the hold is gone: the next push to main is sent at once.
	h.sim.Push("acme/shop", "main", simulator.CommitSpec{Message: "four"})
	h.waitIdle()
	if n := len(h.hook.received()); n != 5 {
		t.Errorf("received %d webhooks after the release, want 5", n)
	}
}

// Event and Action select, with Match, which webhooks are held: here the
// success of a deployment, sent after the run that reported it ended.
func TestWebhookHoldMatchesEventAndAction(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	h.sim.SetWorkflow("acme/shop", simulator.WorkflowOptions{NoRegister: true})
	h.sim.Push("acme/shop", "main", simulator.CommitSpec{Message: "one"})
	h.waitIdle()
	h.sim.HoldWebhooks(simulator.WebhookHold{Event: "deployment_status", Action: "created", Match: func(w simulator.Webhook) bool {
		return w.Field("deployment_status", "state") == "success"
	}})
	from := len(h.sim.Deliveries())
	h.deploy("acme/shop", "test")
	h.waitIdle()
	held := h.sim.HeldWebhooks()
	if len(held) != 1 || held[0].Field("deployment", "environment") != "test" {
		t.Fatalf("held: %+v", held)
	}
	want := []string{"deployment/created", "workflow_run/requested", "workflow_run/in_progress",
		"workflow_job/queued", "workflow_job/in_progress", "deployment_status/created", "workflow_job/completed", "workflow_run/completed"}
	if got := h.eventsFrom(from); !slices.Equal(got, want) {
		t.Fatalf("delivered while held:\n%q\nwant\n%q", got, want)
	}
	h.sim.ReleaseWebhooks()
	h.waitIdle()
	if got, want := h.eventsFrom(from), append(want, "deployment_status/created"); !slices.Equal(got, want) {
		t.Fatalf("delivered:\n%q\nwant\n%q", got, want)
	}
	ds := h.sim.Deliveries()
	if last := ds[len(ds)-1]; last.GUID != held[0].GUID || !last.OK() {
		t.Errorf("released delivery %s (%s), want %s", last.GUID, last.Status, held[0].GUID)
	}
}
