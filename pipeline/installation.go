package pipeline

import (
	"context"
	"errors"
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
//
// Only an uninstallation is taken as the event says (it is final: GitHub
// never gives the ID to another installation). For the rest, the event is
// the cue to ask GitHub where the installation, and the repositories it
// names, stand now: GitHub does not promise the order of its deliveries, a
// redelivery asked for after an outage comes late, and an event's own time
// (a suspension's suspended_at, GitHub's; or when lastmile received it) is
// on two clocks — an unsuspension delivered after a later suspension, or a
// repository's removal delivered after it was added back, would otherwise
// be recorded over what followed.
func (e *Engine) HandleInstallation(ctx context.Context, ev InstallationEvent) error {
	switch ev.Action {
	case InstallationDeleted:
		return e.uninstalled(ctx, ev)
	case RepositoriesRemoved, RepositoriesAdded, InstallationCreated:
		return e.repositoriesMoved(ctx, ev)
	case InstallationSuspend, InstallationUnsuspend:
		what, err := e.installationNow(ctx, ev)
		if err != nil {
			return err
		}
		return &Ignored{Reason: what}
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
	unlock := e.lockInstallation(ev.InstallationID)
	_, err := e.Store.SetInstallation(ctx, InstallationState{ID: ev.InstallationID, Account: ev.Account,
		State: InstallationUninstalled, Since: ev.At, By: ev.Sender})
	unlock()
	if err != nil {
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
	e.Log.WarnContext(ctx, "the lastmile App was uninstalled: the repositories of the installation left lastmile",
		"installation", ev.InstallationID, "account", ev.Account, "by", ev.Sender, "repos", names(repos))
	return &Ignored{Reason: fmt.Sprintf("the App was uninstalled from %s%s (installation %d): %s",
		orUnknown(ev.Account), by(ev.Sender), ev.InstallationID, left(repos))}
}

// installationNow records where an installation stands, as GitHub says
// now, after an event that may have changed it (a suspension, an
// unsuspension, an installation, repositories added), and returns what
// became of it, for the delivery's note. One that GitHub no longer has
// after a suspension or an unsuspension was uninstalled since: it is
// recorded so (gone), as the deletion's delivery, which may come later or
// never, would (after an installation or repositories added, GitHub may
// just not show it yet: nothing is recorded). One found suspended changes nothing else: its deliveries wait
// until it is unsuspended (see app.Worker), and its releases stay where
// they are. One found active after lastmile recorded it suspended — or
// on an unsuspension, also when handled again — has what happened
// meanwhile read back (catchUp) before it is recorded active: a failure
// to read it back leaves it recorded suspended and fails the handling, to
// be tried again (by this delivery's next attempt, or the sweep's
// RecheckSuspended). One found active has its deliveries put off made due
// at once (the worker looks at the inbox again as soon as a handling
// ends): GitHub's refusal may have put them off while lastmile had not
// heard of the suspension. The installation is held throughout, so that
// two of its events handled at once record what GitHub said last.
func (e *Engine) installationNow(ctx context.Context, ev InstallationEvent) (string, error) {
	unlock := e.lockInstallation(ev.InstallationID)
	now, err := e.GitHub.Installation(ctx, ev.InstallationID)
	if errors.Is(err, ErrNotFound) {
		unlock()
		if ev.Action == InstallationCreated || ev.Action == RepositoriesAdded {
			// GitHub may not show an installation just made yet: not
			// taken for an uninstallation (its deletion's delivery says
			// so when there is one).
			return happened(ev) + ": GitHub does not have the installation (not yet, or no longer): nothing recorded", nil
		}
		what, err := e.gone(ctx, ev.InstallationID)
		return happened(ev) + ", delivered late: " + what, err
	}
	defer unlock()
	if err != nil {
		return "", fmt.Errorf("read installation %d on GitHub: %w", ev.InstallationID, err)
	}
	return e.recordInstallation(ctx, ev, now)
}

// recordInstallation records what GitHub says of an installation now
// after ev (see installationNow, whose lock the caller holds), and returns
// what became of it.
func (e *Engine) recordInstallation(ctx context.Context, ev InstallationEvent, now InstallationState) (string, error) {
	what := happened(ev)
	was, err := e.installationState(ctx, ev.InstallationID)
	if err != nil {
		return "", err
	}
	if now.Account == "" {
		now.Account = ev.Account
	}
	if now.State == InstallationActive {
		now.Since, now.By = ev.At, ""
		if ev.Action != InstallationSuspend {
			now.By = ev.Sender
		}
		// Caught up before it is recorded active: a failure leaves it
		// recorded suspended, for this delivery's next attempt — or the
		// sweep (RecheckSuspended) — to catch up again.
		if ev.Action == InstallationUnsuspend || was == InstallationSuspended {
			if err := e.catchUp(ctx, ev.InstallationID); err != nil {
				return "", err
			}
		}
	}
	woken, err := e.Store.SetInstallation(ctx, now)
	if err != nil {
		return "", err
	}
	if now.State == InstallationSuspended {
		what := fmt.Sprintf("installation %d (%s) suspended%s at %s: its deliveries wait until it is unsuspended; its releases stay where they are",
			ev.InstallationID, orUnknown(now.Account), by(now.By), now.Since.UTC().Format(time.RFC3339))
		if ev.Action != InstallationSuspend {
			what += fmt.Sprintf(" (%s%s, delivered late: GitHub says the installation is suspended)", ev.Action.done(), by(ev.Sender))
		}
		e.Log.WarnContext(ctx, "the lastmile App's installation is suspended: its deliveries wait until it is unsuspended",
			"installation", ev.InstallationID, "account", now.Account, "by", now.By, "since", now.Since)
		return what, nil
	}
	if ev.Action == InstallationSuspend {
		what += " (delivered late: GitHub says it is active)"
	}
	if woken > 0 {
		e.Log.InfoContext(ctx, "the lastmile App's installation is active: its waiting deliveries are due again",
			"installation", ev.InstallationID, "action", ev.Action, "by", ev.Sender, "deliveries", woken)
		what += fmt.Sprintf("; %d waiting deliveries are due again", woken)
	}
	return what, nil
}

// happened says what an installation event said, for a delivery's note.
func happened(ev InstallationEvent) string {
	return fmt.Sprintf("installation %d (%s) %s%s", ev.InstallationID, orUnknown(ev.Account), ev.Action.done(), by(ev.Sender))
}

// done is the action as a note says it happened, "… by LOGIN": GitHub
// names suspend and unsuspend in the present tense, the others (created,
// deleted, added, removed) in the past.
func (a InstallationAction) done() string {
	switch a {
	case InstallationSuspend, InstallationUnsuspend:
		return string(a) + "ed"
	}
	return string(a)
}

// RecheckSuspended asks GitHub about the installations lastmile recorded
// as suspended, and records those it finds active again as unsuspended
// (installationNow): the unsuspension's delivery may never come (lastmile
// was down longer than GitHub keeps deliveries to be asked for again). One
// that GitHub no longer has was uninstalled meanwhile, its deletion's
// delivery lost as well: it is recorded uninstalled, its repositories
// leave lastmile, and it is not asked about again. It returns how many it
// found active or gone.
func (e *Engine) RecheckSuspended(ctx context.Context) (int, error) {
	ids, err := e.Store.InstallationsIn(ctx, InstallationSuspended)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, id := range ids {
		what, err := e.recheck(ctx, id)
		if err != nil {
			errs = append(errs, fmt.Errorf("installation %d: %w", id, err))
		}
		if what != "" {
			n++
			e.Log.WarnContext(ctx, "an installation recorded as suspended is no longer suspended on GitHub", "installation", id, "note", what)
		}
	}
	return n, errors.Join(errs...)
}

// recheck asks GitHub about an installation recorded as suspended and, if
// it is active, records it unsuspended, or, if GitHub no longer has it,
// uninstalled; it returns what became of it ("": suspended still).
func (e *Engine) recheck(ctx context.Context, id int64) (string, error) {
	unlock := e.lockInstallation(id)
	now, err := e.GitHub.Installation(ctx, id)
	if errors.Is(err, ErrNotFound) {
		unlock()
		return e.gone(ctx, id)
	}
	defer unlock()
	if err != nil || now.State != InstallationActive {
		return "", err
	}
	return e.recordInstallation(ctx, InstallationEvent{InstallationID: id, Account: now.Account, Action: InstallationUnsuspend, At: e.Now()}, now)
}

// gone records as uninstalled an installation that GitHub no longer has,
// as its deletion's delivery would (uninstalled), and returns what became
// of it.
func (e *Engine) gone(ctx context.Context, id int64) (string, error) {
	was, err := e.Store.Installation(ctx, id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return "", err
	}
	err = e.uninstalled(ctx, InstallationEvent{InstallationID: id, Account: was.Account, Action: InstallationDeleted, At: e.Now()})
	var ignored *Ignored
	if errors.As(err, &ignored) {
		return "GitHub no longer has it: " + ignored.Reason, nil
	}
	return "", err
}

// repositoriesMoved acts on repositories removed from an installation, or
// added to one (also by the App's installation: those a created
// installation lists), as GitHub says they stand now: a repository that no
// installation of the App reaches any more leaves lastmile; one that an
// installation reaches (added back since it was removed, or transferred to
// another account where the App is installed) is recorded as reached
// through it, and its releases go on. Only repositories lastmile knows
// cost a question to GitHub. Repositories added also say that the
// installation is there: GitHub sends a suspended installation no events.
func (e *Engine) repositoriesMoved(ctx context.Context, ev InstallationEvent) error {
	var notes []string
	if ev.Action != RepositoriesRemoved {
		what, err := e.installationNow(ctx, ev)
		if err != nil {
			return err
		}
		notes = append(notes, what)
	}
	known, err := e.Store.Repos(ctx, repoIDs(ev.Repos))
	if err != nil {
		return err
	}
	var gone, moved []Repo
	for _, r := range known {
		named := ev.Repos[slices.IndexFunc(ev.Repos, func(x Repo) bool { return x.ID == r.ID })]
		inst, err := e.GitHub.RepoInstallation(ctx, named)
		switch {
		case errors.Is(err, ErrNotFound):
			// Also when recorded detached already: an earlier attempt
			// that failed midway (departing is harmless to do again).
			gone = append(gone, r)
		case err != nil:
			return fmt.Errorf("read the installation of %s on GitHub: %w", named.FullName(), err)
		case inst != r.InstallationID:
			r.InstallationID = inst
			moved = append(moved, r)
		}
	}
	// Recorded as reached through no installation first: a push handled
	// meanwhile records no release (Store.RecordRelease), or records it
	// before, for the departure to stop; and its deliveries still in the
	// inbox, whose calls GitHub now refuses, are ignored rather than
	// retried until dead (see app.Worker).
	at := e.Now()
	for _, r := range gone {
		if err := e.Store.DetachRepo(ctx, r.ID, at); err != nil {
			return err
		}
		e.saved.Delete(r.ID)
	}
	reason := "superseded: the repository was removed from lastmile's installation" + by(ev.Sender)
	if err := e.departAll(ctx, gone, reason); err != nil {
		return err
	}
	for _, r := range moved {
		if err := e.Store.AttachRepo(ctx, r.ID, r.InstallationID, at); err != nil {
			return err
		}
		e.saved.Delete(r.ID)
	}
	if len(gone) > 0 {
		e.Log.WarnContext(ctx, "repositories were removed from the lastmile App's installation: they left lastmile",
			"installation", ev.InstallationID, "account", ev.Account, "by", ev.Sender, "repos", names(gone))
	}
	verb := "removed from"
	switch ev.Action {
	case RepositoriesAdded:
		verb = "added to"
	case InstallationCreated:
		verb = "of the new"
	}
	note := fmt.Sprintf("repositories %s installation %d%s: %s", verb, ev.InstallationID, by(ev.Sender), strings.Join(names(ev.Repos), ", "))
	if ev.Action == RepositoriesRemoved || len(gone) > 0 {
		note += "; " + left(gone)
	}
	for _, r := range moved {
		note += fmt.Sprintf("; %s is reached through installation %d", r.FullName(), r.InstallationID)
	}
	return &Ignored{Reason: strings.Join(append(notes, note), "; ")}
}

// catchUp reads back, after a suspension, what happened meanwhile in the
// installation's repositories: GitHub sent no webhooks while it was
// suspended, and sends none of them later, so a deploy approved and run
// during the suspension, a run that ended without a result (rejected,
// cancelled), or a required context that turned green would otherwise
// never be heard of, and its release wait for good. Every repository is
// read back; the failures are returned together, for the handling to be
// tried again (reading back again is harmless).
func (e *Engine) catchUp(ctx context.Context, installationID int64) error {
	repos, err := e.Store.InstallationRepos(ctx, installationID)
	if err != nil {
		return err
	}
	var errs []error
	for _, repo := range repos {
		err := e.catchUpRepo(ctx, repo)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if gone, lerr := e.unreachable(ctx, repo); lerr == nil && gone {
			continue
		}
		errs = append(errs, fmt.Errorf("after the unsuspension, read back %s: %w", repo.FullName(), err))
	}
	return errors.Join(errs...)
}

// unreachable reports whether the App no longer reaches a repository
// through its installation, as GitHub says now — deleted, removed from
// the installation (GitHub sent no webhook of it while the installation
// was suspended), or transferred — and if so has it leave lastmile, or
// records it under the installation that reaches it now. Its catch-up
// failing then fails nothing: there is nothing left to catch up with, or
// its next event will.
func (e *Engine) unreachable(ctx context.Context, repo Repo) (bool, error) {
	inst, err := e.GitHub.RepoInstallation(ctx, repo)
	switch {
	case errors.Is(err, ErrNotFound):
		e.Log.WarnContext(ctx, "after the unsuspension: no installation of the App reaches the repository any more: it leaves lastmile", "repo", repo.FullName())
		// Detached first, as repositoriesMoved does: a push handled
		// meanwhile records no release, or records it for depart to stop.
		if err := e.Store.DetachRepo(ctx, repo.ID, e.Now()); err != nil {
			return false, err
		}
		e.saved.Delete(repo.ID)
		return true, e.depart(ctx, repo, "superseded: no installation of the lastmile App reaches the repository any more")
	case err != nil:
		return false, err
	case inst != repo.InstallationID:
		e.saved.Delete(repo.ID)
		return true, e.Store.AttachRepo(ctx, repo.ID, inst, e.Now())
	}
	return false, nil
}

// catchUpRepo reads back a repository's deployments that its releases
// wait on: their statuses, then the runs of those still without a result
// (a run that ended is handled as its workflow_run completed event would
// have been); and has the releases waiting for required contexts try
// again. Then promotion goes on.
func (e *Engine) catchUpRepo(ctx context.Context, repo Repo) error {
	unfinished := func() ([]*Deployment, error) {
		state, err := e.Store.RepoState(ctx, repo.ID)
		if err != nil {
			return nil, err
		}
		var out []*Deployment
		for _, p := range state.Active {
			for _, d := range p.ByStage {
				if d.GitHubID != 0 && !d.State.Terminal() {
					out = append(out, d)
				}
			}
		}
		return out, nil
	}
	ds, err := unfinished()
	if err != nil {
		return err
	}
	read := ds
	for _, d := range ds {
		if err := e.recordFromGitHub(ctx, repo, d, 0); err != nil {
			return err
		}
	}
	if ds, err = unfinished(); err != nil {
		return err
	}
	var ended []WorkflowRun
	for _, d := range ds {
		if d.RunID == 0 || slices.ContainsFunc(ended, func(r WorkflowRun) bool { return r.RunID == d.RunID }) {
			continue
		}
		run, err := e.GitHub.WorkflowRun(ctx, repo, d.RunID)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read workflow run %d: %w", d.RunID, err)
		}
		if run.Status == "completed" {
			run.Action = "completed"
			ended = append(ended, run)
		}
	}
	for _, run := range ended {
		if err := e.HandleWorkflowRun(ctx, run); err != nil {
			return err
		}
	}
	work, err := e.Store.Work(ctx, repo.ID)
	if err != nil {
		return err
	}
	for _, d := range work {
		if d.State == DeploymentWaiting {
			if _, err := e.Store.Resume(ctx, repo.ID, d.SHA); err != nil {
				return err
			}
		}
	}
	if err := e.advance(ctx, repo); err != nil {
		return err
	}
	// A protection-rule request that waited for a deployment read back
	// is answered now, as a deployment_status would have had it.
	var answered []string
	for _, d := range read {
		if slices.Contains(answered, d.SHA) {
			continue
		}
		answered = append(answered, d.SHA)
		if err := e.answerWaitingProtectionRules(ctx, repo, d.SHA); err != nil {
			return err
		}
	}
	return nil
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
