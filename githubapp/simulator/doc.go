// Package simulator is a stateful, in-process fake of the parts of GitHub
// that lastmile uses: App authentication (JWT and installation tokens), the
// App's installations (by id and by repository), repository contents,
// commits and compare, commit statuses, deployments and deployment statuses,
// custom deployment protection rules, workflow runs and job logs, the App's
// hook deliveries, signed webhook deliveries, and an Actions player
// that runs an `on: deployment` workflow the way GitHub does (register job,
// gated deploy job, reviews, protection rules, statuses, twin deployments).
//
// Bodies, fields and status codes follow GitHub's published descriptions;
// conformance_test.go checks every request and response against the REST
// OpenAPI description and every webhook against the webhook schemas (both
// the description's x-webhooks and @octokit/openapi-webhooks'; trimmed
// copies in testdata/, see testdata/README.md). Tests of code that talks to the simulator can have
// all of its traffic, and every webhook it sends, checked against them with
// Options.Wrap and the oasvalidate package (see WebhookObserver).
//
// # Using it in a test
//
//	sim := simulator.New(simulator.Options{AppID: 42, WebhookSecret: "s3cret"})
//	defer sim.Close()
//	apiURL, _ := sim.Start("127.0.0.1:0") // or httptest.NewServer(sim.Handler()) + sim.SetURL
//	sim.SetWebhookURL(appServer.URL + "/webhook")
//
//	inst := sim.CreateInstallation("acme", "Organization")
//	sim.CreateRepo(inst, "acme/shop", simulator.RepoOptions{})
//	sim.SetEnvironment("acme/shop", "production", simulator.EnvironmentOptions{
//		Reviewers: []string{"alice"},
//		Review:    simulator.AutoApprove("alice", "ship it"),
//	})
//	sim.SetWorkflow("acme/shop", simulator.WorkflowOptions{})
//	push := sim.Push("acme/shop", "main", simulator.CommitSpec{
//		Message: "Add config",
//		Files:   map[string]string{".github/lastmile.yml": "environments:\n  - name: production\n"},
//	})
//
//	// lastmile (configured with apiURL, sim.AppID(), sim.AppPrivateKeyPEM())
//	// receives the push, creates a deployment, the workflow runs...
//	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
//	defer cancel()
//	err := sim.WaitFor(ctx, func(s *simulator.Simulator) bool {
//		ds := s.Deployments("acme/shop")
//		return len(ds) == 1 && ds[0].State() == "success" && ds[0].SHA == push.After
//	})
//
// Wait on conditions (WaitFor, WaitIdle, WaitForDelivery), never with sleeps:
// WaitFor re-evaluates its condition on every state change.
//
// # Clients
//
// The API is served at the root path like api.github.com, so point the
// clients at URL(): ghinstallation's AppsTransport and Transport BaseURL =
// strings.TrimSuffix(sim.URL(), "/"), and go-github's Client.BaseURL =
// sim.URL(). GET /app, GET /app/installations/{id},
// POST /app/installations/{id}/access_tokens and
// GET /repos/{owner}/{repo}/installation need an RS256 JWT signed with
// AppPrivateKeyPEM (iss = AppID, iat in the past, exp at most 10 minutes
// ahead), and answer 401 with GitHub's message otherwise; the two
// installation reads answer a suspended installation with suspended_at and
// suspended_by set, and 404 for an uninstalled one or a repository removed
// from it. Other repository endpoints need an installation token of an
// installation that has the repository, or a run's workflow token, granted
// the repository permission GitHub's reference names for the endpoint,
// reads included (contents read for contents, compare and commits,
// statuses, deployments, actions for runs and job logs; 403 "Resource not
// accessible by integration" otherwise). Options.Permissions are the App's
// (by default what lastmile's manifest asks for).
// Installation tokens expire after an hour of Options.Clock (ExpireTokens
// expires them at once). Every response carries x-ratelimit-* headers with
// real per-installation accounting, x-github-request-id, and a Date of
// Options.Clock (GitHub's clock, as clients read it).
//
// # Scripting
//
// Fixtures: CreateInstallation, CreateRepo, Push, PushSilently, Merge (a
// merge commit, as a pull request merged so), FastForward, ForcePush,
// ReplaceHistory, DeleteBranch, SetCommitStatus, SetCheckRun,
// CompleteCheckSuite, SetEnvironment, SetWorkflow, AddWorkflow. A push lists
// the commits it brings, those a push listed before not distinct. GitHub's
// lag can be played: SetTokenLag (a token the API does not know yet).
// The installation's lifecycle, each with the webhook GitHub sends every
// App: DeleteInstallation (`installation` deleted, listing its
// repositories; its tokens are revoked, 401, and a new one is refused, 404),
// SuspendInstallation and UnsuspendInstallation (`installation` suspend and
// unsuspend; while suspended a new token is refused with 403 "This
// installation has been suspended"), RemoveRepositoryFromInstallation
// (`installation_repositories` removed; the installation's tokens answer
// 404 for it). A change that cannot be made as the installation stands (a
// suspension twice, an unsuspension of an active installation, a
// repository removed twice) returns an error and changes nothing.
// Reviewers: ReviewPolicy (AutoApprove, AutoReject, Manual, Timeout),
// PendingReviews, Approve, Reject; CancelRun, RerunFailedJobs. Faults: InjectFault with a
// Fault (server errors, primary and secondary rate limits, delays,
// "applied but answer lost", and the 422 of an endpoint "spammed");
// HoldWebhooks with a WebhookHold (event, action, a predicate on the
// payload), HeldWebhooks and ReleaseWebhooks deliver webhooks out of order.
// Observation: Requests, CountRequests,
// Deliveries, Deployments, CommitStatuses, ProtectionRuleReviews, Runs, Idle.
//
// # The workflow player
//
// SetWorkflow gives a repository an `on: deployment` workflow. A deployment
// created through the REST API (except with a run's own GITHUB_TOKEN, which
// never triggers workflows) starts a run that sends, in GitHub's order:
// workflow_run requested; the ungated "register" job (queued, run
// in_progress, job in_progress, a queued deployment status whose log_url is
// the run's html_url, job completed); then the "deploy" job for the
// deployment's environment: workflow_job queued (status "waiting" when
// gated) and, when the environment has protection rules, workflow_job
// waiting, deployment_protection_rule requested (custom rule) and
// deployment_review requested (required reviewers). Once released the job
// is queued again (workflow_job queued, status queued, with the job's
// deployment as the first time) and runs (in_progress), reports in_progress then success/failure statuses on
// the triggering deployment (or runs WorkflowOptions.Deploy with a
// JobContext), completes, and the run completes. With
// WorkflowOptions.CreateDeployment the job makes its own "twin" deployment
// (deployment webhook with workflow and workflow_run; its statuses
// created by the run's actor, performed_via_github_app null: waiting while
// the job waits for its environment's rules, queued once released, then
// in_progress and success or failure); without it (`deployment: false`, the default) an
// environment with a custom protection rule fails the job at once, as
// documented. With WorkflowOptions.NextEnvironments, jobs that each
// `needs:` the one before follow the deploy job, one per environment, each
// with its own deployment (CreateDeployment) and that environment's
// protection rules, as in a workflow whose jobs own their deployments
// test → staging → production: when a job ends, Actions reports success or
// failure on its deployment, then the next job's deployment is created and
// its rules are asked (deployment_protection_rule requested). A job that
// does not succeed has those that `needs:` it skipped, and
// WorkflowOptions.JobsIf (the example workflow's `if:` on the payload's
// lastmile key) skips every job of a run for a deployment without it: a
// skipped job sends only workflow_job completed (conclusion skipped, no
// steps, no runner), and a run whose every job was skipped completes
// skipped, posting nothing. AddWorkflow adds another workflow (its own
// ID, name, path and run for every deployment), such as a
// WorkflowOptions.Notifier, whose one "notify" job names no environment
// and posts nothing on the deployment. A workflow with
// WorkflowOptions.PushEnvironments is one `on: push` of the default branch
// instead, that owns its deployments: a push there (not deleting it)
// starts a run (event "push", by the pusher, no register job) whose jobs
// deploy the pushed commit through those environments as NextEnvironments'
// jobs do, each with its own deployment and its environment's rules; it
// starts no run for a deployment. The workflows run for every
// deployment, whatever its commit holds: GitHub runs only the workflow
// files of the deployed commit (a rollback to one from before a workflow
// was added runs without it), which is not modelled. Concurrency
// groups are not modelled: jobs of one group run side by side, and none
// is cancelled as pending.
// RerunFailedJobs re-runs a failed run's job that did not succeed and those
// after it as attempt 2, 3, … (workflow_run requested, in_progress, the
// jobs' events again, completed, with run_attempt set). Runs, PendingReviews,
// Approve, Reject, CancelRun and the job-logs endpoint observe and steer
// runs.
//
// # Choices where GitHub leaves room
//
//   - Rate limits are per installation (tokens of one installation share the
//     budget), per repository for workflow tokens (1,000/h) and per address
//     for anonymous calls (60/h); SetRateLimitUsed jumps ahead, and a
//     FaultPrimaryRateLimit spends the request's budget until its Reset (by
//     Options.Clock), as a spent hour does: every call of that installation
//     is refused until then.
//   - A required context is satisfied by a success status or by a check
//     run of that exact name completed with conclusion success (neutral
//     and skipped do not count: GitHub's documentation does not say). A 409
//     for failed required contexts lists every context of the commit in
//     errors[0].contexts, as GitHub's API does: the statuses' contexts, then
//     the check runs' names with their conclusion (or status while not
//     completed); a required context never reported makes the check fail
//     but is not listed. Check runs exist only through SetCheckRun: the
//     workflow player's jobs are not check runs of the commit here.
//   - The push webhook keeps the newest PushCommitLimit commits (2048 by
//     default, GitHub's documented cap).
//   - A run's head_branch is the deployment's ref as given (branch name or
//     SHA).
//   - Timeout() fails a waiting job at once (GitHub waits 30 days); the wait
//     timer runs in real time, so keep it short.
//   - The App's JWT on a repository endpoint gets 403 "Resource not
//     accessible by integration".
//   - A call with a token minted before its installation was suspended gets
//     the 403 a new token gets (GitHub documents only that the App's access
//     to the API is blocked). While an installation is suspended, and once
//     the App no longer reaches a repository (removed from the
//     installation, or the App uninstalled), the events of its
//     repositories send no webhook, then or later ("the app's access to ...
//     webhook events is blocked"); workflow runs go on, their GITHUB_TOKEN
//     not being the App's.
//   - Not modelled: installing the App through GitHub (CreateInstallation
//     sends no `installation` created webhook), adding repositories to an
//     installation (`installation_repositories` added), installing it again
//     on an account, new permissions (new_permissions_accepted), and
//     suspensions by GitHub itself.
//
// Run it as a process with ./githubapp/simulator/cmd/ghsim.
//
// # Webhooks
//
// Webhooks are POSTed one at a time, in the order the events happened, from
// a single queue, signed with X-Hub-Signature-256 (and the legacy
// X-Hub-Signature), and recorded as hook deliveries with the receiver's
// status. Like GitHub, the Simulator never retries a failed delivery by
// itself; POST /app/hook/deliveries/{id}/attempts (or Redeliver) sends it
// again with the same X-GitHub-Delivery GUID, if it was made within
// RedeliveryWindow (3 days of Options.Clock; 422 for an older one, which
// is still listed). While no webhook URL is set, deliveries wait in the
// queue.
//
// GitHub does not promise that order. To deliver out of order, arm a hold:
//
//	sim.HoldWebhooks(simulator.WebhookHold{Event: "deployment_status", Match: func(w simulator.Webhook) bool {
//		return w.Field("deployment_status", "state") == "success"
//	}})
//	// ... what happens meanwhile is delivered; then:
//	sim.ReleaseWebhooks()
//
// Each webhook the sender comes to (redeliveries too) that a hold matches
// is set aside, neither sent nor recorded as a delivery; ReleaseWebhooks
// disarms every hold and queues the held webhooks behind whatever is
// queued, in their order, each with its GUID and body (signed when sent).
// Held webhooks do not keep the Simulator from being Idle. Match runs with
// the Simulator's lock held: it must not call the Simulator.
package simulator
