package app

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

// history prints recent releases and where each stands per environment.
func history(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("lastmile history", `Usage: lastmile history [--database F] [--repo owner/name] [--env ENVIRONMENT] [--limit N] [--json]

--env lists the releases deployed to the environment: those with a deployment
there on GitHub (waiting for its reviewers, deploying or ended), not those
lastmile never created there (waiting for their required contexts, refused,
stopped first) nor those withdrawn before their deploy began there (made
inactive: superseded or stopped).`, stderr)
	path := dbFlag(fs, getenv)
	repo := fs.String("repo", "", "only this repository (owner/name)")
	env := fs.String("env", "", "only releases deployed to this environment (see above)")
	limit := fs.Int("limit", 20, "how many releases, newest first")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "lastmile history: unexpected argument %q (filter with --repo and --env)\n", fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	if err := noEmptyFilter(fs, "repo", "env"); err != nil {
		return err
	}
	if *limit < 1 {
		fmt.Fprintf(stderr, "lastmile history: --limit %d: use 1 or more\n", *limit)
		return errUsage
	}
	db, err := openToRead(ctx, fs, getenv, *path, *repo)
	if err != nil {
		return err
	}
	defer db.Close()
	list, err := db.History(ctx, storage.HistoryFilter{Repository: *repo, Environment: *env, Limit: *limit})
	if err != nil {
		return storage.Damaged(*path, err)
	}
	if *asJSON {
		if list == nil {
			list = []pipeline.HistoryEntry{} // [], not null
		}
		return writeJSONTo(stdout, list)
	}
	stdout = terminal{stdout}
	if len(list) == 0 {
		fmt.Fprintln(stdout, noReleases(*repo, *env))
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RELEASE\tREPOSITORY\tCOMMIT\tPUSHED\tBY\tSTATE\tENVIRONMENTS")
	for _, e := range list {
		r := e.Release
		state := string(r.State)
		if r.StopKind != "" {
			state += " (" + string(r.StopKind) + ")"
		}
		var stages []string
		for _, s := range e.Stages {
			st := string(s.State)
			if st == "" {
				st = "-"
			}
			stages = append(stages, inline(s.Environment)+":"+st)
		}
		fmt.Fprintf(tw, "#%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, inline(r.Repo.FullName()), shortSHA(r.SHA), when(r.PushedAt),
			orDash(inline(r.Pusher)), state, strings.Join(stages, "  "))
	}
	return tw.Flush()
}

// status prints where each environment of the pipelines stands now.
func status(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("lastmile status", `Usage: lastmile status [--database F] [--repo owner/name] [--json]

Per repository and environment of its configuration, in promotion order:
LIVE, the newest release whose deployment there succeeded (what the
environment runs: lastmile never deploys backwards) and SINCE when; LATEST,
lastmile's newest deployment there (or, where a workflow owns the
environment's deployments, its jobs') when it is of a newer release —
waiting for its required contexts or its reviewers, deploying, or ended
without success.`, stderr)
	path := dbFlag(fs, getenv)
	repo := fs.String("repo", "", "only this repository (owner/name)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "lastmile status: unexpected argument %q (filter with --repo)\n", fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	if err := noEmptyFilter(fs, "repo"); err != nil {
		return err
	}
	db, err := openToRead(ctx, fs, getenv, *path, *repo)
	if err != nil {
		return err
	}
	defer db.Close()
	list, err := db.Status(ctx, *repo)
	if err != nil {
		return storage.Damaged(*path, err)
	}
	if *asJSON {
		return writeJSONTo(stdout, list)
	}
	stdout = terminal{stdout}
	if len(list) == 0 {
		if *repo != "" {
			fmt.Fprintf(stdout, "%s has no pipeline: no configuration of it names an environment now\n", inline(*repo))
		} else {
			fmt.Fprintln(stdout, "no pipelines recorded yet")
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REPOSITORY\tENVIRONMENT\tLIVE\tSINCE\tLATEST")
	for _, e := range list {
		live, since := "-", "-"
		if e.Live != nil {
			live, since = fmt.Sprintf("#%d %s", e.Live.ReleaseID, shortSHA(e.Live.SHA)), when(e.Live.At)
		}
		latest := "-"
		if l := e.Latest; l != nil {
			latest = fmt.Sprintf("#%d %s %s", l.ReleaseID, shortSHA(l.SHA), latestState(l))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", inline(e.Repository), inline(e.Environment), live, since, latest)
	}
	return tw.Flush()
}

// latestState says in words where the newest deployment in an environment
// (lastmile's, or a workflow's own: see storage.Status) stands, and since
// when.
func latestState(l *pipeline.LatestDeployment) string {
	var what string
	switch {
	case l.AwaitingReview():
		what = "awaiting review"
		if len(l.Review.Reviewers) > 0 {
			what += " by " + inline(strings.Join(l.Review.Reviewers, ", "))
		}
		return what + " since " + when(l.Review.At)
	case l.State == pipeline.DeploymentIntent:
		what = "being created"
	case l.State == pipeline.DeploymentWaiting:
		what = "waiting for its required contexts"
	case l.State == pipeline.DeploymentCreated:
		what = "created, no workflow run yet"
	case l.State == pipeline.DeploymentInProgress:
		what = "deploying"
	default:
		what = string(l.State)
	}
	return what + " since " + when(l.Since)
}

// openToRead checks a read command's --repo filter, when given, and its
// database path, then opens the database read-only.
func openToRead(ctx context.Context, fs *flag.FlagSet, getenv func(string) string, path, repo string) (*storage.DB, error) {
	if repo != "" {
		if err := checkRepo(fs, "--repo ", repo); err != nil {
			return nil, err
		}
	}
	if err := checkDatabase(fs, path); err != nil {
		return nil, err
	}
	db, err := storage.OpenReadOnly(ctx, path)
	if err != nil {
		return nil, pathHint(fs, getenv, err)
	}
	return db, nil
}

// noReleases says that history found nothing, and for which filters:
// other repositories may have releases.
func noReleases(repo, env string) string {
	msg := "no releases"
	if repo != "" {
		msg += " of " + inline(repo)
	}
	if env != "" {
		msg += " deployed to " + inline(env)
	}
	if repo == "" && env == "" {
		msg += " recorded yet"
	}
	return msg
}

// audit prints one release's full record.
func audit(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("lastmile audit", `Usage: lastmile audit [--database F] [--json] [--logs] [--release N] OWNER/REPO SHA

Prints the newest release of the commit; a commit the branch was rolled
back to has more than one (--release picks another). A commit that is no
release's head, but one a release brought (its commits since the release
before), prints the newest release that brought it, saying so. A commit no
release brought is not found (exit 1); the message lists lastmile's
protection-rule decisions about deployments of it, if it made any. With
--logs, a kept log that cannot be read (damaged) is said in its place, and
the command exits 1 once the record is printed.`, stderr)
	path := dbFlag(fs, getenv)
	asJSON := fs.Bool("json", false, "print the record as JSON")
	logs := fs.Bool("logs", false, "also print the kept deploy logs (with --json, each in its job's \"log\")")
	release := fs.Int64("release", 0, "the release to print, by its number `N` (history's RELEASE column shows it as #N); default: the newest")
	if err := parseFlags(fs, interspersed(args, map[string]bool{"json": true, "logs": true}), stdout); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		switch fs.NArg() {
		case 0:
			fmt.Fprintln(stderr, "lastmile audit: missing OWNER/REPO and SHA")
		case 1:
			fmt.Fprintln(stderr, "lastmile audit: missing SHA")
		default:
			fmt.Fprintf(stderr, "lastmile audit: unexpected argument %q after OWNER/REPO SHA\n", fs.Arg(2))
		}
		fs.Usage()
		return errUsage
	}
	// --release given is a release number, as the API's ?release= (which
	// refuses 0): 0 would silently mean the newest, the flag left out.
	if given(fs, "release") && *release < 1 {
		fmt.Fprintf(stderr, "lastmile audit: --release %d: give a release number, 1 or more (history's RELEASE column, without the #); leave --release out for the newest\n", *release)
		return errUsage
	}
	if err := checkRepo(fs, "", fs.Arg(0)); err != nil {
		return err
	}
	if err := pipeline.CheckSHA(fs.Arg(1)); err != nil {
		fmt.Fprintf(stderr, "lastmile audit: %v\n", err)
		return errUsage
	}
	db, err := openToRead(ctx, fs, getenv, *path, "")
	if err != nil {
		return err
	}
	defer db.Close()
	rec, err := db.AuditRelease(ctx, fs.Arg(0), fs.Arg(1), *release)
	var none *storage.NoReleaseError
	if errors.As(err, &none) && len(none.Decisions) > 0 {
		// A commit lastmile decided about is no unknown commit, though
		// it has no release: the decisions, and still exit 1.
		if *asJSON {
			if err := writeJSONTo(stdout, noReleaseBody(none)); err != nil {
				return err
			}
			return err
		}
		var b strings.Builder
		fmt.Fprintf(terminal{&b}, "%v:", err)
		for _, p := range none.Decisions {
			fmt.Fprintf(terminal{&b}, "\n  %s", decisionLine(p))
		}
		return errors.New(b.String())
	}
	if err != nil {
		return storage.Damaged(*path, err)
	}
	// A kept log that cannot be read is said where the log would be, and
	// fails the command (exit 1) once the rest is printed: the record is
	// not whole.
	var unreadable []string
	if *asJSON {
		if *logs {
			// Each kept log in its job's "log" (none for one pruned: its
			// log_pruned says so; log_error for one that cannot be read).
			keptLogs(rec, func(_ string, j *pipeline.JobRecord) {
				log, err := db.JobLog(ctx, j.ID)
				switch {
				case err == nil:
					text := string(log)
					j.Log = &text
				case !errors.Is(err, storage.ErrPruned):
					j.LogError = err.Error()
					unreadable = append(unreadable, err.Error())
				}
			})
		}
		if err := writeJSONTo(stdout, auditJSONOf(rec)); err != nil {
			return err
		}
		return unreadableLogs(unreadable)
	}
	stdout = terminal{stdout}
	printAudit(stdout, rec)
	if *logs {
		keptLogs(rec, func(env string, j *pipeline.JobRecord) {
			fmt.Fprintf(stdout, "\n--- log of job %d (%s) in %s ---\n", j.ID, inline(j.Name), inline(env))
			log, err := db.JobLog(ctx, j.ID)
			switch {
			case err == nil:
				stdout.Write(log)
			case errors.Is(err, storage.ErrPruned):
				fmt.Fprintln(stdout, err)
			default:
				fmt.Fprintln(stdout, err)
				unreadable = append(unreadable, err.Error())
			}
		})
	}
	return unreadableLogs(unreadable)
}

// unreadableLogs is audit's error for the kept logs it could not read, nil
// for none.
func unreadableLogs(errs []string) error {
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("the record is printed, but not all of its logs: %s", strings.Join(errs, "; "))
}

// noReleaseBody is what the read API answers (404), and `audit --json`
// prints, for a commit no release brought that lastmile decided about as a
// protection rule: the message, and the decisions.
func noReleaseBody(e *storage.NoReleaseError) map[string]any {
	return map[string]any{"message": e.Error(), "protection_decisions": e.Decisions}
}

// keptLogs calls fn with each job of the record whose log was kept (or
// pruned: the log says so), and its environment.
func keptLogs(rec *pipeline.AuditRecord, fn func(env string, j *pipeline.JobRecord)) {
	for _, env := range rec.Environments {
		for _, d := range env.Deployments {
			for i := range d.Jobs {
				if j := &d.Jobs[i]; j.LogBytes > 0 || j.LogPruned {
					fn(env.Name, j)
				}
			}
		}
	}
}

// given reports whether the flag name was on the command line, whatever
// its value: an empty or zero value given is not the flag left out.
func given(fs *flag.FlagSet, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}

// noEmptyFilter refuses a filter flag given empty (--env ""), as the API
// refuses ?environment=: taken as no filter, it would list everything, and
// a variable that held the name (--env "$ENV") is more likely unset than
// meant to be left out. A usage error.
func noEmptyFilter(fs *flag.FlagSet, names ...string) error {
	for _, name := range names {
		if given(fs, name) && fs.Lookup(name).Value.String() == "" {
			fmt.Fprintf(fs.Output(), "%s: --%s \"\" is empty: leave it out for no filter\n", fs.Name(), name)
			return errUsage
		}
	}
	return nil
}

// checkRepo checks a repository named on the command line (by flag, such
// as "--repo ", or "" for an argument): OWNER/REPO, as GitHub names it. A
// usage error otherwise: a name without its owner would find nothing.
func checkRepo(fs *flag.FlagSet, given, repo string) error {
	if err := pipeline.CheckFullName(repo); err != nil {
		fmt.Fprintf(fs.Output(), "%s: %s%q: %v\n", fs.Name(), given, cutMiddle(repo, 80), err)
		return errUsage
	}
	return nil
}

// interspersed moves flags after positional arguments to the front, so
// `lastmile audit acme/shop 1a2b3c4 --json` works as people type it; `--`
// ends the flags, as the flag package has it.
//
// A value flag typed last, without its value, is left last, and the
// positional arguments out: moved to the front, it would take the first of
// them for its value (`deliveries retry ID --limit` would read "retry" as
// the limit), while alone at the end the flag package says that it needs
// an argument — a usage error, which the arguments left out could not
// change.
func interspersed(args []string, boolFlags map[string]bool) []string {
	var flags, rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i+1:]...)
			break
		}
		if strings.HasPrefix(a, "-") && len(a) > 1 {
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if strings.Contains(name, "=") || boolFlags[name] {
				continue
			}
			if i+1 == len(args) {
				return flags // a value flag last, without its value
			}
			flags = append(flags, args[i+1])
			i++
			continue
		}
		rest = append(rest, a)
	}
	if len(rest) == 0 {
		return flags
	}
	// The positional arguments after a "--" that ends the flags: one
	// that starts with "-" (after `--`, a file named -bk.db) is no flag.
	return append(append(flags, "--"), rest...)
}

