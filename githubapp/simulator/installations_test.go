package simulator_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-github/v62/github"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
)

// webhooksSince returns "event/action" of the webhooks the receiver got
// after the first from.
func (h *harness) webhooksSince(from int) []string {
	var out []string
	for _, r := range h.hook.received()[from:] {
		var head struct {
			Action string `json:"action"`
		}
		_ = json.Unmarshal(r.body, &head)
		e := r.event
		if head.Action != "" {
			e += "/" + head.Action
		}
		out = append(out, e)
	}
	return out
}

// A repository removed from the installation: the installation's token,
// old or new, no longer reaches it (404), and its events send no webhook;
// the installation's other repository is as before. The removal's webhook
// names the repository and who removed it, signed like any other; a
// removal twice is an error and sends nothing.
func TestRemoveRepositoryFromInstallation(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	h.sim.CreateRepo(h.org, "acme/api", simulator.RepoOptions{})
	old := h.token(h.org)
	if err := h.sim.RemoveRepositoryFromInstallation("acme/api", "octocat"); err != nil {
		t.Fatal(err)
	}
	if err := h.sim.RemoveRepositoryFromInstallation("acme/api", "octocat"); err == nil {
		t.Error("acme/api removed twice: no error")
	}
	h.sim.Push("acme/api", "main", simulator.CommitSpec{Message: "unseen"})
	h.sim.Push("acme/shop", "main", simulator.CommitSpec{Message: "seen"})
	h.waitIdle()
	if got, want := h.webhooksSince(0), []string{"installation_repositories/removed", "push"}; !slices.Equal(got, want) {
		t.Errorf("webhooks %v, want %v (none of acme/api's push)", got, want)
	}
	var ev github.InstallationRepositoriesEvent
	if err := json.Unmarshal(h.hook.received()[0].body, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.GetInstallation().GetID() != h.org || ev.GetSender().GetLogin() != "octocat" || len(ev.RepositoriesRemoved) != 1 ||
		ev.RepositoriesRemoved[0].GetFullName() != "acme/api" || ev.GetRepositorySelection() != "selected" {
		t.Errorf("removal webhook: %+v", ev)
	}
	for _, tok := range []string{old, h.token(h.org)} {
		if r := h.do("GET", "/repos/acme/api/commits/main", tok, nil); r.status != 404 {
			t.Errorf("acme/api with the installation's token: %d, want 404", r.status)
		}
		if r := h.do("GET", "/repos/acme/shop/commits/main", tok, nil); r.status != 200 {
			t.Errorf("acme/shop with the installation's token: %d %s, want 200", r.status, r.body)
		}
	}
}

// A suspended installation: a new token is refused with GitHub's 403, and
// so is a call with a token minted before; its repositories' events send
// no webhook. Unsuspended, it works again. A suspension twice, or an
// unsuspension of an active installation, is an error and sends nothing.
func TestSuspendAndUnsuspendInstallation(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	old := h.token(h.org)
	if err := h.sim.SuspendInstallation(h.org, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := h.sim.SuspendInstallation(h.org, "bob"); err == nil {
		t.Error("suspended twice: no error")
	}
	r := h.do("POST", fmt.Sprintf("/app/installations/%d/access_tokens", h.org), "Bearer "+h.jwt(), nil)
	if body := r.json(t); r.status != 403 || body["message"] != "This installation has been suspended" || body["documentation_url"] == "" {
		t.Errorf("token of a suspended installation: %d %s", r.status, r.body)
	}
	if r := h.do("GET", "/repos/acme/shop/commits/main", old, nil); r.status != 403 || r.json(t)["message"] != "This installation has been suspended" {
		t.Errorf("a token minted before the suspension: %d %s", r.status, r.body)
	}
	h.sim.Push("acme/shop", "main", simulator.CommitSpec{Message: "while suspended"})
	if err := h.sim.UnsuspendInstallation(h.org, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := h.sim.UnsuspendInstallation(h.org, "bob"); err == nil {
		t.Error("unsuspended while active: no error")
	}
	h.sim.Push("acme/shop", "main", simulator.CommitSpec{Message: "after"})
	h.waitIdle()
	if got, want := h.webhooksSince(0), []string{"installation/suspend", "installation/unsuspend", "push"}; !slices.Equal(got, want) {
		t.Errorf("webhooks %v, want %v", got, want)
	}
	var suspend, unsuspend github.InstallationEvent
	_ = json.Unmarshal(h.hook.received()[0].body, &suspend)
	_ = json.Unmarshal(h.hook.received()[1].body, &unsuspend)
	if i := suspend.GetInstallation(); i.GetID() != h.org || i.GetSuspendedBy().GetLogin() != "alice" || i.GetSuspendedAt().IsZero() {
		t.Errorf("suspend webhook's installation: %+v", i)
	}
	if i := unsuspend.GetInstallation(); unsuspend.GetSender().GetLogin() != "bob" || i.SuspendedBy != nil || i.SuspendedAt != nil {
		t.Errorf("unsuspend webhook: sender %s, installation %+v", unsuspend.GetSender().GetLogin(), i)
	}
	if r := h.do("GET", "/repos/acme/shop/commits/main", h.token(h.org), nil); r.status != 200 {
		t.Errorf("after the unsuspension: %d %s", r.status, r.body)
	}
}

// The App uninstalled: the webhook lists the installation's repositories;
// the token minted before is revoked (401), a new one refused (404), and
// the repositories' events send no webhook.
func TestDeleteInstallation(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	old := h.token(h.org)
	h.sim.DeleteInstallation(h.org, "octocat")
	h.sim.Push("acme/shop", "main", simulator.CommitSpec{Message: "unseen"})
	h.waitIdle()
	if got, want := h.webhooksSince(0), []string{"installation/deleted"}; !slices.Equal(got, want) {
		t.Errorf("webhooks %v, want %v", got, want)
	}
	var ev github.InstallationEvent
	_ = json.Unmarshal(h.hook.received()[0].body, &ev)
	if ev.GetInstallation().GetID() != h.org || ev.GetSender().GetLogin() != "octocat" || len(ev.Repositories) != 1 ||
		ev.Repositories[0].GetFullName() != "acme/shop" {
		t.Errorf("deleted webhook: %+v", ev)
	}
	if r := h.do("GET", "/repos/acme/shop/commits/main", old, nil); r.status != 401 {
		t.Errorf("the token minted before: %d %s, want 401", r.status, r.body)
	}
	if r := h.do("POST", fmt.Sprintf("/app/installations/%d/access_tokens", h.org), "Bearer "+h.jwt(), nil); r.status != 404 {
		t.Errorf("a new token: %d %s, want 404", r.status, r.body)
	}
	if d := h.sim.Deliveries()[0]; d.InstallationID != h.org || d.RepositoryID != 0 {
		t.Errorf("hook delivery: installation %d, repository %d", d.InstallationID, d.RepositoryID)
	}
	if r := h.do("GET", "/app", "Bearer "+h.jwt(), nil); r.json(t)["installations_count"] != 0.0 {
		t.Errorf("GET /app: %s, want no installation", r.body)
	}
}
