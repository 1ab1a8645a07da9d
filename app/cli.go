package app

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
)

const usage = `lastmile carries every merge to main through the last mile to production.

Usage:
  lastmile demo [--dir DIR] [--keep-running] [--verbose]
                                      watch a release go to production against a simulated GitHub
  lastmile serve [flags]              run the GitHub App (see lastmile serve --help)
  lastmile deliveries [flags]         list recent webhook deliveries and their state
  lastmile deliveries retry ID        put a dead delivery back in the queue
  lastmile deliveries discard ID      give up on a dead delivery (--reason TEXT)
  lastmile history [flags]            recent releases and where each stands per environment
  lastmile status [flags]             what each environment runs now, and what is on its way
  lastmile audit OWNER/REPO SHA       one release's full record (--json, --logs, --release N)
  lastmile register --webhook-url URL create lastmile's GitHub App (manifest flow)
  lastmile vacuum [--database F]      give the database's free space back to the disk (serve stopped)
  lastmile backup [--database F] DEST copy the database to the new file DEST (serve running or not)
  lastmile restore [--database F] BACKUP
                                      replace the database with a backup (serve stopped)
  lastmile version                    print the version

serve, vacuum, backup, restore and the read commands (deliveries, history,
status, audit) use the database named by LASTMILE_DATABASE (default lastmile.db) or
their --database flag.
`

// Main runs the lastmile command line and returns the exit code.
func Main(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	out := &checkedWriter{w: stdout}
	stdout = out
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		err = flag.ErrHelp
	case "version", "--version":
		err = version(rest, stdout, stderr)
	case "serve":
		err = serve(ctx, rest, getenv, stdout, stderr)
	case "demo":
		err = demo(ctx, rest, getenv, stdout, stderr)
	case "deliveries":
		err = deliveries(ctx, rest, getenv, stdout, stderr)
	case "history":
		err = history(ctx, rest, getenv, stdout, stderr)
	case "status":
		err = status(ctx, rest, getenv, stdout, stderr)
	case "audit":
		err = audit(ctx, rest, getenv, stdout, stderr)
	case "register":
		err = register(ctx, rest, getenv, stdout, stderr)
	case "vacuum":
		err = vacuum(ctx, rest, getenv, stdout, stderr)
	case "backup":
		err = backup(ctx, rest, getenv, stdout, stderr)
	case "restore":
		err = restore(ctx, rest, getenv, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "lastmile: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if werr := out.failed(); (err == nil || errors.Is(err, flag.ErrHelp)) && werr != nil {
		err = werr // what the command printed did not all reach stdout
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintln(stderr, "lastmile:", err)
	return 1
}

// errUsage marks an error already explained to the user with usage text.
var errUsage = errors.New("usage")

// parseFlags parses a command's flags. Help asked for (-h, --help) is
// printed to stdout and returned as flag.ErrHelp (exit 0, unless stdout
// could not take it: see Main); any other
// problem is printed with the usage to the flag set's output (stderr),
// naming the flag as the documentation does (see flagProblem), and is a
// usage error (exit 2).
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	stderr, usage := fs.Output(), fs.Usage
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.SetOutput(stderr)
	fs.Usage = usage
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(stdout)
		fs.Usage()
		fs.SetOutput(stderr)
		return err
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), flagProblem(err, fs))
		fs.Usage()
		return errUsage
	}
	return nil
}

func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	// Help asked for goes to stdout, a problem with the flags to stderr.
	var printed bytes.Buffer
	cfg, err := LoadConfig(args, getenv, &printed)
	if errors.Is(err, flag.ErrHelp) {
		stdout.Write(printed.Bytes())
		return err
	}
	stderr.Write(printed.Bytes())
	if err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) { // the command line's problems too (ErrFlags)
			fmt.Fprintln(stderr, "lastmile:", err)
			fmt.Fprintln(stderr, "\nRun `lastmile serve --help` for every setting.")
			return errUsage
		}
		return err
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	a, err := New(ctx, cfg, Options{Logger: log})
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// noArgs refuses the arguments left after the flags of a command that
// takes flags only: the first of them is named (the flags after it were
// not read), then the usage follows; a usage error.
func noArgs(fs *flag.FlagSet) error {
	if fs.NArg() == 0 {
		return nil
	}
	fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
	fs.Usage()
	return errUsage
}