func printAudit(w io.Writer, rec *pipeline.AuditRecord) {
	r := rec.Release
	if c := rec.BroughtCommit; c != nil {
		fmt.Fprintf(w, "Commit %s %q was brought by release #%d (head %s): the release deploys its head, which contains it.\n\n",
			shortSHA(c.SHA), inline(c.Title), r.ID, shortSHA(r.SHA))
	}
	fmt.Fprintf(w, "Release #%d of %s at %s (%s)\n", r.ID, r.Repo.FullName(), r.SHA, r.Ref)
	fmt.Fprintf(w, "  pushed by %s at %s; delivery %s\n", orDash(inline(r.Pusher)), when(r.PushedAt), orDash(r.DeliveryID))
	fmt.Fprintf(w, "  state: %s", r.State)
	if r.StopKind != "" {
		fmt.Fprintf(w, " (%s): %s", r.StopKind, inline(r.StopReason))
	}
	if rec.Waiting != "" {
		fmt.Fprintf(w, "; %s", rec.Waiting)
	}
	fmt.Fprintln(w)
	if len(rec.OtherReleases) > 0 {
		ids := make([]string, len(rec.OtherReleases))
		for i, id := range rec.OtherReleases {
			ids[i] = "#" + strconv.FormatInt(id, 10)
		}
		if c := rec.BroughtCommit; c != nil {
			fmt.Fprintf(w, "  commit %s is also in %s, as its head or a commit it brought (see them with --release)\n", shortSHA(c.SHA), strings.Join(ids, ", "))
		} else {
			fmt.Fprintf(w, "  the commit is also in %s, as its head or a commit it brought (see them with --release)\n", strings.Join(ids, ", "))
		}
	}
	if r.Baseline {
		fmt.Fprintf(w, "\nCommits (%d; a baseline: the push created %s with this history, and only %s counts for lead time):\n",
			len(rec.Commits), inline(strings.TrimPrefix(r.Ref, "refs/heads/")), shortSHA(r.SHA))
	} else {
		fmt.Fprintf(w, "\nCommits (%d):\n", len(rec.Commits))
	}
	for _, c := range rec.Commits {
		fmt.Fprintf(w, "  %s  %s  %-16s %s\n", shortSHA(c.SHA), when(c.Timestamp), inline(c.Author), inline(c.Title))
	}
	if len(rec.Environments) > 0 { // none without a valid configuration
		fmt.Fprintln(w, "\nEnvironments:")
	}
	for _, env := range rec.Environments {
		outcome := string(env.Outcome)
		switch {
		case !configured(rec, &env):
			// There for the deployments of the commit others made: not
			// an environment this release never got to.
			outcome = "not one of this release's environments (its configuration does not name it)"
			if o := storage.OthersOutcome(&env); o != "" {
				outcome += "; deployed by others: " + string(o)
			}
		case env.WorkflowOutcome != "" && outcome == "":
			outcome = "the workflow's own deployment: " + string(env.WorkflowOutcome)
		case env.WorkflowOutcome != "":
			outcome += "; the workflow's own deployment: " + string(env.WorkflowOutcome)
		case outcome == "" && env.ReachedWith != nil:
			outcome = "not deployed by this release"
		case outcome == "":
			outcome = "not reached"
		}
		prod := ""
		if env.Production {
			prod = " [production]"
		}
		fmt.Fprintf(w, "  %s%s: %s\n", inline(env.Name), prod, outcome)
		if a := env.ReachedWith; a != nil {
			fmt.Fprintf(w, "    the commit reached it with release #%d (%s): deployment %d, succeeded %s\n",
				a.ReleaseID, shortSHA(a.SHA), a.DeploymentID, when(a.At))
		}
		for _, d := range env.Deployments {
			printDeployment(w, &d)
		}
	}
	if len(rec.ProtectionDecisions) > 0 {
		fmt.Fprintln(w, "\nProtection rule decisions:")
		for _, p := range rec.ProtectionDecisions {
			fmt.Fprintln(w, " ", decisionLine(p))
		}
	}
}

