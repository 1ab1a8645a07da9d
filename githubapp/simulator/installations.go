package simulator

import (
	"fmt"
	"time"
)

// What becomes of the App's installations, as GitHub does it: an account
// uninstalls the App, suspends or unsuspends it, or removes a repository
// from it. GitHub sends every App the `installation` and
// `installation_repositories` webhooks of these, unasked.
//
//   - Uninstalled: the installation's tokens are revoked (401 "Bad
//     credentials"), and a new one is refused with 404.
//   - Suspended: a new token is refused with 403 "This installation has
//     been suspended", and so is a call with a token minted before (GitHub
//     documents that the App's access to the API is blocked; it does not
//     document the answer to such a token: this is a choice). Webhooks of
//     its repositories are not sent while it is suspended.
//   - A repository removed: the installation's tokens no longer reach it
//     (404, as for a repository the App was never given), and its webhooks
//     are not sent. Workflow runs go on: their GITHUB_TOKEN is not the
//     App's.

// suspendedMessage is GitHub's message refusing a suspended installation.
const suspendedMessage = "This installation has been suspended"

// reaches reports whether the App reaches r: its installation has it, is
// installed and not suspended.
func (st *state) reaches(r *repo) bool {
	inst := r.installation
	return !inst.deleted && inst.suspendedBy == nil && inst.has(r)
}

// DeleteInstallation uninstalls the App from an installation's account, as
// login, and sends the `installation` deleted webhook, which lists the
// installation's repositories.
func (s *Simulator) DeleteInstallation(id int64, login string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	inst := st.mustInstallation(id)
	p := st.installationEvent("deleted", inst, login)
	repos := make([]any, 0, len(inst.repos))
	for _, r := range inst.repos {
		repos = append(repos, repoMiniJSON(r))
	}
	p["repositories"] = repos
	st.enqueueFor("installation", inst, 0, p)
	inst.deleted = true
	for _, t := range st.tokens {
		if t.kind == AuthInstallation && t.installationID == id {
			t.revoked = true
		}
	}
	s.notifyLocked()
}

// SuspendInstallation suspends an installation, as login, and sends the
// `installation` suspend webhook. It changes nothing and returns an error
// if the installation is suspended already (GitHub's page offers no
// suspension then); it panics if the App is not installed there.
func (s *Simulator) SuspendInstallation(id int64, login string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	inst := st.mustInstallation(id)
	if inst.suspendedBy != nil {
		return fmt.Errorf("simulator: installation %d is suspended already", id)
	}
	now := s.clock().Truncate(time.Second)
	inst.suspendedBy, inst.suspendedAt, inst.updatedAt = st.accountFor(login), now, now
	st.enqueueFor("installation", inst, 0, st.installationEvent("suspend", inst, login))
	s.notifyLocked()
	return nil
}

// UnsuspendInstallation lifts an installation's suspension, as login, and
// sends the `installation` unsuspend webhook. It changes nothing and
// returns an error if the installation is not suspended; it panics if the
// App is not installed there.
func (s *Simulator) UnsuspendInstallation(id int64, login string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	inst := st.mustInstallation(id)
	if inst.suspendedBy == nil {
		return fmt.Errorf("simulator: installation %d is not suspended", id)
	}
	inst.suspendedBy, inst.suspendedAt, inst.updatedAt = nil, time.Time{}, s.clock().Truncate(time.Second)
	st.enqueueFor("installation", inst, 0, st.installationEvent("unsuspend", inst, login))
	s.notifyLocked()
	return nil
}

// RemoveRepositoryFromInstallation removes a repository from the App's
// installation, as login (the installation's repository selection becomes
// "selected"), and sends the `installation_repositories` removed webhook.
// It changes nothing and returns an error if the installation does not
// have the repository (removed already, or the App uninstalled); it panics
// if there is no such repository.
func (s *Simulator) RemoveRepositoryFromInstallation(fullName, login string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	r := s.mustRepo(fullName)
	inst := r.installation
	if inst.deleted || !inst.has(r) {
		return fmt.Errorf("simulator: the App's installation does not have %s", fullName)
	}
	for i, x := range inst.repos {
		if x == r {
			inst.repos = append(inst.repos[:i:i], inst.repos[i+1:]...)
			break
		}
	}
	inst.selection, inst.updatedAt = "selected", s.clock().Truncate(time.Second)
	p := st.installationEvent("removed", inst, login)
	p["repository_selection"] = inst.selection
	p["repositories_added"] = []any{}
	p["repositories_removed"] = []any{repoMiniJSON(r)}
	p["requester"] = nil
	st.enqueueFor("installation_repositories", inst, 0, p)
	s.notifyLocked()
	return nil
}

// mustInstallation returns an installation the App is installed on, or
// panics. Call with s.mu held.
func (st *state) mustInstallation(id int64) *installation {
	inst := st.installations[id]
	if inst == nil || inst.deleted {
		panic(fmt.Sprintf("simulator: no installation %d", id))
	}
	return inst
}

// installationEvent is the payload of an installation-level webhook: its
// action, the installation, and who did it.
func (st *state) installationEvent(action string, inst *installation, sender string) obj {
	return obj{
		"action":       action,
		"installation": st.installationJSON(inst),
		"sender":       st.userJSON(st.accountFor(sender)),
	}
}

// installationJSON renders an installation as its webhooks carry it.
func (st *state) installationJSON(inst *installation) obj {
	app := st.theApp()
	perms := obj{}
	for k, v := range app.permissions {
		perms[k] = v
	}
	events := make([]any, len(app.events))
	for i, e := range app.events {
		events[i] = e
	}
	settings := htmlRoot + "/settings/installations/"
	if inst.account.typ == "Organization" {
		settings = htmlRoot + "/organizations/" + inst.account.login + "/settings/installations/"
	}
	var suspendedAt any
	if inst.suspendedBy != nil {
		suspendedAt = ts(inst.suspendedAt)
	}
	return obj{
		"id":                        inst.id,
		"client_id":                 fmt.Sprintf("Iv1.%016x", app.id),
		"account":                   st.userJSON(inst.account),
		"repository_selection":      inst.selection,
		"access_tokens_url":         fmt.Sprintf("%s/app/installations/%d/access_tokens", st.apiURL, inst.id),
		"repositories_url":          st.apiURL + "/installation/repositories",
		"html_url":                  fmt.Sprintf("%s%d", settings, inst.id),
		"app_id":                    app.id,
		"app_slug":                  app.slug,
		"target_id":                 inst.account.id,
		"target_type":               inst.account.typ,
		"permissions":               perms,
		"events":                    events,
		"created_at":                ts(inst.createdAt),
		"updated_at":                ts(inst.updatedAt),
		"single_file_name":          nil,
		"has_multiple_single_files": false,
		"single_file_paths":         []any{},
		"suspended_by":              st.userJSON(inst.suspendedBy),
		"suspended_at":              suspendedAt,
	}
}

// repoMiniJSON renders a repository as installation webhooks list it.
func repoMiniJSON(r *repo) obj {
	return obj{
		"id":        r.id,
		"node_id":   nodeID("Repository", r.id),
		"name":      r.name,
		"full_name": r.fullName(),
		"private":   r.private,
	}
}
