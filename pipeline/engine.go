package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Engine carries releases through their environments. Its Handle methods
// take one event each; the worker calls them one at a time per repository,
// so a repository's events are judged in the order GitHub sent them.
//
// Every handler first records what happened, then calls advance, which
// plans from the ledger (Plan) and sends GitHub what the plan needs. Because
// advance works from the ledger rather than from the event, a handler
// interrupted at any point (a killed process, a GitHub outage) is finished
// by handling the same delivery again.
type Engine struct {
	Store  Store
	GitHub GitHub
	Log    *slog.Logger
	Now    func() time.Time
	// DeployLogMaxBytes bounds the deploy job log kept per job.
	DeployLogMaxBytes int

	saved sync.Map // repository ID → the Repo last saved by this process
	// branchReads: repository ID → when this process last read the
	// configuration on the default branch to learn the pipeline branch.
	branchReads sync.Map
	// advancing: repository ID → the mutex advance holds. The worker
	// handles one delivery of a repository at a time, but the periodic
	// sweep (AdvanceReleased) advances releases beside it: without the
	// lock a repository could be advanced twice at once (and a deployment
	// created twice).
	advancing keyedLocks
	// installing: installation ID → the mutex held while its state is
	// read from GitHub and recorded.
	installing keyedLocks
	// advanceWaits, if set (by tests), is called when advance has to wait
	// for another advance of the same repository.
	advanceWaits func()
	// resend paces the protection-rule answers (by decision ID) the sweep
	// sends again after their sending failed (AnswerUnpostedProtectionRules),
	// owing the repositories it advances for work no delivery sees to
	// (AdvanceOwing).
	resend, owing pacer
}

// branchReadInterval bounds how often a push to another branch makes
// lastmile read a repository's configuration on its default branch.
const branchReadInterval = 10 * time.Minute

// saveRepo records a repository (its name and installation may change),
// once per process unless it changed.
func (e *Engine) saveRepo(ctx context.Context, r Repo, at time.Time) error {
	if saved, ok := e.saved.Load(r.ID); ok && saved.(Repo) == r {
		return nil
	}
	if err := e.Store.SaveRepo(ctx, r, at); err != nil {
		return err
	}
	e.saved.Store(r.ID, r)
	return nil
}

// followsDefault reports whether the repository's pipeline follows its
// default branch, known as known: its latest release with a valid
// configuration is of that branch, and that configuration names no branch
// — releases of an invalid one since (on the renamed branch, say) tell
// nothing of the branch. (A push to known that named another since,
// moving the pipeline there, recorded no release: the latest is then of
// known still, but known is no longer its branch.)
func (e *Engine) followsDefault(ctx context.Context, repoID int64, known string) (bool, error) {
	rel, err := e.Store.LatestConfigured(ctx, repoID)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return rel.Ref == "refs/heads/"+known && rel.Config != nil && rel.Config.Branch == "", nil
}

// Reaching is the installation through which to call GitHub for an event
// of repository repoID, delivery guid, received at received through
// installation inst: the one recorded as reaching the repository when it
// was recorded after the event was received — the repository moved to
// another installation (transferred to another account) while the event
// waited in the inbox, and through inst GitHub answers 404 —; inst
// otherwise (also when the repository was detached: the worker ignores
// such events). A delivery lastmile asked GitHub to redeliver (its first
// attempts failed) arrives long after its event: it goes by GitHub's first
// attempt to deliver it, which lastmile recorded with its request.
func (e *Engine) Reaching(ctx context.Context, repoID, inst int64, guid string, received time.Time) (int64, error) {
	rec, since, err := e.Store.RecordedInstallation(ctx, repoID)
	if err != nil {
		return 0, err
	}
	if rec == 0 || rec == inst {
		return inst, nil
	}
	if !since.After(received) && guid != "" {
		first, err := e.Store.FirstAttempt(ctx, guid)
		if err != nil {
			return 0, err
		}
		if !first.IsZero() && first.Before(received) {
			received = first
		}
	}
	if since.After(received) {
		return rec, nil
	}
	return inst, nil
}

// learnPipelineBranch reads the configuration on the default branch, for a
// push to another branch of a repository whose pipeline branch lastmile has
// not learned yet (no push to its default branch seen since it was
// enrolled, or since lastmile was installed): a `branch:` there makes that
// push a release. At most once per branchReadInterval per repository, so
// that pushes to the feature branches of repositories that are not
// enrolled do not cost a GitHub call each. It returns "" when nothing was
// learned.
func (e *Engine) learnPipelineBranch(ctx context.Context, p Push) (string, error) {
	now := e.Now()
	if last, ok := e.branchReads.Load(p.Repo.ID); ok && now.Sub(last.(time.Time)) < branchReadInterval {
		return "", nil
	}
	data, err := e.GitHub.ReadFile(ctx, p.Repo, ConfigPath, p.DefaultBranch)
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrUnknownCommit) || errors.Is(err, ErrTooLarge) || errors.Is(err, ErrNotAFile) {
		e.branchReads.Store(p.Repo.ID, now)
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s on %s: %w", ConfigPath, p.DefaultBranch, err)
	}
	e.branchReads.Store(p.Repo.ID, now)
	cfg, err := ParseConfig(data)
	if err != nil {
		return "", nil // reported on the default branch's own pushes
	}
	target := cfg.PipelineBranch(p.DefaultBranch)
	if err := e.Store.SetPipelineBranch(ctx, p.Repo.ID, target, ""); err != nil {
		return "", err
	}
	return target, nil
}

// Ignored is returned by handlers for events that lastmile records but does
// not act on; the delivery is done, with the reason as its note — or, for a
// push of a repository that is not enrolled, ignored, as the specification
// records it.
type Ignored struct {
	Reason string
	// NotEnrolled says the repository has no configuration at the pushed
	// commit: the push is recorded as ignored.
	NotEnrolled bool
}

func (e *Ignored) Error() string { return "ignored: " + e.Reason }

// DeliveryState is the state the delivery is recorded in: ignored for a
// push of a repository that is not enrolled, done otherwise.
func (e *Ignored) DeliveryState() DeliveryState {
	if e.NotEnrolled {
		return DeliveryIgnored
	}
	return DeliveryDone
}

// LookAgain is returned by a handler that must see GitHub again shortly
// (its API has not caught up with an event yet): the delivery is retried at
// At, and the wait does not count towards making it dead.
type LookAgain struct {
	At     time.Time
	Reason string
}

func (e *LookAgain) Error() string { return "looking again shortly: " + e.Reason }

// HandlePush turns a push to the pipeline branch into a release.
func (e *Engine) HandlePush(ctx context.Context, p Push) error {
	branch, isBranch := strings.CutPrefix(p.Ref, "refs/heads/")
	if !isBranch {
		return &Ignored{Reason: "push to " + p.Ref + " is not a branch"}
	}
	if !p.Deleted {
		if err := e.saveRepo(ctx, p.Repo, p.PushTime()); err != nil {
			return err
		}
	}
	// A push made before its repository moved to another installation
	// (transferred to another account: the installation events, handled
	// first, recorded the one that reaches it now, and SaveRepo kept it)
	// is read through that one: through the push's, GitHub would answer
	// 404, taken for the configuration removed (or, for a deletion, for
	// the branch no longer holding a commit).
	if inst, since, err := e.Store.RecordedInstallation(ctx, p.Repo.ID); err != nil {
		return err
	} else if inst != 0 && inst != p.Repo.InstallationID {
		// The store holds another than the push's: saved again at the
		// next push, which may be one made after a transfer back.
		e.saved.Delete(p.Repo.ID)
		// Recorded since the push was made (the store's times are whole
		// milliseconds; SaveRepo keeps the one recorded the same
		// millisecond), or the push's time not known: the recorded one.
		if pushed := p.PushTime(); pushed.IsZero() || !since.Before(pushed.Truncate(time.Millisecond)) {
			p.Repo.InstallationID = inst
		}
	}
	if p.Deleted {
		if err := e.branchDeleted(ctx, p, branch); err != nil {
			return err
		}
		return &Ignored{Reason: "branch " + branch + " was deleted"}
	}
	known, err := e.Store.PipelineBranch(ctx, p.Repo.ID)
	if err != nil {
		return err
	}
	if known == "" && branch != p.DefaultBranch {
		if known, err = e.learnPipelineBranch(ctx, p); err != nil {
			return err
		}
	}
	if branch != p.DefaultBranch && branch != known {
		return &Ignored{Reason: "push to " + branch + ", not the pipeline branch"}
	}
	data, err := e.GitHub.ReadFile(ctx, p.Repo, ConfigPath, p.After)
	if errors.Is(err, ErrUnknownCommit) {
		// Not "no configuration": GitHub, its API not caught up with the
		// push yet, does not show the commit. Read again shortly; later
		// on, the delivery fails and is retried (and parked as dead in
		// the end), rather than taking the repository out of lastmile.
		if e.Now().Sub(p.PushedAt) < staleRefWindow {
			return &LookAgain{At: e.Now().Add(staleRefRetry),
				Reason: fmt.Sprintf("GitHub does not show %s yet, pushed to %s", short(p.After), branch)}
		}
		return fmt.Errorf("read %s at %s: %w", ConfigPath, short(p.After), err)
	}
	// The default branch renamed (or another made the default) while the
	// configuration names no branch: its pushes are the pipeline's, the
	// pipeline branch known the old default's name until a valid
	// configuration moves it.
	onPipeline := branch == known
	if !onPipeline && known != "" && branch == p.DefaultBranch {
		follows, ferr := e.followsDefault(ctx, p.Repo.ID, known)
		if ferr != nil {
			return ferr
		}
		onPipeline = follows
	}
	if errors.Is(err, ErrNotFound) {
		if onPipeline {
			if err := e.leave(ctx, p); err != nil {
				return err
			}
		}
		return &Ignored{Reason: "repository not enrolled: no " + ConfigPath + " at " + short(p.After), NotEnrolled: true}
	}
	if err != nil && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrNotAFile) {
		return fmt.Errorf("read %s at %s: %w", ConfigPath, short(p.After), err)
	}
	rel := &Release{Repo: p.Repo, SHA: p.After, Ref: p.Ref, Pusher: p.Pusher, PushedAt: p.PushedAt, DeliveryID: p.DeliveryID}
	var cfg *Config
	var cfgErr error
	// Too large, or no regular file: an invalid file, said on the commit
	// like any other (trying again would read the same).
	switch {
	case errors.Is(err, ErrTooLarge):
		cfgErr = &ConfigError{Msg: "the file is " + ErrTooLarge.Error() + ": it must be smaller"}
	case err != nil:
		cfgErr = &ConfigError{Msg: "the file is " + strings.TrimPrefix(err.Error(), ConfigPath+": ") + ": it must be a file of the commit itself"}
	default:
		cfg, cfgErr = ParseConfig(data)
	}
	if cfgErr == nil {
		rel.Config = cfg
		target, err := e.movePipelineBranch(ctx, p, known, cfg.PipelineBranch(p.DefaultBranch))
		if err != nil {
			return err
		}
		if branch != target {
			return &Ignored{Reason: "push to " + branch + ", the pipeline branch is " + target}
		}
	}
	if cfgErr != nil && known != "" && !onPipeline {
		// An invalid file pushed to the default branch while the pipeline
		// branch is another: said on the commit, but it is no release of
		// the pipeline, which goes on as it was.
		e.Log.WarnContext(ctx, "invalid repository configuration, not on the pipeline branch", "repo", p.Repo.FullName(), "sha", p.After,
			"branch", branch, "pipeline_branch", known, "error", cfgErr)
		return e.configStatus(ctx, p, cfgErr)
	}
	commits, err := e.releaseCommits(ctx, p, rel)
	if err != nil {
		return err
	}
	// Parent 0: the push did not move the branch forward from the latest
	// release — a force push, the branch created again, or history that a
	// push lastmile did not hear of rewrote (compare says diverged).
	rewritten := rel.ParentID == 0
	if cfgErr != nil {
		rel.State, rel.StopKind, rel.StopReason = ReleaseStopped, StopConfigError, cfgErr.Error()
		if _, err := e.recordRelease(ctx, p, rel, commits); err != nil {
			return err
		}
		e.Log.WarnContext(ctx, "invalid repository configuration", "repo", p.Repo.FullName(), "sha", p.After, "error", cfgErr)
		if rewritten {
			if err := e.withdrawRewritten(ctx, p, rel); err != nil {
				return err
			}
			if err := e.advance(ctx, p.Repo); err != nil {
				return err
			}
		}
		return e.configStatus(ctx, p, cfgErr)
	}
	rel.State = ReleaseActive
	created, err := e.recordRelease(ctx, p, rel, commits)
	if err != nil {
		return err
	}
	if created {
		e.Log.InfoContext(ctx, "release recorded", "repo", p.Repo.FullName(), "release", rel.ID, "sha", p.After,
			"commits", len(commits), "environments", len(cfg.Environments))
	}
	if rewritten {
		if err := e.withdrawRewritten(ctx, p, rel); err != nil {
			return err
		}
	}
	return e.advance(ctx, p.Repo)
}

// recordRelease records push p's release. A store that refuses it
// (ErrUnreachable: the repository is recorded as no longer reached) is
// told the push's installation again first, as saveRepo would have told
// it had its cache not stood in the way — the repository may have been
// added back since (its event lost, or not yet handled), which a push made
// after the removal says — and asked again. Refused again, the push came
// while, or before, the repository left lastmile: it is ignored, saying so.
func (e *Engine) recordRelease(ctx context.Context, p Push, rel *Release, commits []Commit) (bool, error) {
	created, err := e.Store.RecordRelease(ctx, rel, commits)
	if !errors.Is(err, ErrUnreachable) {
		return created, err
	}
	e.saved.Delete(p.Repo.ID)
	if err := e.saveRepo(ctx, p.Repo, p.PushTime()); err != nil {
		return false, err
	}
	created, err = e.Store.RecordRelease(ctx, rel, commits)
	if errors.Is(err, ErrUnreachable) {
		e.saved.Delete(p.Repo.ID)
		return false, &Ignored{Reason: fmt.Sprintf("push of %s to %s not released: %v", short(p.After), p.Repo.FullName(), err)}
	}
	return created, err
}

