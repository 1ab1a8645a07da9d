package githubapp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-github/v62/github"
	"github.com/lastmile-app/lastmile/pipeline"
)

// GitHub implements pipeline.GitHub with the installation clients.
type GitHub struct {
	Clients *Clients
	// Logs downloads job logs from the address GitHub redirects to (blob
	// storage, not the API): no credentials are sent there.
	Logs *http.Client
}

var _ pipeline.GitHub = (*GitHub)(nil)

func (g *GitHub) client(r pipeline.Repo) (*github.Client, error) {
	return g.Clients.Installation(r.InstallationID)
}

// ReadFile returns a file at a commit.
func (g *GitHub) ReadFile(ctx context.Context, r pipeline.Repo, path, sha string) ([]byte, error) {
	gh, err := g.client(r)
	if err != nil {
		return nil, err
	}
	file, _, resp, err := gh.Repositories.GetContents(ctx, r.Owner, r.Name, path, &github.RepositoryContentGetOptions{Ref: sha})
	if resp != nil && resp.StatusCode == http.StatusNotFound {
		// GitHub says which is missing: the file ("Not Found"), or the
		// commit ("No commit found for the ref …").
		var er *github.ErrorResponse
		if errors.As(err, &er) && strings.HasPrefix(er.Message, "No commit found") {
			return nil, fmt.Errorf("%s at %s: %s: %w", path, sha, er.Message, pipeline.ErrUnknownCommit)
		}
		return nil, pipeline.ErrNotFound
	}
	if blobTooLarge(err) { // GitHub's answer for a file over 1 MB
		return nil, fmt.Errorf("%s: %w", path, pipeline.ErrTooLarge)
	}
	if err != nil {
		return nil, err
	}
	if file == nil {
		return nil, fmt.Errorf("%s: %w (a directory)", path, pipeline.ErrNotAFile)
	}
	// A symbolic link whose target is no file of the repository, or a
	// submodule, comes as such, without content.
	if kind := file.GetType(); kind != "" && kind != "file" {
		return nil, fmt.Errorf("%s: %w (a %s)", path, pipeline.ErrNotAFile, kind)
	}
	if file.GetEncoding() == "none" { // the object media type's answer for a file of 1 to 100 MB
		return nil, fmt.Errorf("%s: %w", path, pipeline.ErrTooLarge)
	}
	content, err := file.GetContent()
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	return []byte(content), nil
}

// blobTooLarge reports whether err is the contents API's refusal of a file
// over 1 MB: 403 with an error of code "too_large".
func blobTooLarge(err error) bool {
	var er *github.ErrorResponse
	if !errors.As(err, &er) || er.Response == nil || er.Response.StatusCode != http.StatusForbidden {
		return false
	}
	for _, e := range er.Errors {
		if e.Code == "too_large" {
			return true
		}
	}
	return false
}

// waitMarked marks err as pipeline.ErrGitHubWait when it is GitHub's
// refusal for a rate limit, or for a suspended installation (its text,
// and the errors it wraps, unchanged).
func waitMarked(err error) error {
	if _, ok := AsRateLimited(err, time.Now()); ok || InstallationSuspended(err) {
		return waitMark{err}
	}
	return err
}

type waitMark struct{ error }

func (r waitMark) Unwrap() error        { return r.error }
func (r waitMark) Is(target error) bool { return target == pipeline.ErrGitHubWait }