// dbFlag adds --database to a command's flags, defaulting to LASTMILE_DATABASE.
func dbFlag(fs *flag.FlagSet, getenv func(string) string) *string {
	def := getenv("LASTMILE_DATABASE")
	if def == "" {
		def = "lastmile.db"
	}
	return fs.String("database", def, "SQLite database file (LASTMILE_DATABASE)")
}

// pathHint adds to err, the refusal of a database path that names no
// database file (storage.ErrNoDatabaseFile), how to name another, when
// the path was the default, lastmile.db: neither --database nor
// LASTMILE_DATABASE given. A path the user gave is named by the message
// itself.
func pathHint(fs *flag.FlagSet, getenv func(string) string, err error) error {
	if errors.Is(err, storage.ErrNoDatabaseFile) && defaultPath(fs, getenv) {
		return fmt.Errorf("%w (set LASTMILE_DATABASE or --database)", err)
	}
	return err
}

// defaultPath reports whether a command's database is lastmile.db by
// default: neither --database nor LASTMILE_DATABASE given.
func defaultPath(fs *flag.FlagSet, getenv func(string) string) bool {
	return !given(fs, "database") && getenv("LASTMILE_DATABASE") == ""
}

// checkDatabase checks the database path a command was given as serve
// checks LASTMILE_DATABASE, with that setting's own check and words (not
// empty, in a folder that exists, not a folder itself), naming where the
// path came from: the flag, or the variable. A usage error, before the
// database is opened or anything is made beside it — SQLite's "no such
// file" for "", or restore's lock that could not be made, would not say
// what is wrong.
func checkDatabase(fs *flag.FlagSet, path string) error {
	from := "LASTMILE_DATABASE"
	if given(fs, "database") {
		from = "--database"
	}
	for _, s := range settings {
		if s.env != "LASTMILE_DATABASE" {
			continue
		}
		if err := s.set(&Config{}, path); err != nil {
			fmt.Fprintf(fs.Output(), "%s: %s: %v\n", fs.Name(), from, err)
			return errUsage
		}
	}
	return nil
}

// newFlagSet is a command's flags: problems and usage go to stderr (help
// asked for goes to stdout: see parseFlags), the usage being text (one or
// more lines) followed by the flags' defaults.
func newFlagSet(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), usage)
		fs.PrintDefaults()
	}
	return fs
}

func version(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("lastmile version", "Usage: lastmile version\n\n"+
		"Prints lastmile's version: \"dev\" unless the build set it with\n"+
		"  go build -ldflags \"-X github.com/lastmile-app/lastmile/app.Version=v1.2.3\" ./cmd/lastmile", stderr)
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "lastmile", Version)
	return nil
}

