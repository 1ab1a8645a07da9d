package pipeline

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// GitHub tells every App, unasked, what becomes of its installations: an
// account uninstalls it (`installation` deleted), suspends or unsuspends it,
// or removes repositories from it (`installation_repositories` removed).
// A repository lastmile can no longer reach leaves lastmile as one whose
// configuration was removed (see leave): its environments are retired and
// its releases on their way stop, saying why and who did it. Unlike leave,
// nothing is left for GitHub: GitHub refuses every call for it now.
// A suspension stops nothing: the installation's deliveries wait until it
// is unsuspended (see app.Worker).

// InstallationAction is what happened to an installation of the App.
type InstallationAction string

// The actions lastmile acts on; others (new_permissions_accepted) are
// recorded only.
const (
	InstallationCreated   InstallationAction = "created"   // installation
	InstallationDeleted   InstallationAction = "deleted"   // installation: the App was uninstalled
	InstallationSuspend   InstallationAction = "suspend"   // installation
	InstallationUnsuspend InstallationAction = "unsuspend" // installation
	RepositoriesAdded     InstallationAction = "added"     // installation_repositories
	RepositoriesRemoved   InstallationAction = "removed"   // installation_repositories
)

// InstallationEvent is an `installation` or `installation_repositories`
// event.
type InstallationEvent struct {
	InstallationID int64
	Account        string // the account the App is installed on
	Action         InstallationAction
	// Repos are the repositories the event names: the installation's
	// (deleted), or those removed or added. GitHub gives only their ID and
	// full name.
	Repos  []Repo
	Sender string // who did it
	// At is when it happened: for a suspension, the time GitHub gives;
	// otherwise when lastmile received the delivery.
	At time.Time
}

// InstallationStatus is where an installation of the App stands.
type InstallationStatus string

const (
	InstallationActive      InstallationStatus = "active"
	InstallationSuspended   InstallationStatus = "suspended"
	InstallationUninstalled InstallationStatus = "deleted"
)

// InstallationState is what lastmile knows of an installation: its state,
// since when and who put it there.
type InstallationState struct {
	ID      int64
	Account string
	State   InstallationStatus
	Since   time.Time
	By      string
}

// HandleInstallation acts on what became of an installation of the App.
func (e *Engine) HandleInstallation(ctx context.Context, ev InstallationEvent) error {
	switch ev.Action {
	case InstallationDeleted:
		return e.uninstalled(ctx, ev)
	case RepositoriesRemoved:
		return e.repositoriesRemoved(ctx, ev)
	case InstallationSuspend:
		return e.suspended(ctx, ev)
	case InstallationCreated, InstallationUnsuspend, RepositoriesAdded:
		return e.reinstated(ctx, ev)
	}
	return &Ignored{Reason: fmt.Sprintf("installation %d: %s", ev.InstallationID, ev.Action)}
}

// uninstalled has every repository lastmile reached through an installation
// that was deleted leave lastmile: those it recorded under the
// installation. Not those GitHub's event lists that lastmile recorded under
// another: the App was installed again since, or the repository was
// transferred to another account where it is installed, and this deletion
// was delivered late. (One whose own installation's deletion lastmile never
// heard of stays until its first delivery fails.) The installation is
// recorded first, so that its deliveries handled meanwhile, refused their
// token, are ignored rather than retried.
func (e *Engine) uninstalled(ctx context.Context, ev InstallationEvent) error {
	if _, err := e.Store.SetInstallation(ctx, InstallationState{ID: ev.InstallationID, Account: ev.Account,
		State: InstallationUninstalled, Since: ev.At, By: ev.Sender}); err != nil {
		return err
	}
	repos, err := e.Store.InstallationRepos(ctx, ev.InstallationID)
	if err != nil {
		return err
	}
	reason := "superseded: the lastmile App was uninstalled from the repository" + by(ev.Sender)
	if err := e.departAll(ctx, repos, reason); err != nil {
		return err
	}
	e.Log.Warn("the lastmile App was uninstalled: the repositories of the installation left lastmile",
		"installation", ev.InstallationID, "account", ev.Account, "by", ev.Sender, "repos", names(repos))
	return &Ignored{Reason: fmt.Sprintf("the App was uninstalled from %s%s (installation %d): %s",
		orUnknown(ev.Account), by(ev.Sender), ev.InstallationID, left(repos))}
}