// decisionLine is a protection-rule decision on one line, and the
// rejection that withdrew it, if one did, on a second. A decision GitHub
// has not confirmed (its sending failed; lastmile sends it again for an
// hour, while it holds) says so, as the JSON's "posted": false does: the
// job it is about may still wait, whatever lastmile decided; one GitHub
// refused (the run no longer waited for the rule) says that, as the JSON's
// "refused": true — the refused rejection of a withdrawn approval, that
// GitHub may have taken the approval.
func decisionLine(p pipeline.ProtectionDecision) string {
	const (
		unconfirmed = ", not confirmed by GitHub (sent again for an hour while it holds)"
		refused     = ", refused by GitHub (the run no longer waited for this rule)"
	)
	state := p.State
	switch {
	case p.Withdrawn != nil:
		state += ", not confirmed by GitHub"
	case p.Refused:
		state += refused
	case !p.Posted && p.State != pipeline.ProtectionWaiting:
		state += unconfirmed
	}
	line := fmt.Sprintf("%s  run %d, %s: %s — %s", when(p.DecidedAt), p.RunID, inline(p.Environment), state, inline(p.Comment))
	if w := p.Withdrawn; w != nil {
		state = "approval withdrawn, rejected instead"
		switch {
		case p.Refused:
			state += refused + ": GitHub may have taken the approval"
		case !p.Posted:
			state += unconfirmed
		}
		line += fmt.Sprintf("\n    %s  %s — %s", when(w.At), state, inline(w.Comment))
	}
	return line
}

