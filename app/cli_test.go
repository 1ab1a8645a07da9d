package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/app"
	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage"
	"github.com/lastmile-app/lastmile/storage/storagetest"
)

// cliDB seeds a database through the storage API: a done push, an ignored
// ping, a pending retry, and two dead deliveries of different repositories.
func cliDB(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lastmile.db")
	db, err := storage.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	seed := []struct {
		d     pipeline.Delivery
		state pipeline.DeliveryState
		err   string
	}{
		{pipeline.Delivery{ID: "guid-done", Event: "push", Repository: "acme/shop"}, pipeline.DeliveryDone, ""},
		{pipeline.Delivery{ID: "guid-ping", Event: "ping", State: pipeline.DeliveryIgnored}, pipeline.DeliveryIgnored, ""},
		{pipeline.Delivery{ID: "guid-retry", Event: "deployment_status", Action: "created", Repository: "acme/shop"}, pipeline.DeliveryPending, "GitHub answered 502"},
		{pipeline.Delivery{ID: "guid-dead-1", Event: "push", Repository: "acme/shop"}, pipeline.DeliveryDead, "malformed payload: push: unexpected end of JSON input"},
		{pipeline.Delivery{ID: "guid-dead-2", Event: "workflow_run", Action: "completed", Repository: "acme/api"}, pipeline.DeliveryDead, "handler panic: boom"},
	}
	for _, s := range seed {
		d := s.d
		d.Body = []byte(`{"seeded":true}`)
		if d.State == "" {
			d.State = pipeline.DeliveryPending
		}
		if _, err := db.Accept(ctx, &d, d.Event, "accepted"); err != nil {
			t.Fatal(err)
		}
		switch s.state {
		case pipeline.DeliveryDone:
			err = db.FinishDelivery(ctx, d.Seq, "")
		case pipeline.DeliveryPending:
			err = db.FailDelivery(ctx, d.Seq, s.err, time.Now().Add(time.Hour), false)
		case pipeline.DeliveryDead:
			err = db.FailDelivery(ctx, d.Seq, s.err, time.Now(), true)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// runCLI runs lastmile with args and an environment, capturing its output.
func runCLI(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = app.Main(context.Background(), args, getenvFrom(env), &out, &errb)
	return code, out.String(), errb.String()
}

// listed returns the delivery IDs in the table printed by `deliveries`.
func listed(t *testing.T, stdout string) []string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "RECEIVED") {
		t.Fatalf("no table header in %q", stdout)
	}
	var ids []string
	for _, l := range lines[1:] {
		if l == "" {
			break // the table ends; a note may follow
		}
		f := strings.Fields(l)
		if len(f) < 4 {
			t.Fatalf("short line %q", l)
		}
		ids = append(ids, f[2]) // date, time, delivery, ...
	}
	return ids
}

func TestDeliveriesCommandLists(t *testing.T) {
	path := cliDB(t)
	tests := map[string]struct {
		env  map[string]string
		args []string
		want []string
	}{
		"all, newest first, database from the flag": {
			args: []string{"deliveries", "--database", path},
			want: []string{"guid-dead-2", "guid-dead-1", "guid-retry", "guid-ping", "guid-done"},
		},
		"database from LASTMILE_DATABASE": {
			env: map[string]string{"LASTMILE_DATABASE": path}, args: []string{"deliveries"},
			want: []string{"guid-dead-2", "guid-dead-1", "guid-retry", "guid-ping", "guid-done"},
		},
		"the flag wins over the environment": {
			env:  map[string]string{"LASTMILE_DATABASE": filepath.Join(t.TempDir(), "other.db")},
			args: []string{"deliveries", "--database=" + path, "--limit", "1"},
			want: []string{"guid-dead-2"},
		},
		"dead only": {
			args: []string{"deliveries", "--database", path, "--state", "dead"},
			want: []string{"guid-dead-2", "guid-dead-1"},
		},
		"one repository": {
			args: []string{"deliveries", "--database", path, "--repo", "acme/shop"},
			want: []string{"guid-dead-1", "guid-retry", "guid-done"},
		},
		"one repository, in another case (GitHub's names ignore it)": {
			args: []string{"deliveries", "--database", path, "--repo", "Acme/SHOP"},
			want: []string{"guid-dead-1", "guid-retry", "guid-done"},
		},
		"state and repository": {
			args: []string{"deliveries", "--database", path, "--repo", "acme/shop", "--state", "dead"},
			want: []string{"guid-dead-1"},
		},
		"limit": {
			args: []string{"deliveries", "--database", path, "--limit", "2"},
			want: []string{"guid-dead-2", "guid-dead-1"},
		},
		"nothing matches": {
			args: []string{"deliveries", "--database", path, "--repo", "acme/api", "--state", "pending"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tc.env, tc.args...)
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			got := listed(t, stdout)
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("listed %v, want %v\n%s", got, tc.want, stdout)
			}
		})
	}

	t.Run("details", func(t *testing.T) {
		_, stdout, _ := runCLI(t, nil, "deliveries", "--database", path)
		for _, want := range []string{
			"deployment_status.created", "workflow_run.completed", // event.action
			"retry at ", "GitHub answered 502", // a pending retry says when
			"malformed payload", "handler panic: boom", // why it is dead
			"dead", "pending", "ignored", "done",
		} {
			if !strings.Contains(stdout, want) {
				t.Errorf("listing lacks %q:\n%s", want, stdout)
			}
		}
		for _, l := range strings.Split(stdout, "\n") {
			if strings.Contains(l, "guid-ping") && !strings.Contains(l, " - ") {
				t.Errorf("a delivery without a repository should show -: %q", l)
			}
		}
	})

	t.Run("json: when a pending delivery is tried again, when a done one finished", func(t *testing.T) {
		_, stdout, _ := runCLI(t, nil, "deliveries", "--database", path, "--json")
		var got []struct {
			ID            string    `json:"id"`
			NextAttemptAt time.Time `json:"next_attempt_at"`
			FinishedAt    time.Time `json:"finished_at"`
			LastError     string    `json:"last_error"`
		}
		if err := json.Unmarshal([]byte(stdout), &got); err != nil {
			t.Fatalf("%v\n%s", err, stdout)
		}
		byID := map[string]int{}
		for i, d := range got {
			byID[d.ID] = i
		}
		if len(got) != 5 {
			t.Fatalf("%d deliveries:\n%s", len(got), stdout)
		}
		if d := got[byID["guid-retry"]]; d.NextAttemptAt.Before(time.Now().Add(30*time.Minute)) || d.LastError != "GitHub answered 502" {
			t.Errorf("pending retry: %+v", d)
		}
		if d := got[byID["guid-done"]]; d.FinishedAt.IsZero() || !d.NextAttemptAt.IsZero() {
			t.Errorf("done: %+v", d)
		}
	})
}