// movePipelineBranch records the pipeline branch that the configuration
// of push p names, and returns the pipeline branch. A push that would move
// the pipeline from the branch known must not come from before the commit
// that moved it there: one delivered late (out of order, or redelivered)
// carries an older configuration, and must not take the pipeline back —
// the push that followed it named the branch that holds. (Whether the
// push's own branch has moved on since says nothing: a push right after it
// may not have been handled yet.)
func (e *Engine) movePipelineBranch(ctx context.Context, p Push, known, target string) (string, error) {
	if known != "" && target != known {
		_, source, err := e.Store.PipelineBranchSource(ctx, p.Repo.ID)
		if err != nil {
			return "", err
		}
		if source != "" && source != p.After {
			rel, err := e.GitHub.Relation(ctx, p.Repo, p.After, source)
			if err != nil && !errors.Is(err, ErrNotFound) {
				return "", fmt.Errorf("compare %s...%s: %w", short(p.After), short(source), err)
			}
			late := err == nil && rel == "ahead"
			if err == nil && rel == "diverged" {
				// On another line of history than the commit that set it
				// (a push to another branch): late if its own branch has
				// moved on past it.
				branch := strings.TrimPrefix(p.Ref, "refs/heads/")
				own, err := e.GitHub.Relation(ctx, p.Repo, p.After, branch)
				if err != nil && !errors.Is(err, ErrNotFound) {
					return "", fmt.Errorf("compare %s...%s: %w", short(p.After), branch, err)
				}
				late = err == nil && own == "ahead"
			}
			if late {
				e.Log.InfoContext(ctx, "pipeline branch kept: the push naming another came before the commit that set it", "repo", p.Repo.FullName(),
					"sha", p.After, "pipeline_branch", known, "set_at", source, "named", target)
				return known, nil
			}
		}
	}
	if err := e.Store.SetPipelineBranch(ctx, p.Repo.ID, target, p.After); err != nil {
		return "", err
	}
	return target, nil
}

// configStatus says on the pushed commit what is wrong with its
// configuration, in the 140 characters GitHub keeps of a description:
// what is wrong first, the file's text shortened (ConfigError.Description).
// The log and the release's record keep the whole message.
func (e *Engine) configStatus(ctx context.Context, p Push, cfgErr error) error {
	desc := truncate(cfgErr.Error(), 140)
	var ce *ConfigError
	if errors.As(cfgErr, &ce) {
		desc = ce.Description(140)
	}
	return e.GitHub.CreateCommitStatus(ctx, p.Repo, p.After, CommitStatus{
		Context: "lastmile/config", State: "failure", Description: desc,
	})
}

// withdrawRewritten stops the releases still on their way whose commit a
// force push took off the branch (a rollback, or rewritten history; also
// one lastmile did not hear of, found by the next push): what the branch
// no longer holds is not deployed any further.
func (e *Engine) withdrawRewritten(ctx context.Context, p Push, rel *Release) error {
	branch := strings.TrimPrefix(p.Ref, "refs/heads/")
	moved := fmt.Sprintf("a force push moved %s to %s", branch, short(p.After))
	switch {
	case p.Forced:
	case p.Before == zeroSHA:
		moved = fmt.Sprintf("%s was deleted and created again at %s", branch, short(p.After))
	default:
		moved = fmt.Sprintf("%s was rewritten by a push lastmile did not hear of, and is now at %s", branch, short(p.After))
	}
	return e.withdraw(ctx, p.Repo, maxRevivable, func(r *Release) (string, error) {
		if r.ID >= rel.ID || r.SHA == p.After {
			return "", nil
		}
		status, err := e.GitHub.Relation(ctx, p.Repo, r.SHA, p.After)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return "", fmt.Errorf("compare %s...%s: %w", short(r.SHA), short(p.After), err)
		}
		if err == nil && (status == "ahead" || status == "identical") {
			return "", nil
		}
		if r.Ref != "" && r.Ref != p.Ref && !p.Forced && p.Before != zeroSHA {
			// Released from another branch: the configuration moved the
			// pipeline to this one, which does not hold it.
			return fmt.Sprintf("superseded: the pipeline branch is now %s, at %s, which does not contain %s (released from %s)",
				branch, short(p.After), short(r.SHA), strings.TrimPrefix(r.Ref, "refs/heads/")), nil
		}
		return fmt.Sprintf("superseded: %s, which does not contain %s", moved, short(r.SHA)), nil
	})
}

// branchDeleted stops the releases on their way when the push deleted
// the pipeline branch: what no branch holds is not deployed any further,
// as after a force push. A release whose commit the branch holds again
// (created again since, the deletion delivered late) goes on.
func (e *Engine) branchDeleted(ctx context.Context, p Push, branch string) error {
	known, err := e.Store.PipelineBranch(ctx, p.Repo.ID)
	if err != nil || known != branch {
		return err
	}
	if p.Before != "" && p.Before != zeroSHA && e.Now().Sub(p.PushedAt) < staleRefWindow {
		// GitHub, its ref read from a replica that has not caught up, may
		// still show the branch where this push deleted it: every release
		// would look held.
		if rel, err := e.GitHub.Relation(ctx, p.Repo, p.Before, branch); err == nil && rel == "identical" {
			return &LookAgain{At: e.Now().Add(staleRefRetry),
				Reason: fmt.Sprintf("GitHub still shows %s at %s, where this push deleted it", branch, short(p.Before))}
		}
	}
	err = e.withdraw(ctx, p.Repo, maxRevivable, func(r *Release) (string, error) {
		status, err := e.GitHub.Relation(ctx, p.Repo, r.SHA, branch)
		switch {
		case errors.Is(err, ErrNotFound):
			return fmt.Sprintf("superseded: the pipeline branch %s was deleted", branch), nil
		case err != nil:
			return "", fmt.Errorf("compare %s...%s: %w", short(r.SHA), branch, err)
		case status == "ahead" || status == "identical":
			return "", nil
		}
		return fmt.Sprintf("superseded: the pipeline branch %s was deleted, and created again without %s", branch, short(r.SHA)), nil
	})
	if err != nil {
		return err
	}
	return e.advance(ctx, p.Repo)
}

// leave handles a push that removed the configuration from the pipeline
// branch: the repository leaves lastmile. The push is noted (an older push
// delivered after it must not deploy over it) and the repository's
// environments are retired, so dashboards and alerts forget them — unless
// a newer push was handled already, or, when that cannot be told from the
// push times (its own is not known, or a push of unknown time was received
// after it was made), the branch no longer points at it.
func (e *Engine) leave(ctx context.Context, p Push) error {
	marks, err := e.Store.NotePush(ctx, p.Repo.ID, p.PushedAt, p.PushedAtGuessed)
	if err != nil || p.PushedAt.Before(marks.NewestKnown) {
		return err
	}
	if p.PushedAtGuessed || p.PushedAt.Before(marks.Newest) {
		branch := strings.TrimPrefix(p.Ref, "refs/heads/")
		rel, err := e.GitHub.Relation(ctx, p.Repo, p.After, branch)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("compare %s...%s: %w", short(p.After), branch, err)
		}
		if rel != "identical" {
			return nil
		}
	}
	if err := e.Store.RetireEnvironments(ctx, p.Repo.ID); err != nil {
		return err
	}
	// Nothing is deployed for a repository that left: its releases still
	// on their way stop where they are, and those a re-run could carry
	// on (all of them: this costs GitHub nothing).
	err = e.withdraw(ctx, p.Repo, -1, func(*Release) (string, error) {
		return fmt.Sprintf("superseded: %s was removed at %s, and the repository left lastmile", ConfigPath, short(p.After)), nil
	})
	if err != nil {
		return err
	}
	return e.advance(ctx, p.Repo)
}

// releaseCommits lists the commits a push brings since the previous release:
// from the payload when it is complete and follows the previous release,
// otherwise from the compare API. It sets rel's ParentID — the previous
// release when the push moved the branch forward from it, else 0 — and
// Base, the commit the commits are counted from: the previous release's,
// or (the repository's first release) the push's before; a first release
// from a push that created the branch is a Baseline, its commits the
// branch's whole history. A push of a commit the previous release already
// contains (delivered late, not forced) is Ignored.
func (e *Engine) releaseCommits(ctx context.Context, p Push, rel *Release) ([]Commit, error) {
	prev, err := e.Store.LatestRelease(ctx, p.Repo.ID)
	if errors.Is(err, ErrNotFound) {
		prev = nil
	} else if err != nil {
		return nil, err
	}
	// Noted even when it makes no release (a force push back to the
	// latest release's commit): a push made before it and delivered after
	// it must not be taken for the branch's new head. A push whose time is
	// not known is noted at its receipt (never earlier than the push), and
	// always checked; only pushes of known time make a push overtaken
	// (the receipt may be long after the push).
	marks, err := e.Store.NotePush(ctx, p.Repo.ID, p.PushedAt, p.PushedAtGuessed)
	if err != nil {
		return nil, err
	}
	if prev == nil {
		if p.Before == zeroSHA {
			// The push created the branch: its commits are the branch's
			// history, however old (a new repository pushed, or one
			// imported), which lead time must not count as delivered now.
			rel.Baseline = true
			return p.Commits, nil
		}
		rel.Base = p.Before
		if (p.Listed() && !p.Forced) || p.Before == "" {
			return p.Commits, nil // the first release (of a truncated list without before: best known)
		}
		// A list cut short or empty, or a force push, which may have
		// replaced the branch's history: GitHub's comparison tells.
		cmp, err := e.GitHub.Compare(ctx, p.Repo, p.Before, p.After)
		if errors.Is(err, ErrComparisonTooLarge) || errors.Is(err, ErrNotFound) && e.showsCommit(ctx, p) {
			// No common ancestor: the push replaced the branch's history
			// (see below), and lists what it brings; or it brought a
			// history too long to list, taken alike.
			rel.Base, rel.Baseline = "", true
			return p.Commits, nil
		}
		if err != nil {
			return nil, fmt.Errorf("compare %s...%s: %w", short(p.Before), short(p.After), err)
		}
		return cmp.Commits, nil
	}
	rel.Base = prev.SHA
	if prev.SHA == p.After && (!prev.Withdrawn() || prev.DeliveryID == p.DeliveryID) {
		rel.ParentID = prev.ParentID
		return p.Commits, nil // the same commit again: the release exists
	}
	if prev.SHA == p.After {
		// The latest release is of this very commit, withdrawn since (a
		// force push or a push lastmile did not release took it off the
		// branch, the branch was deleted, the configuration removed), and
		// this push puts the branch back on it: a rollback to it, released
		// again as one to an older commit is (bringing no commit) — while
		// the branch still points at it.
		if err := e.stillHead(ctx, p, p.PushedAt.Before(marks.NewestKnown)); err != nil {
			return nil, err
		}
		return nil, nil
	}
	checked := false
	if p.MovedAnywhere() || p.PushedAtGuessed || e.Now().Sub(p.PushedAt) > LatePush || p.PushedAt.Before(marks.Newest) {
		// A force push may move the branch back to a commit released
		// before, and a push delivered late (after a newer one, redelivered
		// by GitHub, retried by an operator, or long in the inbox) may be
		// one that a force push has since undone: either is deployed only
		// while the branch still points at its commit.
		if err := e.stillHead(ctx, p, p.PushedAt.Before(marks.NewestKnown)); err != nil {
			return nil, err
		}
		checked = true
	}
	if p.Listed() && !p.MovedAnywhere() && prev.SHA == p.Before {
		rel.ParentID = prev.ID
		return p.Commits, nil
	}
	cmp, err := e.GitHub.Compare(ctx, p.Repo, prev.SHA, p.After)
	if errors.Is(err, ErrComparisonTooLarge) || errors.Is(err, ErrNotFound) && e.showsCommit(ctx, p) {
		// GitHub finds no common ancestor of the latest release's commit
		// and the pushed one (or no longer has the former): the branch's
		// history was replaced by an unrelated one — an orphan branch
		// pushed over it, a history rewritten (git filter-repo). It is
		// deployed as a force push is, while the branch still points at
		// its commit. Its commits, those the push lists, are a new history
		// (rewritten ones keep their dates): kept for the audit, not
		// counted for lead time — only the commit pushed is, as for the
		// branch's first release. A comparison of more commits than
		// lastmile lists (a history imported or merged in whole) is taken
		// alike: what the push lists is kept, the commit pushed counted.
		if !checked {
			if err := e.stillHead(ctx, p, p.PushedAt.Before(marks.NewestKnown)); err != nil {
				return nil, err
			}
		}
		if !p.Truncated && !p.MovedAnywhere() {
			// A push that moved the branch forward, its list whole, after
			// a replacement lastmile did not hear of: its own commits are
			// known; only the history before it is new. Its list empty
			// (commits pushed before), they are those GitHub's comparison
			// of the push's own before and after lists, on the one history.
			rel.Base = p.Before
			if !p.Listed() && p.Before != "" {
				own, err := e.GitHub.Compare(ctx, p.Repo, p.Before, p.After)
				switch {
				case err == nil && own.Status == "ahead":
					return own.Commits, nil
				case err != nil && !errors.Is(err, ErrComparisonTooLarge) && !errors.Is(err, ErrNotFound):
					return nil, fmt.Errorf("compare %s...%s: %w", short(p.Before), short(p.After), err)
				}
			}
			return p.Commits, nil
		}
		rel.Base, rel.Baseline = "", true
		return p.Commits, nil
	}
	if err != nil {
		return nil, fmt.Errorf("compare %s...%s: %w", short(prev.SHA), short(p.After), err)
	}
	switch {
	case cmp.Status == "behind" && !p.MovedAnywhere():
		// The pushed commit is an ancestor of the latest release: its
		// delivery came late (GitHub redelivered it, or it waited in the
		// inbox). Deploying it now would go backwards. A rollback is a
		// force push (or the branch deleted and created again at an older
		// commit), and is deployed.
		return nil, &Ignored{Reason: fmt.Sprintf("push of %s came after release %d of %s, which already contains it: not deployed backwards",
			short(p.After), prev.ID, short(prev.SHA))}
	case cmp.Status == "ahead":
		rel.ParentID = prev.ID
		return cmp.Commits, nil
	case cmp.Status == "diverged" && !checked:
		// Not a force push, yet the latest release is not in its history:
		// a force push lastmile did not hear of (its delivery missed)
		// rewrote the branch before it — or this push came before one
		// that did, and is delivered after it. As a force push, it is
		// deployed only while the branch still points at its commit.
		if err := e.stillHead(ctx, p, p.PushedAt.Before(marks.NewestKnown)); err != nil {
			return nil, err
		}
	}
	return cmp.Commits, nil // history rewritten or rolled back
}

const zeroSHA = "0000000000000000000000000000000000000000"

// showsCommit reports whether GitHub shows the pushed commit, compared with
// its branch: when it does, a comparison of it that GitHub answers 404 is
// one across unrelated histories (or with a commit GitHub no longer has) —
// the push replaced the branch's history. When it does not (GitHub not
// caught up with the push yet, a repository it no longer lets lastmile
// read), the 404 says nothing of the kind, and the delivery is retried.
func (e *Engine) showsCommit(ctx context.Context, p Push) bool {
	_, err := e.GitHub.Relation(ctx, p.Repo, p.After, strings.TrimPrefix(p.Ref, "refs/heads/"))
	return err == nil
}

// LatePush is how long after it happened a push is handled before lastmile
// checks, before releasing it, that its commit is still the branch's head.
const LatePush = 10 * time.Minute

