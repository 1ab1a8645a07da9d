package storage_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/metrics"
	"github.com/lastmile-app/lastmile/pipeline"
	"github.com/lastmile-app/lastmile/storage/storagetest"
)

// Two repository IDs lastmile knows under one name (a repository deleted,
// or renamed without lastmile hearing of it, and another created or renamed
// under its name) make one set of delivery series: the deployment counters
// and histograms of both, the newer last success, and the info and live
// since of one live repository — the one whose name came from the newest
// event, the newer repository (higher ID) on a tie. Two series with one
// label set would make the registry refuse the delivery metrics, every one
// of them.
func TestOneNameTwoRepositoriesOneSetOfSeries(t *testing.T) {
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	ts := func(tm time.Time) string { return strconv.FormatFloat(float64(tm.Unix()), 'g', -1, 64) }
	for _, tc := range []struct {
		name       string
		retire     int64     // the repository that has left lastmile (retired), if any
		renamedAt  time.Time // if set, 42 takes the name in an event at this time, after 43's
		production string    // the info's production label
		liveSince  time.Time
	}{
		{name: "the older retired", retire: 42, production: "false", liveSince: at(60)},
		{name: "the newer retired", retire: 43, production: "true", liveSince: at(0)},
		{name: "both live, the newer repository", production: "false", liveSince: at(60)},
		{name: "both live, the newer name", renamedAt: at(120), production: "true", liveSince: at(0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			db := storagetest.Open(t)
			gh := int64(1000)
			ledger := func(id int64) *caseLedger {
				l := &caseLedger{t: t, db: db, repo: pipeline.Repo{ID: id, Owner: "acme", Name: "shop", InstallationID: 7}, github: gh}
				if err := db.SaveRepo(ctx, l.repo, time.Time{}); err != nil {
					t.Fatal(err)
				}
				return l
			}
			// push records a release of one commit made at m, whose
			// configuration names production as config says.
			push := func(l *caseLedger, n, m int, config string) *pipeline.Release {
				t.Helper()
				cfg, err := pipeline.ParseConfig([]byte(config))
				if err != nil {
					t.Fatal(err)
				}
				db.Now = func() time.Time { return at(m) }
				sha := fmt.Sprintf("%040d", n)
				rel := &pipeline.Release{Repo: l.repo, SHA: sha, Ref: "refs/heads/main", PushedAt: at(m), Config: cfg,
					State: pipeline.ReleaseActive, ParentID: l.parent}
				if _, err := db.RecordRelease(ctx, rel, []pipeline.Commit{{SHA: sha, Author: "o", Timestamp: at(m), Title: sha}}); err != nil {
					t.Fatal(err)
				}
				l.parent = rel.ID
				return rel
			}
			// deploy deploys rel: created at m, started a minute later, and
			// ended in state after took minutes.
			deploy := func(l *caseLedger, rel *pipeline.Release, m, took int, state pipeline.DeploymentState) {
				t.Helper()
				d := l.deploy(rel, at(m))
				l.status(d, pipeline.DeploymentInProgress, at(m+1))
				l.status(d, state, at(m+took))
				gh = l.github
			}

			// 42, the older: a failure (2 min), then a success (4 min) that
			// restores production 12 minutes after the failure.
			old := ledger(42)
			deploy(old, push(old, 1, 0, "environments:\n  - name: production\n"), 1, 2, pipeline.DeploymentFailure)
			deploy(old, push(old, 2, 10, "environments:\n  - name: production\n"), 11, 4, pipeline.DeploymentSuccess)
			// 43, the newer, under the same name: a success (2 min), its
			// production environment not marked as one.
			newer := ledger(43)
			deploy(newer, push(newer, 3, 60, "environments:\n  - name: production\n    production: false\n"), 61, 2, pipeline.DeploymentSuccess)
			if tc.retire != 0 {
				if err := db.RetireEnvironments(ctx, tc.retire); err != nil {
					t.Fatal(err)
				}
			}
			if !tc.renamedAt.IsZero() {
				if err := db.SaveRepo(ctx, old.repo, tc.renamedAt); err != nil {
					t.Fatal(err)
				}
			}

			m := metrics.New(db, db, "test", slog.New(slog.DiscardHandler))
			srv := httptest.NewServer(m.Handler())
			defer srv.Close()
			resp, err := srv.Client().Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, line := range strings.Split(string(body), "\n") {
				if strings.Contains(line, `repository="acme/shop"`) || strings.HasPrefix(line, "lastmile_metrics_source_errors_total") {
					got = append(got, line)
				}
			}
			const labels = `environment="production",repository="acme/shop"`
			bucket := func(name, le string, n int) string {
				return fmt.Sprintf(`%s_bucket{%s,le="%s"} %d`, name, labels, le, n)
			}
			want := []string{
				"lastmile_metrics_source_errors_total 0",
				`lastmile_deployments_total{` + labels + `,state="error"} 0`,
				`lastmile_deployments_total{` + labels + `,state="failure"} 1`,
				`lastmile_deployments_total{` + labels + `,state="success"} 2`,
				// Created to terminal: 2, 4 and 2 minutes.
				bucket(metrics.DeploymentDuration, "120", 2),
				bucket(metrics.DeploymentDuration, "300", 3),
				metrics.DeploymentDuration + `_sum{` + labels + `} 480`,
				metrics.DeploymentDuration + `_count{` + labels + `} 3`,
				// 42's two commits reach production 15 and 5 minutes after
				// they were made, 43's one 3 minutes after.
				bucket(metrics.LeadTime, "60", 0),
				bucket(metrics.LeadTime, "300", 2),
				bucket(metrics.LeadTime, "900", 3),
				metrics.LeadTime + `_sum{` + labels + `} 1380`,
				metrics.LeadTime + `_count{` + labels + `} 3`,
				bucket(metrics.TimeToRestore, "900", 1),
				metrics.TimeToRestore + `_sum{` + labels + `} 720`,
				metrics.TimeToRestore + `_count{` + labels + `} 1`,
				metrics.ApprovalWait + `_count{` + labels + `} 0`,
				metrics.LastSuccess + `{` + labels + `} ` + ts(at(63)),
				metrics.EnvironmentInfo + `{environment="production",production="` + tc.production + `",repository="acme/shop"} 1`,
				metrics.EnvironmentLiveSince + `{` + labels + `} ` + ts(tc.liveSince),
			}
			for _, w := range want {
				if !slices.Contains(got, w) {
					t.Errorf("the scrape lacks %s", w)
				}
			}
			// One series per label set, whatever the number of repositories.
			for _, name := range []string{metrics.LastSuccess + "{", metrics.EnvironmentInfo + "{", metrics.EnvironmentLiveSince + "{",
				metrics.LeadTime + "_count{", `lastmile_deployments_total{` + labels + `,state="success"}`} {
				n := 0
				for _, line := range got {
					if strings.HasPrefix(line, name) {
						n++
					}
				}
				if n != 1 {
					t.Errorf("%d series %s…, want 1", n, name)
				}
			}
			if t.Failed() {
				t.Logf("scrape:\n%s", strings.Join(got, "\n"))
			}
			if _, err := m.Registry().Gather(); err != nil {
				t.Errorf("the registry: %v", err)
			}
		})
	}
}