// A pending delivery behind its queue's head (handled one at a time, in
// order) says which delivery it waits for, and when that one is tried
// again; a head, and a delivery of another queue, do not.
func TestDeliveriesSayWhatTheyWaitBehind(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lastmile.db")
	db, err := storage.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	retryAt := time.Now().Add(time.Hour)
	for _, d := range []pipeline.Delivery{
		{ID: "guid-head", Event: "push", Repository: "acme/shop", RepositoryID: 1, InstallationID: 7},
		{ID: "guid-behind-1", Event: "push", Repository: "acme/shop", RepositoryID: 1, InstallationID: 7},
		{ID: "guid-other", Event: "push", Repository: "acme/api", RepositoryID: 2, InstallationID: 7},
		{ID: "guid-behind-2", Event: "deployment_status", Repository: "acme/shop", RepositoryID: 1, InstallationID: 7},
		{ID: "guid-install", Event: "installation", Action: "suspend", InstallationID: 7},
		// acme/shop renamed acme/store while these waited: still behind
		// its head under the old name.
		{ID: "guid-renamed", Event: "push", Repository: "acme/store", RepositoryID: 1, InstallationID: 7},
	} {
		d.Body, d.State = []byte(`{"seeded":true}`), pipeline.DeliveryPending
		if _, err := db.Accept(ctx, &d, d.Event, "accepted"); err != nil {
			t.Fatal(err)
		}
		if d.ID == "guid-head" {
			if err := db.FailDelivery(ctx, d.Seq, "GitHub answered 502", retryAt, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	db.Close()

	_, stdout, _ := runCLI(t, nil, "deliveries", "--database", path)
	waits := "waits behind delivery guid-head, to be retried at " + retryAt.UTC().Format("2006-01-02 15:04:05Z")
	for _, l := range strings.Split(stdout, "\n") {
		id := strings.Fields(l + " x x x")[2]
		switch want := strings.Contains(l, waits); {
		case id == "guid-behind-1" || id == "guid-behind-2" || id == "guid-renamed":
			if !want {
				t.Errorf("%s should say %q: %q", id, waits, l)
			}
		case strings.HasPrefix(id, "guid-") && strings.Contains(l, "waits behind"):
			t.Errorf("%s waits behind nothing: %q", id, l)
		}
	}
	_, stdout, _ = runCLI(t, nil, "deliveries", "--database", path, "--json")
	var got []struct {
		ID          string `json:"id"`
		WaitsBehind string `json:"waits_behind"`
	}
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	want := map[string]string{"guid-behind-1": "guid-head", "guid-behind-2": "guid-head", "guid-renamed": "guid-head"}
	for _, d := range got {
		if d.WaitsBehind != want[d.ID] {
			t.Errorf("--json: %s waits behind %q, want %q", d.ID, d.WaitsBehind, want[d.ID])
		}
	}
	if len(got) != 6 {
		t.Errorf("--json listed %d deliveries, want 6", len(got))
	}
}

func TestDeliveriesRetry(t *testing.T) {
	ctx := context.Background()
	path := cliDB(t)

	code, stdout, stderr := runCLI(t, nil, "deliveries", "--database", path, "retry", "guid-dead-2")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if !strings.Contains(stdout, "guid-dead-2") || !strings.Contains(stdout, "queued again") {
		t.Errorf("stdout %q should say which delivery is queued again", stdout)
	}

	db, err := storage.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	d, err := db.GetDelivery(ctx, "guid-dead-2")
	if err != nil {
		t.Fatal(err)
	}
	if d.State != pipeline.DeliveryPending || d.Attempts != 0 {
		t.Errorf("after retry: state %s, attempts %d; want pending, 0", d.State, d.Attempts)
	}
	next, err := db.NextDeliveries(ctx, time.Now().Add(time.Second), nil, 10)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, n := range next {
		found = found || n.ID == "guid-dead-2"
	}
	if !found {
		t.Error("the retried delivery is not work for the worker")
	}
	other, _ := db.GetDelivery(ctx, "guid-dead-1")
	if other.State != pipeline.DeliveryDead {
		t.Errorf("another dead delivery changed: %s", other.State)
	}
}

func TestDeliveriesDiscard(t *testing.T) {
	ctx := context.Background()
	path := cliDB(t)

	// The reason flag after the ID, as people type it.
	code, stdout, stderr := runCLI(t, nil, "deliveries", "--database", path, "discard", "guid-dead-1", "--reason", "replayed by hand")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if !strings.Contains(stdout, "guid-dead-1") || !strings.Contains(stdout, "discarded") {
		t.Errorf("stdout %q should say which delivery is discarded", stdout)
	}
	db, err := storage.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	d, err := db.GetDelivery(ctx, "guid-dead-1")
	if err != nil {
		t.Fatal(err)
	}
	if d.State != pipeline.DeliveryIgnored || d.Note != "discarded by an operator: replayed by hand" || d.LastError == "" {
		t.Errorf("after discard: state %s, note %q, last error %q; want ignored, the reason, the error kept", d.State, d.Note, d.LastError)
	}
	stats, err := db.InboxStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stats[pipeline.DeliveryDead] != 1 { // guid-dead-2 is still dead
		t.Errorf("dead deliveries after discarding one of two: %d", stats[pipeline.DeliveryDead])
	}
	next, err := db.NextDeliveries(ctx, time.Now().Add(time.Second), nil, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range next {
		if n.ID == "guid-dead-1" {
			t.Error("a discarded delivery is work for the worker")
		}
	}
	// The list shows the reason, then the error it had.
	code, list, _ := runCLI(t, nil, "deliveries", "--database", path, "--state", "ignored")
	if code != 0 || !strings.Contains(list, "discarded by an operator: replayed by hand; last error: ") {
		t.Errorf("deliveries --state ignored: exit %d\n%s", code, list)
	}
	// Discarding is final: neither retried nor discarded again.
	for _, verb := range []string{"retry", "discard"} {
		if code, _, stderr := runCLI(t, nil, "deliveries", "--database", path, verb, "guid-dead-1"); code != 1 || !strings.Contains(stderr, "is ignored") {
			t.Errorf("%s after discard: exit %d, stderr %q", verb, code, stderr)
		}
	}
}

func TestDeliveriesCommandErrors(t *testing.T) {
	path := cliDB(t)
	missing := filepath.Join(t.TempDir(), "missing.db")
	tests := map[string]struct {
		args       []string
		code       int
		stderrHas  []string
		stdoutNone bool
	}{
		"retry an unknown ID": {
			args: []string{"deliveries", "--database", path, "retry", "no-such-guid"}, code: 1,
			stderrHas: []string{"no-such-guid", "not found"},
		},
		"retry a delivery that is not dead": {
			args: []string{"deliveries", "--database", path, "retry", "guid-retry"}, code: 1,
			stderrHas: []string{"guid-retry", "only dead deliveries"},
		},
		"retry a done delivery": {
			args: []string{"deliveries", "--database", path, "retry", "guid-done"}, code: 1,
			stderrHas: []string{"guid-done", "done"},
		},
		"missing database": {
			args: []string{"deliveries", "--database", missing}, code: 1,
			stderrHas: []string{missing},
		},
		"retry in a missing database": {
			args: []string{"deliveries", "--database", missing, "retry", "guid-dead-1"}, code: 1,
			stderrHas: []string{missing},
		},
		"retry without an ID": {
			args: []string{"deliveries", "--database", path, "retry"}, code: 2,
			stderrHas: []string{"Usage: lastmile deliveries"},
		},
		"retry without an ID, no database": {
			args: []string{"deliveries", "--database", missing, "retry"}, code: 2,
			stderrHas: []string{"Usage: lastmile deliveries"},
		},
		"retry with two IDs": {
			args: []string{"deliveries", "--database", path, "retry", "guid-dead-1", "guid-dead-2"}, code: 2,
			stderrHas: []string{"Usage: lastmile deliveries"},
		},
		"discard a delivery that is not dead": {
			args: []string{"deliveries", "--database", path, "discard", "guid-retry"}, code: 1,
			stderrHas: []string{"guid-retry", "only dead deliveries can be discarded"},
		},
		"discard an unknown ID": {
			args: []string{"deliveries", "--database", path, "discard", "no-such-guid"}, code: 1,
			stderrHas: []string{"no-such-guid", "not found"},
		},
		"discard without an ID": {
			args: []string{"deliveries", "--database", path, "discard", "--reason", "x"}, code: 2,
			stderrHas: []string{"Usage: lastmile deliveries"},
		},
		"a reason without discard": {
			args: []string{"deliveries", "--database", path, "retry", "guid-dead-1", "--reason", "x"}, code: 2,
			stderrHas: []string{"--reason goes with discard"},
		},
		// The listing's flags are refused with an action, as --json is:
		// --state dead does not make retry a retry of the dead ones.
		"a state with retry": {
			args: []string{"deliveries", "--database", path, "retry", "--state", "dead", "guid-dead-1"}, code: 2,
			stderrHas: []string{"--state goes with the list, not with retry"},
		},
		"a repository with discard": {
			args: []string{"deliveries", "--database", path, "discard", "guid-dead-1", "--repo", "acme/shop"}, code: 2,
			stderrHas: []string{"--repo goes with the list, not with discard"},
		},
		"an empty reason with retry": {
			args: []string{"deliveries", "--database", path, "retry", "guid-dead-1", "--reason", ""}, code: 2,
			stderrHas: []string{"--reason goes with discard"},
		},
		"an empty state with retry: the flag, not its value": {
			args: []string{"deliveries", "--database", path, "retry", "guid-dead-1", "--state", ""}, code: 2,
			stderrHas: []string{"--state goes with the list, not with retry"},
		},
		"a limit with retry": {
			args: []string{"deliveries", "--database", path, "--limit", "5", "retry", "guid-dead-1"}, code: 2,
			stderrHas: []string{"--limit goes with the list, not with retry"},
		},
		"unknown subcommand": {
			args: []string{"deliveries", "--database", path, "purge", "guid-dead-1"}, code: 2,
			stderrHas: []string{"Usage: lastmile deliveries"},
		},
		"unknown flag": {
			args: []string{"deliveries", "--database", path, "--colour"}, code: 2,
			stderrHas: []string{"colour", "Usage: lastmile deliveries"},
		},
		"limit not a number": {
			args: []string{"deliveries", "--database", path, "--limit", "ten"}, code: 2,
			stderrHas: []string{"limit"},
		},
		"negative limit": {
			args: []string{"deliveries", "--database", path, "--limit", "-1"}, code: 2,
			stderrHas: []string{"--limit -1: use 1 or more"},
		},
		"unknown state": {
			args: []string{"deliveries", "--database", path, "--state", "archived"}, code: 2,
			stderrHas: []string{"archived", "pending, done, ignored or dead"},
		},
		"no command": {
			args: nil, code: 2, stderrHas: []string{"Usage:", "lastmile deliveries retry ID"},
		},
		"unknown command": {
			args: []string{"deploy"}, code: 2, stderrHas: []string{`unknown command "deploy"`},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			before := dbState(t, path)
			code, stdout, stderr := runCLI(t, nil, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d (stdout %q, stderr %q)", code, tc.code, stdout, stderr)
			}
			for _, want := range tc.stderrHas {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr %q should contain %q", stderr, want)
				}
			}
			if strings.Contains(stdout, "queued again") {
				t.Errorf("stdout claims success: %q", stdout)
			}
			if after := dbState(t, path); after != before {
				t.Errorf("the database changed:\n%s\n%s", before, after)
			}
			if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a missing database was created (stat: %v)", err)
			}
		})
	}
}

// dbState summarises every delivery's state and attempts.
func dbState(t *testing.T, path string) string {
	t.Helper()
	db, err := storage.OpenReadOnly(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	list, err := db.ListDeliveries(context.Background(), storage.DeliveryFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, d := range list {
		fmt.Fprintf(&b, "%s:%s:%d ", d.ID, d.State, d.Attempts)
	}
	return b.String()
}

func TestMainHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}} {
		code, stdout, _ := runCLI(t, nil, args...)
		if code != 0 || !strings.Contains(stdout, "lastmile deliveries retry ID") {
			t.Errorf("%v: exit %d, stdout %q", args, code, stdout)
		}
	}
	for _, args := range [][]string{{"version"}, {"--version"}} {
		code, stdout, _ := runCLI(t, nil, args...)
		if code != 0 || strings.TrimSpace(stdout) != "lastmile "+app.Version {
			t.Errorf("%v: exit %d, stdout %q", args, code, stdout)
		}
	}
	code, stdout, stderr := runCLI(t, nil, "version", "extra")
	if code != 2 || stdout != "" || !strings.Contains(stderr, "Usage: lastmile version") {
		t.Errorf("version extra: exit %d, stdout %q, stderr %q; want 2 and the usage on stderr", code, stdout, stderr)
	}
}