// stillHead returns an *Ignored unless the push's branch still points at
// its commit; overtaken: a newer push of the branch was handled already.
func (e *Engine) stillHead(ctx context.Context, p Push, overtaken bool) error {
	branch := strings.TrimPrefix(p.Ref, "refs/heads/")
	rel, err := e.GitHub.Relation(ctx, p.Repo, p.After, branch)
	fresh := !overtaken && e.Now().Sub(p.PushedAt) < staleRefWindow
	if (errors.Is(err, ErrNotFound) || err == nil && rel != "identical") && fresh && p.Before == zeroSHA {
		// This push created the branch (again): GitHub, its ref read from
		// a replica that has not caught up, may not show it yet, or show
		// it where it was before it was deleted.
		return &LookAgain{At: e.Now().Add(staleRefRetry),
			Reason: fmt.Sprintf("GitHub does not show %s at %s yet, where this push created it", branch, short(p.After))}
	}
	if errors.Is(err, ErrNotFound) {
		return &Ignored{Reason: fmt.Sprintf("push of %s to %s: the branch no longer exists or no longer contains it", short(p.After), branch)}
	}
	if err != nil {
		return fmt.Errorf("compare %s...%s: %w", short(p.After), branch, err)
	}
	if rel != "identical" && fresh && p.Before != zeroSHA && p.Before != "" {
		// GitHub may still show the branch where this very push, the
		// newest handled, moved it from: its ref read from a replica that
		// has not caught up. A rollback must not be lost to that.
		back, err := e.GitHub.Relation(ctx, p.Repo, p.Before, branch)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("compare %s...%s: %w", short(p.Before), branch, err)
		}
		if err == nil && back == "identical" {
			return &LookAgain{At: e.Now().Add(staleRefRetry),
				Reason: fmt.Sprintf("GitHub still shows %s at %s, from before this push to %s", branch, short(p.Before), short(p.After))}
		}
	}
	if rel != "identical" {
		return &Ignored{Reason: fmt.Sprintf("push of %s to %s came late: the branch no longer points at it (it is %s), so it is not deployed backwards",
			short(p.After), branch, rel)}
	}
	return nil
}

// staleRefWindow is how long after a push GitHub's view of the branch may
// still be the one from before it; lastmile looks again every
// staleRefRetry meanwhile (holding the repository's later deliveries).
const (
	staleRefWindow = 30 * time.Second
	staleRefRetry  = 5 * time.Second
)

// HandleDeployment records a `deployment` event: lastmile's own deployment
// (adopted if its creation answer was lost) or someone else's.
func (e *Engine) HandleDeployment(ctx context.Context, ev NewDeployment) error {
	d, err := e.deployment(ctx, ev.Repo, ev.Deployment)
	if err != nil {
		return err
	}
	if d != nil && d.Origin == OriginLastmile {
		// A run of the commit may have ended before lastmile knew this
		// deployment (the answer to its creation was lost): judge it now.
		orphaned, err := e.orphansWaiting(ctx, WorkflowRun{Repo: ev.Repo, HeadSHA: d.SHA}, nil)
		if err != nil {
			return err
		}
		if len(orphaned) > 0 {
			if err := e.Store.Apply(ctx, ev.Repo, []Action{notifyAction{orphaned}}); err != nil {
				return err
			}
		}
	}
	return e.advance(ctx, ev.Repo)
}

// deployment finds or records the deployment an event is about. A
// deployment lastmile did not create is linked to the workflow run GitHub
// says it is for (the event's workflow_run, or a workflow_job naming it),
// also when an earlier event that did not say so recorded it.
func (e *Engine) deployment(ctx context.Context, repo Repo, info DeploymentInfo) (*Deployment, error) {
	d, err := e.Store.Deployment(ctx, info.GitHubID)
	if err == nil {
		if d.Origin == OriginExternal && info.WorkflowRunID != 0 && (d.RunID == 0 || d.RunEvent == "" && info.WorkflowRunEvent != "") {
			if err := e.Store.LearnRun(ctx, d.ID, info.WorkflowRunID, info.WorkflowRunEvent); err != nil {
				return nil, err
			}
			return e.Store.Deployment(ctx, info.GitHubID)
		}
		return d, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	if m, ok := ParseMarker(info.Payload); ok {
		instance, err := e.Store.Instance(ctx)
		if err != nil {
			return nil, err
		}
		if m.Instance == instance {
			// Ours. Its creation may be being recorded right now by an
			// advance outside this repository's queue (the sweep's): once
			// that is done, look again.
			defer e.lockRepo(repo.ID)()
			if d, err := e.Store.Deployment(ctx, info.GitHubID); err == nil || !errors.Is(err, ErrNotFound) {
				return d, err
			}
			// The answer to its creation never reached the ledger: the
			// intent is waiting to be recovered — unless a person or a
			// workflow made it, copying the marker.
			copied := CopiedMarker(info.Creator)
			adopted := false
			if !copied {
				if adopted, err = e.adopt(ctx, repo, m, info); err != nil {
					return nil, err
				}
			}
			if adopted {
				return e.Store.Deployment(ctx, info.GitHubID)
			}
			// No intent waits for it: a second creation (GitHub's list
			// did not show the first yet when lastmile looked), or its
			// release stopped while the answer was lost; or a copy. It
			// must not deploy: inactive tells the Action to skip it.
			why, desc := "no intent waits for it", fmt.Sprintf("lastmile did not mean to create this deployment (release #%d to %s has another, or stopped)", m.Release, m.Stage)
			if copied {
				why = "a person or a workflow created it, not lastmile's App"
				desc = fmt.Sprintf("not lastmile's: %s copied the marker of its release #%d to %s", info.Creator, m.Release, m.Stage)
			}
			e.Log.WarnContext(ctx, "deployment carries lastmile's marker but is none of its own: marked inactive, recorded as not lastmile's",
				"why", why, "repo", repo.FullName(), "deployment", info.GitHubID, "release", m.Release, "environment", m.Stage, "creator", info.Creator)
			if _, err := e.GitHub.CreateDeploymentStatus(ctx, repo, info.GitHubID, StatusRequest{State: DeploymentInactive,
				Description: truncate(desc, 140)}); err != nil {
				return nil, fmt.Errorf("mark unexpected deployment %d inactive: %w", info.GitHubID, err)
			}
		}
	}
	return e.Store.RecordExternal(ctx, repo, info)
}

// adopt records a deployment found on GitHub as the creation of the intent
// its marker names, if that intent is still waiting for one. Like
// FindDeployment, it takes only a deployment of the intent's commit to the
// intent's environment (its name in any case, as GitHub's): a marker alone
// may name another release than the one it was made for (a database
// restored from a backup gives the release IDs after the backup again, and
// an old deployment's marker then names a new release), and anyone who may
// create deployments can copy one.
func (e *Engine) adopt(ctx context.Context, repo Repo, m Marker, info DeploymentInfo) (bool, error) {
	work, err := e.Store.Work(ctx, repo.ID)
	if err != nil {
		return false, err
	}
	for _, d := range work {
		// Only an intent that lastmile has tried to create can have a
		// deployment on GitHub: not one GitHub refused (waiting for its
		// required contexts) nor one held back from its busy environment,
		// whose adoption would skip what held it.
		if d.State != DeploymentIntent || d.Attempts == 0 {
			continue
		}
		if d.ReleaseID == m.Release && d.Stage == m.Index && d.GitHubID == 0 && d.SHA == info.SHA && strings.EqualFold(d.Environment, info.Environment) {
			e.Log.InfoContext(ctx, "recovered deployment created before an interruption", "repo", repo.FullName(),
				"release", d.ReleaseID, "environment", d.Environment, "deployment", info.GitHubID)
			return true, e.Store.Created(ctx, d.ID, info.GitHubID, info.CreatedAt)
		}
	}
	return false, nil
}

// runURL matches a workflow run URL (the Action's first log_url).
var runURL = regexp.MustCompile(`/actions/runs/(\d+)(?:/|$)`)

// RunIDFromURL extracts a run ID from a run or job URL.
func RunIDFromURL(u string) int64 {
	m := runURL.FindStringSubmatch(u)
	if m == nil {
		return 0
	}
	id, _ := strconv.ParseInt(m[1], 10, 64)
	return id
}

// JobIDFromURL is the job a status's log_url names, or 0: the job's page
// in its run, OWNER/REPO/actions/runs/RUN/job/JOB (the Action's, given
// job-id), or the check run the job is, OWNER/REPO/runs/JOB (Actions'
// statuses of a job's own deployment, as in GitHub's published example:
// a job's ID is its check run's). The path has exactly those parts: a run's
// page, OWNER/REPO/actions/runs/RUN, names no job, even of a repository
// named actions.
func JobIDFromURL(u string) int64 {
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		u = u[:i]
	}
	_, path, ok := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(u, "https://"), "http://"), "/")
	if !ok {
		return 0
	}
	parts := strings.Split(strings.TrimSuffix(path, "/"), "/")
	switch {
	case len(parts) == 7 && parts[2] == "actions" && parts[3] == "runs" && parts[5] == "job" && decimalID(parts[4]) != 0:
		return decimalID(parts[6])
	case len(parts) == 4 && parts[2] == "runs":
		return decimalID(parts[3])
	}
	return 0
}

// decimalID is s read as a positive decimal ID that fits an int64 (digits
// only: no sign), or 0.
func decimalID(s string) int64 {
	if strings.Trim(s, "0123456789") != "" {
		return 0
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0
	}
	return id
}

// HandleDeploymentStatus records a status and promotes on success.
func (e *Engine) HandleDeploymentStatus(ctx context.Context, ev NewDeploymentStatus) error {
	d, err := e.deployment(ctx, ev.Repo, ev.Deployment)
	if err != nil {
		return err
	}
	if DisregardedStatus(d, ev.Status) != "" {
		// Kept for the record, and nothing more: it changes nothing to
		// act on.
		_, err := e.recordStatus(ctx, ev.Repo, d, ev.Status)
		return err
	}
	if err := e.linkRun(ctx, d, ev.Status); err != nil {
		return err
	}
	if err := e.readBackUnheardEnd(ctx, ev.Repo, d, ev.Status); err != nil {
		return err
	}
	isNew, err := e.recordStatus(ctx, ev.Repo, d, ev.Status)
	if err != nil {
		return err
	}
	if isNew {
		e.Log.InfoContext(ctx, "deployment status", "repo", ev.Repo.FullName(), "environment", d.Environment,
			"deployment", d.GitHubID, "state", ev.Status.State, "origin", d.Origin)
	}
	// The deploy job may have completed before this status arrived (GitHub
	// does not keep its webhooks in order): its log is kept now. Of a
	// deployment not lastmile's, only Actions' own for a job of its run
	// (linked by GitHub's word, never by a log_url) without a twin of
	// lastmile's (see Store.DeployJob). Looked at for a status recorded
	// already too: a download GitHub asks to wait for fails the delivery
	// (see keepJobLog), and its retry finds the status recorded; the jobs
	// whose log is kept (or saved as missing, looked for again by
	// FetchMissingJobLogs) are not listed, so a redelivery asks GitHub
	// nothing.
	run := cmp.Or(d.RunID, RunIDFromURL(ev.Status.LogURL))
	if d.Origin != OriginLastmile {
		run = 0
		if d.TwinOf == 0 {
			run = d.RunID
		}
	}
	if run != 0 {
		jobs, err := e.Store.UnloggedJobs(ctx, ev.Repo, run)
		if err != nil {
			return err
		}
		// Named by a status, if this one names its job (the Action's
		// log_url, given job-id): by the times, an earlier job of the run
		// (the register job) could pass for the deploy job within the
		// same second. Where GitHub gives no job id (GitHub Enterprise
		// Server) no status names one, and the times are all there is —
		// for a deploy job whose completion was delivered before the
		// statuses (delivered after, it is matched when it comes): one the
		// deploy's in_progress came strictly before the end of, which the
		// register job, ended before the deploy began, is not.
		match := JobTimesBeforeEnd
		if JobIDFromURL(ev.Status.LogURL) != 0 {
			match = JobNamed
		}
		for _, job := range jobs {
			if err := e.keepJobLog(ctx, job, match); err != nil {
				return err
			}
		}
	}
	// A job of the next environment may wait for this deployment to end.
	if err := e.answerWaitingProtectionRules(ctx, ev.Repo, d.SHA); err != nil {
		return err
	}
	return e.advance(ctx, ev.Repo)
}

// linkRun links lastmile's deployment d to the run its status st names,
// if it has none: the Action's first status names the run deploying it.
// Anyone who may write deployments can put any run in a log_url, though:
// another deployment is linked to a run only by GitHub's word (see
// deployment), or its success, made by hand, would prove its commit to the
// protection rule.
func (e *Engine) linkRun(ctx context.Context, d *Deployment, st StatusInfo) error {
	if d.RunID != 0 || d.Origin != OriginLastmile || DisregardedStatus(d, st) != "" {
		return nil // a person's success, kept for the record only, links nothing
	}
	run := RunIDFromURL(st.LogURL)
	if run == 0 {
		return nil
	}
	if err := e.Store.LinkRun(ctx, d.ID, run); err != nil {
		return err
	}
	d.RunID = run
	return nil
}

// recordStatus records a status of deployment d that GitHub has (one
// DisregardedStatus names for the audit record only). A success
// of lastmile's deployment carries its release on when a failure or
// rejection stopped it (a re-run's), but only while the branch it was
// released from still holds its commit: otherwise the release is first
// marked superseded, its first reason kept, and stays stopped. A force push
// marks so only the newest such releases (maxRevivable), and one lastmile
// never heard of none; a re-run may come to any of them. GitHub is asked
// (one compare) only for such a success, and for the success of a release
// that does not build on what its environment last ran (leadCompare).
func (e *Engine) recordStatus(ctx context.Context, repo Repo, d *Deployment, st StatusInfo) (bool, error) {
	if why := DisregardedStatus(d, st); why != "" {
		isNew, err := e.Store.RecordDisregardedStatus(ctx, d, st, why)
		if isNew {
			e.Log.WarnContext(ctx, "deployment status disregarded", "repo", repo.FullName(), "environment", d.Environment,
				"deployment", d.GitHubID, "state", st.State, "creator", st.Creator, "why", why)
		}
		return false, err
	}
	if !d.Counts() || st.State != DeploymentSuccess || d.ReleaseID == 0 {
		return e.Store.RecordStatus(ctx, d, st)
	}
	if err := e.leadCompare(ctx, repo, d); err != nil {
		return false, err
	}
	if d.Origin != OriginLastmile {
		// A workflow's own deployment carries on only a release whose
		// workflow creates the deployments, in the store (see
		// Store.RecordStatus), without this check: the protection rule
		// refuses the jobs of a commit no longer on its branch.
		return e.Store.RecordStatus(ctx, d, st)
	}
	rel, err := e.Store.Release(ctx, d.ReleaseID)
	if err != nil {
		return false, err
	}
	branch, isBranch := strings.CutPrefix(rel.Ref, "refs/heads/")
	if rel.State == ReleaseStopped && (rel.StopKind == StopFailed || rel.StopKind == StopRejected) && isBranch {
		status, err := e.GitHub.Relation(ctx, repo, rel.SHA, branch)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return false, fmt.Errorf("compare %s...%s: %w", short(rel.SHA), branch, err)
		}
		if err != nil || status != "ahead" && status != "identical" {
			stop := StopRelease{Release: rel, Kind: StopSuperseded,
				Reason: rel.StopReason + "; then superseded: " + branch + " no longer contains " + short(rel.SHA)}
			if err := e.Store.Apply(ctx, repo, []Action{stop}); err != nil {
				return false, err
			}
			e.logAction(ctx, repo, stop)
		}
	}
	return e.Store.RecordStatus(ctx, d, st)
}

