package storage

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

// The sweep's look for long-waiting protection-rule requests reads the
// waiting requests' partial index only: the answered decisions, never
// pruned, are not walked every minute.
func TestLongWaitingProtectionQueryPlan(t *testing.T) {
	db := openTemp(t)
	got := queryPlan(t, db, longWaitingQuery, 0)
	if !strings.Contains(got, "d USING INDEX protection_decisions_waiting") || strings.Contains(got, "TEMP B-TREE") {
		t.Errorf("query plan of the long-waiting protection-rule requests: %s; want the protection_decisions_waiting index, in its order", got)
	}
}

// The sweep's look for answers GitHub did not receive reads their partial
// index only.
func TestUnpostedProtectionQueryPlan(t *testing.T) {
	db := openTemp(t)
	got := queryPlan(t, db, unpostedQuery, 0, 0)
	if !strings.Contains(got, "d USING INDEX protection_decisions_unposted") || strings.Contains(got, "TEMP B-TREE") {
		t.Errorf("query plan of the unposted protection-rule answers: %s; want the protection_decisions_unposted index, in its order", got)
	}
}

// UnpostedProtectionAnswers lists the approvals and rejections of every
// repository, decided within the bounds, that were not posted: not those
// posted, nor those that wait, nor those decided outside the bounds, nor
// those of repositories lastmile can no longer reach.
func TestUnpostedProtectionAnswers(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	shop := pipeline.Repo{ID: 42, Owner: "acme", Name: "shop", InstallationID: 7}
	api := pipeline.Repo{ID: 43, Owner: "acme", Name: "api", InstallationID: 8}
	detached := pipeline.Repo{ID: 44, Owner: "acme", Name: "left", InstallationID: 7}
	uninstalled := pipeline.Repo{ID: 45, Owner: "globex", Name: "web", InstallationID: 9}
	for _, d := range []*pipeline.ProtectionDecision{
		{Repo: detached, DeliveryID: "detached", State: pipeline.ProtectionApproved, DecidedAt: t0},
		{Repo: uninstalled, DeliveryID: "uninstalled", State: pipeline.ProtectionApproved, DecidedAt: t0},
		{Repo: shop, DeliveryID: "too-old", State: pipeline.ProtectionApproved, DecidedAt: t0.Add(-time.Hour)},
		{Repo: shop, DeliveryID: "approved", State: pipeline.ProtectionApproved, DecidedAt: t0},
		{Repo: api, DeliveryID: "rejected", State: pipeline.ProtectionRejected, DecidedAt: t0.Add(time.Minute)},
		{Repo: shop, DeliveryID: "posted", State: pipeline.ProtectionApproved, DecidedAt: t0.Add(2 * time.Minute)},
		{Repo: shop, DeliveryID: "waiting", State: pipeline.ProtectionWaiting, DecidedAt: t0.Add(3 * time.Minute)},
		{Repo: api, DeliveryID: "too-recent", State: pipeline.ProtectionRejected, DecidedAt: t0.Add(time.Hour)},
	} {
		d.SHA, d.RunID, d.Environment = "a", 11, "production"
		if err := db.RecordProtectionDecision(ctx, d); err != nil {
			t.Fatal(err)
		}
		if d.DeliveryID == "posted" {
			if err := db.MarkProtectionPosted(ctx, d, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	// lastmile can no longer reach two of them: not listed.
	if err := db.DetachRepo(ctx, detached.ID, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SetInstallation(ctx, pipeline.InstallationState{ID: 9, State: pipeline.InstallationUninstalled, By: "octocat"}); err != nil {
		t.Fatal(err)
	}
	unposted, err := db.UnpostedProtectionAnswers(ctx, t0.Add(-time.Minute), t0.Add(30*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range unposted {
		got = append(got, fmt.Sprintf("%s %s %s installation %d", d.Repo.FullName(), d.DeliveryID, d.State, d.Repo.InstallationID))
	}
	if want := "acme/shop approved approved installation 7, acme/api rejected rejected installation 8"; strings.Join(got, ", ") != want {
		t.Errorf("unposted answers: %s; want %s", strings.Join(got, ", "), want)
	}
}

// LongWaitingProtectionDecisions lists the requests of every repository
// waiting since before the bound, and neither those answered nor those
// waiting since after it.
func TestLongWaitingProtectionDecisions(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	shop := pipeline.Repo{ID: 42, Owner: "acme", Name: "shop", InstallationID: 7}
	api := pipeline.Repo{ID: 43, Owner: "acme", Name: "api", InstallationID: 7}
	for _, d := range []*pipeline.ProtectionDecision{
		{Repo: api, DeliveryID: "api-old", SHA: "b", State: pipeline.ProtectionWaiting, DecidedAt: t0},
		{Repo: shop, DeliveryID: "shop-answered", SHA: "a", State: pipeline.ProtectionRejected, DecidedAt: t0},
		{Repo: shop, DeliveryID: "shop-old", SHA: "a", State: pipeline.ProtectionWaiting, DecidedAt: t0.Add(time.Minute)},
		{Repo: shop, DeliveryID: "shop-recent", SHA: "a", State: pipeline.ProtectionWaiting, DecidedAt: t0.Add(time.Hour)},
	} {
		d.RunID, d.Environment = 11, "production"
		if err := db.RecordProtectionDecision(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	waiting, err := db.LongWaitingProtectionDecisions(ctx, t0.Add(30*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range waiting {
		got = append(got, w.Repo.FullName()+" "+w.DeliveryID)
	}
	slices.Sort(got)
	if want := "acme/api api-old, acme/shop shop-old"; strings.Join(got, ", ") != want {
		t.Errorf("long-waiting requests: %s; want %s", strings.Join(got, ", "), want)
	}
}

// RecordProtectionDecision leaves the decision holding what is recorded:
// an answer recorded first by another handler, and whether it was posted,
// not the decision it was given.
func TestRecordProtectionDecisionHoldsWhatIsRecorded(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	repo := pipeline.Repo{ID: 42, Owner: "acme", Name: "shop", InstallationID: 7}
	decision := func(state, comment string, at time.Time) *pipeline.ProtectionDecision {
		t.Helper()
		d := &pipeline.ProtectionDecision{Repo: repo, DeliveryID: "rule-1", RunID: 11, Environment: "production", SHA: "a",
			State: state, Comment: comment, DecidedAt: at}
		if err := db.RecordProtectionDecision(ctx, d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	first := decision(pipeline.ProtectionApproved, "proven", t0)
	if first.State != pipeline.ProtectionApproved || first.Posted {
		t.Fatalf("first decision: %+v; want approved, not posted", first)
	}
	late := decision(pipeline.ProtectionRejected, "not proven", t0.Add(time.Minute))
	if late.ID != first.ID || late.State != pipeline.ProtectionApproved || late.Comment != "proven" || !late.DecidedAt.Equal(t0) || late.Posted {
		t.Errorf("a rejection recorded after an approval holds %+v; want the approval recorded first", late)
	}
	if err := db.MarkProtectionPosted(ctx, first, false); err != nil {
		t.Fatal(err)
	}
	if again := decision(pipeline.ProtectionRejected, "not proven", t0.Add(2*time.Minute)); again.State != pipeline.ProtectionApproved || !again.Posted {
		t.Errorf("a rejection recorded after the approval was posted holds %+v; want the approval, posted", again)
	}
}

// A request judged again while it still waits moves its time on: the sweep
// looks at it again only pipeline.HoldRunning after that judgement.
func TestProtectionDecisionStillWaitingMovesItsTimeOn(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	repo := pipeline.Repo{ID: 42, Owner: "acme", Name: "shop", InstallationID: 7}
	for i, comment := range []string{"waits for staging", "waits for staging still"} {
		d := &pipeline.ProtectionDecision{Repo: repo, DeliveryID: "rule-1", RunID: 11, Environment: "production", SHA: "a",
			State: pipeline.ProtectionWaiting, Comment: comment, DecidedAt: t0.Add(time.Duration(i) * time.Hour)}
		if err := db.RecordProtectionDecision(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	got, err := db.ProtectionDecision(ctx, pipeline.ProtectionRuleRequest{DeliveryID: "rule-1"})
	if err != nil || got.State != pipeline.ProtectionWaiting || !got.DecidedAt.Equal(t0.Add(time.Hour)) || got.Comment != "waits for staging still" {
		t.Errorf("judged waiting again an hour later: %+v, %v; want waiting, decided at %v, with the new comment", got, err, t0.Add(time.Hour))
	}
	if waiting, err := db.LongWaitingProtectionDecisions(ctx, t0.Add(30*time.Minute)); err != nil || len(waiting) != 0 {
		t.Errorf("waiting since before %v: %d, %v; want none (judged again since)", t0.Add(30*time.Minute), len(waiting), err)
	}
}

// openTemp opens a new database in the test's temporary folder, closed
// when the test ends (storagetest.Open, for this package's own tests).
func openTemp(t *testing.T) *DB {
	t.Helper()
	db, err := Open(context.Background(), filepath.Join(t.TempDir(), "lastmile.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// LaterProtectionRequest tells a request that a later attempt of the same
// run asked again for the same environment (spelt in another case, too)
// from one that is the latest, and from other runs' and environments'.
func TestLaterProtectionRequest(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	shop := pipeline.Repo{ID: 42, Owner: "acme", Name: "shop", InstallationID: 7}
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	record := func(id string, run int64, env string) *pipeline.ProtectionDecision {
		t.Helper()
		d := &pipeline.ProtectionDecision{Repo: shop, DeliveryID: id, RunID: run, Environment: env, SHA: "a",
			State: pipeline.ProtectionRejected, Comment: "no", DecidedAt: t0}
		if err := db.RecordProtectionDecision(ctx, d); err != nil {
			t.Fatal(err)
		}
		d.Repo = shop
		return d
	}
	first := record("rule-1", 40, "production")
	other := record("rule-2", 41, "production")
	staging := record("rule-3", 40, "staging")
	later := func(d *pipeline.ProtectionDecision) bool {
		t.Helper()
		got, err := db.LaterProtectionRequest(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if later(first) || later(other) || later(staging) {
		t.Error("a later request found where there is none")
	}
	rerun := record("rule-4", 40, "Production") // run 40 re-run
	if !later(first) {
		t.Error("run 40's first request: its re-run's request not found")
	}
	if later(other) || later(staging) || later(rerun) {
		t.Error("another run's, another environment's or the latest request taken for superseded")
	}
}

// WithdrawProtectionApproval withdraws an approval GitHub has not
// confirmed, once: a second withdrawal (another handler's) keeps the
// first's time and comment, and an approval GitHub confirmed, or a
// rejection, is not withdrawn. The decision is kept as it was made, and
// every reader (the unposted answers the sweep sends, the audit) sees the
// withdrawal.
func TestWithdrawProtectionApproval(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	repo := pipeline.Repo{ID: 42, Owner: "acme", Name: "shop", InstallationID: 7}
	record := func(id, state string) *pipeline.ProtectionDecision {
		t.Helper()
		d := &pipeline.ProtectionDecision{Repo: repo, DeliveryID: id, RunID: 11, Environment: "production", SHA: "a",
			State: state, Comment: "as decided", DecidedAt: t0}
		if err := db.RecordProtectionDecision(ctx, d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	approved := record("approved", pipeline.ProtectionApproved)
	if err := db.WithdrawProtectionApproval(ctx, approved, "backwards now", t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	want := pipeline.ProtectionWithdrawal{At: t0.Add(time.Minute), Comment: "backwards now"}
	if approved.Withdrawn == nil || *approved.Withdrawn != want || approved.State != pipeline.ProtectionApproved || approved.Comment != "as decided" {
		t.Fatalf("withdrawn: %+v (withdrawal %+v); want the approval as decided, withdrawn %+v", approved, approved.Withdrawn, want)
	}
	again := *approved
	again.Withdrawn = nil
	if err := db.WithdrawProtectionApproval(ctx, &again, "another reason", t0.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if again.Withdrawn == nil || *again.Withdrawn != want {
		t.Errorf("withdrawn twice: withdrawal %+v; want the first, %+v", again.Withdrawn, want)
	}
	state, comment := again.Answer()
	if state != pipeline.ProtectionRejected || comment != "backwards now" {
		t.Errorf("a withdrawn approval's answer: %s %q; want the rejection", state, comment)
	}

	posted := record("posted", pipeline.ProtectionApproved)
	if err := db.MarkProtectionPosted(ctx, posted, false); err != nil {
		t.Fatal(err)
	}
	posted.Posted = false // as the handler last read it
	rejected := record("rejected", pipeline.ProtectionRejected)
	for _, d := range []*pipeline.ProtectionDecision{posted, rejected} {
		if err := db.WithdrawProtectionApproval(ctx, d, "backwards now", t0.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if d.Withdrawn != nil {
			t.Errorf("%s: withdrawn %+v; want it kept as it is", d.DeliveryID, d.Withdrawn)
		}
	}
	if !posted.Posted {
		t.Error("the approval GitHub confirmed: not read back as posted")
	}

	// The rejection that withdrew an approval is sent again for the hour
	// after the withdrawal, not the approval's decision: in their order.
	unposted := func(after, before time.Time) []string {
		t.Helper()
		list, err := db.UnpostedProtectionAnswers(ctx, after, before)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, d := range list {
			got = append(got, fmt.Sprintf("%s %v", d.DeliveryID, d.Withdrawn != nil))
		}
		return got
	}
	if got, want := unposted(t0.Add(-time.Minute), t0.Add(2*time.Minute)), []string{"rejected false", "approved true"}; !slices.Equal(got, want) {
		t.Errorf("unposted answers (withdrawn?): %q; want %q", got, want)
	}
	if got, want := unposted(t0.Add(30*time.Second), t0.Add(2*time.Minute)), []string{"approved true"}; !slices.Equal(got, want) {
		t.Errorf("unposted answers since after the approval's decision (withdrawn?): %q; want %q, by its withdrawal", got, want)
	}
	if d, err := db.ProtectionDecision(ctx, pipeline.ProtectionRuleRequest{DeliveryID: "approved"}); err != nil || d.Withdrawn == nil || *d.Withdrawn != want {
		t.Errorf("read back: %+v, %v; want withdrawn %+v", d, err, want)
	}
}

// MarkProtectionPosted records what GitHub did with the answer a handler
// sent, unless the record changed since the handler read it: an approval
// sent as another handler withdrew it is not marked (the rejection is
// still to be sent and recorded), and a refusal never overwrites an
// answer GitHub took.
func TestMarkProtectionPostedKeepsWhatChangedMeanwhile(t *testing.T) {
	ctx := context.Background()
	db := openTemp(t)
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	repo := pipeline.Repo{ID: 42, Owner: "acme", Name: "shop", InstallationID: 7}
	d := &pipeline.ProtectionDecision{Repo: repo, DeliveryID: "rule-1", RunID: 11, Environment: "production", SHA: "a",
		State: pipeline.ProtectionApproved, Comment: "proven", DecidedAt: t0}
	if err := db.RecordProtectionDecision(ctx, d); err != nil {
		t.Fatal(err)
	}
	read := func() *pipeline.ProtectionDecision {
		t.Helper()
		got, err := db.ProtectionDecision(ctx, pipeline.ProtectionRuleRequest{DeliveryID: "rule-1"})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	sending := *d // handler A's, sending the approval
	withdrawing := *d
	if err := db.WithdrawProtectionApproval(ctx, &withdrawing, "backwards now", t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := db.MarkProtectionPosted(ctx, &sending, false); err != nil {
		t.Fatal(err)
	}
	if got := read(); got.Posted || got.Refused {
		t.Errorf("the approval taken after its withdrawal: %+v; want the withdrawal's rejection still to send", got)
	}
	if err := db.MarkProtectionPosted(ctx, &withdrawing, false); err != nil { // the rejection taken
		t.Fatal(err)
	}
	if err := db.MarkProtectionPosted(ctx, &withdrawing, true); err != nil { // a second sender's, refused
		t.Fatal(err)
	}
	if got := read(); !got.Posted || got.Refused || got.Withdrawn == nil {
		t.Errorf("the rejection taken, then another sending of it refused: %+v; want taken, not refused", got)
	}
}