// Help asked for is output (stdout, exit 0), so that `lastmile serve --help
// | less` shows it; a wrong command line is a usage error (stderr, exit 2).
func TestHelpGoesToStdout(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.db")
	env := map[string]string{"LASTMILE_DATABASE": missing}
	for _, cmd := range []struct{ name, usage string }{
		{"serve", "Usage: lastmile serve"},
		{"demo", "Usage: lastmile demo"},
		{"register", "Usage: lastmile register"},
		{"history", "Usage: lastmile history"},
		{"status", "Usage: lastmile status"},
		{"audit", "Usage: lastmile audit"},
		{"deliveries", "Usage: lastmile deliveries"},
		{"version", "Usage: lastmile version"},
	} {
		for _, help := range []string{"-h", "--help", "-help"} {
			t.Run(cmd.name+" "+help, func(t *testing.T) {
				code, stdout, stderr := runCLI(t, env, cmd.name, help)
				if code != 0 || !strings.Contains(stdout, cmd.usage) || stderr != "" {
					t.Errorf("exit %d, stdout %q, stderr %q; want 0, the usage on stdout, nothing on stderr", code, stdout, stderr)
				}
				if cmd.name == "serve" && !strings.Contains(stdout, "LASTMILE_WEBHOOK_SECRET") {
					t.Errorf("serve --help does not list the settings:\n%s", stdout)
				}
			})
		}
		t.Run(cmd.name+" with an unknown flag", func(t *testing.T) {
			// serve lists the problem with the settings' and points at
			// --help: its usage is a table of every setting.
			usage := cmd.usage
			if cmd.name == "serve" {
				usage = "Run `lastmile serve --help`"
			}
			code, stdout, stderr := runCLI(t, env, cmd.name, "--colour")
			if code != 2 || stdout != "" || !strings.Contains(stderr, "colour") || !strings.Contains(stderr, usage) {
				t.Errorf("exit %d, stdout %q, stderr %q; want 2, nothing on stdout, the problem and %q on stderr", code, stdout, stderr, usage)
			}
		})
	}
	// Help given after other arguments, as people type it.
	code, stdout, stderr := runCLI(t, env, "audit", "acme/shop", "1a2b3c4", "--help")
	if code != 0 || !strings.Contains(stdout, "Usage: lastmile audit") || stderr != "" {
		t.Errorf("audit OWNER/REPO SHA --help: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("help created the database (stat: %v)", err)
	}
}

func TestServeRefusesABadConfiguration(t *testing.T) {
	// serve stops before opening anything when the configuration is wrong,
	// with the one message that lists the problems, and exit code 2.
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "serve.db")
	code, stdout, stderr := runCLI(t, map[string]string{"LASTMILE_DATABASE": dbPath, "LASTMILE_APP_ID": "x"}, "serve")
	if code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
	for _, want := range []string{"LASTMILE_WEBHOOK_SECRET", "LASTMILE_APP_ID", "LASTMILE_PRIVATE_KEY", "lastmile serve --help"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if stdout != "" {
		t.Errorf("stdout %q", stdout)
	}
	if _, err := os.Stat(dbPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("serve created the database despite the bad configuration (stat: %v)", err)
	}
}

// A wrong command line is one of the problems serve lists, not the only
// one it names: still exit 2, before anything is opened.
func TestServeListsAStrayArgumentWithTheOtherProblems(t *testing.T) {
	dbPath := filepath.Join(t.TempDir(), "serve.db")
	for _, args := range [][]string{{"serve", "--listen", ":1", "extra"}, {"serve", "--colour"}} {
		code, stdout, stderr := runCLI(t, map[string]string{"LASTMILE_DATABASE": dbPath, "LASTMILE_APP_ID": "twelve"}, args...)
		if code != 2 || stdout != "" {
			t.Errorf("%v: exit %d, stdout %q; want 2 and nothing", args, code, stdout)
		}
		list := stderr[strings.Index(stderr, "lastmile: invalid configuration:")+1:]
		for _, want := range []string{strings.TrimLeft(args[len(args)-1], "-"), "LASTMILE_WEBHOOK_SECRET", "LASTMILE_APP_ID", "LASTMILE_PRIVATE_KEY"} {
			if !strings.Contains(list, want) {
				t.Errorf("%v: the list of problems lacks %q:\n%s", args, want, stderr)
			}
		}
	}
	if _, err := os.Stat(dbPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("serve created the database despite the bad command line (stat: %v)", err)
	}
}

// A dead delivery's error is long (GitHub's URL comes before its answer):
// the table keeps its end, where the cause is, and --json prints it whole.
func TestDeliveriesShowTheCause(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lastmile.db")
	db, err := storage.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	sha := "0123456789abcdef0123456789abcdef01234567"
	cause := "read .github/lastmile.yml at " + sha + ": GET http://127.0.0.1:34469/repos/acme/dead/contents/.github/lastmile.yml?ref=" +
		sha + ": 502 Server Error []"
	d := pipeline.Delivery{ID: "guid-dead", Event: "push", Repository: "acme/dead", InstallationID: 7, RepositoryID: 99, Body: []byte(`{}`), State: pipeline.DeliveryPending}
	if _, err := db.Accept(ctx, &d, d.Event, "accepted"); err != nil {
		t.Fatal(err)
	}
	if err := db.FailDelivery(ctx, d.Seq, cause, time.Now(), true); err != nil {
		t.Fatal(err)
	}
	short := pipeline.Delivery{ID: "guid-short", Event: "ping", Body: []byte(`{}`), State: pipeline.DeliveryIgnored}
	if _, err := db.Accept(ctx, &short, short.Event, "accepted"); err != nil {
		t.Fatal(err)
	}
	db.Close()

	t.Run("text", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, nil, "deliveries", "--database", path, "--state", "dead")
		if code != 0 {
			t.Fatalf("exit %d, stderr %q", code, stderr)
		}
		if ids := listed(t, stdout); len(ids) != 1 || ids[0] != "guid-dead" {
			t.Errorf("listed %v", ids)
		}
		var row string
		for _, l := range strings.Split(stdout, "\n") {
			if strings.Contains(l, "guid-dead") {
				row = l
			}
		}
		detail := row[strings.Index(row, "read .github"):]
		if !strings.HasSuffix(detail, ": 502 Server Error []") || !strings.Contains(detail, "…") || len([]rune(detail)) != 100 {
			t.Errorf("DETAIL %q (%d characters): want the error's start and end, cut to 100 in the middle", detail, len([]rune(detail)))
		}
		if !strings.Contains(stdout, "lastmile deliveries --json prints it whole") {
			t.Errorf("no word that a detail was cut:\n%s", stdout)
		}
	})

	t.Run("text, nothing cut", func(t *testing.T) {
		code, stdout, _ := runCLI(t, nil, "deliveries", "--database", path, "--state", "ignored")
		if code != 0 || strings.Contains(stdout, "…") || strings.Contains(stdout, "--json") {
			t.Errorf("exit %d:\n%s", code, stdout)
		}
	})

	t.Run("json", func(t *testing.T) {
		// --json after other flags, and before them.
		for _, args := range [][]string{{"--state", "dead", "--json"}, {"--json", "--state", "dead"}} {
			code, stdout, stderr := runCLI(t, nil, append([]string{"deliveries", "--database", path}, args...)...)
			if code != 0 {
				t.Fatalf("%v: exit %d, stderr %q", args, code, stderr)
			}
			var got []map[string]any
			if err := json.Unmarshal([]byte(stdout), &got); err != nil {
				t.Fatalf("%v: %v\n%s", args, err, stdout)
			}
			if len(got) != 1 {
				t.Fatalf("%v: %d deliveries:\n%s", args, len(got), stdout)
			}
			g := got[0]
			want := map[string]any{
				"id": "guid-dead", "event": "push", "repository": "acme/dead", "installation_id": 7.0, "repository_id": 99.0,
				"state": "dead", "attempts": 1.0, "waits": 0.0, "last_error": cause,
			}
			for k, v := range want {
				if g[k] != v {
					t.Errorf("%v: %s = %#v, want %#v", args, k, g[k], v)
				}
			}
			for _, k := range []string{"seq", "received_at"} {
				if _, ok := g[k]; !ok {
					t.Errorf("%v: no %s in %v", args, k, g)
				}
			}
			for _, k := range []string{"next_attempt_at", "body", "LastError"} {
				if _, ok := g[k]; ok {
					t.Errorf("%v: %s in %v", args, k, g)
				}
			}
		}
	})

	t.Run("json, nothing matches", func(t *testing.T) {
		code, stdout, _ := runCLI(t, nil, "deliveries", "--database", path, "--repo", "acme/dead", "--state", "pending", "--json")
		if code != 0 || strings.TrimSpace(stdout) != "[]" {
			t.Errorf("exit %d, stdout %q; want []", code, stdout)
		}
	})

	// A repository lastmile has no record of (a misspelt name) is not
	// found, as history says it: an empty table would say there is
	// nothing to see there.
	t.Run("a repository lastmile has no record of", func(t *testing.T) {
		for _, args := range [][]string{{"--repo", "acme/none"}, {"--repo", "acme/none", "--json"}, {"--repo", "acme/none", "--state", "dead"}} {
			code, stdout, stderr := runCLI(t, nil, append([]string{"deliveries", "--database", path}, args...)...)
			if want := "lastmile: repository acme/none: not found: lastmile has no record of it\n"; code != 1 || stdout != "" || stderr != want {
				t.Errorf("%q: exit %d, stdout %q, stderr %q; want 1 and %q", args, code, stdout, stderr, want)
			}
			_, _, historys := runCLI(t, nil, append([]string{"history", "--database", path}, args[:2]...)...)
			if historys != stderr {
				t.Errorf("%q: deliveries says %q, history %q", args, stderr, historys)
			}
		}
	})

	t.Run("json with retry", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, nil, "deliveries", "--database", path, "retry", "guid-dead", "--json")
		if code != 2 || stdout != "" || !strings.Contains(stderr, "--json goes with the list") {
			t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
		// An unknown action is that, whatever flags go with it.
		code, stdout, stderr = runCLI(t, nil, "deliveries", "--database", path, "--limit", "2", "--json", "extra")
		if code != 2 || stdout != "" || !strings.Contains(stderr, `unknown action "extra"`) || strings.Contains(stderr, "--json goes with") {
			t.Errorf("--json with an unknown action: exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
	})
}