// repositoriesRemoved has the repositories removed from an installation
// leave lastmile. Only those lastmile recorded under that installation: a
// repository transferred to another account where the App is installed is
// removed from the first installation as it is added to the second, and
// GitHub does not promise the order of the two events.
func (e *Engine) repositoriesRemoved(ctx context.Context, ev InstallationEvent) error {
	known, err := e.Store.InstallationRepos(ctx, ev.InstallationID)
	if err != nil {
		return err
	}
	removed := repoIDs(ev.Repos)
	var repos []Repo
	for _, r := range known {
		if slices.Contains(removed, r.ID) {
			repos = append(repos, r)
		}
	}
	reason := "superseded: the repository was removed from lastmile's installation" + by(ev.Sender)
	if err := e.departAll(ctx, repos, reason); err != nil {
		return err
	}
	// Recorded as reached through no installation: its deliveries still
	// in the inbox, whose calls GitHub now refuses, are ignored rather
	// than retried until dead (see app.Worker).
	for _, r := range repos {
		if err := e.Store.DetachRepo(ctx, r.ID, ev.InstallationID, ev.At); err != nil {
			return err
		}
	}
	if len(repos) > 0 {
		e.Log.Warn("repositories were removed from the lastmile App's installation: they left lastmile",
			"installation", ev.InstallationID, "account", ev.Account, "by", ev.Sender, "repos", names(repos))
	}
	return &Ignored{Reason: fmt.Sprintf("repositories removed from installation %d%s: %s", ev.InstallationID, by(ev.Sender), left(repos))}
}

// suspended records a suspension. Nothing stops: the installation's
// deliveries wait until it is unsuspended, and its releases go on then.
func (e *Engine) suspended(ctx context.Context, ev InstallationEvent) error {
	if _, err := e.Store.SetInstallation(ctx, InstallationState{ID: ev.InstallationID, Account: ev.Account,
		State: InstallationSuspended, Since: ev.At, By: ev.Sender}); err != nil {
		return err
	}
	e.Log.Warn("the lastmile App's installation was suspended: its deliveries wait until it is unsuspended",
		"installation", ev.InstallationID, "account", ev.Account, "by", ev.Sender)
	return &Ignored{Reason: fmt.Sprintf("installation %d (%s) suspended%s: its deliveries wait until it is unsuspended; its releases stay where they are",
		ev.InstallationID, orUnknown(ev.Account), by(ev.Sender))}
}

// reinstated records an installation that GitHub says is there and
// unsuspended — it was unsuspended, or installed; or repositories were
// added to it, and GitHub sends a suspended installation no events —
// clearing a suspension lastmile missed the end of; an uninstalled
// installation stays so (Store.SetInstallation: GitHub gives the App
// installed again a new installation ID). Its deliveries that waited for
// the unsuspension are due at once: the worker looks at the inbox again as
// soon as a handling ends, this one's too, and hands them out.
func (e *Engine) reinstated(ctx context.Context, ev InstallationEvent) error {
	woken, err := e.Store.SetInstallation(ctx, InstallationState{ID: ev.InstallationID, Account: ev.Account,
		State: InstallationActive, Since: ev.At, By: ev.Sender})
	if err != nil {
		return err
	}
	if ev.Action == RepositoriesAdded {
		// Reached through this installation now (transferred, or removed
		// and added again): a later removal from the other changes nothing.
		for _, r := range ev.Repos {
			if err := e.Store.AttachRepo(ctx, r.ID, ev.InstallationID, ev.At); err != nil {
				return err
			}
		}
	}
	if ev.Action == InstallationUnsuspend {
		if err := e.catchUp(ctx, ev.InstallationID); err != nil {
			return err
		}
	}
	if woken > 0 {
		e.Log.Info("the lastmile App's installation is active: its waiting deliveries are due again",
			"installation", ev.InstallationID, "action", ev.Action, "by", ev.Sender, "deliveries", woken)
	}
	what := fmt.Sprintf("installation %d (%s) %s%s", ev.InstallationID, orUnknown(ev.Account), ev.Action, by(ev.Sender))
	if ev.Action == RepositoriesAdded {
		what = fmt.Sprintf("repositories added to installation %d%s: %s", ev.InstallationID, by(ev.Sender), strings.Join(names(ev.Repos), ", "))
	}
	if woken > 0 {
		what += fmt.Sprintf("; %d waiting deliveries are due again", woken)
	}
	return &Ignored{Reason: what}
}

// catchUp reads back, after a suspension, the statuses of the deployments
// lastmile's releases were waiting on in the installation's repositories:
// GitHub sent no webhooks meanwhile, and sends none of them later, so a
// deploy approved and run during the suspension would otherwise never be
// heard of, and its release wait for good. Then promotion goes on.
func (e *Engine) catchUp(ctx context.Context, installationID int64) error {
	repos, err := e.Store.InstallationRepos(ctx, installationID)
	if err != nil {
		return err
	}
	for _, repo := range repos {
		// One repository GitHub refuses does not hold back the others':
		// its releases go on at its next event.
		if err := e.catchUpRepo(ctx, repo); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			e.Log.Warn("after the unsuspension: could not read back the repository's deployments", "repo", repo.FullName(), "error", err)
		}
	}
	return nil
}