// Compare says how head relates to base and lists the commits of head that
// base lacks, oldest first: at most pipeline.MaxCompareCommits of them —
// a comparison GitHub says holds more is pipeline.ErrComparisonTooLarge,
// after one request.
func (g *GitHub) Compare(ctx context.Context, r pipeline.Repo, base, head string) (pipeline.Comparison, error) {
	gh, err := g.client(r)
	if err != nil {
		return pipeline.Comparison{}, waitMarked(err)
	}
	var out pipeline.Comparison
	const perPage = 100
	opts := &github.ListOptions{PerPage: perPage, Page: 1}
	for requests := 1; ; requests++ {
		cmp, resp, err := gh.Repositories.CompareCommits(ctx, r.Owner, r.Name, base, head, opts)
		if resp != nil && resp.StatusCode == http.StatusNotFound {
			return pipeline.Comparison{}, pipeline.ErrNotFound
		}
		if err != nil {
			return pipeline.Comparison{}, waitMarked(err)
		}
		// The total is checked on every page, and the pages counted, so
		// that no answer makes this page on past the bound.
		if total := cmp.GetTotalCommits(); total > pipeline.MaxCompareCommits || requests > pipeline.MaxCompareCommits/perPage {
			return pipeline.Comparison{}, fmt.Errorf("compare %s...%s in %s: %w (%d, more than %d)",
				base, head, r.FullName(), pipeline.ErrComparisonTooLarge, max(total, len(out.Commits)), pipeline.MaxCompareCommits)
		}
		out.Status = cmp.GetStatus()
		for _, c := range cmp.Commits {
			commit := c.GetCommit()
			out.Commits = append(out.Commits, pipeline.Commit{
				SHA:       c.GetSHA(),
				Author:    firstNonEmpty(c.GetAuthor().GetLogin(), commit.GetAuthor().GetName()),
				Timestamp: commit.GetAuthor().GetDate().Time,
				Title:     pipeline.Title(commit.GetMessage()),
			})
		}
		if resp.NextPage == 0 || len(cmp.Commits) == 0 || len(out.Commits) >= cmp.GetTotalCommits() {
			return out, nil
		}
		opts.Page = resp.NextPage
	}
}

// Relation says how head relates to base, in one request: a page of one
// commit, whose status is the comparison's whatever its length.
func (g *GitHub) Relation(ctx context.Context, r pipeline.Repo, base, head string) (string, error) {
	gh, err := g.client(r)
	if err != nil {
		return "", err
	}
	cmp, resp, err := gh.Repositories.CompareCommits(ctx, r.Owner, r.Name, base, head, &github.ListOptions{PerPage: 1, Page: 1})
	if resp != nil && resp.StatusCode == http.StatusNotFound {
		return "", pipeline.ErrNotFound
	}
	if err != nil {
		return "", err
	}
	return cmp.GetStatus(), nil
}

// CreateDeployment creates a deployment of exactly the SHA, never merging.
func (g *GitHub) CreateDeployment(ctx context.Context, r pipeline.Repo, req pipeline.DeploymentRequest) (int64, time.Time, error) {
	gh, err := g.client(r)
	if err != nil {
		return 0, time.Time{}, err
	}
	contexts := req.RequiredContexts
	if contexts == nil {
		contexts = []string{}
	}
	d, _, err := gh.Repositories.CreateDeployment(ctx, r.Owner, r.Name, &github.DeploymentRequest{
		Ref:                   github.String(req.SHA),
		Task:                  github.String("deploy"),
		AutoMerge:             github.Bool(false),
		RequiredContexts:      &contexts,
		Payload:               req.Payload,
		Environment:           github.String(req.Environment),
		Description:           github.String(req.Description),
		TransientEnvironment:  github.Bool(false),
		ProductionEnvironment: github.Bool(req.Production),
	})
	if err == nil {
		return d.GetID(), d.GetCreatedAt().Time, nil
	}
	var accepted *github.AcceptedError
	if errors.As(err, &accepted) {
		var body struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(accepted.Raw, &body)
		return 0, time.Time{}, &pipeline.RefusedError{Status: http.StatusAccepted,
			Message: firstNonEmpty(body.Message, "GitHub merged the default branch into the ref instead of deploying")}
	}
	var er *github.ErrorResponse
	if errors.As(err, &er) && (er.Response.StatusCode == http.StatusConflict || er.Response.StatusCode == http.StatusUnprocessableEntity) {
		return 0, time.Time{}, refusal(er)
	}
	return 0, time.Time{}, err
}