// leadCompareAttempts is how many failed requests for the comparison a
// success's lead time needs lastmile makes before it gives the comparison
// up: each failure has the delivery retried (after 5 s, then 10 s), and
// the success waits for it — its promotion too — only that long.
const leadCompareAttempts = 3

// leadCompare asks GitHub, before a success of lastmile's deployment d is
// recorded, for the commits that success brings to its environment when
// they are not those of the releases d's release builds on back to the
// environment's newest success: a rollback, a force push, history
// rewritten (Store.LeadCompare). One compare, kept, so that a redelivery,
// a restart or another environment with the same last commit does not ask
// again; none for a release that moved the branch forward. A request that
// fails has the delivery retried, as the engine's other requests do;
// after leadCompareAttempts failures — at once when GitHub has no such
// comparison (a commit gone, histories unrelated), or one of more commits
// than lastmile lists (ErrComparisonTooLarge) — the comparison is
// given up, saying why, and the success counts the commits of the
// releases it builds on alone, rather than hold the promotion any longer.
func (e *Engine) leadCompare(ctx context.Context, repo Repo, d *Deployment) error {
	// A comparison given up may be followed by another (a history replaced
	// since the environment's last success is compared from the
	// replacement: see Store.LeadCompare); at most one more.
	for range 2 {
		retry, err := e.leadCompareOnce(ctx, repo, d)
		if err != nil || !retry {
			return err
		}
	}
	return nil
}

// leadCompareOnce asks GitHub the comparison Store.LeadCompare says d's
// success needs, if any, and records it; retry reports one given up.
func (e *Engine) leadCompareOnce(ctx context.Context, repo Repo, d *Deployment) (retry bool, err error) {
	lc, err := e.Store.LeadCompare(ctx, d)
	if err != nil || lc == nil {
		return false, err
	}
	cmp, err := e.GitHub.Compare(ctx, repo, lc.Base, lc.Head)
	if err == nil {
		return false, e.Store.SaveLeadCompare(ctx, lc, cmp)
	}
	if ctx.Err() != nil || errors.Is(err, ErrGitHubWait) {
		// Cancelled (a shutdown), or GitHub asks to wait: no failure to
		// count; the delivery is handled again later.
		return false, err
	}
	giveUp := errors.Is(err, ErrNotFound) || errors.Is(err, ErrComparisonTooLarge) || lc.Attempts+1 >= leadCompareAttempts
	failed := fmt.Errorf("compare %s...%s for the lead time of release %d in %s: %w", short(lc.Base), short(lc.Head), lc.ReleaseID, d.Environment, err)
	if err := e.Store.LeadCompareFailed(ctx, lc, failed.Error(), giveUp); err != nil {
		return false, err
	}
	if !giveUp {
		return false, failed
	}
	e.Log.WarnContext(ctx, "lead time: GitHub's comparison given up; the success counts the commits of the releases it builds on only",
		"repo", repo.FullName(), "release", lc.ReleaseID, "environment", d.Environment, "attempts", lc.Attempts+1, "error", err)
	return true, nil
}

// readBackUnheardEnd records, before the final status st of a lastmile
// deployment, the statuses GitHub made before it that lastmile has not
// heard of, when one of them must be an earlier attempt's end (a re-run's
// success delivered before the first attempt's failure): the deployment's
// duration runs to its first final status, and an observation cannot be
// undone when that status arrives later. So too before an inactive
// someone else wrote over a deployment with no final status recorded
// (GitHub's automatic inactive, delivered before the success it follows):
// that success carries the release on, where the inactive alone would stop
// it as superseded. GitHub is asked only then.
func (e *Engine) readBackUnheardEnd(ctx context.Context, repo Repo, d *Deployment, st StatusInfo) error {
	if d.Origin != OriginLastmile {
		return nil
	}
	unheard, err := e.Store.EndUnheard(ctx, d.ID, st)
	if err != nil || !unheard {
		return err
	}
	return e.recordFromGitHub(ctx, repo, d, st.GitHubID)
}

// HandleReview records a deployment review.
func (e *Engine) HandleReview(ctx context.Context, rv Review) error {
	return e.Store.RecordReview(ctx, rv)
}

// HandleWorkflowJob records a job; when the job that deployed a deployment
// completes (lastmile's, or Actions' own for the job: see Store.DeployJob),
// its log joins the audit record.
func (e *Engine) HandleWorkflowJob(ctx context.Context, job WorkflowJob) error {
	if job.Deployment != nil && job.Deployment.GitHubID != 0 {
		if _, err := e.deployment(ctx, job.Repo, *job.Deployment); err != nil {
			return err
		}
	}
	if err := e.Store.RecordWorkflowJob(ctx, job); err != nil {
		return err
	}
	if job.Action != "completed" {
		return nil
	}
	return e.keepJobLog(ctx, job, JobTimes)
}

// keepJobLog downloads and keeps the log of a completed job that deployed a
// deployment Store.DeployJob finds (nothing for another job); named: see
// DeployJob.
func (e *Engine) keepJobLog(ctx context.Context, job WorkflowJob, match JobMatch) error {
	d, err := e.Store.DeployJob(ctx, job, match)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	log, truncated, err := e.GitHub.JobLog(ctx, job.Repo, job.JobID, e.DeployLogMaxBytes)
	switch {
	case errors.Is(err, ErrNotFound):
		// Looked for again for a while (FetchMissingJobLogs): GitHub may
		// not serve the log of a job that has just completed.
		return e.Store.SaveMissingJobLog(ctx, d.ID, job, []byte(noJobLog))
	case err != nil && (errors.Is(err, ErrGitHubWait) || ctx.Err() != nil):
		// GitHub asks to wait (a rate limit, the installation suspended),
		// or lastmile stops: the delivery is handled again later.
		return fmt.Errorf("download log of job %d: %w", job.JobID, err)
	case err != nil && e.suspended(ctx, job.Repo.InstallationID):
		// GitHub refuses a suspended installation's calls (403), which
		// the logs endpoint's answer does not tell from others: waited
		// out as the installation's other deliveries are.
		return fmt.Errorf("download log of job %d, installation %d suspended: %w (%w)", job.JobID, job.Repo.InstallationID, ErrGitHubWait, err)
	case err != nil:
		// The log holds nothing back: a download GitHub fails (a 5xx the
		// transport's retries did not get past, a 403 — an installation
		// that has not accepted the actions: read permission) would fail
		// the delivery at every try, and the repository's later
		// deliveries wait behind it. It is looked for again as one GitHub
		// had not, for JobLogGrace (FetchMissingJobLogs), and the record
		// says why it is missing meanwhile.
		e.Log.WarnContext(ctx, "deploy log not downloaded: looked for again for a while", "repo", job.Repo.FullName(),
			"job", job.JobID, "error", err)
		return e.Store.SaveMissingJobLog(ctx, d.ID, job, fmt.Appendf(nil, jobLogFailed, err))
	}
	return e.Store.SaveJobLog(ctx, d.ID, job, log, truncated)
}

// noJobLog is what the record keeps for a deploy job GitHub had no log for;
// jobLogFailed for one whose download GitHub failed (its error). The
// audit says why no log is kept with their words (JobRecord.LogMissingWhy).
const (
	noJobLog     = "(GitHub had no log for it)\n"
	jobLogFailed = "(lastmile could not download it from GitHub: %v)\n"
)

// JobLogGrace is how long lastmile looks again for the log of a deploy job
// that GitHub had no log for when the job completed.
const JobLogGrace = 10 * time.Minute

// FetchMissingJobLogs looks again for the deploy job logs that GitHub did
// not have when lastmile first asked, less than JobLogGrace ago, and keeps
// those it now has. It returns how many it kept.
func (e *Engine) FetchMissingJobLogs(ctx context.Context) (int, error) {
	missing, err := e.Store.MissingJobLogs(ctx, e.Now().Add(-JobLogGrace))
	if err != nil {
		return 0, err
	}
	kept := 0
	// One installation GitHub refuses (suspended, rate limited) does not
	// hold back the others': its further jobs are left for the next sweep,
	// and the first error is returned after the rest.
	var firstErr error
	refused := map[int64]bool{}
	for _, m := range missing {
		inst := m.Job.Repo.InstallationID
		if _, seen := refused[inst]; !seen {
			// A suspended installation's are left for after it is
			// unsuspended: GitHub refuses them meanwhile.
			state, err := e.installationState(ctx, inst)
			if err != nil {
				return kept, err
			}
			refused[inst] = state == InstallationSuspended
		}
		if refused[inst] {
			continue
		}
		log, truncated, err := e.GitHub.JobLog(ctx, m.Job.Repo, m.Job.JobID, e.DeployLogMaxBytes)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			// One job's log GitHub fails (a 5xx, a download cut short)
			// says nothing of the others'; a rate limit, or a suspended
			// installation, holds all of the installation's.
			refused[inst] = errors.Is(err, ErrGitHubWait)
			if firstErr == nil {
				firstErr = fmt.Errorf("download log of job %d: %w", m.Job.JobID, err)
			}
			continue
		}
		if err := e.Store.SaveJobLog(ctx, m.DeploymentID, m.Job, log, truncated); err != nil {
			return kept, err
		}
		kept++
	}
	return kept, firstErr
}

// HandleWorkflowRun records a run; a run that ends while its deployment has
// no terminal status gets one written by lastmile, with the reason.
func (e *Engine) HandleWorkflowRun(ctx context.Context, run WorkflowRun) error {
	current, err := e.Store.RecordWorkflowRun(ctx, run)
	if err != nil {
		return err
	}
	if run.Action != "completed" || !current {
		// Only the end of the run's newest attempt can leave a deployment
		// without a result; an earlier attempt's, delivered after a re-run
		// began, changes nothing.
		return nil
	}
	orphaned, err := e.orphans(ctx, run)
	if err != nil {
		return err
	}
	// A run of the commit that ended without a result while this one was
	// still going was left to be judged when this one ended: now.
	if orphaned, err = e.orphansWaiting(ctx, run, orphaned); err != nil {
		return err
	}
	if len(orphaned) > 0 {
		if err := e.Store.Apply(ctx, run.Repo, []Action{notifyAction{orphaned}}); err != nil {
			return err
		}
	}
	if err := e.advance(ctx, run.Repo); err != nil {
		return err
	}
	// The run's end may be how lastmile learnt that a deployment of its
	// commit ended: a protection-rule request that waited for it is
	// answered now, not only when a deployment_status comes.
	return e.answerWaitingProtectionRules(ctx, run.Repo, run.HeadSHA)
}

// orphansWaiting judges the completed runs of run's commit (other than run)
// whose judgement waited — for another run of the commit to end, or for
// lastmile to know the deployment — and adds what they left without a
// result to orphaned, one status per deployment.
func (e *Engine) orphansWaiting(ctx context.Context, run WorkflowRun, orphaned []*Deployment) ([]*Deployment, error) {
	waiting, err := e.Store.UnjudgedRuns(ctx, run)
	if err != nil {
		return nil, err
	}
	for _, w := range waiting {
		more, err := e.orphans(ctx, w)
		if err != nil {
			return nil, err
		}
		for _, d := range more { // the first run's reason
			if !slices.ContainsFunc(orphaned, func(o *Deployment) bool { return o.ID == d.ID }) {
				orphaned = append(orphaned, d)
			}
		}
	}
	return orphaned, nil
}

// orphans judges a completed run: the deployments it worked on that it
// left without a result, each with the status lastmile owes GitHub.
func (e *Engine) orphans(ctx context.Context, run WorkflowRun) ([]*Deployment, error) {
	deployments, guessed, err := e.Store.RunDeployments(ctx, run)
	if err != nil {
		return nil, err
	}
	var orphaned []*Deployment
	for _, d := range deployments {
		// A deployment that failed may be deployed again by a re-run of
		// its run: whether that attempt reported is asked of GitHub below.
		if (d.State.Terminal() && d.State != DeploymentFailure && d.State != DeploymentError) || d.Notify != "" {
			continue
		}
		// The run's end may have overtaken the deployment's last status
		// (GitHub does not promise the order of deliveries): GitHub is
		// asked before lastmile writes a status of its own.
		latest, err := e.latestCounted(ctx, run.Repo, d)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("read the statuses of deployment %d: %w", d.GitHubID, err)
		}
		// An inactive over a deploy that had begun (lastmile's own,
		// written when it superseded the deployment, possibly after the
		// run ended) says nothing of how the deploy ended, nor of which
		// attempt of the run it is: the deploy's in_progress says that.
		overBegun := err == nil && latest.State == DeploymentInactive && d.State == DeploymentInProgress
		posted := latest.CreatedAt
		if overBegun {
			started, err := e.newestStart(ctx, run.Repo, d)
			if err != nil {
				return nil, err
			}
			posted = started
		}
		if err == nil && !run.UpdatedAt.IsZero() && posted.After(run.UpdatedAt) {
			// A status posted after this run ended: a later attempt's
			// (a re-run keeps the run's ID, and its first attempt's end
			// may be delivered late, or again, once it deploys).
			continue
		}
		if err == nil && latest.State.Terminal() {
			if _, err := e.recordStatus(ctx, run.Repo, d, latest); err != nil {
				return nil, err
			}
			if !overBegun {
				continue
			}
			// Unless the deploy reported an end since (the Action's own
			// inactive: it deployed nothing), the run left it without one.
			if d, err = e.Store.Deployment(ctx, d.GitHubID); err != nil {
				return nil, err
			}
			if d.State != DeploymentInProgress {
				continue
			}
		}
		if other := RunIDFromURL(latest.LogURL); err == nil && other != 0 && other != run.RunID {
			// Another run reports on this deployment (the Action's): this
			// one was, say, a notification workflow on the same event.
			continue
		}
		if guessed && errors.Is(err, ErrNotFound) {
			// Nothing reported on the deployment yet. A run that ended
			// well is another workflow on the deployment event (a
			// notifier, or one whose jobs were all skipped) — a deploy run
			// that ended well has reported; and while another run of the
			// commit is still going, that one may be the deploy run (its
			// first job still starting): it is judged when it ends.
			if run.Conclusion == "success" || run.Conclusion == "skipped" || run.Conclusion == "neutral" {
				continue
			}
			others, err := e.Store.OtherRunsInProgress(ctx, run)
			if err != nil {
				return nil, err
			}
			if others > 0 {
				continue
			}
			// lastmile's record knows only the runs whose webhooks came,
			// and GitHub does not promise their order: a notifier's end
			// may come before the deploy run's first event. GitHub creates
			// every run of a deployment event together, so the deploy run
			// of this one's event exists on GitHub now: GitHub is asked
			// before lastmile judges by its guess, and a run it has going
			// defers the judgement as one lastmile recorded does (to that
			// run's end). Its error is returned, as the statuses' are
			// above, and the delivery tried again: a status written on a
			// guess that GitHub was not asked about could end a deploy
			// that is still going.
			if others, err = e.GitHub.RunsInProgress(ctx, run.Repo, run.HeadSHA, "deployment", run.RunID); err != nil {
				return nil, fmt.Errorf("list the workflow runs of %s: %w", short(run.HeadSHA), err)
			}
			if others > 0 {
				continue
			}
		}
		if guessed {
			if err := e.Store.LinkRun(ctx, d.ID, run.RunID); err != nil {
				return nil, err
			}
		}
		state, reason := DeploymentError, "workflow run "+run.URL+" ended ("+run.Conclusion+") without reporting a result"
		switch run.Conclusion {
		case "failure", "startup_failure":
			state = DeploymentFailure
			if rv, err := e.Store.Rejection(ctx, d); err != nil {
				return nil, err
			} else if rv != nil {
				reason = "rejected by " + rv.Actor
				if rv.Comment != "" {
					reason += ": " + rv.Comment
				}
			}
		case "cancelled":
			reason = "workflow run cancelled before the deployment finished"
		case "timed_out":
			reason = "workflow run timed out before the deployment finished"
		case "success":
			reason = "workflow run succeeded but never reported the deployment's result"
		}
		d.Notify, d.NotifyReason, d.NotifyAt = state, reason, run.UpdatedAt
		orphaned = append(orphaned, d)
	}
	return orphaned, nil
}