// catchUpRepo reads back the statuses of the deployments a repository's
// releases wait on, and advances it if it read any.
func (e *Engine) catchUpRepo(ctx context.Context, repo Repo) error {
	state, err := e.Store.RepoState(ctx, repo.ID)
	if err != nil {
		return err
	}
	read := false
	for _, p := range state.Active {
		for _, d := range p.ByStage {
			if d.GitHubID == 0 || d.State.Terminal() {
				continue
			}
			if err := e.recordFromGitHub(ctx, repo, d, 0); err != nil {
				return err
			}
			read = true
		}
	}
	if !read {
		return nil
	}
	return e.advance(ctx, repo)
}

// departAll has each repository leave lastmile (see depart).
func (e *Engine) departAll(ctx context.Context, repos []Repo, reason string) error {
	for _, r := range repos {
		if err := e.depart(ctx, r, reason); err != nil {
			return fmt.Errorf("%s: %w", r.FullName(), err)
		}
	}
	return nil
}

// depart has a repository that lastmile can no longer reach on GitHub leave
// lastmile, as leave does for one whose configuration was removed: its
// environments are retired, and its releases on their way stop with
// reason. Unlike leave, it leaves nothing for GitHub: GitHub refuses every
// call for the repository now, and what realize found owed it would be
// tried at every advance of the repository (the sweep's, say), in vain.
// A deployment that has not started is made inactive in the record only,
// and what lastmile still owed GitHub is settled (settleUnreachable). The
// repository is held throughout, so that no advance sends anything
// between the two.
func (e *Engine) depart(ctx context.Context, repo Repo, reason string) error {
	defer e.lockRepo(repo.ID)()
	if err := e.Store.RetireEnvironments(ctx, repo.ID); err != nil {
		return err
	}
	// Those a re-run could carry on too: a re-run's statuses cannot reach
	// lastmile any more.
	if err := e.stopReleases(ctx, repo, -1, func(*Release) (string, error) { return reason, nil }); err != nil {
		return err
	}
	return e.settleUnreachable(ctx, repo)
}

// unreachable is what the record says of a status lastmile owed GitHub
// for a repository it can no longer reach.
const unreachable = "lastmile no longer has access to the repository"

// settleUnreachable records the statuses lastmile still owed GitHub for a
// repository it can no longer reach as lastmile's alone, as notify does
// for a deployment GitHub no longer has (so that the deployment ends in
// the record, and its release with it), then drops the rest of what it
// owed (Store.DropWork). An intent owing an inactive (its release
// superseded while an attempt to create it had no answer) is abandoned:
// whether GitHub made it, lastmile can no longer look.
func (e *Engine) settleUnreachable(ctx context.Context, repo Repo) error {
	work, err := e.Store.Work(ctx, repo.ID)
	if err != nil {
		return err
	}
	for _, d := range work {
		switch {
		case d.Notify == "":
		case d.GitHubID == 0:
			reason := d.NotifyReason + " (" + unreachable + ": whether an earlier attempt created it on GitHub is not known)"
			if err := e.Store.Refused(ctx, d.ID, DeploymentAbandoned, reason); err != nil {
				return err
			}
		default:
			_, err := e.Store.RecordStatus(ctx, d, StatusInfo{State: d.Notify, Creator: "lastmile", CreatedAt: e.Now(),
				Description: strings.TrimPrefix(d.NotifyReason+" (not written on GitHub: "+unreachable+")", " ")})
			if err != nil {
				return err
			}
		}
	}
	return e.Store.DropWork(ctx, repo.ID, unreachable)
}

func repoIDs(repos []Repo) []int64 {
	ids := make([]int64, 0, len(repos))
	for _, r := range repos {
		ids = append(ids, r.ID)
	}
	return ids
}

func names(repos []Repo) []string {
	out := make([]string, 0, len(repos))
	for _, r := range repos {
		out = append(out, r.FullName())
	}
	return out
}

// left says which repositories left lastmile, for a delivery's note.
func left(repos []Repo) string {
	if len(repos) == 0 {
		return "no repository lastmile knows left it"
	}
	return strings.Join(names(repos), ", ") + " left lastmile"
}

// by is " by LOGIN", or "" when GitHub did not say who.
func by(login string) string {
	if login == "" {
		return ""
	}
	return " by " + login
}

func orUnknown(s string) string {
	if s == "" {
		return "an unknown account"
	}
	return s
}