// A command line that lacks an argument, or has one too many, says which
// first, then the usage; exit 2, before any database is opened.
func TestUsageErrorsSayWhatIsWrong(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.db")
	env := map[string]string{"LASTMILE_DATABASE": missing}
	for _, tc := range []struct {
		args         []string
		first, usage string
	}{
		{[]string{"audit"}, "lastmile audit: missing OWNER/REPO and SHA", "Usage: lastmile audit [--database F] "},
		{[]string{"audit", "acme/shop"}, "lastmile audit: missing SHA", "Usage: lastmile audit [--database F] "},
		{[]string{"audit", "--json", "acme/shop"}, "lastmile audit: missing SHA", "Usage: lastmile audit"},
		{[]string{"audit", "acme/shop", "1a2b3c4", "extra"}, `lastmile audit: unexpected argument "extra"`, "Usage: lastmile audit"},
		{[]string{"deliveries", "retry"}, "lastmile deliveries retry: missing DELIVERY-ID", "Usage: lastmile deliveries [--database F] "},
		{[]string{"deliveries", "discard", "--reason", "stale"}, "lastmile deliveries discard: missing DELIVERY-ID", "Usage: lastmile deliveries"},
		{[]string{"deliveries", "retry", ""}, `lastmile deliveries retry: "" is not a DELIVERY-ID`, "Usage: lastmile deliveries"},
		{[]string{"deliveries", "discard", " ", "--reason", "stale"}, `lastmile deliveries discard: " " is not a DELIVERY-ID`, "Usage: lastmile deliveries"},
		{[]string{"deliveries", "retry", "guid-1", "guid-2"}, `lastmile deliveries retry: unexpected argument "guid-2"`, "Usage: lastmile deliveries"},
		{[]string{"deliveries", "replay", "guid-1"}, `lastmile deliveries: unknown action "replay"`, "Usage: lastmile deliveries"},
		{[]string{"history", "acme/shop"}, `lastmile history: unexpected argument "acme/shop"`, "Usage: lastmile history [--database F] "},
		{[]string{"status", "acme/shop"}, `lastmile status: unexpected argument "acme/shop"`, "Usage: lastmile status [--database F] "},
		{[]string{"vacuum", "extra"}, `lastmile vacuum: unexpected argument "extra"`, "Usage: lastmile vacuum"},
		{[]string{"version", "extra"}, `lastmile version: unexpected argument "extra"`, "Usage: lastmile version"},
		{[]string{"--version", "extra"}, `lastmile version: unexpected argument "extra"`, "Usage: lastmile version"},
		{[]string{"demo", "extra"}, `lastmile demo: unexpected argument "extra"`, "Usage: lastmile demo"},
		// The flags after a stray argument are not read: no App named
		// "lastmile" for acme's "foo".
		{[]string{"register", "--print-manifest", "--webhook-url", "https://x.example/webhook", "extra", "--name", "foo", "--org", "acme"},
			`lastmile register: unexpected argument "extra"`, "Usage: lastmile register"},
	} {
		code, stdout, stderr := runCLI(t, env, tc.args...)
		if code != 2 || stdout != "" || !strings.HasPrefix(stderr, tc.first) || !strings.Contains(stderr, tc.usage) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 2, and on stderr %q first, then %q", tc.args, code, stdout, stderr, tc.first, tc.usage)
		}
	}
	// A malformed value is named, with what to give instead.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"audit", "acme/shop", "zz"}, `lastmile audit: "zz" is not a commit SHA (give 7 to 64 hex characters)` + "\n"},
		{[]string{"audit", "acme/shop", "1a2b3c4g"}, `lastmile audit: "1a2b3c4g" is not a commit SHA (give 7 to 64 hex characters)` + "\n"},
		{[]string{"audit", "acme/shop", strings.Repeat("a", 65)}, `lastmile audit: "` + strings.Repeat("a", 65) + `" is not a commit SHA (give 7 to 64 hex characters)` + "\n"},
		// Every command that takes a repository checks it the same way.
		{[]string{"audit", "shop", "1a2b3c4"}, `lastmile audit: "shop": give the repository as OWNER/REPO` + "\n"},
		{[]string{"deliveries", "--repo", "shop"}, `lastmile deliveries: --repo "shop": give the repository as OWNER/REPO` + "\n"},
		{[]string{"deliveries", "--repo", "acme/shop/"}, `lastmile deliveries: --repo "acme/shop/": give the repository as OWNER/REPO` + "\n"},
		{[]string{"history", "--repo", "shop"}, `lastmile history: --repo "shop": give the repository as OWNER/REPO` + "\n"},
		{[]string{"history", "--repo", "acme/shop/"}, `lastmile history: --repo "acme/shop/": give the repository as OWNER/REPO` + "\n"},
		{[]string{"history", "--repo", "/shop"}, `lastmile history: --repo "/shop": give the repository as OWNER/REPO` + "\n"},
		{[]string{"status", "--repo", "shop"}, `lastmile status: --repo "shop": give the repository as OWNER/REPO` + "\n"},
		{[]string{"audit", " /shop", "1a2b3c4"}, `lastmile audit: " /shop": give the repository as OWNER/REPO` + "\n"},
		// A filter given empty is refused, as the API refuses ?environment=:
		// taken as no filter, it would list everything.
		{[]string{"history", "--env", ""}, `lastmile history: --env "" is empty: leave it out for no filter` + "\n"},
		{[]string{"history", "--repo=", "--env", "production"}, `lastmile history: --repo "" is empty: leave it out for no filter` + "\n"},
		{[]string{"deliveries", "--repo", ""}, `lastmile deliveries: --repo "" is empty: leave it out for no filter` + "\n"},
		{[]string{"status", "--repo", ""}, `lastmile status: --repo "" is empty: leave it out for no filter` + "\n"},
		{[]string{"deliveries", "--json", "--state="}, `lastmile deliveries: --state "" is empty: leave it out for no filter` + "\n"},
		// --release given is a release number, as the API's ?release=:
		// 0 is not "the newest" (leave the flag out for that).
		{[]string{"audit", "--release", "0", "acme/shop", "1a2b3c4"}, "lastmile audit: --release 0: give a release number, 1 or more (history's RELEASE column, without the #); leave --release out for the newest\n"},
		{[]string{"audit", "acme/shop", "1a2b3c4", "--release=-1"}, "lastmile audit: --release -1: give a release number, 1 or more (history's RELEASE column, without the #); leave --release out for the newest\n"},
	} {
		code, stdout, stderr := runCLI(t, env, tc.args...)
		if code != 2 || stdout != "" || stderr != tc.want {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 2, and on stderr %q", tc.args, code, stdout, stderr, tc.want)
		}
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a usage error created the database (stat: %v)", err)
	}
}