// latestCounted reads the newest status of deployment d that counts: a
// person's success (DisregardedStatus) is recorded as such and passed
// over, and the statuses before it read; ErrNotFound when none is left.
func (e *Engine) latestCounted(ctx context.Context, repo Repo, d *Deployment) (StatusInfo, error) {
	latest, err := e.GitHub.LatestDeploymentStatus(ctx, repo, d.GitHubID)
	if err != nil || DisregardedStatus(d, latest) == "" {
		return latest, err
	}
	list, err := e.GitHub.DeploymentStatuses(ctx, repo, d.GitHubID)
	if err != nil {
		return StatusInfo{}, err
	}
	for _, st := range list { // newest first
		if DisregardedStatus(d, st) == "" {
			return st, nil
		}
		if _, err := e.recordStatus(ctx, repo, d, st); err != nil {
			return StatusInfo{}, err
		}
	}
	return StatusInfo{}, ErrNotFound
}

// newestStart is when GitHub made the newest in_progress status of
// deployment d (zero if it has none): the start of the deploy that an
// inactive lastmile wrote over it did not stop.
func (e *Engine) newestStart(ctx context.Context, repo Repo, d *Deployment) (time.Time, error) {
	list, err := e.GitHub.DeploymentStatuses(ctx, repo, d.GitHubID)
	if errors.Is(err, ErrNotFound) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("read the statuses of deployment %d: %w", d.GitHubID, err)
	}
	for _, st := range list { // newest first
		if st.State == DeploymentInProgress {
			return st.CreatedAt, nil
		}
	}
	return time.Time{}, nil
}

// notifyAction asks the store to queue statuses lastmile must write.
type notifyAction struct{ Deployments []*Deployment }

func (notifyAction) isAction() {}

// NotifyDeployments returns the deployments of a notify action, for stores.
func NotifyDeployments(a Action) ([]*Deployment, bool) {
	n, ok := a.(notifyAction)
	return n.Deployments, ok
}

// HandleContexts acts on a `status` or `check_suite` event for the releases
// waiting for a commit's required contexts, when it can have changed
// GitHub's answer: a required context's status that ended (success: the
// deployment may now be created; failure or error: GitHub's 409 will say
// so, and the release gives up), or a completed check suite, which does not
// say which of its check runs turned green or failed. GitHub is asked
// rather than the event believed, since it does not keep webhooks in order:
// a failure may arrive after the same context's newer success. Asking again
// on any other status (pending, or of a context no waiting release
// requires) would spend requests that create content, which GitHub limits,
// on an answer known already.
func (e *Engine) HandleContexts(ctx context.Context, ev ContextsChanged) error {
	work, waiting, retry, err := e.resumeWaiting(ctx, ev)
	if err != nil {
		return err
	}
	// An earlier handling of this event, interrupted, may have put intents
	// back in line: they are still to be created.
	inLine := slices.ContainsFunc(work, func(d *Deployment) bool { return d.State == DeploymentIntent })
	switch {
	case retry || inLine:
	case !waiting:
		return &Ignored{Reason: "no release waits for the contexts of " + short(ev.SHA)}
	default:
		return &Ignored{Reason: fmt.Sprintf("status %s is %s on %s: only a required context's success, failure or error (or its first pending) moves the releases waiting there",
			ev.Context, ev.State, short(ev.SHA))}
	}
	return e.advance(ctx, ev.Repo)
}

// resumeWaiting puts back in line the deployments of ev's commit that wait
// for their required contexts, if ev may have turned one green (retry),
// and returns the repository's work as it was read. It holds the
// repository meanwhile: a creation in hand (GitHub's 409 on its way, from
// before this context turned green) is then recorded waiting before the
// work is read, and resumed — this event is the last that would.
func (e *Engine) resumeWaiting(ctx context.Context, ev ContextsChanged) (work []*Deployment, waiting, retry bool, err error) {
	defer e.lockRepo(ev.Repo.ID)()
	work, err = e.Store.Work(ctx, ev.Repo.ID)
	if err != nil {
		return nil, false, false, err
	}
	for _, d := range work {
		if d.State != DeploymentWaiting || d.SHA != ev.SHA {
			continue
		}
		waiting = true
		ended := ev.State == "success" || ev.State == "failure" || ev.State == "error"
		// A required context now pending of which the waiting reason says
		// GitHub had nothing: GitHub is asked again, so that the reason a
		// user reads is GitHub's current one — once: the reason then
		// says the context pending (or running).
		newlyPending := ev.State == "pending" && saysNotReported(d.Reason, ev.Context)
		if ev.CheckSuite || ((ended || newlyPending) && requires(d, ev.Context)) {
			retry = true
		}
	}
	if retry {
		if _, err := e.Store.Resume(ctx, ev.Repo.ID, ev.SHA); err != nil {
			return nil, false, false, err
		}
	}
	return work, waiting, retry, nil
}

// HandleProtectionRule answers GitHub's question, as a custom deployment
// protection rule: may this run deploy sha to environment? Only if the
// commit succeeded in the environment before it in the repository's
// configuration.
func (e *Engine) HandleProtectionRule(ctx context.Context, req ProtectionRuleRequest) error {
	if req.RunID == 0 {
		return &Ignored{Reason: "deployment_protection_rule without a workflow run"}
	}
	if req.SHA == "" {
		// Older payloads lack sha: the run's commit is known from its
		// workflow_run event, which GitHub sends first.
		sha, err := e.Store.RunHeadSHA(ctx, req.RunID)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		req.SHA = sha
	}
	_, err := e.answerRecorded(ctx, req)
	return err
}

// answerRecorded sends GitHub the decision on a protection-rule request
// (decideRecorded) unless it waits, GitHub has it already, or — one
// decided earlier whose sending failed — it is no longer safe to send
// (judgeAgain: withheld is then true). An approval that no longer holds is
// withdrawn, and a rejection sent instead.
func (e *Engine) answerRecorded(ctx context.Context, req ProtectionRuleRequest) (withheld bool, err error) {
	dec, fresh, err := e.decideRecorded(ctx, req)
	if err != nil {
		return false, err
	}
	if !fresh && !dec.Posted && dec.State != ProtectionWaiting {
		why, err := e.judgeAgain(ctx, req, dec)
		if err != nil {
			return false, err
		}
		if why != "" {
			e.Log.WarnContext(ctx, "protection rule answer GitHub has not confirmed is not sent again: "+why, "repo", req.Repo.FullName(),
				"run", req.RunID, "environment", req.Environment, "state", dec.State)
			return true, nil
		}
	}
	return false, e.answerProtectionRule(ctx, req, dec)
}

// judgeAgain looks again at a recorded answer GitHub has not confirmed (its
// sending failed, or lastmile stopped before it knew) before it is sent
// again, and says why it must not be sent now, or "" when it may. GitHub
// answers by run and environment, so an answer goes to the run's latest
// attempt: not one for an earlier attempt, once a later one has asked (its
// own request is judged). And time has passed: an approval is sent only if
// lastmile would approve now. One it would reject now — a newer release
// has succeeded in the environment since, which the older commit's deploy
// would go backwards from — is withdrawn (dec records the withdrawal) and
// the rejection, saying why, is what is sent; one that would wait now is
// withheld and looked at again. The decision itself is never rewritten:
// GitHub may have taken the approval though its reply was lost (it then
// refuses the rejection: the run no longer waits). A rejection, or an
// approval withdrawn, is sent as it is.
func (e *Engine) judgeAgain(ctx context.Context, req ProtectionRuleRequest, dec *ProtectionDecision) (string, error) {
	later, err := e.Store.LaterProtectionRequest(ctx, dec)
	if err != nil {
		return "", err
	}
	if later {
		return "a later attempt of the run has asked since", nil
	}
	if dec.State != ProtectionApproved || dec.Withdrawn != nil {
		return "", nil
	}
	now, err := e.decide(ctx, req)
	if err != nil {
		return "", err
	}
	switch now.State {
	case ProtectionApproved:
		// Judging took a compare: another handler (the sweep, a
		// redelivery, another process) may have withdrawn or sent it
		// meanwhile. The decision sent is the one recorded.
		cur, err := e.Store.ProtectionDecision(ctx, req)
		if err != nil {
			return "", err
		}
		*dec = *cur
		return "", nil
	case ProtectionWaiting:
		return "judged now, it would wait: " + now.Comment, nil
	}
	if err := e.Store.WithdrawProtectionApproval(ctx, dec, now.Comment, e.Now()); err != nil {
		return "", err
	}
	if dec.Withdrawn != nil && !dec.Posted {
		e.Log.WarnContext(ctx, "protection rule approval GitHub has not confirmed is withdrawn: it no longer holds, a rejection is sent instead",
			"repo", req.Repo.FullName(), "run", req.RunID, "environment", req.Environment, "sha", req.SHA, "comment", dec.Withdrawn.Comment)
	}
	return "", nil
}

// decideRecorded is the decision on a protection-rule request: the one
// recorded, unless it waits (or there is none yet), when it is decided
// (again) and recorded; fresh says which.
func (e *Engine) decideRecorded(ctx context.Context, req ProtectionRuleRequest) (dec *ProtectionDecision, fresh bool, err error) {
	dec, err = e.Store.ProtectionDecision(ctx, req)
	if errors.Is(err, ErrNotFound) || (err == nil && dec.State == ProtectionWaiting) {
		dec, err = e.decide(ctx, req)
		if err != nil {
			return nil, false, err
		}
		// The sweep and the worker (or another process) may answer the
		// same request at once: the decision sent is the one recorded,
		// which may be the other's.
		if err := e.Store.RecordProtectionDecision(ctx, dec); err != nil {
			return nil, false, err
		}
		return dec, true, nil
	}
	return dec, false, err
}

// maxProtectionComment is the longest comment GitHub takes with a custom
// deployment protection rule's review, in characters.
const maxProtectionComment = 1024

// answerProtectionRule sends GitHub a decision it does not have yet; a
// waiting one is not sent.
func (e *Engine) answerProtectionRule(ctx context.Context, req ProtectionRuleRequest, dec *ProtectionDecision) error {
	if dec.Posted {
		return nil
	}
	if dec.State == ProtectionWaiting {
		e.Log.InfoContext(ctx, "protection rule waits", "repo", req.Repo.FullName(), "run", req.RunID,
			"environment", req.Environment, "sha", req.SHA, "comment", dec.Comment)
		return nil
	}
	state, comment := dec.Answer()
	// The comment as GitHub takes it (the record keeps it whole): a longer
	// one is refused with a 422, which would leave the run waiting.
	if err := e.GitHub.ReviewProtectionRule(ctx, req.Repo, req.RunID, req.Environment, state, truncate(comment, maxProtectionComment)); err != nil {
		var refused *RefusedError
		if !errors.As(err, &refused) || refused.Status != 422 {
			return fmt.Errorf("answer protection rule for run %d: %w", req.RunID, err)
		}
		// 422: the run no longer waits for this rule (answered already,
		// cancelled; a withdrawn approval's, perhaps taken after all). The
		// decision stays recorded, and GitHub's refusal with it.
		e.Log.WarnContext(ctx, "protection rule answer refused: the run no longer waits", "repo", req.Repo.FullName(), "run", req.RunID,
			"environment", req.Environment, "state", state, "error", err)
		return e.Store.MarkProtectionPosted(ctx, dec, true)
	}
	e.Log.InfoContext(ctx, "protection rule decision", "repo", req.Repo.FullName(), "run", req.RunID,
		"environment", req.Environment, "sha", req.SHA, "state", state, "comment", comment)
	return e.Store.MarkProtectionPosted(ctx, dec, false)
}

// answerWaitingProtectionRules decides again the protection-rule requests
// for sha that waited for a deployment to end, and answers those no longer
// waiting. An answer GitHub does not take now is left to the sweep
// (AnswerUnpostedProtectionRules, within the hour) rather than failing the
// delivery: the retry of the event that ended the deployment would not
// find it waiting, and later events of the commit must not fail for it.
func (e *Engine) answerWaitingProtectionRules(ctx context.Context, repo Repo, sha string) error {
	waiting, err := e.Store.WaitingProtectionDecisions(ctx, repo, sha)
	if err != nil {
		return err
	}
	for _, w := range waiting {
		req := ProtectionRuleRequest{Repo: repo, DeliveryID: w.DeliveryID, Environment: w.Environment, SHA: w.SHA, RunID: w.RunID}
		dec, _, err := e.decideRecorded(ctx, req)
		if err != nil {
			return err
		}
		if err := e.answerProtectionRule(ctx, req, dec); err != nil {
			if ctx.Err() != nil {
				return err
			}
			e.Log.WarnContext(ctx, "protection rule answer not taken by GitHub: the sweep sends it again", "repo", repo.FullName(),
				"run", w.RunID, "environment", w.Environment, "error", err)
		}
	}
	return nil
}