// refusal reads a 409 or 422 answer, with the contexts GitHub lists.
func refusal(er *github.ErrorResponse) *pipeline.RefusedError {
	ref := &pipeline.RefusedError{Status: er.Response.StatusCode, Message: er.Message,
		ContextsFailed: strings.Contains(strings.ToLower(er.Message), "status checks failed")}
	body, _ := io.ReadAll(io.LimitReader(er.Response.Body, 1<<20))
	var parsed struct {
		Errors []struct {
			Contexts []pipeline.ContextState `json:"contexts"`
			Message  string                  `json:"message"`
			Field    string                  `json:"field"`
			Code     string                  `json:"code"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &parsed) == nil {
		var details []string
		for _, e := range parsed.Errors {
			ref.Contexts = append(ref.Contexts, e.Contexts...)
			ref.ContextsFailed = ref.ContextsFailed || e.Field == "required_contexts"
			if e.Message != "" {
				details = append(details, e.Message)
			} else if e.Field != "" && len(e.Contexts) == 0 {
				details = append(details, e.Field+" "+e.Code)
			}
		}
		if len(details) > 0 {
			ref.Message += " (" + strings.Join(details, "; ") + ")"
		}
	}
	return ref
}

// FindDeployment looks for lastmile's deployment of sha to env by its
// marker, passing over copies of it (pipeline.CopiedMarker).
func (g *GitHub) FindDeployment(ctx context.Context, r pipeline.Repo, sha, env string, marker pipeline.Marker) (int64, time.Time, error) {
	gh, err := g.client(r)
	if err != nil {
		return 0, time.Time{}, err
	}
	opts := &github.DeploymentsListOptions{SHA: sha, Environment: env, ListOptions: github.ListOptions{PerPage: 100}}
	for {
		list, resp, err := gh.Repositories.ListDeployments(ctx, r.Owner, r.Name, opts)
		if err != nil {
			return 0, time.Time{}, err
		}
		for _, d := range list {
			if m, ok := pipeline.ParseMarker(d.Payload); ok && m == marker && !pipeline.CopiedMarker(d.GetCreator().GetLogin()) {
				return d.GetID(), d.GetCreatedAt().Time, nil
			}
		}
		if resp.NextPage == 0 {
			return 0, time.Time{}, pipeline.ErrNotFound
		}
		opts.Page = resp.NextPage
	}
}

// CreateDeploymentStatus writes a status on a deployment.
func (g *GitHub) CreateDeploymentStatus(ctx context.Context, r pipeline.Repo, id int64, req pipeline.StatusRequest) (pipeline.StatusInfo, error) {
	gh, err := g.client(r)
	if err != nil {
		return pipeline.StatusInfo{}, err
	}
	sr := &github.DeploymentStatusRequest{State: github.String(string(req.State)), Description: github.String(req.Description)}
	if req.LogURL != "" {
		sr.LogURL = github.String(req.LogURL)
	}
	st, _, err := gh.Repositories.CreateDeploymentStatus(ctx, r.Owner, r.Name, id, sr)
	var er *github.ErrorResponse
	if errors.As(err, &er) {
		switch er.Response.StatusCode {
		case http.StatusNotFound, http.StatusGone: // the deployment was deleted
			return pipeline.StatusInfo{}, fmt.Errorf("deployment %d: %w", id, pipeline.ErrNotFound)
		case http.StatusUnprocessableEntity:
			return pipeline.StatusInfo{}, refusal(er)
		}
	}
	if err != nil {
		return pipeline.StatusInfo{}, err
	}
	return statusInfo(st)
}

// LatestDeploymentStatus reads a deployment's newest status.
func (g *GitHub) LatestDeploymentStatus(ctx context.Context, r pipeline.Repo, id int64) (pipeline.StatusInfo, error) {
	list, err := g.deploymentStatuses(ctx, r, id, 1)
	if err != nil {
		return pipeline.StatusInfo{}, err
	}
	if len(list) == 0 {
		return pipeline.StatusInfo{}, pipeline.ErrNotFound
	}
	return list[0], nil
}

// DeploymentStatuses lists a deployment's newest statuses (up to 100),
// newest first, as GitHub lists them.
func (g *GitHub) DeploymentStatuses(ctx context.Context, r pipeline.Repo, id int64) ([]pipeline.StatusInfo, error) {
	return g.deploymentStatuses(ctx, r, id, 100)
}

func (g *GitHub) deploymentStatuses(ctx context.Context, r pipeline.Repo, id int64, n int) ([]pipeline.StatusInfo, error) {
	gh, err := g.client(r)
	if err != nil {
		return nil, err
	}
	list, resp, err := gh.Repositories.ListDeploymentStatuses(ctx, r.Owner, r.Name, id, &github.ListOptions{PerPage: n})
	if resp != nil && resp.StatusCode == http.StatusNotFound {
		return nil, pipeline.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	out := make([]pipeline.StatusInfo, 0, len(list))
	for _, st := range list {
		// A state lastmile does not know (none today) is left out, as
		// its webhook is ignored: it says nothing lastmile can act on.
		if info, err := statusInfo(st); err == nil {
			out = append(out, info)
		}
	}
	return out, nil
}

// statusInfo is what lastmile keeps of a deployment status, from its
// webhook or read back from GitHub; GitHub's "waiting" is read as queued
// (pipeline.ParseStatusState), the same either way.
func statusInfo(st *github.DeploymentStatus) (pipeline.StatusInfo, error) {
	state, err := pipeline.ParseStatusState(st.GetState())
	if err != nil {
		return pipeline.StatusInfo{}, err
	}
	return pipeline.StatusInfo{
		GitHubID: st.GetID(), State: state, Description: st.GetDescription(),
		LogURL: firstNonEmpty(st.GetLogURL(), st.GetTargetURL()), EnvironmentURL: st.GetEnvironmentURL(),
		Creator: st.GetCreator().GetLogin(), CreatedAt: st.GetCreatedAt().Time,
	}, nil
}

// CreateCommitStatus writes a commit status.
func (g *GitHub) CreateCommitStatus(ctx context.Context, r pipeline.Repo, sha string, s pipeline.CommitStatus) error {
	gh, err := g.client(r)
	if err != nil {
		return err
	}
	st := &github.RepoStatus{State: github.String(s.State), Context: github.String(s.Context), Description: github.String(s.Description)}
	if s.TargetURL != "" {
		st.TargetURL = github.String(s.TargetURL)
	}
	_, _, err = gh.Repositories.CreateStatus(ctx, r.Owner, r.Name, sha, st)
	return err
}

// protectionRuleReview is the body of the custom deployment protection rule
// review call, which go-github v62 does not have.
type protectionRuleReview struct {
	EnvironmentName string `json:"environment_name"`
	State           string `json:"state"`
	Comment         string `json:"comment,omitempty"`
}

// ReviewProtectionRule approves or rejects a run's deployment, as a custom
// deployment protection rule. The URL is built from the repository and run
// ID: a token is never sent to an address taken from a payload.
func (g *GitHub) ReviewProtectionRule(ctx context.Context, r pipeline.Repo, runID int64, env, state, comment string) error {
	gh, err := g.client(r)
	if err != nil {
		return err
	}
	path := fmt.Sprintf("repos/%s/%s/actions/runs/%d/deployment_protection_rule", r.Owner, r.Name, runID)
	req, err := gh.NewRequest(http.MethodPost, path, &protectionRuleReview{EnvironmentName: env, State: state, Comment: comment})
	if err != nil {
		return err
	}
	_, err = gh.Do(ctx, req, nil)
	// 422: the run waits for no answer of this rule (answered already,
	// cancelled); 404: GitHub has no such run for this installation (the
	// run deleted, or the repository out of its reach). Both are GitHub's
	// refusals, not failures that may pass.
	var er *github.ErrorResponse
	if errors.As(err, &er) && (er.Response.StatusCode == http.StatusUnprocessableEntity || er.Response.StatusCode == http.StatusNotFound) {
		return refusal(er)
	}
	return err
}

// JobLog downloads a job's log. GitHub answers the logs endpoint with a
// redirect to a short-lived URL; at most max bytes are kept: the head and
// the tail, with what was cut said in between.
// A rate limit, or a suspended installation's token refused, is marked
// pipeline.ErrGitHubWait.
func (g *GitHub) JobLog(ctx context.Context, r pipeline.Repo, jobID int64, max int) ([]byte, bool, error) {
	gh, err := g.client(r)
	if err != nil {
		return nil, false, waitMarked(err)
	}
	u, resp, err := gh.Actions.GetWorkflowJobLogs(ctx, r.Owner, r.Name, jobID, 0)
	if resp != nil && (resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone) {
		return nil, false, pipeline.ErrNotFound
	}
	if err != nil {
		// A Location that does not parse comes back whole in the error.
		return nil, false, waitMarked(hideSignedURLs(err))
	}
	log, truncated, err := g.downloadLog(ctx, u.String(), max)
	if err != nil {
		return nil, false, waitMarked(hideSignedURLs(err))
	}
	return log, truncated, nil
}

// WorkflowRun reads a workflow run as it is now.
func (g *GitHub) WorkflowRun(ctx context.Context, r pipeline.Repo, runID int64) (pipeline.WorkflowRun, error) {
	gh, err := g.client(r)
	if err != nil {
		return pipeline.WorkflowRun{}, err
	}
	var run github.WorkflowRun
	resp, err := getJSON(ctx, gh, fmt.Sprintf("repos/%s/%s/actions/runs/%d", r.Owner, r.Name, runID), &run)
	if resp != nil && resp.StatusCode == http.StatusNotFound {
		return pipeline.WorkflowRun{}, pipeline.ErrNotFound
	}
	if err != nil {
		return pipeline.WorkflowRun{}, err
	}
	return workflowRun(r, "", &run), nil
}

// RunsInProgress counts the workflow runs of commit sha on event, other
// than run except, that GitHub has not completed. GitHub lists them newest
// first, up to 100 a page; every page is read (GitHub answers at most 1,000
// runs for such a filter).
func (g *GitHub) RunsInProgress(ctx context.Context, r pipeline.Repo, sha, event string, except int64) (int, error) {
	gh, err := g.client(r)
	if err != nil {
		return 0, err
	}
	query := url.Values{"head_sha": {sha}, "event": {event}, "per_page": {"100"}}
	n := 0
	for {
		var runs github.WorkflowRuns
		resp, err := getJSON(ctx, gh, fmt.Sprintf("repos/%s/%s/actions/runs?%s", r.Owner, r.Name, query.Encode()), &runs)
		if resp != nil && resp.StatusCode == http.StatusNotFound {
			return 0, pipeline.ErrNotFound
		}
		if err != nil {
			return 0, err
		}
		for _, run := range runs.WorkflowRuns {
			if run.GetID() != except && run.GetStatus() != "completed" {
				n++
			}
		}
		if resp.NextPage == 0 {
			return n, nil
		}
		query.Set("page", strconv.Itoa(resp.NextPage))
	}
}

// getJSON GETs path of the REST API and decodes GitHub's answer into v
// as decodeJSON does: the workflow runs' repositories have
// custom_properties, which go-github's own methods cannot always decode.
func getJSON(ctx context.Context, gh *github.Client, path string, v any) (*github.Response, error) {
	req, err := gh.NewRequest(http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	var body bytes.Buffer
	resp, err := gh.Do(ctx, req, &body)
	if err != nil {
		return resp, err
	}
	if err := decodeJSON(body.Bytes(), v); err != nil {
		return resp, fmt.Errorf("GET %s: %w", path, err)
	}
	return resp, nil
}

// workflowRun is what lastmile reads of a workflow run, from its webhook
// (with the event's action) or from the API.
func workflowRun(r pipeline.Repo, action string, run *github.WorkflowRun) pipeline.WorkflowRun {
	return pipeline.WorkflowRun{
		Repo: r, Action: action, RunID: run.GetID(), Name: run.GetName(), Event: run.GetEvent(),
		HeadSHA: run.GetHeadSHA(), HeadBranch: run.GetHeadBranch(), Status: run.GetStatus(), Conclusion: run.GetConclusion(),
		URL: run.GetHTMLURL(), Attempt: run.GetRunAttempt(), CreatedAt: run.GetCreatedAt().Time, UpdatedAt: run.GetUpdatedAt().Time,
	}
}

// Installation reads, as the App, what GitHub says of an installation now.
func (g *GitHub) Installation(ctx context.Context, id int64) (pipeline.InstallationState, error) {
	inst, resp, err := g.Clients.App().Apps.GetInstallation(ctx, id)
	if resp != nil && resp.StatusCode == http.StatusNotFound {
		return pipeline.InstallationState{}, pipeline.ErrNotFound
	}
	if err != nil {
		return pipeline.InstallationState{}, err
	}
	return installationState(inst), nil
}

// RepoInstallation reads, as the App, which installation reaches a
// repository now.
func (g *GitHub) RepoInstallation(ctx context.Context, r pipeline.Repo) (int64, error) {
	inst, resp, err := g.Clients.App().Apps.FindRepositoryInstallation(ctx, r.Owner, r.Name)
	if resp != nil && resp.StatusCode == http.StatusNotFound {
		return 0, pipeline.ErrNotFound
	}
	if err != nil {
		return 0, err
	}
	return inst.GetID(), nil
}

// installationState is where an installation stands, as GitHub describes
// it: suspended (since when, by whom) or active.
func installationState(inst *github.Installation) pipeline.InstallationState {
	st := pipeline.InstallationState{ID: inst.GetID(), Account: accountName(inst.GetAccount()), State: pipeline.InstallationActive}
	if at := inst.GetSuspendedAt(); !at.IsZero() {
		st.State, st.Since, st.By = pipeline.InstallationSuspended, at.Time, inst.GetSuspendedBy().GetLogin()
	}
	return st
}

// downloadLog reads the log at the address GitHub redirected to: a
// short-lived URL whose query signs the download (sig=…). Its errors may
// carry that URL: JobLog hides its query.
func (g *GitHub) downloadLog(ctx context.Context, u string, max int) ([]byte, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, false, err
	}
	client := g.Logs
	if client == nil {
		client = &http.Client{Timeout: 2 * time.Minute}
	}
	logResp, err := client.Do(req)
	if err != nil {
		return nil, false, err
	}
	defer logResp.Body.Close()
	if logResp.StatusCode != http.StatusOK {
		return nil, false, fmt.Errorf("download job log: HTTP %d", logResp.StatusCode)
	}
	return readBounded(logResp.Body, max)
}

// urlQuery is a URL's query and fragment in an error's text.
var urlQuery = regexp.MustCompile(`(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"'?#]*)[?#][^\s"']*`)

// hideSignedURLs is err without the query (nor fragment) of any URL in it,
// where a signed download's signature is: that of a *url.Error, and any
// other in its text. Scheme, host and path stay, to say what failed; the
// error still wraps err (errors.Is and errors.As see through it).
func hideSignedURLs(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if i := strings.IndexAny(ue.URL, "?#"); i >= 0 {
			ue.URL = ue.URL[:i]
		}
	}
	text := err.Error()
	if hidden := urlQuery.ReplaceAllString(text, "$1"); hidden != text {
		return &hiddenURLError{text: hidden, err: err}
	}
	return err
}

// hiddenURLError is an error whose text has had URL queries taken out.
type hiddenURLError struct {
	text string
	err  error
}

func (e *hiddenURLError) Error() string { return e.text }
func (e *hiddenURLError) Unwrap() error { return e.err }

// readBounded reads r keeping at most max bytes: all of it if it fits,
// otherwise its first and last halves around a note of what was cut.
func readBounded(r io.Reader, max int) ([]byte, bool, error) {
	if max <= 0 {
		max = 1 << 20
	}
	// Grown as the log arrives, not allocated at max: most logs are small.
	head, err := io.ReadAll(io.LimitReader(r, int64(max)))
	if err != nil {
		return nil, false, err
	}
	if len(head) < max {
		return head, false, nil
	}
	// Over max: keep the first half and a ring of the last half.
	half := max / 2
	tail := make([]byte, max-half)
	copy(tail, head[half:])
	ring, pos, total := tail, 0, int64(max)
	buf := make([]byte, 32<<10)
	for {
		m, err := r.Read(buf)
		for _, b := range buf[:m] {
			ring[pos] = b
			pos = (pos + 1) % len(ring)
		}
		total += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, false, err
		}
	}
	if total == int64(max) {
		return head, false, nil // exactly max bytes: nothing was cut
	}
	var out bytes.Buffer
	out.Write(head[:half])
	fmt.Fprintf(&out, "\n[lastmile: %d bytes of this log were cut; its first %d and last %d bytes are kept]\n", total-int64(max), half, max-half)
	out.Write(ring[pos:])
	out.Write(ring[:pos])
	return out.Bytes(), true, nil
}