// The read commands run beside a busy lastmile serve: while another
// connection holds the write lock (one of serve's write transactions), they
// answer at once, reading the last commit — they neither wait for the lock
// (its busy timeout, then "database is locked") nor hold serve's writes up.
func TestReadCommandsBesideAWriteTransaction(t *testing.T) {
	ctx := context.Background()
	path := cliDB(t)
	db, err := storage.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	repo := pipeline.Repo{ID: 42, Owner: "acme", Name: "shop", InstallationID: 7}
	cfg, err := pipeline.ParseConfig([]byte("environments:\n  - name: production\n"))
	if err != nil {
		t.Fatal(err)
	}
	sha := "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1"
	if err := db.SaveRepo(ctx, repo, time.Time{}); err != nil {
		t.Fatal(err)
	}
	rel := &pipeline.Release{Repo: repo, SHA: sha, Ref: "refs/heads/main", PushedAt: time.Now(), Config: cfg, State: pipeline.ReleaseActive}
	if _, err := db.RecordRelease(ctx, rel, []pipeline.Commit{{SHA: sha, Author: "octocat", Timestamp: time.Now(), Title: "Ship it"}}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	storagetest.HoldWriteLock(t, path)

	env := map[string]string{"LASTMILE_DATABASE": path}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"history"}, "#1"},
		{[]string{"history", "--env", "production", "--json"}, "[]"},
		{[]string{"status"}, "acme/shop   production"},
		{[]string{"audit", "acme/shop", sha[:7]}, "Release #1 of acme/shop"},
		{[]string{"audit", "--json", "acme/shop", sha}, `"sha": "` + sha + `"`},
		{[]string{"deliveries"}, "guid-dead-2"},
		{[]string{"deliveries", "--json"}, `"id": "guid-dead-2"`},
	} {
		code, stdout, stderr := runCLI(t, env, tc.args...)
		if code != 0 || !strings.Contains(stdout, tc.want) {
			t.Errorf("%v beside a write transaction: exit %d, stdout %q, stderr %q; want exit 0 and %q", tc.args, code, stdout, stderr, tc.want)
		}
	}
}