// configured reports whether the release's configuration names the
// environment (in any case, as GitHub's names ignore it). The record holds
// others too: those where others deployed the commit (by hand, or a
// workflow's own deployments), which lastmile does not deploy the release
// to.
func configured(rec *pipeline.AuditRecord, env *pipeline.EnvironmentRecord) bool {
	return rec.Release.Config != nil && rec.Release.Config.Index(env.Name) >= 0
}

// auditJSON is the audit record as `lastmile audit --json` and the read
// API print it: each environment also says whether the release's
// configuration names it, and in one it does not, what the deployments
// others made there came to.
type auditJSON struct {
	*pipeline.AuditRecord
	Environments []environmentJSON `json:"environments"`
}

type environmentJSON struct {
	pipeline.EnvironmentRecord
	// Configured says the release's configuration names the environment.
	// One it does not name is in the record for the deployments of the
	// commit others made there: lastmile deploys the release nowhere
	// else, so it has no outcome there — which is not a release that
	// never got to one of its environments.
	Configured bool `json:"configured"`
	// OthersOutcome is, in an environment the configuration does not
	// name, what the deployments others made there came to: the outcome
	// of the newest (see storage.OthersOutcome).
	OthersOutcome pipeline.DeploymentState `json:"others_outcome,omitempty"`
}