func deliveries(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("lastmile deliveries", "Usage: lastmile deliveries [--database F] [--state pending|done|ignored|dead] [--repo owner/name] [--limit N] [--json]\n"+
		"       lastmile deliveries retry [--database F] DELIVERY-ID\n"+
		"       lastmile deliveries discard [--database F] DELIVERY-ID [--reason TEXT]\n\n"+
		"The table's DETAIL (the note, then the last error) is cut in the middle when\n"+
		"it is long, keeping its end, where an error says its cause; --json prints\n"+
		"every field whole.", stderr)
	path := dbFlag(fs, getenv)
	state := fs.String("state", "", "only deliveries in this state: pending, done, ignored or dead")
	repo := fs.String("repo", "", "only deliveries of this repository (owner/name)")
	limit := fs.Int("limit", 50, "how many, newest first")
	asJSON := fs.Bool("json", false, "print the deliveries as JSON, every field whole")
	reason := fs.String("reason", "", "discard: why the delivery is given up (kept in its note)")
	if err := parseFlags(fs, interspersed(args, map[string]bool{"json": true}), stdout); err != nil {
		return err
	}
	// Usage is checked before the database is opened, so that a wrong
	// command line is a usage error (exit 2) wherever it runs; the action
	// first, so that a listing's flag given with it is refused as such,
	// whatever its value.
	action := fs.Arg(0)
	if fs.NArg() > 0 {
		problem := ""
		switch {
		case action != "retry" && action != "discard":
			problem = fmt.Sprintf(": unknown action %q: use retry or discard", action)
		case fs.NArg() == 1:
			problem = " " + action + ": missing DELIVERY-ID"
		case strings.TrimSpace(fs.Arg(1)) == "":
			problem = fmt.Sprintf(" %s: %q is not a DELIVERY-ID (the DELIVERY column of lastmile deliveries)", action, fs.Arg(1))
		case fs.NArg() > 2:
			problem = fmt.Sprintf(" %s: unexpected argument %q: one DELIVERY-ID at a time", action, fs.Arg(2))
		}
		if problem != "" {
			fmt.Fprintln(stderr, "lastmile deliveries"+problem)
			fs.Usage()
			return errUsage
		}
	}
	if given(fs, "reason") && action != "discard" {
		fmt.Fprintln(stderr, "lastmile deliveries: --reason goes with discard: lastmile deliveries discard ID --reason TEXT")
		return errUsage
	}
	// The listing's flags do nothing with an action: refused rather than
	// ignored (retry --state dead does not retry the dead ones).
	if action != "" {
		for _, name := range []string{"json", "state", "repo", "limit"} {
			if given(fs, name) {
				fmt.Fprintf(stderr, "lastmile deliveries: --%s goes with the list, not with %s\n", name, action)
				return errUsage
			}
		}
	}
	if err := noEmptyFilter(fs, "state", "repo"); err != nil {
		return err
	}
	if *limit < 1 {
		fmt.Fprintf(stderr, "lastmile deliveries: --limit %d: use 1 or more\n", *limit)
		return errUsage
	}
	if *repo != "" {
		if err := checkRepo(fs, "--repo ", *repo); err != nil {
			return err
		}
	}
	switch s := pipeline.DeliveryState(*state); s {
	case "", pipeline.DeliveryPending, pipeline.DeliveryDone, pipeline.DeliveryIgnored, pipeline.DeliveryDead:
	default:
		fmt.Fprintf(stderr, "lastmile deliveries: --state %q: use pending, done, ignored or dead\n", *state)
		return errUsage
	}
	if err := checkDatabase(fs, *path); err != nil {
		return err
	}
	// The listing reads only: it must neither wait for a busy serve's
	// writes nor hold them up.
	open := storage.OpenReadOnly
	if action != "" {
		open = storage.OpenExisting
	}
	db, err := open(ctx, *path)
	if err != nil {
		return pathHint(fs, getenv, err)
	}
	defer db.Close()
	stdout = terminal{stdout}

	switch action {
	case "retry":
		d, err := db.RetryDelivery(ctx, fs.Arg(1))
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "delivery %s (%s %s) is queued again; a running lastmile serve handles it within seconds\n",
			inline(d.ID), inline(d.Event), inline(d.Repository))
		return nil
	case "discard":
		d, err := db.DiscardDelivery(ctx, fs.Arg(1), *reason)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "delivery %s (%s %s) is discarded: recorded as ignored, no longer dead\n", inline(d.ID), inline(d.Event), inline(d.Repository))
		return nil
	}
	list, err := db.ListDeliveries(ctx, storage.DeliveryFilter{State: pipeline.DeliveryState(*state), Repository: *repo, Limit: *limit})
	if err != nil {
		return storage.Damaged(*path, err)
	}
	behind, err := db.WaitingBehind(ctx, list)
	if err != nil {
		return storage.Damaged(*path, err)
	}
	if *asJSON {
		out := make([]deliveryJSON, len(list))
		for i, d := range list {
			out[i] = newDeliveryJSON(d)
			out[i].WaitsBehind = behind[d.ID].DeliveryID
		}
		return writeJSONTo(stdout, out)
	}
	cut := false
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RECEIVED\tDELIVERY\tEVENT\tREPOSITORY\tSTATE\tATTEMPTS\tDETAIL")
	for _, d := range list {
		last := d.LastError
		if last != "" && d.State == pipeline.DeliveryPending {
			last = "retry at " + when(d.NextAttemptAt) + ": " + last
		}
		if h, ok := behind[d.ID]; ok && last == "" {
			// Its queue's deliveries are handled one at a time, in order.
			last = "waits behind delivery " + h.DeliveryID
			if h.NextAttemptAt.After(time.Now()) {
				last += ", to be retried at " + when(h.NextAttemptAt)
			}
		}
		detail, shortened := deliveryDetail(d.Note, last, detailWidth)
		cut = cut || shortened
		event := d.Event
		if d.Action != "" {
			event += "." + d.Action
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", when(d.ReceivedAt), inline(d.ID), inline(event),
			orDash(inline(d.Repository)), d.State, d.Attempts, detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if cut {
		fmt.Fprintln(stdout, "\n(… marks a DETAIL cut in the middle; lastmile deliveries --json prints it whole)")
	}
	return nil
}

// detailWidth is how much of a delivery's DETAIL the table shows.
const detailWidth = 100

// deliveryDetail is the DETAIL of a delivery in the table, on one line and
// at most n characters: the note (why lastmile did not act on it: why it
// was ignored or discarded, or why a done one released or deployed
// nothing) first, then the last error, if any. When it must be cut, the note keeps at most
// half, and each is cut in the middle, so that the error's end, its cause,
// stays.
func deliveryDetail(note, lastErr string, n int) (detail string, cut bool) {
	note, lastErr = strings.Join(strings.Fields(note), " "), strings.Join(strings.Fields(lastErr), " ")
	const sep = "; last error: "
	switch {
	case lastErr == "":
		detail = cutMiddle(note, n)
		return detail, detail != note
	case note == "":
		detail = cutMiddle(lastErr, n)
		return detail, detail != lastErr
	}
	whole := note + sep + lastErr
	if len([]rune(whole)) <= n {
		return whole, false
	}
	note = cutMiddle(note, n/2)
	return note + sep + cutMiddle(lastErr, n-len([]rune(note))-len(sep)), true
}

// cutMiddle shortens s to n characters by putting "…" in place of its
// middle: the start says what lastmile was doing, the end why it failed (an
// error ends with its cause, such as GitHub's answer).
func cutMiddle(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	head := n / 3
	tail := n - head - 1
	return string(r[:head]) + "…" + string(r[len(r)-tail:])
}

// deliveryJSON is a delivery as `lastmile deliveries --json` prints it:
// every field whole (the body aside), in snake_case like the audit record.
type deliveryJSON struct {
	Seq            int64                  `json:"seq"`
	ID             string                 `json:"id"`
	Event          string                 `json:"event"`
	Action         string                 `json:"action,omitempty"`
	InstallationID int64                  `json:"installation_id,omitempty"`
	RepositoryID   int64                  `json:"repository_id,omitempty"`
	Repository     string                 `json:"repository,omitempty"`
	ReceivedAt     time.Time              `json:"received_at"`
	State          pipeline.DeliveryState `json:"state"`
	Attempts       int                    `json:"attempts"`
	Waits          int                    `json:"waits"`
	NextAttemptAt  time.Time              `json:"next_attempt_at,omitzero"`
	LastError      string                 `json:"last_error,omitempty"`
	FinishedAt     time.Time              `json:"finished_at,omitzero"`
	Note           string                 `json:"note,omitempty"`
	// WaitsBehind is the delivery at the head of its queue that a pending
	// delivery waits for.
	WaitsBehind string `json:"waits_behind,omitempty"`
}

func newDeliveryJSON(d *pipeline.Delivery) deliveryJSON {
	j := deliveryJSON{
		Seq: d.Seq, ID: d.ID, Event: d.Event, Action: d.Action,
		InstallationID: d.InstallationID, RepositoryID: d.RepositoryID, Repository: d.Repository,
		ReceivedAt: d.ReceivedAt, State: d.State, Attempts: d.Attempts, Waits: d.Waits,
		LastError: d.LastError, FinishedAt: d.FinishedAt, Note: d.Note,
	}
	if d.State == pipeline.DeliveryPending {
		j.NextAttemptAt = d.NextAttemptAt // only a delivery in the queue has a next attempt
	}
	return j
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// self is how the user runs lastmile, for the commands it suggests: see
// commandName.
func self(getenv func(string) string) string {
	return commandName(os.Args[0], getenv("GOCACHE"))
}

// commandName is the command the user can paste to run lastmile again,
// from how it was started (arg0, os.Args[0]): `go run ./cmd/lastmile` when
// go run built it (into the Go build cache, or a go-build temporary
// folder); else arg0 as given, quoted for the shell where it needs it: a
// path (./lastmile, /usr/local/bin/lastmile) or the name the shell found
// on PATH (lastmile); `lastmile` when there is no arg0. gocache is
// $GOCACHE, for a build cache of another name than go-build.
func commandName(arg0, gocache string) string {
	if builtByGoRun(arg0, gocache) {
		return "go run ./cmd/lastmile"
	}
	if arg0 == "" {
		return "lastmile"
	}
	return shellWord(arg0)
}

// builtByGoRun reports whether arg0 is an executable go run built: one in
// a go-build folder (the build cache's default name, and go run's
// temporary folders) or in $GOCACHE.
func builtByGoRun(arg0, gocache string) bool {
	path := filepath.ToSlash(arg0)
	if gocache != "" {
		if rel, err := filepath.Rel(gocache, arg0); err == nil && filepath.IsLocal(rel) {
			return true
		}
	}
	dirs := strings.Split(path, "/")
	for _, d := range dirs[:len(dirs)-1] {
		if strings.HasPrefix(d, "go-build") {
			return true
		}
	}
	return false
}

func vacuum(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("lastmile vacuum", "Usage: lastmile vacuum [--database F]\n\n"+
		"Gives the database's free space back to the file system, and makes retention\n"+
		"(LASTMILE_RETENTION_DAYS) shrink the file from then on. A database created by a\n"+
		"lastmile that did not do so yet (auto_vacuum none) is converted, once: rewritten\n"+
		"whole (SQLite's VACUUM), which takes seconds to minutes for a large database and\n"+
		"needs free disk of about twice its size (a temporary copy in SQLITE_TMPDIR or\n"+
		"TMPDIR, else /var/tmp or /tmp, and the WAL beside the database). Stop lastmile\n"+
		"serve first (vacuum refuses to run beside it) and back the database up.", stderr)
	path := dbFlag(fs, getenv)
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if err := checkDatabase(fs, *path); err != nil {
		return err
	}
	db, err := storage.OpenExisting(ctx, *path)
	if err != nil {
		return pathHint(fs, getenv, err)
	}
	defer db.Close()
	// A rewrite holds the write lock throughout: the intake of a running
	// serve would time out meanwhile.
	unlock, err := lockDatabase(*path)
	if err != nil {
		return stopServeFirst(err, "vacuum")
	}
	// DB.lock goes as it came, as restore's: one vacuum made is removed,
	// not left to the user vacuum ran as (root, say: lastmile serve's user
	// could not open it, and would not start).
	defer unlock(false)
	v, err := db.Vacuum(ctx)
	if err != nil {
		return err
	}
	sizes := fmt.Sprintf("%s → %s (%d → %d pages of %d bytes)", storage.Megabytes(v.Before.Bytes()), storage.Megabytes(v.After.Bytes()),
		v.Before.PageCount, v.After.PageCount, v.After.PageSize)
	switch {
	case v.Converted:
		fmt.Fprintf(stdout, "%s: converted to auto_vacuum=incremental and compacted: %s; retention now gives pruned space back to the disk\n", *path, sizes)
	case v.Before.AutoVacuum == "full":
		fmt.Fprintf(stdout, "%s: auto_vacuum=full gives free pages back at every commit already; nothing to do\n", *path)
	case v.Before.PageCount == v.After.PageCount:
		fmt.Fprintf(stdout, "%s: auto_vacuum=incremental already, and no free page to give back (%s)\n", *path, storage.Megabytes(v.After.Bytes()))
	default:
		fmt.Fprintf(stdout, "%s: auto_vacuum=incremental already; free pages given back: %s\n", *path, sizes)
	}
	if v.HeldByReaders {
		fmt.Fprintf(stdout, "%s: another process is reading the database (a lastmile history, a backup) or writing to it: the file keeps its size until it is done, and shrinks at the next checkpoint (lastmile serve's, or lastmile vacuum again)\n", *path)
	}
	return nil
}