// A value flag typed last, its value forgotten, is the flag package's own
// "flag needs an argument", a usage error: it does not take the first
// positional argument as its value (retry as --limit's, a DELIVERY-ID as
// an action), and nothing is done.
func TestATrailingFlagWithoutItsValue(t *testing.T) {
	path := cliDB(t)
	dest := filepath.Join(t.TempDir(), "backup.db")
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"deliveries", "discard", "guid-dead-1", "--reason"}, "reason"},
		{[]string{"deliveries", "retry", "guid-dead-1", "--limit"}, "limit"},
		{[]string{"deliveries", "--json", "--state"}, "state"},
		{[]string{"audit", "--database", path, "acme/shop", "5013692", "--release"}, "release"},
		{[]string{"audit", "acme/shop", "5013692", "--json", "--database"}, "database"},
		{[]string{"backup", dest, "--database"}, "database"},
		{[]string{"restore", dest, "--database"}, "database"},
	} {
		before := dbState(t, path)
		code, stdout, stderr := runCLI(t, map[string]string{"LASTMILE_DATABASE": path}, tc.args...)
		want := "lastmile " + tc.args[0] + ": flag needs an argument: --" + tc.flag + "\n"
		if code != 2 || stdout != "" || !strings.HasPrefix(stderr, want) || !strings.Contains(stderr, "Usage: lastmile "+tc.args[0]) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2, and on stderr %q first, then the usage", tc.args, code, stdout, stderr, want)
		}
		if after := dbState(t, path); after != before {
			t.Errorf("%q changed the database:\n%s\n%s", tc.args, before, after)
		}
	}
	if _, err := os.Stat(dest); err == nil {
		t.Errorf("a usage error wrote %s", dest)
	}
}