func auditJSONOf(rec *pipeline.AuditRecord) auditJSON {
	out := auditJSON{AuditRecord: rec, Environments: make([]environmentJSON, len(rec.Environments))}
	for i := range rec.Environments {
		env := &rec.Environments[i]
		e := environmentJSON{EnvironmentRecord: *env, Configured: configured(rec, env)}
		if !e.Configured {
			e.OthersOutcome = storage.OthersOutcome(env)
		}
		out.Environments[i] = e
	}
	return out
}

func printDeployment(w io.Writer, d *pipeline.DeploymentRecord) {
	who := "lastmile"
	if d.Origin == pipeline.OriginExternal {
		who = "created by " + orDash(inline(d.Creator))
		switch {
		case d.TwinOf != 0:
			who += ", the job's own twin of lastmile's (not counted)"
		case d.WorkflowOwned:
			who += fmt.Sprintf(", the job's own in a run on %s (counted)", orDash(inline(d.RunEvent)))
		}
	}
	id := "no GitHub deployment"
	if d.GitHubID != 0 {
		id = fmt.Sprintf("deployment %d", d.GitHubID)
	}
	fmt.Fprintf(w, "    %s (%s): %s, created %s", id, who, d.State, when(d.CreatedAt))
	if !d.TerminalAt.IsZero() {
		fmt.Fprintf(w, ", finished %s (took %s)", when(d.TerminalAt), d.TerminalAt.Sub(d.CreatedAt).Round(time.Second))
	}
	fmt.Fprintln(w)
	if d.Reason != "" {
		fmt.Fprintf(w, "      why: %s\n", inline(d.Reason))
	}
	for _, s := range d.Statuses {
		fmt.Fprintf(w, "      %s  status %-11s", when(s.CreatedAt), s.State)
		if s.Creator != "" {
			fmt.Fprintf(w, " by %s", inline(s.Creator))
		}
		if s.Description != "" {
			fmt.Fprintf(w, " — %s", inline(s.Description))
		}
		if s.LogURL != "" {
			fmt.Fprintf(w, "  log: %s", inline(s.LogURL))
		}
		if s.EnvironmentURL != "" {
			fmt.Fprintf(w, "  url: %s", inline(s.EnvironmentURL))
		}
		fmt.Fprintln(w)
		if s.Disregarded != "" {
			fmt.Fprintf(w, "        disregarded: %s\n", inline(s.Disregarded))
		}
	}
	for _, rv := range d.Reviews {
		switch rv.Action {
		case pipeline.ReviewRequested:
			fmt.Fprintf(w, "      %s  review requested by %s from %s\n", when(rv.At), orDash(inline(rv.Actor)), inline(strings.Join(rv.Reviewers, ", ")))
		default:
			fmt.Fprintf(w, "      %s  %s by %s", when(rv.At), rv.Action, inline(rv.Actor))
			if rv.Comment != "" {
				fmt.Fprintf(w, ": %q", rv.Comment)
			}
			if !rv.Since.IsZero() {
				fmt.Fprintf(w, " (waited %s)", rv.At.Sub(rv.Since).Round(time.Second))
			}
			fmt.Fprintln(w)
		}
	}
	for _, r := range d.Runs {
		fmt.Fprintf(w, "      run %d %q attempt %d: %s %s  %s\n", r.ID, r.Name, r.Attempt, inline(r.Status), inline(r.Conclusion), inline(r.URL))
	}
	for _, j := range d.Jobs {
		// A pruned log keeps its size and whether it was cut, as the
		// JSON does (log_bytes, log_truncated): what the record held.
		size := ""
		switch {
		case j.LogBytes > 0 && j.LogTruncated:
			size = fmt.Sprintf(" (%d bytes, cut: the configured maximum of it kept, and a line saying how much was cut)", j.LogBytes)
		case j.LogBytes > 0:
			size = fmt.Sprintf(" (%d bytes)", j.LogBytes)
		}
		log := ""
		switch {
		case j.LogMissing:
			log = ", no log kept: " + inline(cmp.Or(j.LogMissingWhy, "GitHub had no log for it"))
		case j.LogPruned:
			log = ", log pruned by retention" + size
		case j.LogBytes > 0:
			log = ", log kept" + size
		}
		fmt.Fprintf(w, "      job %d %q: %s%s\n", j.ID, j.Name, orDash(inline(j.Conclusion)), log)
	}
}

