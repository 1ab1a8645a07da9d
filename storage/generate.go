package storage

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/lastmile-app/lastmile/metrics"
	"github.com/lastmile-app/lastmile/pipeline"
)

// GenerateOptions size a synthetic history for benchmarks.
type GenerateOptions struct {
	Repositories int      // default 50
	Environments []string // default test, staging, production (the last is production)
	Deployments  int      // total lastmile deployments; default 1,000,000
	Commits      int      // total commits across releases; default 3,000,000
	FailureRate  float64  // share of deployments that fail; default 0.05
	Seed         uint64
	Now          time.Time // the history ends here; default time.Now()
}

// Generate fills an empty database with a synthetic but consistent history:
// releases with their commits, each promoted through the environments until
// one fails, each deployment with its statuses, and the metrics rollups
// that history implies (computed as the worker would have, in memory, then
// written once). It is for benchmarks of reading the ledger: /metrics,
// history and audit. It leaves out environment_commits (which commits have
// reached each environment), read only when a later deployment succeeds. progress, if set, is told how many deployments exist.
func (db *DB) Generate(ctx context.Context, o GenerateOptions, progress func(deployments int)) error {
	if o.Repositories <= 0 {
		o.Repositories = 50
	}
	if len(o.Environments) == 0 {
		o.Environments = []string{"test", "staging", "production"}
	}
	if o.Deployments <= 0 {
		o.Deployments = 1_000_000
	}
	if o.Commits <= 0 {
		o.Commits = 3_000_000
	}
	if o.FailureRate == 0 {
		o.FailureRate = 0.05
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	var n int
	if err := db.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM releases`).Scan(&n); err != nil || n > 0 {
		if err == nil {
			err = fmt.Errorf("the database already has %d releases: generate into an empty one", n)
		}
		return err
	}
	rng := rand.New(rand.NewPCG(o.Seed, 42))
	envs := len(o.Environments)
	cfg := &pipeline.Config{RequiredContexts: []string{}}
	for i, e := range o.Environments {
		cfg.Environments = append(cfg.Environments, pipeline.Environment{Name: e, Production: i == envs-1})
	}
	// Releases reach the next environment unless they fail, so a release
	// makes about envs deployments; commits are spread evenly over them.
	releases := o.Deployments * 100 / (envs*100 - int(o.FailureRate*100*float64(envs-1)*float64(envs)/2))
	releases = max(releases, 1)
	perRepo := releases / o.Repositories
	span := 365 * 24 * time.Hour
	step := span / time.Duration(max(perRepo, 1))

	type envKey struct{ repo, env string }
	type rollup struct {
		counts                        map[string]float64
		lead, duration, restore, wait []float64
		failingSince, lastSuccess     int64
		watermark                     int64
	}
	rollups := map[envKey]*rollup{}
	deployments, commitsLeft, releasesLeft := 0, o.Commits, releases
	var releaseID, deploymentID, statusID int64

	for r := 0; r < o.Repositories && deployments < o.Deployments; r++ {
		repo := pipeline.Repo{ID: int64(1000 + r), Owner: "acme", Name: fmt.Sprintf("svc-%03d", r), InstallationID: 1}
		err := db.inTx(ctx, func(tx *sql.Tx) error {
			if err := saveRepoTx(ctx, tx, repo, o.Now); err != nil {
				return err
			}
			for _, e := range cfg.Environments {
				if _, err := tx.ExecContext(ctx, `INSERT INTO environment_state (repository_id, environment, repository, production)
					VALUES (?, ?, ?, ?)`, repo.ID, e.Name, repo.FullName(), e.Production); err != nil {
					return err
				}
				if err := zeroSeries(ctx, tx, repo.FullName(), e.Name); err != nil {
					return err
				}
				rollups[envKey{repo.FullName(), e.Name}] = &rollup{counts: map[string]float64{}}
			}
			return nil
		})
		if err != nil {
			return err
		}
		cfgJSON := fmt.Sprintf(`{"required_contexts":[],"environments":[%s]}`, envJSON(cfg))
		parent := int64(0) // the repository's history is linear: each release builds on the one before
		// Commit in batches: one transaction per 2,000 releases.
		t := o.Now.Add(-span)
		for done := 0; done < perRepo && deployments < o.Deployments; {
			batch := min(2000, perRepo-done)
			err := db.inTx(ctx, func(tx *sql.Tx) error {
				insRel, err := tx.PrepareContext(ctx, `INSERT INTO releases (id, repository_id, sha, ref, pusher, pushed_at, delivery_id,
					config, state, stop_kind, stop_reason, created_at, updated_at, parent_id) VALUES (?, ?, ?, 'refs/heads/main', ?, ?, '', ?, ?, ?, ?, ?, ?, ?)`)
				if err != nil {
					return err
				}
				defer insRel.Close()
				insCommit, err := tx.PrepareContext(ctx, `INSERT INTO release_commits (release_id, position, sha, author, timestamp, title) VALUES (?, ?, ?, ?, ?, ?)`)
				if err != nil {
					return err
				}
				defer insCommit.Close()
				insDep, err := tx.PrepareContext(ctx, `INSERT INTO deployments (id, repository_id, release_id, environment, stage, sha, origin,
					github_id, state, production, creator, attempts, run_id, log_url, created_at, terminal_at, succeeded_at)
					VALUES (?, ?, ?, ?, ?, ?, 'lastmile', ?, ?, ?, 'lastmile[bot]', 1, ?, ?, ?, ?, ?)`)
				if err != nil {
					return err
				}
				defer insDep.Close()
				insStatus, err := tx.PrepareContext(ctx, `INSERT INTO deployment_statuses (id, deployment_id, github_id, state, description, log_url,
					creator, created_at) VALUES (?, ?, ?, ?, '', ?, 'github-actions[bot]', ?)`)
				if err != nil {
					return err
				}
				defer insStatus.Close()
				for i := 0; i < batch && deployments < o.Deployments; i++ {
					releaseID++
					t = t.Add(step)
					sha := fmt.Sprintf("%040x", rng.Uint64()<<8|uint64(releaseID))
					nCommits := 1
					if releasesLeft > 0 {
						nCommits = max(1, commitsLeft/releasesLeft)
					}
					releasesLeft--
					commitsLeft -= nCommits
					if _, err := insRel.ExecContext(ctx, releaseID, repo.ID, sha, "dev", millis(t), cfgJSON,
						string(pipeline.ReleaseCompleted), "", "", millis(t), millis(t), parent); err != nil {
						return err
					}
					parent = releaseID
					commitTimes := make([]int64, nCommits)
					for c := range nCommits {
						ct := t.Add(-time.Duration(rng.Int64N(int64(72 * time.Hour))))
						commitTimes[c] = millis(ct)
						if _, err := insCommit.ExecContext(ctx, releaseID, c, fmt.Sprintf("%040x", rng.Uint64()), "dev", millis(ct), "change"); err != nil {
							return err
						}
					}
					state, kind, reason := pipeline.ReleaseCompleted, "", ""
					at := t
					var runID int64 = releaseID * 10
					for stage, e := range cfg.Environments {
						deployments++
						deploymentID++
						runID++
						created := at.Add(time.Duration(rng.IntN(300)) * time.Second)
						wait := time.Duration(0)
						if e.Production {
							wait = time.Duration(rng.IntN(3600)) * time.Second
						}
						done := created.Add(wait + time.Duration(30+rng.IntN(600))*time.Second)
						final := "success"
						if rng.Float64() < o.FailureRate {
							final = "failure"
						}
						succeeded := int64(0)
						if final == "success" {
							succeeded = millis(done)
						}
						logURL := fmt.Sprintf("https://github.com/%s/actions/runs/%d", repo.FullName(), runID)
						if _, err := insDep.ExecContext(ctx, deploymentID, repo.ID, releaseID, e.Name, stage, sha, deploymentID, final,
							e.Production, runID, logURL, millis(created), millis(done), succeeded); err != nil {
							return err
						}
						for k, st := range []string{"queued", "in_progress", final} {
							statusID++
							stAt := created.Add(time.Duration(k) * time.Second)
							if k == 2 {
								stAt = done
							}
							if _, err := insStatus.ExecContext(ctx, statusID, deploymentID, statusID, st, logURL, millis(stAt)); err != nil {
								return err
							}
						}
						ru := rollups[envKey{repo.FullName(), e.Name}]
						ru.counts[final]++
						ru.duration = append(ru.duration, done.Sub(created).Seconds())
						if wait > 0 {
							ru.wait = append(ru.wait, wait.Seconds())
						}
						if final == "success" {
							for _, ct := range commitTimes {
								ru.lead = append(ru.lead, float64(millis(done)-ct)/1000)
							}
							if ru.failingSince != 0 {
								ru.restore = append(ru.restore, float64(millis(done)-ru.failingSince)/1000)
								ru.failingSince = 0
							}
							ru.lastSuccess, ru.watermark = millis(done), releaseID
						} else {
							if ru.failingSince == 0 {
								ru.failingSince = millis(done)
							}
							state, kind, reason = pipeline.ReleaseStopped, string(pipeline.StopFailed), "deployment to "+e.Name+" ended in failure"
							break
						}
						at = done
					}
					if _, err := tx.ExecContext(ctx, `UPDATE releases SET state = ?, stop_kind = ?, stop_reason = ?, updated_at = ? WHERE id = ?`,
						string(state), kind, reason, millis(at), releaseID); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			done += batch
			if progress != nil {
				progress(deployments)
			}
		}
	}
	// The rollups, as the worker would have left them.
	return db.inTx(ctx, func(tx *sql.Tx) error {
		for k, ru := range rollups {
			for state, n := range ru.counts {
				if err := addCounter(ctx, tx, MetricDeployments, []string{k.repo, k.env, state}, n); err != nil {
					return err
				}
			}
			for name, values := range map[string][]float64{metrics.LeadTime: ru.lead, metrics.DeploymentDuration: ru.duration,
				metrics.TimeToRestore: ru.restore, metrics.ApprovalWait: ru.wait} {
				if err := observe(ctx, tx, name, k.repo, k.env, values...); err != nil {
					return err
				}
			}
			if _, err := tx.ExecContext(ctx, `UPDATE environment_state SET lead_watermark = ?, failing_since = ?, last_success_at = ?
				WHERE repository = ? AND environment = ?`, ru.watermark, ru.failingSince, ru.lastSuccess, k.repo, k.env); err != nil {
				return err
			}
		}
		return nil
	})
}

func envJSON(c *pipeline.Config) string {
	s := ""
	for i, e := range c.Environments {
		if i > 0 {
			s += ","
		}
		s += fmt.Sprintf(`{"name":%q,"production":%t}`, e.Name, e.Production)
	}
	return s
}