// Every command that takes --database checks its path as serve checks
// LASTMILE_DATABASE, in serve's words: not empty, in a folder that exists.
// A usage error, before anything is opened, locked or written.
func TestCommandsCheckTheDatabasePathAsServeDoes(t *testing.T) {
	dir := t.TempDir()
	noFolder := filepath.Join(dir, "missing-folder", "lastmile.db")
	dest := filepath.Join(dir, "backup.db")
	for _, args := range [][]string{
		{"history"},
		{"status"},
		{"audit", "acme/shop", "1a2b3c4"},
		{"deliveries"},
		{"deliveries", "retry", "guid-1"},
		{"vacuum"},
		{"backup", dest},
		{"restore", dest},
	} {
		for _, tc := range []struct {
			env  map[string]string
			flag []string
			want string
		}{
			{flag: []string{"--database", ""}, want: "--database: must not be empty"},
			{env: map[string]string{"LASTMILE_DATABASE": " "}, want: "LASTMILE_DATABASE: must not be empty"},
			{flag: []string{"--database", noFolder}, want: "--database: the folder of " + noFolder + " does not exist"},
			{env: map[string]string{"LASTMILE_DATABASE": noFolder}, want: "LASTMILE_DATABASE: the folder of " + noFolder + " does not exist"},
		} {
			full := append(append([]string{args[0]}, tc.flag...), args[1:]...)
			code, stdout, stderr := runCLI(t, tc.env, full...)
			want := "lastmile " + args[0] + ": " + tc.want + "\n"
			if code != 2 || stdout != "" || stderr != want {
				t.Errorf("%q (environment %v): exit %d, stdout %q, stderr %q; want 2 and %q", full, tc.env, code, stdout, stderr, want)
			}
		}
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Errorf("the commands refused left %v in %s (%v)", entries, dir, err)
	}
}

