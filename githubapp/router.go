package githubapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"time"

	"github.com/google/go-github/v62/github"
	"github.com/lastmile-app/lastmile/pipeline"
)

// Engine is the pipeline, as the router drives it.
type Engine interface {
	HandlePush(ctx context.Context, p pipeline.Push) error
	HandleDeployment(ctx context.Context, ev pipeline.NewDeployment) error
	HandleDeploymentStatus(ctx context.Context, ev pipeline.NewDeploymentStatus) error
	HandleReview(ctx context.Context, rv pipeline.Review) error
	HandleWorkflowJob(ctx context.Context, job pipeline.WorkflowJob) error
	HandleWorkflowRun(ctx context.Context, run pipeline.WorkflowRun) error
	HandleProtectionRule(ctx context.Context, req pipeline.ProtectionRuleRequest) error
	HandleContexts(ctx context.Context, ev pipeline.ContextsChanged) error
	HandleInstallation(ctx context.Context, ev pipeline.InstallationEvent) error
}

// ErrMalformed marks a delivery whose payload cannot be understood: handling
// it again will not help.
var ErrMalformed = errors.New("malformed payload")

// MaxPushCommits is GitHub's cap on the commits listed in a push payload;
// a list that long may be incomplete.
const MaxPushCommits = 2048

// Router translates a stored delivery into a pipeline event and hands it to
// the engine.
type Router struct {
	Engine Engine
	// Forget, if set, drops the cached client of an installation that was
	// uninstalled or suspended (see Clients.Forget).
	Forget func(installation int64)
}

// Handle handles one delivery.
func (rt *Router) Handle(ctx context.Context, d *pipeline.Delivery) error {
	return unbuildableURL(rt.handle(ctx, d))
}

// unbuildableURL marks as malformed the error of a request whose URL could
// not be built (net/url refused it: a control character, a bad %-escape):
// the API's root is checked at start-up, so the payload's values made it —
// a repository's owner or name, a SHA — and every attempt would fail the
// same way. Retried, it made the repository's later deliveries wait an
// hour behind it.
func unbuildableURL(err error) error {
	var ue *url.Error
	if err == nil || errors.Is(err, ErrMalformed) || !errors.As(err, &ue) || ue.Op != "parse" {
		return err
	}
	return fmt.Errorf("%w: a request's URL, made of the payload's values: %w", ErrMalformed, err)
}

// payloadError is ErrMalformed with what decoding event's payload met. A
// field of the wrong type is said in words — the field, what lastmile reads
// there, what the payload has — where encoding/json's message ends in the
// Go type it decodes into, a dump of a struct's fields that `lastmile
// deliveries` cut in the middle.
func payloadError(event string, err error) error {
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("%w: %s: %v", ErrMalformed, event, err)
	}
	what := fmt.Sprintf("want %s, got %s", jsonWants(te.Type), jsonGot(te.Value))
	if te.Field != "" {
		what = fmt.Sprintf("field %q: %s", te.Field, what)
	}
	return fmt.Errorf("%w: %s: %s", ErrMalformed, event, what)
}

// jsonWants says what JSON value decodes into t.
func jsonWants(t reflect.Type) string {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return "another value"
	}
	switch t.Kind() {
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "a base64 string"
		}
		return "an array"
	case reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "another value"
}

// jsonGot says the JSON value encoding/json describes as v ("string",
// "number 1.5", …).
func jsonGot(v string) string {
	switch v {
	case "string", "number":
		return "a " + v
	case "object", "array":
		return "an " + v
	case "bool":
		return "a boolean"
	}
	if n, ok := strings.CutPrefix(v, "number "); ok {
		return fmt.Sprintf("the number %.40s", n)
	}
	return fmt.Sprintf("%.40s", v)
}

// Reacher is an Engine that tells which installation to call GitHub
// through for a delivery (see pipeline.Engine.Reaching): the Router asks
// it, when its Engine is one.
type Reacher interface {
	Reaching(ctx context.Context, repoID, inst int64, guid string, received time.Time) (int64, error)
}