// installationState is where lastmile recorded an installation stands:
// active when it recorded nothing of it.
// suspended reports whether lastmile has recorded installation id as
// suspended (false when it cannot tell).
func (e *Engine) suspended(ctx context.Context, id int64) bool {
	state, err := e.installationState(ctx, id)
	return err == nil && state == InstallationSuspended
}

func (e *Engine) installationState(ctx context.Context, id int64) (InstallationStatus, error) {
	st, err := e.Store.Installation(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return InstallationActive, nil
	}
	return st.State, err
}

// AnswerLongWaitingProtectionRules answers the protection-rule requests
// that have waited longer than HoldRunning for a deployment to end (in
// progress, or taken up by its run and still pending or queued): one that
// reports nothing that long (its run lost) proves nothing,
// and no status event will come to answer them. One judged waiting still
// (a deployment reported in progress since) is looked at again only
// HoldRunning after that judgement. It returns how many it looked at. A
// suspended or uninstalled installation's are left alone.
func (e *Engine) AnswerLongWaitingProtectionRules(ctx context.Context) (int, error) {
	waiting, err := e.Store.LongWaitingProtectionDecisions(ctx, e.Now().Add(-HoldRunning))
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, w := range waiting {
		state, err := e.installationState(ctx, w.Repo.InstallationID)
		if err != nil {
			return n, err
		}
		if state == InstallationSuspended || state == InstallationUninstalled {
			continue
		}
		n++
		if err := e.HandleProtectionRule(ctx, ProtectionRuleRequest{Repo: w.Repo, DeliveryID: w.DeliveryID,
			Environment: w.Environment, SHA: w.SHA, RunID: w.RunID}); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", w.Repo.FullName(), err))
		}
	}
	return n, errors.Join(errs...)
}

// Answers to protection-rule requests that GitHub did not confirm are sent
// again by AnswerUnpostedProtectionRules once they are unpostedAfter old
// (the handler that decided one may be sending it) and until they are
// resendWindow old: an answer is about the moment it was decided, and
// one sent long after (GitHub waits protectionRuleTimeout for it) would
// need judging again at every try. What the sweep tries again (those
// answers, AdvanceOwing's repositories) waits, while GitHub fails it, a
// pause that doubles from resendFirstPause to resendMaxPause.
const (
	unpostedAfter         = time.Minute
	resendWindow          = time.Hour
	protectionRuleTimeout = 30 * 24 * time.Hour
	resendFirstPause      = time.Minute
	resendMaxPause        = time.Hour
)

// AnswerUnpostedProtectionRules sends GitHub the approvals and rejections
// it did not confirm — the call failed (GitHub down, a rate limit) or
// lastmile stopped before it — decided in the last resendWindow, judged
// again first (answerRecorded): those decided at a deployment's end, or by
// the sweep itself (a request that waited too long), whose sending no
// delivery retries, and those of a request whose delivery gave up. A suspended or
// uninstalled installation's are left alone. It returns how many it sent.
func (e *Engine) AnswerUnpostedProtectionRules(ctx context.Context) (int, error) {
	now := e.Now()
	unposted, err := e.Store.UnpostedProtectionAnswers(ctx, now.Add(-resendWindow), now.Add(-unpostedAfter))
	if err != nil {
		return 0, err
	}
	e.resend.keep(func(id int64) bool {
		return slices.ContainsFunc(unposted, func(d *ProtectionDecision) bool { return d.ID == id })
	})
	n := 0
	var errs []error
	for _, d := range unposted {
		if !e.resend.due(d.ID, now) {
			continue
		}
		state, err := e.installationState(ctx, d.Repo.InstallationID)
		if err != nil {
			return n, err
		}
		if state == InstallationSuspended || state == InstallationUninstalled {
			continue
		}
		// Judged again first (answerRecorded): time has passed.
		req := ProtectionRuleRequest{Repo: d.Repo, DeliveryID: d.DeliveryID, Environment: d.Environment, SHA: d.SHA, RunID: d.RunID}
		switch withheld, err := e.answerRecorded(ctx, req); {
		case err != nil:
			pause := e.resend.failed(d.ID, now)
			errs = append(errs, fmt.Errorf("%s: %w (trying again in %s)", d.Repo.FullName(), err, pause))
		case withheld: // looked at again later
			e.resend.failed(d.ID, now)
		default:
			n++
		}
	}
	return n, errors.Join(errs...)
}

// pacer paces what the sweep tries again (by ID) while GitHub fails it:
// after a pause that doubles from resendFirstPause to resendMaxPause.
type pacer struct {
	mu   sync.Mutex
	next map[int64]paced
}

type paced struct {
	at    time.Time
	pause time.Duration
}

// due reports whether id may be tried at now.
func (p *pacer) due(id int64, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !now.Before(p.next[id].at)
}

// failed records that id failed at now, and returns the pause before its
// next try.
func (p *pacer) failed(id int64, now time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.next == nil {
		p.next = map[int64]paced{}
	}
	r := p.next[id]
	r.pause = min(max(2*r.pause, resendFirstPause), resendMaxPause)
	r.at = now.Add(r.pause)
	p.next[id] = r
	return r.pause
}

// wait has id tried again at at, its pause unchanged.
func (p *pacer) wait(id int64, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.next == nil {
		p.next = map[int64]paced{}
	}
	r := p.next[id]
	r.at = at
	p.next[id] = r
}

// keep forgets the IDs listed no longer (done, or given up).
func (p *pacer) keep(listed func(id int64) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id := range p.next {
		if !listed(id) {
			delete(p.next, id)
		}
	}
}

// AdvanceOwing advances the repositories that owe GitHub something — a
// deployment to create, a status to write, statuses to read back — with no
// delivery pending to see to it (Store.Owing): the delivery that owed it
// went dead after GitHub failed it for long (an outage), or an operator
// discarded it. Without it, the release would wait for the repository's
// next event. One that still fails is tried again after a pause that
// doubles from a minute to an hour. A suspended or uninstalled
// installation's are left alone, and one where nothing can be sent yet (an
// environment held by another release's deploy) is looked at again after
// the same pauses. It returns how many it sent something for.
func (e *Engine) AdvanceOwing(ctx context.Context) (int, error) {
	now := e.Now()
	owing, err := e.Store.Owing(ctx)
	if err != nil {
		return 0, err
	}
	e.owing.keep(func(id int64) bool { return slices.ContainsFunc(owing, func(r Repo) bool { return r.ID == id }) })
	n := 0
	var errs []error
	for _, repo := range owing {
		if !e.owing.due(repo.ID, now) {
			continue
		}
		state, err := e.installationState(ctx, repo.InstallationID)
		if err != nil {
			return n, err
		}
		if state == InstallationSuspended || state == InstallationUninstalled {
			continue
		}
		sent, err := e.advanceSent(ctx, repo)
		var again *LookAgain
		switch {
		case errors.As(err, &again):
			// GitHub's list may not show a creation that lost its
			// answer yet: looked at again when it would.
			e.owing.wait(repo.ID, again.At)
		case err != nil:
			pause := e.owing.failed(repo.ID, now)
			errs = append(errs, fmt.Errorf("%s: %w (trying again in %s)", repo.FullName(), err, pause))
		case !sent:
			// Nothing could be sent yet (the environment is held by
			// another release's deploy, whose end advances the
			// repository anyway): looked at again later, as after a
			// failure.
			e.owing.failed(repo.ID, now)
		default:
			n++
		}
	}
	return n, errors.Join(errs...)
}

func (e *Engine) decide(ctx context.Context, req ProtectionRuleRequest) (*ProtectionDecision, error) {
	dec := &ProtectionDecision{Repo: req.Repo, DeliveryID: req.DeliveryID, RunID: req.RunID,
		Environment: req.Environment, SHA: req.SHA, DeploymentID: req.DeploymentID, DecidedAt: e.Now()}
	reject := func(format string, args ...any) (*ProtectionDecision, error) {
		dec.State, dec.Comment = ProtectionRejected, fmt.Sprintf(format, args...)
		return dec, nil
	}
	if req.SHA == "" {
		return reject("lastmile could not tell which commit this run deploys, so it cannot check that it was proven first.")
	}
	// The order is the one lastmile promotes by, read on the pipeline
	// branch — never the configuration of the commit being judged, which
	// anyone able to push a branch could rewrite.
	rel, err := e.Store.ReleaseOf(ctx, req.Repo.ID, req.SHA)
	if errors.Is(err, ErrNotFound) {
		rel, err = e.Store.LatestRelease(ctx, req.Repo.ID)
	}
	if errors.Is(err, ErrNotFound) {
		return reject("lastmile rejects: it has no release of this repository, so the promotion order is unknown (is %s on the pipeline branch?).", ConfigPath)
	}
	if err != nil {
		return nil, err
	}
	cfg := rel.Config
	if cfg == nil {
		return reject("lastmile rejects: %s is invalid at %s on the pipeline branch, so the promotion order is unknown: %s", ConfigPath, short(rel.SHA), rel.StopReason)
	}
	i := cfg.Index(req.Environment)
	if i < 0 {
		return reject("lastmile rejects: environment %q is not in %s at %s.", req.Environment, ConfigPath, short(rel.SHA))
	}
	// approve approves, unless the commit, one of the pipeline branch,
	// would go where lastmile would not take it itself (asked only now:
	// it costs compares, and a waiting request is decided again).
	approve := func(comment string) (*ProtectionDecision, error) {
		outrun := e.outrun
		if rel.SHA != req.SHA {
			// No release of its own: a commit of another branch, or one
			// that a push brought with others, not its head.
			outrun = e.outrunInside
		}
		why, err := outrun(ctx, req, rel, cfg, i)
		if err != nil {
			return nil, err
		}
		if why != "" {
			return reject("%s", why)
		}
		dec.State, dec.Comment = ProtectionApproved, comment
		return dec, nil
	}
	if i == 0 {
		return approve(fmt.Sprintf("lastmile approves: %s is the first environment.", req.Environment))
	}
	prev := cfg.Environments[i-1].Name
	ok, err := e.Store.Succeeded(ctx, req.Repo.ID, req.SHA, prev)
	if err != nil {
		return nil, err
	}
	if !ok {
		unfinished, err := e.Store.Unfinished(ctx, req.Repo.ID, req.SHA, prev)
		if err != nil {
			return nil, err
		}
		if unfinished {
			dec.State, dec.Comment = ProtectionWaiting, fmt.Sprintf("lastmile waits: commit %s has a deployment to %s, which comes before %s, that has not ended; it answers when that deployment ends.", short(req.SHA), prev, req.Environment)
			return dec, nil
		}
		return reject("lastmile rejects: commit %s has not succeeded in %s, which comes before %s.", short(req.SHA), prev, req.Environment)
	}
	return approve(fmt.Sprintf("lastmile approves: commit %s succeeded in %s.", short(req.SHA), prev))
}

// newerReleasesJudged is how many of the newest releases newer than the
// one judged outrun looks at in their own configuration.
const newerReleasesJudged = 20

// outrun says why a commit of the pipeline branch (its release rel) must
// not be deployed to environment i of cfg, as lastmile would not deploy
// it there itself: a force push took it off the branch, lastmile withdrew
// the release (a newer one superseded it), a newer release has succeeded
// in that environment (it would go backwards), or a newer release has
// passed the environment before (newest wins). "" if none.
func (e *Engine) outrun(ctx context.Context, req ProtectionRuleRequest, rel *Release, cfg *Config, i int) (string, error) {
	branch := strings.TrimPrefix(rel.Ref, "refs/heads/")
	on, err := e.GitHub.Relation(ctx, req.Repo, req.SHA, branch)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return "", fmt.Errorf("compare %s...%s: %w", short(req.SHA), branch, err)
	}
	if on != "ahead" && on != "identical" {
		return fmt.Sprintf("lastmile rejects: commit %s is no longer on %s (a force push took it off).", short(req.SHA), branch), nil
	}
	newer, newerSHA, err := e.newerSuccess(ctx, req.Repo, rel, req.Environment)
	if err != nil || newer != 0 {
		return fmt.Sprintf("lastmile rejects: release #%d (commit %s) has succeeded in %s since release #%d of commit %s: deploying %s there would go backwards.",
			newer, short(newerSHA), req.Environment, rel.ID, short(req.SHA), short(req.SHA)), err
	}
	// Newest wins: a newer release that has passed the environment before
	// this one supersedes it there — before it in this release's order, or
	// in the newer release's own, should the configuration have renamed,
	// removed or added the one before it since (the newest releases are
	// looked at: one further back has passed by now, or never will).
	if i > 0 {
		prev := cfg.Environments[i-1].Name
		newer, newerSHA, err = e.newerSuccess(ctx, req.Repo, rel, prev)
		if err != nil || newer != 0 {
			return fmt.Sprintf("lastmile rejects: release #%d (commit %s) has passed %s since release #%d of commit %s, which it supersedes: the newest release is the one promoted to %s.",
				newer, short(newerSHA), prev, rel.ID, short(req.SHA), req.Environment), err
		}
	}
	newerReleases, err := e.Store.NewerReleases(ctx, req.Repo.ID, rel.ID, newerReleasesJudged)
	if err != nil {
		return "", err
	}
	for _, n := range newerReleases {
		j := -1
		if n.Config != nil && n.SHA != rel.SHA {
			j = n.Config.Index(req.Environment)
		}
		if j < 1 || i > 0 && sameEnvironment(n.Config.Environments[j-1].Name, cfg.Environments[i-1].Name) {
			continue // no environment before it, or the one checked above
		}
		prev := n.Config.Environments[j-1].Name
		ok, err := e.Store.Succeeded(ctx, req.Repo.ID, n.SHA, prev)
		if err != nil || ok {
			return fmt.Sprintf("lastmile rejects: release #%d (commit %s) has passed %s, which comes before %s in its configuration, since release #%d of commit %s, which it supersedes: the newest release is the one promoted to %s.",
				n.ID, short(n.SHA), prev, req.Environment, rel.ID, short(req.SHA), req.Environment), err
		}
	}
	if !rel.Withdrawn() {
		return "", nil
	}
	// lastmile withdrew it itself. A newer release sent to this
	// environment got there first — also through an environment the
	// older one's configuration does not name (renamed, removed), where
	// the checks above, in its own order, do not look.
	state, err := e.Store.RepoState(ctx, req.Repo.ID)
	if err != nil {
		return "", err
	}
	for env, id := range state.Reached {
		if strings.EqualFold(env, req.Environment) && id > rel.ID {
			return fmt.Sprintf("lastmile rejects: release #%d has been sent to %s since release #%d of commit %s, which lastmile withdrew (%s): the newest release is the one promoted.",
				id, req.Environment, rel.ID, short(req.SHA), rel.StopReason), nil
		}
	}
	// Superseded where a newer release deploys to an environment before
	// this one says nothing of this one: where workflows own their
	// deployments, lastmile's own deployment of every release but the
	// newest is superseded before it ever runs, and a commit that passed
	// the previous environment (the newer one has not) is the one to
	// promote — unless lastmile has since withdrawn the latest release for
	// another reason (the repository left lastmile, the branch was
	// deleted), which stands for the older ones too. Any other withdrawal
	// (its deployment made inactive) stands, and so does any withdrawal of
	// a release whose workflow creates the deployments (deployments:
	// workflow): Plan supersedes one only where the newer release has gone
	// (see planWorkflow), and a job of it that ran all the same — approved
	// before, then by its reviewers — takes it no further.
	if !strings.HasPrefix(rel.StopReason, supersededByNewer) || rel.Config.WorkflowDeploys() {
		return fmt.Sprintf("lastmile rejects: release #%d of commit %s was withdrawn (%s).", rel.ID, short(req.SHA), rel.StopReason), nil
	}
	latest, err := e.Store.LatestRelease(ctx, req.Repo.ID)
	if err != nil {
		return "", err
	}
	if latest.ID != rel.ID && latest.Withdrawn() && !strings.HasPrefix(latest.StopReason, supersededByNewer) {
		return fmt.Sprintf("lastmile rejects: release #%d of commit %s was superseded, and lastmile has withdrawn the latest, release #%d (%s).",
			rel.ID, short(req.SHA), latest.ID, latest.StopReason), nil
	}
	return "", nil
}