// A command's flag problem names the flag as the documentation does
// (--name, not the flag package's -name), and an unknown flag a letter or
// two from one of the command's comes with it; the usage follows, a usage
// error.
func TestFlagProblemsNameTheFlagWithTwoDashes(t *testing.T) {
	env := map[string]string{"LASTMILE_DATABASE": filepath.Join(t.TempDir(), "none.db")}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"deliveries", "--limt", "5"}, "flag provided but not defined: --limt: did you mean --limit?\n"},
		{[]string{"history", "-databse=x.db"}, "flag provided but not defined: --databse: did you mean --database?\n"},
		{[]string{"demo", "--colour"}, "flag provided but not defined: --colour\n"},
		{[]string{"history", "--limit", "ten"}, `invalid value "ten" for flag --limit: give a whole number` + "\n"},
		{[]string{"audit", "--release", "x", "acme/shop", "1a2b3c4"}, `invalid value "x" for flag --release: give a whole number` + "\n"},
		{[]string{"history", "--limit", "99999999999999999999"}, `invalid value "99999999999999999999" for flag --limit: out of range` + "\n"},
		{[]string{"deliveries", "--json=maybe"}, `invalid boolean value "maybe" for --json: give true or false` + "\n"},
		{[]string{"register", "--private-key-file"}, "flag provided but not defined: --private-key-file\n"},
		{[]string{"vacuum", "--database"}, "flag needs an argument: --database\n"},
	} {
		code, stdout, stderr := runCLI(t, env, tc.args...)
		if want := "lastmile " + tc.args[0] + ": " + tc.want; code != 2 || stdout != "" || !strings.HasPrefix(stderr, want) || !strings.Contains(stderr, "Usage: lastmile "+tc.args[0]) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2, and on stderr %q first, then the usage", tc.args, code, stdout, stderr, tc.want)
		}
	}
}

// A database not there is named; the hint to set LASTMILE_DATABASE or
// --database is for the default path only, lastmile.db, neither given
// (a path given is the user's, which the message names).
func TestAMissingDatabaseHintsAtTheSettingWhenNoneWasGiven(t *testing.T) {
	t.Chdir(t.TempDir())
	missing := filepath.Join(t.TempDir(), "nonexist.db")
	dest := filepath.Join(t.TempDir(), "backup.db")
	for _, args := range [][]string{
		{"history"},
		{"status"},
		{"audit", "acme/shop", "1a2b3c4"},
		{"deliveries"},
		{"deliveries", "retry", "guid-1"},
		{"vacuum"},
		{"backup", dest},
	} {
		hint := " (set LASTMILE_DATABASE or --database)"
		for _, tc := range []struct {
			env  map[string]string
			flag []string
			want string
		}{
			{want: "lastmile: database lastmile.db: no such file or directory" + hint},
			{flag: []string{"--database", missing}, want: "lastmile: database " + missing + ": no such file or directory"},
			{env: map[string]string{"LASTMILE_DATABASE": missing}, want: "lastmile: database " + missing + ": no such file or directory"},
		} {
			if args[0] == "backup" {
				tc.want = strings.Replace(tc.want, "no such file or directory", "no such file", 1)
			}
			full := append(append([]string{args[0]}, tc.flag...), args[1:]...)
			code, stdout, stderr := runCLI(t, tc.env, full...)
			if code != 1 || stdout != "" || stderr != tc.want+"\n" {
				t.Errorf("%q (environment %v): exit %d, stdout %q, stderr %q; want 1 and %q", full, tc.env, code, stdout, stderr, tc.want)
			}
		}
	}
	if _, err := os.Stat("lastmile.db"); err == nil {
		t.Error("a command created lastmile.db")
	}
}