// inline is a free-text field (a status description, a reason, a name) as
// the text commands print it on one line of a record: a newline, carriage
// return or tab in it is shown escaped, so that it cannot start a line that
// looks like the record's own, nor shift the columns of a table.
func inline(s string) string {
	if !strings.ContainsAny(s, "\n\r\t") {
		return s
	}
	return strings.NewReplacer("\n", `\n`, "\r", `\r`, "\t", `\t`).Replace(s)
}

func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func shortSHA(sha string) string {
	if len(sha) > 7 {
		return sha[:7]
	}
	return sha
}

// writeJSONTo prints v as JSON for a terminal or a tool: encoding/json
// escapes the C0 controls but not DEL, the C1 controls (U+0080–U+009F,
// which some terminals obey: U+009B is CSI) nor the bidirectional
// formatting characters, so those are escaped too, as the text output
// escapes them (isControl) — in JSON they only occur inside strings, where
// \u escapes mean the same.
func writeJSONTo(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	var out bytes.Buffer
	for _, r := range string(b) {
		if isControl(r) {
			fmt.Fprintf(&out, `\u%04x`, r)
		} else {
			out.WriteRune(r)
		}
	}
	out.WriteByte('\n')
	_, err = w.Write(out.Bytes())
	return err
}

// notFound says whether err means an unknown repository, release or job.
func notFound(err error) bool { return errors.Is(err, pipeline.ErrNotFound) }