// outrunInside is outrun for a commit with no release of its own, judged
// in the order of rel, the latest release. One of the pipeline branch (a
// commit that a push brought with others, not its head) must not be
// deployed to environment i of cfg where the newest release to succeed
// there contains it (it would go backwards), nor where the newest to pass
// the environment before does (newest wins). A commit the branch does not hold is
// another branch's, judged by the previous environment alone: one that a
// force push took off the branch cannot be told from it. "" if none. It
// costs up to three compares.
func (e *Engine) outrunInside(ctx context.Context, req ProtectionRuleRequest, rel *Release, cfg *Config, i int) (string, error) {
	branch := strings.TrimPrefix(rel.Ref, "refs/heads/")
	on, err := e.GitHub.Relation(ctx, req.Repo, req.SHA, branch)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return "", fmt.Errorf("compare %s...%s: %w", short(req.SHA), branch, err)
	}
	if on != "ahead" && on != "identical" {
		return "", nil
	}
	newer, newerSHA, err := e.successContaining(ctx, req.Repo, req.SHA, req.Environment)
	if err != nil || newer != 0 {
		return fmt.Sprintf("lastmile rejects: release #%d (commit %s), which contains commit %s of %s, has succeeded in %s: deploying %s there would go backwards.",
			newer, short(newerSHA), short(req.SHA), branch, req.Environment, short(req.SHA)), err
	}
	if i == 0 {
		return "", nil
	}
	prev := cfg.Environments[i-1].Name
	newer, newerSHA, err = e.successContaining(ctx, req.Repo, req.SHA, prev)
	if err != nil || newer != 0 {
		return fmt.Sprintf("lastmile rejects: release #%d (commit %s), which contains commit %s of %s, has passed %s: the newest release is the one promoted to %s.",
			newer, short(newerSHA), short(req.SHA), branch, prev, req.Environment), err
	}
	return "", nil
}

// successContaining is the newest release with a success in env when its
// commit contains sha (sha is one of its ancestors); 0 if there is none or
// it does not.
func (e *Engine) successContaining(ctx context.Context, repo Repo, sha, env string) (int64, string, error) {
	newest, newestSHA, err := e.Store.NewestSuccess(ctx, repo.ID, env)
	if errors.Is(err, ErrNotFound) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", err
	}
	on, err := e.GitHub.Relation(ctx, repo, sha, newestSHA)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return 0, "", fmt.Errorf("compare %s...%s: %w", short(sha), short(newestSHA), err)
	}
	if on != "ahead" {
		return 0, "", nil
	}
	return newest, newestSHA, nil
}

// newerSuccess is a release newer than rel, of another commit, that has
// succeeded in env; 0 if none.
func (e *Engine) newerSuccess(ctx context.Context, repo Repo, rel *Release, env string) (int64, string, error) {
	newer, sha, err := e.Store.NewestSuccess(ctx, repo.ID, env)
	if errors.Is(err, ErrNotFound) || (err == nil && (newer <= rel.ID || sha == rel.SHA)) {
		return 0, "", nil
	}
	return newer, sha, err
}

// advance plans from the ledger and sends GitHub what the plan needs, until
// nothing is left to do.
func (e *Engine) advance(ctx context.Context, repo Repo) error {
	_, err := e.advanceSent(ctx, repo)
	return err
}

// advanceSent is advance, reporting whether it sent GitHub anything.
func (e *Engine) advanceSent(ctx context.Context, repo Repo) (sentAny bool, err error) {
	defer e.lockRepo(repo.ID)()
	for round := 0; round < 8; round++ {
		state, err := e.Store.RepoState(ctx, repo.ID)
		if err != nil {
			return sentAny, err
		}
		state.Repo = repo
		actions := Plan(state)
		// Intents recorded now count their first attempt already: they are
		// created below without looking for them on GitHub first.
		fresh := map[[2]int64]bool{}
		if len(actions) > 0 {
			if err := e.Store.Apply(ctx, repo, actions); err != nil {
				return sentAny, err
			}
			for _, a := range actions {
				e.logAction(ctx, repo, a)
				if c, ok := a.(CreateDeployment); ok {
					fresh[[2]int64{c.Release.ID, int64(c.Stage)}] = true
				}
			}
		}
		sent, err := e.realize(ctx, repo, fresh)
		sentAny = sentAny || sent
		if err != nil {
			return sentAny, err
		}
		if len(actions) == 0 && !sent {
			return sentAny, nil
		}
	}
	return sentAny, errors.New("promotion did not settle after 8 rounds (a bug): see the log")
}

// AdvanceReleased plans again repositories where a deployment in progress
// stopped holding its environment (it never reported an end, HoldRunning
// ago; see Store.HoldEnded): a release that waited behind it goes on
// without waiting for the repository's next event. It returns the
// repositories it could not advance, to try again later.
func (e *Engine) AdvanceReleased(ctx context.Context, repos []Repo) (failed []Repo, err error) {
	var errs []error
	for _, repo := range repos {
		state, err := e.installationState(ctx, repo.InstallationID)
		if err != nil {
			return repos, err
		}
		switch state {
		case InstallationSuspended: // GitHub refuses its calls: its turn comes once it is unsuspended
			failed = append(failed, repo)
			continue
		case InstallationUninstalled: // the repository left lastmile
			continue
		}
		e.Log.WarnContext(ctx, "a deployment in progress for too long no longer holds its environment", "repo", repo.FullName(),
			"hold", HoldRunning.String())
		if err := e.advance(ctx, repo); err != nil {
			failed = append(failed, repo)
			errs = append(errs, fmt.Errorf("%s: %w", repo.FullName(), err))
		}
	}
	return failed, errors.Join(errs...)
}

// RerunWindow is how long after a workflow run GitHub lets it be re-run
// (30 days): a failed deployment's re-run can succeed until then.
const RerunWindow = 30 * 24 * time.Hour

// maxRevivable bounds the stopped releases a force push looks at (each may
// cost a compare request); an older one it took off the branch is stopped
// when a re-run of it succeeds (see recordStatus).
const maxRevivable = 20

// lockRepo holds the repository's ledger for one change of its promotion
// (advance, withdraw) at a time, and returns the function that lets go.
func (e *Engine) lockRepo(id int64) (unlock func()) {
	return lockIn(&e.advancing, id, e.advanceWaits)
}

// lockInstallation holds an installation's record for one change at a
// time (see installationNow), and returns the function that lets go.
func (e *Engine) lockInstallation(id int64) (unlock func()) {
	return lockIn(&e.installing, id, nil)
}

// keyedLocks is one mutex per ID, kept only while it is held or waited
// for: a process that sees many repositories over its life does not keep
// a mutex for each.
type keyedLocks struct {
	mu    sync.Mutex
	locks map[int64]*keyedLock
}

type keyedLock struct {
	sync.Mutex
	refs int // holders and waiters
}

// lockIn takes the mutex of id in locks, calling waits (if set) when it
// has to wait for it.
func lockIn(locks *keyedLocks, id int64, waits func()) (unlock func()) {
	locks.mu.Lock()
	l := locks.locks[id]
	if l == nil {
		if locks.locks == nil {
			locks.locks = map[int64]*keyedLock{}
		}
		l = &keyedLock{}
		locks.locks[id] = l
	}
	l.refs++
	locks.mu.Unlock()
	if !l.TryLock() {
		if waits != nil {
			waits()
		}
		l.Lock()
	}
	return func() {
		l.Unlock()
		locks.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(locks.locks, id)
		}
		locks.mu.Unlock()
	}
}

// withdraw stops the repository's active releases that a push made
// obsolete — those for which why gives a reason — as superseded. A
// deployment of theirs that has not started is made inactive (by the next
// advance); one that runs is left to finish. A release stopped by a recent
// failure or rejection that why names is marked superseded too, its first
// reason kept: a re-run that succeeds would otherwise carry it on. Of
// those, why is asked about the newest limit (all when limit < 0).
func (e *Engine) withdraw(ctx context.Context, repo Repo, limit int, why func(r *Release) (string, error)) error {
	defer e.lockRepo(repo.ID)()
	return e.stopReleases(ctx, repo, limit, why)
}

// stopReleases is withdraw, the repository held by the caller.
func (e *Engine) stopReleases(ctx context.Context, repo Repo, limit int, why func(r *Release) (string, error)) error {
	state, err := e.Store.RepoState(ctx, repo.ID)
	if err != nil {
		return err
	}
	revivable, err := e.Store.Revivable(ctx, repo.ID, e.Now().Add(-RerunWindow), limit)
	if err != nil {
		return err
	}
	var actions []Action
	for _, r := range revivable {
		reason, err := why(r)
		if err != nil {
			return err
		}
		if reason != "" {
			actions = append(actions, StopRelease{Release: r, Kind: StopSuperseded, Reason: r.StopReason + "; then " + reason,
				DeactivateEnded: reason})
		}
	}
	for _, p := range state.Active {
		reason, err := why(p.Release)
		if err != nil {
			return err
		}
		if reason == "" {
			continue
		}
		stop := StopRelease{Release: p.Release, Kind: StopSuperseded, Reason: reason}
		k := -1
		for stage := range p.ByStage {
			k = max(k, stage)
		}
		// The workflow's own deployment (deployments: workflow) is its
		// job's, which lastmile leaves alone: the protection rule refuses
		// a withdrawn release's jobs.
		if d := p.ByStage[k]; d != nil && !d.State.Started() && !p.Release.Config.WorkflowDeploys() {
			stop.Deactivate = d
		}
		actions = append(actions, stop)
	}
	if len(actions) == 0 {
		return nil
	}
	if err := e.Store.Apply(ctx, repo, actions); err != nil {
		return err
	}
	for _, a := range actions {
		e.logAction(ctx, repo, a)
	}
	return nil
}

func (e *Engine) logAction(ctx context.Context, repo Repo, a Action) {
	switch a := a.(type) {
	case CreateDeployment:
		e.Log.InfoContext(ctx, "promotion: deploy", "repo", repo.FullName(), "release", a.Release.ID, "sha", a.Release.SHA,
			"environment", a.Release.Config.Environments[a.Stage].Name)
	case StopRelease:
		e.Log.InfoContext(ctx, "promotion: release stopped", "repo", repo.FullName(), "release", a.Release.ID, "kind", a.Kind, "reason", a.Reason)
	case CompleteRelease:
		e.Log.InfoContext(ctx, "promotion: release completed", "repo", repo.FullName(), "release", a.Release.ID, "sha", a.Release.SHA)
	}
}

// realize creates the deployments the ledger intends and writes the
// statuses it owes, reporting whether anything was sent.
func (e *Engine) realize(ctx context.Context, repo Repo, fresh map[[2]int64]bool) (sent bool, err error) {
	work, err := e.Store.Work(ctx, repo.ID)
	if err != nil {
		return false, err
	}
	// A fresh intent's first attempt is counted with it, as it is made
	// this round: one this round did not reach (another's error ended it)
	// is not counted, nor taken for a request that may have made its
	// deployment (see listLag).
	tried := map[int64]bool{}
	defer func() {
		if err == nil {
			return
		}
		for _, d := range work {
			if d.State == DeploymentIntent && fresh[[2]int64{d.ReleaseID, int64(d.Stage)}] && !tried[d.ID] {
				if uerr := e.Store.UncountAttempt(context.WithoutCancel(ctx), d.ID); uerr != nil {
					e.Log.WarnContext(ctx, "uncounting an attempt not made", "repo", repo.FullName(), "release", d.ReleaseID, "error", uerr)
				}
			}
		}
	}()
	var intents []*Deployment
	for _, d := range work {
		if d.Notify != "" {
			if d.GitHubID == 0 {
				found, err := e.lookForSuperseded(ctx, repo, d)
				if err != nil {
					return sent, err
				}
				sent = true
				if !found {
					continue
				}
			}
			if err := e.notify(ctx, repo, d); err != nil {
				return sent, err
			}
			sent = true
			continue
		}
		if d.ReadBack { // a read-back that failed before
			if err := e.readBack(ctx, repo, d); err != nil {
				return sent, err
			}
			sent = true
			continue
		}
		if d.State == DeploymentIntent {
			intents = append(intents, d)
		}
	}
	// Newest release first: a newer release's intent holds older ones back
	// from its environment until GitHub has answered it. Created (or to be
	// tried again later), it supersedes them by the next plan; refused, for
	// a required context pending or failed, it lets the next older one be
	// tried at once.
	slices.SortStableFunc(intents, func(a, b *Deployment) int { return cmp.Compare(b.ReleaseID, a.ReleaseID) })
	answered := map[string]int64{} // environment: the release whose deployment GitHub did not refuse
	for _, d := range intents {
		// The plan waits for a deploy in progress; one that lastmile hears
		// of only now (above, reading back the inactive it wrote on a
		// deployment whose workflow had begun) holds the environment too.
		held, err := e.Store.HeldBy(ctx, repo.ID, d.Environment)
		if err != nil {
			return sent, err
		}
		if newer := answered[strings.ToLower(d.Environment)]; held == 0 && newer != 0 {
			e.Log.InfoContext(ctx, "deployment waits: a newer release's deployment to its environment is created first", "repo", repo.FullName(),
				"release", d.ReleaseID, "environment", d.Environment, "newer_release", newer)
			held = newer
		} else if held != 0 && held != d.ReleaseID {
			e.Log.InfoContext(ctx, "deployment waits: a deploy of another release runs in its environment", "repo", repo.FullName(),
				"release", d.ReleaseID, "environment", d.Environment, "running_release", held)
		}
		tried[d.ID] = true
		if held != 0 && held != d.ReleaseID {
			if fresh[[2]int64{d.ReleaseID, int64(d.Stage)}] {
				// Its first attempt, counted with the intent, is not made.
				if err := e.Store.UncountAttempt(ctx, d.ID); err != nil {
					return sent, err
				}
			}
			continue
		}
		if err := e.create(ctx, repo, d, fresh[[2]int64{d.ReleaseID, int64(d.Stage)}]); err != nil {
			return sent, err
		}
		sent = true
		if d.State != DeploymentWaiting && d.State != DeploymentAbandoned {
			answered[strings.ToLower(d.Environment)] = d.ReleaseID
		}
	}
	return sent, nil
}