func (rt *Router) handle(ctx context.Context, d *pipeline.Delivery) error {
	// An event that waited in the inbox while its repository moved to
	// another installation (transferred to another account) is handled
	// through the installation recorded as reaching it now. A push sorts
	// that out itself, by its time (Engine.HandlePush).
	inst := int64(0)
	if re, ok := rt.Engine.(Reacher); ok && d.Event != "push" && d.RepositoryID != 0 && d.InstallationID != 0 {
		id, err := re.Reaching(ctx, d.RepositoryID, d.InstallationID, d.ID, d.ReceivedAt)
		if err != nil {
			return err
		}
		if id != d.InstallationID {
			inst = id
		}
	}
	reached := func(r *github.Repository, i *github.Installation) (pipeline.Repo, error) {
		repo, err := repoOf(r, i)
		if err == nil && inst != 0 {
			repo.InstallationID = inst
		}
		return repo, err
	}
	switch d.Event {
	case "push":
		// Pushes are most of the traffic: decoded into the few fields the
		// pipeline reads rather than go-github's whole PushEvent, which
		// costs a third more (BenchmarkPushDecode).
		var p pushPayload
		if err := json.Unmarshal(d.Body, &p); err != nil {
			return payloadError("push", err)
		}
		push, err := p.push(d)
		if err != nil {
			return err
		}
		return rt.Engine.HandlePush(ctx, push)
	case "deployment_review":
		var p deploymentReviewPayload
		if err := decodeJSON(d.Body, &p); err != nil {
			return payloadError("deployment_review", err)
		}
		rv, err := p.review(d.ID)
		if err != nil {
			return err
		}
		if inst != 0 {
			rv.Repo.InstallationID = inst
		}
		return rt.Engine.HandleReview(ctx, rv)
	case "deployment_protection_rule":
		var p protectionRulePayload
		if err := decodeJSON(d.Body, &p); err != nil {
			return payloadError("deployment_protection_rule", err)
		}
		req, err := p.request(d.ID)
		if err != nil {
			return err
		}
		if inst != 0 {
			req.Repo.InstallationID = inst
		}
		return rt.Engine.HandleProtectionRule(ctx, req)
	}
	ev, err := parseWebHook(d.Event, d.Body)
	if err != nil {
		return payloadError(d.Event, err)
	}
	switch ev := ev.(type) {
	case *github.DeploymentEvent:
		repo, err := reached(ev.Repo, ev.Installation)
		if err != nil {
			return err
		}
		if ev.Deployment == nil {
			return fmt.Errorf("%w: deployment event without a deployment", ErrMalformed)
		}
		info := deploymentInfo(ev.Deployment)
		if ev.WorkflowRun != nil {
			info.WorkflowRunID, info.WorkflowRunEvent = ev.WorkflowRun.GetID(), ev.WorkflowRun.GetEvent()
		}
		info.Production = productionOf(d.Body)
		return rt.Engine.HandleDeployment(ctx, pipeline.NewDeployment{Repo: repo, Deployment: info})
	case *github.DeploymentStatusEvent:
		repo, err := reached(ev.Repo, ev.Installation)
		if err != nil {
			return err
		}
		if ev.Deployment == nil || ev.DeploymentStatus == nil {
			return fmt.Errorf("%w: deployment_status event without a deployment or status", ErrMalformed)
		}
		info := deploymentInfo(ev.Deployment)
		info.WorkflowRunID, info.WorkflowRunEvent = workflowRunOf(d.Body)
		info.Production = productionOf(d.Body)
		status, err := statusInfo(ev.GetDeploymentStatus())
		if err != nil && ev.GetDeploymentStatus().GetState() == "" {
			return fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		if err != nil {
			// A state GitHub has added since (the webhook's state is a
			// free string, and carries "waiting" already): the
			// deployment and its run are recorded, as its deployment
			// event would have them, and the status is not acted on.
			if err := rt.Engine.HandleDeployment(ctx, pipeline.NewDeployment{Repo: repo, Deployment: info}); err != nil {
				return err
			}
			return &pipeline.Ignored{Reason: "deployment_status: " + err.Error()}
		}
		return rt.Engine.HandleDeploymentStatus(ctx, pipeline.NewDeploymentStatus{Repo: repo, Deployment: info, Status: status})
	case *github.WorkflowRunEvent:
		repo, err := reached(ev.Repo, ev.Installation)
		if err != nil {
			return err
		}
		run := workflowRun(repo, ev.GetAction(), ev.GetWorkflowRun())
		if run.Name == "" { // a run's name may be empty or null: its workflow's
			run.Name = ev.GetWorkflow().GetName()
		}
		return rt.Engine.HandleWorkflowRun(ctx, run)
	case *github.WorkflowJobEvent:
		repo, err := reached(ev.Repo, ev.Installation)
		if err != nil {
			return err
		}
		j := ev.GetWorkflowJob()
		job := pipeline.WorkflowJob{
			Repo: repo, Action: ev.GetAction(), JobID: j.GetID(), RunID: j.GetRunID(), Name: j.GetName(),
			HeadSHA: j.GetHeadSHA(), Status: j.GetStatus(), Conclusion: j.GetConclusion(), URL: j.GetHTMLURL(),
			StartedAt: j.GetStartedAt().Time, CompletedAt: j.GetCompletedAt().Time,
		}
		// go-github v62 lacks the deployment field of queued jobs.
		var extra struct {
			Deployment *github.Deployment `json:"deployment"`
		}
		if err := decodeJSON(d.Body, &extra); err == nil && extra.Deployment != nil && extra.Deployment.GetID() != 0 {
			info := deploymentInfo(extra.Deployment)
			info.WorkflowRunID = j.GetRunID()
			info.Production = productionOf(d.Body)
			job.Deployment = &info
		}
		return rt.Engine.HandleWorkflowJob(ctx, job)
	case *github.StatusEvent:
		repo, err := reached(ev.Repo, ev.Installation)
		if err != nil {
			return err
		}
		return rt.Engine.HandleContexts(ctx, pipeline.ContextsChanged{Repo: repo, SHA: ev.GetSHA(),
			Context: ev.GetContext(), State: ev.GetState()})
	case *github.InstallationEvent:
		return rt.installation(ctx, d, ev.GetAction(), ev.GetInstallation(), ev.Repositories, ev.GetSender())
	case *github.InstallationRepositoriesEvent:
		repos := ev.RepositoriesAdded
		if ev.GetAction() == string(pipeline.RepositoriesRemoved) {
			repos = ev.RepositoriesRemoved
		}
		return rt.installation(ctx, d, ev.GetAction(), ev.GetInstallation(), repos, ev.GetSender())
	case *github.CheckSuiteEvent:
		repo, err := reached(ev.Repo, ev.Installation)
		if err != nil {
			return err
		}
		if ev.GetAction() != "completed" {
			return &pipeline.Ignored{Reason: "check_suite " + ev.GetAction()}
		}
		cs := ev.GetCheckSuite()
		return rt.Engine.HandleContexts(ctx, pipeline.ContextsChanged{Repo: repo, SHA: cs.GetHeadSHA(),
			Context: cs.GetApp().GetSlug(), State: cs.GetConclusion(), CheckSuite: true})
	}
	return &pipeline.Ignored{Reason: "lastmile does not act on " + d.Event}
}

// installation hands the engine an `installation` or
// `installation_repositories` event. The client of an installation that
// was uninstalled or suspended is dropped first: its deliveries handled
// from now on ask for a token, and GitHub's refusal says why.
func (rt *Router) installation(ctx context.Context, d *pipeline.Delivery, action string, inst *github.Installation,
	repos []*github.Repository, sender *github.User) error {
	if inst.GetID() == 0 {
		return fmt.Errorf("%w: %s event without an installation", ErrMalformed, d.Event)
	}
	ev := pipeline.InstallationEvent{
		InstallationID: inst.GetID(), Account: accountName(inst.GetAccount()), Action: pipeline.InstallationAction(action),
		Sender: sender.GetLogin(), At: d.ReceivedAt,
	}
	for _, r := range repos {
		owner, name, err := pipeline.SplitFullName(r.GetFullName())
		if err != nil {
			owner, name = ev.Account, r.GetName()
		}
		ev.Repos = append(ev.Repos, pipeline.Repo{ID: r.GetID(), Owner: owner, Name: name, InstallationID: inst.GetID()})
	}
	switch ev.Action {
	case pipeline.InstallationSuspend:
		// Who suspended it, and when, as the installation says.
		ev.Sender = firstNonEmpty(inst.GetSuspendedBy().GetLogin(), ev.Sender)
		if at := inst.GetSuspendedAt(); !at.IsZero() {
			ev.At = at.Time
		}
		fallthrough
	case pipeline.InstallationDeleted:
		if rt.Forget != nil {
			rt.Forget(ev.InstallationID)
		}
	}
	return rt.Engine.HandleInstallation(ctx, ev)
}

// accountName is the name of the account an installation is on: a user's
// or an organization's login, or, an enterprise having none, its name
// (which go-github's User reads; not its slug).
func accountName(a *github.User) string {
	return firstNonEmpty(a.GetLogin(), a.GetName())
}

// pushPayload is the part of a push event's payload that lastmile reads.
type pushPayload struct {
	Ref     string `json:"ref"`
	Before  string `json:"before"`
	After   string `json:"after"`
	Deleted bool   `json:"deleted"`
	Forced  bool   `json:"forced"`
	Commits []struct {
		ID        string           `json:"id"`
		Message   string           `json:"message"`
		Timestamp github.Timestamp `json:"timestamp"`
		Author    struct {
			Name     string `json:"name"`
			Username string `json:"username"`
		} `json:"author"`
	} `json:"commits"`
	Repository struct {
		ID            int64             `json:"id"`
		FullName      string            `json:"full_name"`
		DefaultBranch string            `json:"default_branch"`
		MasterBranch  string            `json:"master_branch"`
		PushedAt      *github.Timestamp `json:"pushed_at"` // epoch seconds in push payloads; may be null
	} `json:"repository"`
	Pusher struct {
		Name string `json:"name"`
	} `json:"pusher"`
	Sender struct {
		Login string `json:"login"`
	} `json:"sender"`
	Installation struct {
		ID int64 `json:"id"`
	} `json:"installation"`
}

func (ev *pushPayload) push(d *pipeline.Delivery) (pipeline.Push, error) {
	r := ev.Repository
	owner, name, err := pipeline.SplitFullName(r.FullName)
	switch {
	case r.ID == 0:
		return pipeline.Push{}, fmt.Errorf("%w: push: no repository", ErrMalformed)
	case err != nil:
		return pipeline.Push{}, fmt.Errorf("%w: push: repository.full_name: %v", ErrMalformed, err)
	case ev.Installation.ID == 0:
		return pipeline.Push{}, fmt.Errorf("%w: push: no installation (lastmile is a GitHub App: its deliveries name their installation)", ErrMalformed)
	}
	// The intake refuses these (a delivery stored before it did, or by
	// hand, is dead at once rather than failing at every attempt).
	for _, f := range [][2]string{{"before", ev.Before}, {"after", ev.After}} {
		if problem := shaProblem(f[0], f[1]); problem != "" {
			return pipeline.Push{}, fmt.Errorf("%w: push: %s", ErrMalformed, problem)
		}
	}
	p := pipeline.Push{
		Repo:            pipeline.Repo{ID: r.ID, Owner: owner, Name: name, InstallationID: ev.Installation.ID},
		DeliveryID:      d.ID,
		Ref:             ev.Ref,
		Before:          ev.Before,
		After:           ev.After,
		Deleted:         ev.Deleted,
		Forced:          ev.Forced,
		DefaultBranch:   firstNonEmpty(r.DefaultBranch, r.MasterBranch),
		Pusher:          firstNonEmpty(ev.Pusher.Name, ev.Sender.Login),
		PushedAt:        d.ReceivedAt,
		PushedAtGuessed: true,
		Truncated:       len(ev.Commits) >= MaxPushCommits,
	}
	if r.PushedAt != nil && !r.PushedAt.IsZero() {
		p.PushedAt, p.PushedAtGuessed = r.PushedAt.Time, false
	}
	for _, c := range ev.Commits {
		p.Commits = append(p.Commits, pipeline.Commit{
			SHA:       c.ID,
			Author:    firstNonEmpty(c.Author.Username, c.Author.Name),
			Timestamp: c.Timestamp.Time,
			Title:     pipeline.Title(c.Message),
		})
	}
	return p, nil
}

func repoOf(r *github.Repository, inst *github.Installation) (pipeline.Repo, error) {
	if r == nil || r.GetID() == 0 {
		return pipeline.Repo{}, fmt.Errorf("%w: no repository", ErrMalformed)
	}
	owner, name, err := pipeline.SplitFullName(r.GetFullName())
	if err != nil {
		owner, name = r.GetOwner().GetLogin(), r.GetName()
	}
	return pipeline.Repo{ID: r.GetID(), Owner: owner, Name: name, InstallationID: inst.GetID()}, nil
}

func deploymentInfo(d *github.Deployment) pipeline.DeploymentInfo {
	return pipeline.DeploymentInfo{
		GitHubID: d.GetID(), SHA: d.GetSHA(), Ref: d.GetRef(), Environment: d.GetEnvironment(),
		Creator: d.GetCreator().GetLogin(), CreatedAt: d.GetCreatedAt().Time, Payload: d.Payload,
	}
}

// productionOf reads deployment.production_environment, which go-github v62
// does not map.
func productionOf(body []byte) bool {
	var p struct {
		Deployment struct {
			Production bool `json:"production_environment"`
		} `json:"deployment"`
	}
	_ = json.Unmarshal(body, &p)
	return p.Deployment.Production
}

// workflowRunOf reads a deployment_status event's workflow_run, which
// go-github v62 does not map: the run of a deployment Actions created for a
// job, as the deployment event says (its status may be delivered first).
func workflowRunOf(body []byte) (id int64, event string) {
	var p struct {
		WorkflowRun struct {
			ID    int64  `json:"id"`
			Event string `json:"event"`
		} `json:"workflow_run"`
	}
	_ = json.Unmarshal(body, &p)
	return p.WorkflowRun.ID, p.WorkflowRun.Event
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

// deploymentReviewPayload is the `deployment_review` event, which go-github
// v62 does not know. Note GitHub's spelling: requestor.
type deploymentReviewPayload struct {
	Action       string               `json:"action"`
	Since        string               `json:"since"`
	Comment      string               `json:"comment"`
	Environment  string               `json:"environment"`
	Requestor    *github.User         `json:"requestor"`
	Approver     *github.User         `json:"approver"`
	Sender       *github.User         `json:"sender"`
	Reviewers    []reviewer           `json:"reviewers"`
	JobRun       *reviewJobRun        `json:"workflow_job_run"`
	JobRuns      []reviewJobRun       `json:"workflow_job_runs"`
	WorkflowRun  *github.WorkflowRun  `json:"workflow_run"`
	Repository   *github.Repository   `json:"repository"`
	Installation *github.Installation `json:"installation"`
}

type reviewer struct {
	Type     string `json:"type"`
	Reviewer struct {
		Login string `json:"login"` // users
		Slug  string `json:"slug"`  // teams
		Name  string `json:"name"`
	} `json:"reviewer"`
}

type reviewJobRun struct {
	ID          int64  `json:"id"`
	Environment string `json:"environment"`
	UpdatedAt   string `json:"updated_at"`
}

func (p *deploymentReviewPayload) review(deliveryID string) (pipeline.Review, error) {
	repo, err := repoOf(p.Repository, p.Installation)
	if err != nil {
		return pipeline.Review{}, fmt.Errorf("deployment_review: %w", err)
	}
	rv := pipeline.Review{Repo: repo, DeliveryID: deliveryID, Action: pipeline.ReviewAction(p.Action), Comment: p.Comment}
	rv.Since = parseTime(p.Since)
	if p.WorkflowRun != nil {
		rv.RunID, rv.RunURL, rv.HeadSHA = p.WorkflowRun.GetID(), p.WorkflowRun.GetHTMLURL(), p.WorkflowRun.GetHeadSHA()
	}
	for _, r := range p.Reviewers {
		name := firstNonEmpty(r.Reviewer.Login, r.Reviewer.Slug, r.Reviewer.Name)
		if name == "" { // "reviewer": null, which GitHub's schema allows
			continue
		}
		if r.Type == "Team" {
			name = "team:" + name
		}
		rv.Reviewers = append(rv.Reviewers, name)
	}
	envs := map[string]bool{}
	// The environments of the jobs concerned. (A job run's id is no
	// workflow job's: GitHub numbers the two apart.)
	add := func(env string) {
		if env != "" && !envs[env] {
			envs[env] = true
			rv.Environments = append(rv.Environments, env)
		}
	}
	if p.JobRun != nil {
		add(p.JobRun.Environment)
	}
	for _, j := range p.JobRuns {
		add(j.Environment)
	}
	add(p.Environment)
	switch rv.Action {
	case pipeline.ReviewRequested:
		rv.Actor = p.Requestor.GetLogin()
		rv.At = rv.Since
	default:
		rv.Actor = firstNonEmpty(p.Approver.GetLogin(), p.Sender.GetLogin())
		if p.WorkflowRun != nil {
			rv.At = p.WorkflowRun.GetUpdatedAt().Time
		}
		jobRuns := p.JobRuns
		if p.JobRun != nil { // the one job, as older payloads give it
			jobRuns = append(jobRuns, *p.JobRun)
		}
		for _, j := range jobRuns {
			if t := parseTime(j.UpdatedAt); t.After(rv.At) {
				rv.At = t
			}
		}
	}
	return rv, nil
}

// protectionRulePayload is the `deployment_protection_rule` event; go-github
// v62's type lacks sha and ref.
type protectionRulePayload struct {
	Action       string               `json:"action"`
	Environment  string               `json:"environment"`
	Event        string               `json:"event"`
	SHA          string               `json:"sha"`
	Ref          string               `json:"ref"`
	CallbackURL  string               `json:"deployment_callback_url"`
	Deployment   *github.Deployment   `json:"deployment"`
	Repository   *github.Repository   `json:"repository"`
	Installation *github.Installation `json:"installation"`
}

func (p *protectionRulePayload) request(deliveryID string) (pipeline.ProtectionRuleRequest, error) {
	repo, err := repoOf(p.Repository, p.Installation)
	if err != nil {
		return pipeline.ProtectionRuleRequest{}, err
	}
	req := pipeline.ProtectionRuleRequest{
		Repo: repo, DeliveryID: deliveryID, Environment: p.Environment, SHA: p.SHA, Ref: p.Ref, Event: p.Event,
		// Only the run ID is taken from the callback URL: the answer goes
		// to the configured API, never to a URL from the payload.
		RunID: pipeline.RunIDFromURL(p.CallbackURL),
	}
	if p.Deployment != nil {
		req.DeploymentID = p.Deployment.GetID()
		if req.SHA == "" {
			req.SHA = p.Deployment.GetSHA()
		}
	}
	if p.Action != "requested" {
		return req, &pipeline.Ignored{Reason: "deployment_protection_rule " + p.Action}
	}
	return req, nil
}

func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}
	}
	return t
}