// lookForSuperseded settles an intent whose release was superseded while
// an attempt to create it had no answer (Store.Apply keeps such an intent,
// owing an inactive): GitHub's deployment, if that attempt made one, is
// recorded as the intent's (d is updated), and reported true, for the
// inactive to be written on it; otherwise the intent is abandoned.
func (e *Engine) lookForSuperseded(ctx context.Context, repo Repo, d *Deployment) (bool, error) {
	marker, err := e.marker(ctx, d)
	if err != nil {
		return false, err
	}
	id, createdAt, err := e.GitHub.FindDeployment(ctx, repo, d.SHA, d.Environment, marker)
	if errors.Is(err, ErrNotFound) {
		if again, err := e.listLag(ctx, d); err != nil || again != nil {
			return false, cmp.Or[error](err, again)
		}
		return false, e.Store.Refused(ctx, d.ID, DeploymentAbandoned, d.NotifyReason)
	}
	if err != nil {
		return false, fmt.Errorf("look for deployment of release %d to %s: %w", d.ReleaseID, d.Environment, err)
	}
	e.Log.InfoContext(ctx, "found the deployment of a superseded release that an earlier attempt created: making it inactive", "repo", repo.FullName(),
		"release", d.ReleaseID, "environment", d.Environment, "deployment", id)
	if err := e.Store.Created(ctx, d.ID, id, createdAt); err != nil {
		return false, err
	}
	d.GitHubID, d.State = id, DeploymentCreated
	return true, nil
}

// marker is the payload marker of a release's deployment.
func (e *Engine) marker(ctx context.Context, d *Deployment) (Marker, error) {
	instance, err := e.Store.Instance(ctx)
	if err != nil {
		return Marker{}, err
	}
	return Marker{Instance: instance, Release: d.ReleaseID, Stage: d.Environment, Index: d.Stage}, nil
}

// CreateListLag is how long after an attempt to create a deployment whose
// answer was lost lastmile trusts GitHub's list of deployments to show
// what that attempt made: before, a deployment not listed may still be
// there, and no other attempt is made.
const CreateListLag = 10 * time.Second

// CreateInFlight is how long after it is sent a request to create a
// deployment may still make one: GitHub's answer is awaited 30 s (and its
// body read after). A process killed while it waited knows no more, and
// takes the request to have made it as late as that.
const CreateInFlight = time.Minute

// create turns an intent into a GitHub deployment. Unless the intent is
// fresh (recorded by this very round, with its attempt counted), an earlier
// attempt may have created it already, so it is looked for first. A
// refusal that ends the intent (waiting, abandoned) is set on d.State too.
func (e *Engine) create(ctx context.Context, repo Repo, d *Deployment, fresh bool) error {
	marker, err := e.marker(ctx, d)
	if err != nil {
		return err
	}
	if d.Stage > 0 {
		// The promise: nothing reaches a stage without succeeding in the one before.
		ok, err := e.Store.StageSucceeded(ctx, d.ReleaseID, d.Stage-1)
		if err != nil {
			return err
		}
		if !ok {
			e.Log.ErrorContext(ctx, "refusing to deploy a release that did not succeed in the previous stage (a bug)",
				"repo", repo.FullName(), "release", d.ReleaseID, "environment", d.Environment)
			d.State = DeploymentAbandoned
			return e.Store.Refused(ctx, d.ID, DeploymentAbandoned, "the previous environment has no success for this release")
		}
	}
	if !fresh && d.Attempts > 0 {
		// An earlier attempt may have created it: GitHub timed out, or the
		// process died before recording the answer.
		id, createdAt, err := e.GitHub.FindDeployment(ctx, repo, d.SHA, d.Environment, marker)
		if err == nil {
			e.Log.InfoContext(ctx, "recovered deployment created by an earlier attempt", "repo", repo.FullName(),
				"release", d.ReleaseID, "environment", d.Environment, "deployment", id)
			return e.Store.Created(ctx, d.ID, id, createdAt)
		}
		if !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("look for deployment of release %d to %s: %w", d.ReleaseID, d.Environment, err)
		}
		if again, err := e.listLag(ctx, d); err != nil || again != nil {
			return cmp.Or[error](err, again)
		}
	}
	if !fresh {
		if err := e.Store.MarkAttempt(ctx, d.ID, e.Now().Add(CreateInFlight)); err != nil {
			return err
		}
		d.Attempts++
	}
	req := DeploymentRequest{
		SHA: d.SHA, Environment: d.Environment, Production: d.Production,
		RequiredContexts: []string{},
		Payload:          DeploymentPayload{Lastmile: marker},
		Description:      fmt.Sprintf("lastmile release #%d to %s", d.ReleaseID, d.Environment),
	}
	if d.Stage == 0 {
		req.RequiredContexts = d.RequiredContexts
	}
	id, createdAt, err := e.GitHub.CreateDeployment(ctx, repo, req)
	var refused *RefusedError
	switch {
	case err == nil:
		e.Log.InfoContext(ctx, "deployment created", "repo", repo.FullName(), "release", d.ReleaseID,
			"environment", d.Environment, "deployment", id, "sha", d.SHA)
		return e.Store.Created(ctx, d.ID, id, createdAt)
	case errors.As(err, &refused) && refused.Spammed():
		return e.spammed(ctx, repo, d, refused)
	case errors.As(err, &refused) && refused.AwaitsContexts(req.RequiredContexts):
		e.Log.InfoContext(ctx, "deployment waits for required contexts", "repo", repo.FullName(), "release", d.ReleaseID, "error", refused)
		d.State = DeploymentWaiting
		return e.Store.Refused(ctx, d.ID, DeploymentWaiting, "waiting for required contexts: "+contextList(refused.RequiredStates(req.RequiredContexts)))
	case errors.As(err, &refused):
		e.Log.WarnContext(ctx, "GitHub refused the deployment", "repo", repo.FullName(), "release", d.ReleaseID,
			"environment", d.Environment, "error", refused)
		d.State = DeploymentAbandoned
		return e.Store.Refused(ctx, d.ID, DeploymentAbandoned, refused.Error())
	default:
		// No answer: GitHub may have made it, at any time until now (a
		// shutdown's cancelled request too: recorded all the same).
		if lerr := e.Store.AnswerLost(context.WithoutCancel(ctx), d.ID); lerr != nil {
			e.Log.WarnContext(ctx, "recording a creation without an answer", "repo", repo.FullName(), "release", d.ReleaseID, "error", lerr)
		}
		return fmt.Errorf("create deployment of release %d to %s: %w", d.ReleaseID, d.Environment, err)
	}
}

// listLag is the LookAgain of an intent that GitHub's list does not show,
// when its latest creation attempt may have made it less than
// CreateListLag ago (Deployment.AttemptedAt: when its answer was lost — a
// timeout, a 502 from a proxy in front of GitHub —, or, not known, as late
// as its request could make it): GitHub's list may not show it yet, and
// asked again, GitHub would make a second one. Nil otherwise. A time
// further ahead than an attempt can put it (the clock set back since) is
// taken as now, once.
func (e *Engine) listLag(ctx context.Context, d *Deployment) (*LookAgain, error) {
	if d.AttemptedAt.IsZero() {
		return nil, nil
	}
	now := e.Now()
	until := d.AttemptedAt.Add(CreateListLag)
	if until.Sub(now) > CreateInFlight+CreateListLag {
		if err := e.Store.AnswerLost(ctx, d.ID); err != nil {
			return nil, err
		}
		until = now.Add(CreateListLag)
	}
	if !now.Before(until) {
		return nil, nil
	}
	return &LookAgain{At: until, Reason: fmt.Sprintf(
		"deployment of release %d to %s: an attempt to create it may have made it until %s, and GitHub does not list one yet",
		d.ReleaseID, d.Environment, d.AttemptedAt.UTC().Format(time.RFC3339))}, nil
}

// GitHub answers 422 "the endpoint has been spammed" to deployments created
// too fast. lastmile asks again after spamRetry, doubling up to spamMaxRetry
// as GitHub asks of its rate limits, and gives up once the intent has had
// spamAttempts attempts (about half an hour).
const (
	spamRetry    = time.Minute
	spamMaxRetry = 16 * time.Minute
	spamAttempts = 6
)

// spammed records GitHub's 422 "the endpoint has been spammed" on an
// intent, which stays to be created, and has the delivery handled again
// later (LookAgain); after spamAttempts attempts it gives the intent up,
// stopping its release, as for any other refusal.
func (e *Engine) spammed(ctx context.Context, repo Repo, d *Deployment, refused *RefusedError) error {
	if d.Attempts >= spamAttempts {
		e.Log.WarnContext(ctx, "GitHub refused the deployment as spam again: given up", "repo", repo.FullName(), "release", d.ReleaseID,
			"environment", d.Environment, "attempts", d.Attempts, "error", refused)
		d.State = DeploymentAbandoned
		return e.Store.Refused(ctx, d.ID, DeploymentAbandoned, fmt.Sprintf("%v (%d attempts)", refused, d.Attempts))
	}
	at := e.Now().Add(min(spamRetry<<max(d.Attempts-1, 0), spamMaxRetry))
	reason := fmt.Sprintf("%v (asking again at %s)", refused, at.UTC().Format(time.RFC3339))
	e.Log.WarnContext(ctx, "GitHub refused the deployment as spam: trying again later", "repo", repo.FullName(), "release", d.ReleaseID,
		"environment", d.Environment, "attempts", d.Attempts, "retry_at", at.UTC().Format(time.RFC3339))
	if err := e.Store.Refused(ctx, d.ID, DeploymentIntent, reason); err != nil {
		return err
	}
	return &LookAgain{At: at, Reason: fmt.Sprintf("deployment of release %d to %s: %v", d.ReleaseID, d.Environment, refused)}
}

func (e *Engine) notify(ctx context.Context, repo Repo, d *Deployment) error {
	st, err := e.GitHub.CreateDeploymentStatus(ctx, repo, d.GitHubID, StatusRequest{
		State: d.Notify, Description: truncate(d.NotifyReason, 140), LogURL: d.LogURL,
	})
	var refused *RefusedError
	if errors.Is(err, ErrNotFound) || errors.As(err, &refused) {
		// For good: the deployment was deleted on GitHub (so no workflow
		// can deploy it either), or GitHub will not take this status.
		// Retrying would hold back every later deployment of the
		// repository: the status is recorded as lastmile's alone, so the
		// deployment still ends (and its release with it).
		e.Log.WarnContext(ctx, "status not written on GitHub, recorded by lastmile only", "repo", repo.FullName(), "deployment", d.GitHubID,
			"environment", d.Environment, "state", d.Notify, "error", err)
		_, err = e.Store.RecordStatus(ctx, d, StatusInfo{State: d.Notify, Creator: "lastmile", CreatedAt: e.Now(),
			Description: strings.TrimPrefix(d.NotifyReason+" (not written on GitHub: "+err.Error()+")", " ")})
		return err
	}
	if err != nil {
		return fmt.Errorf("write %s status on deployment %d: %w", d.Notify, d.GitHubID, err)
	}
	if st.Description == "" {
		st.Description = d.NotifyReason
	}
	st.ByLastmile = true
	e.Log.InfoContext(ctx, "status written by lastmile", "repo", repo.FullName(), "deployment", d.GitHubID,
		"environment", d.Environment, "state", d.Notify, "reason", d.NotifyReason)
	// Recorded at once, so that a failed read-back below does not write it
	// again: for an inactive, the store notes the read-back owed.
	if _, err := e.Store.RecordStatus(ctx, d, st); err != nil {
		return err
	}
	if d.Notify != DeploymentInactive {
		return nil
	}
	return e.readBack(ctx, repo, d)
}

// readBack reads back the statuses of a deployment lastmile made inactive:
// the workflow may have begun to deploy before the inactive, its
// in_progress not delivered yet, and such a deploy holds its environment
// (until then, so does the owed read-back: see Store.HeldBy). The Action,
// in turn, reads the statuses after its in_progress and deploys nothing if
// an inactive came first: whichever wrote first, the other sees it.
func (e *Engine) readBack(ctx context.Context, repo Repo, d *Deployment) error {
	if err := e.recordFromGitHub(ctx, repo, d, 0); err != nil {
		return err
	}
	return e.Store.ReadBackDone(ctx, d.ID)
}

// recordFromGitHub records the statuses of a deployment that GitHub has
// and lastmile may not have heard of — all of them, or those older than
// status before (GitHub's ID) — oldest first, as GitHub made them.
func (e *Engine) recordFromGitHub(ctx context.Context, repo Repo, d *Deployment, before int64) error {
	list, err := e.GitHub.DeploymentStatuses(ctx, repo, d.GitHubID)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read back the statuses of deployment %d: %w", d.GitHubID, err)
	}
	for _, o := range slices.Backward(list) { // oldest first
		if o.GitHubID == 0 || before != 0 && o.GitHubID >= before {
			continue
		}
		if err := e.linkRun(ctx, d, o); err != nil {
			return err
		}
		if _, err := e.recordStatus(ctx, repo, d, o); err != nil {
			return err
		}
	}
	return nil
}

// requires reports whether d's required contexts include context, compared
// as GitHub compares them, without regard to case.
func requires(d *Deployment, context string) bool {
	return slices.ContainsFunc(d.RequiredContexts, func(c string) bool { return strings.EqualFold(c, context) })
}

// saysNotReported reports whether a waiting reason (its contextList) says
// that GitHub had nothing of context: the context's own entry, not one of
// another context whose name ends with it (e2e-test, test).
func saysNotReported(reason, context string) bool {
	_, list, ok := strings.Cut(reason, ": ")
	if !ok {
		return false
	}
	for _, entry := range strings.Split(list, ", ") {
		if strings.EqualFold(entry, context+" ("+NotReported+")") {
			return true
		}
	}
	return false
}

func contextList(cs []ContextState) string {
	var parts []string
	for _, c := range cs {
		parts = append(parts, c.Context+" ("+c.State+")")
	}
	return strings.Join(parts, ", ")
}

func short(sha string) string {
	if len(sha) > 7 {
		return sha[:7]
	}
	return sha
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
