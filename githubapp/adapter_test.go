package githubapp

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lastmile-app/lastmile/pipeline"
)

// scriptedGitHub answers installation tokens and hands every other request
// to answer.
func scriptedGitHub(t *testing.T, answer http.HandlerFunc) (*GitHub, pipeline.Repo) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/access_tokens") {
			w.WriteHeader(http.StatusCreated)
			fmt.Fprintf(w, `{"token":"t","expires_at":%q}`, time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
			return
		}
		answer(w, r)
	}))
	t.Cleanup(srv.Close)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	clients, err := NewClients(srv.URL+"/", 1, key, &Transport{MaxRetries: 1, BaseDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return &GitHub{Clients: clients}, pipeline.Repo{ID: 1, Owner: "acme", Name: "shop", InstallationID: 7}
}

func TestCreateDeploymentAnswers(t *testing.T) {
	tests := map[string]struct {
		status     int
		body       string
		wantStatus int
		awaits     bool
		contexts   int
		message    string
	}{
		"202: GitHub merged instead of deploying": {202, `{"message":"Auto-merged master into topic-branch on deployment."}`, 202, false, 0, "Auto-merged"},
		"409: required contexts pending": {409, `{"message":"Conflict: Commit status checks failed for abc","errors":[{"contexts":[{"context":"build","state":"pending"}],"resource":"Deployment","field":"required_contexts","code":"invalid"}]}`,
			409, true, 1, "Commit status checks failed"},
		"409: one required context green, one pending (GitHub lists them all)": {409, `{"message":"Conflict: Commit status checks failed for abc","errors":[{"contexts":[{"context":"lint","state":"success"},{"context":"build","state":"pending"}],"resource":"Deployment","field":"required_contexts","code":"invalid"}]}`,
			409, true, 2, "build is pending"},
		"409: a required context failed": {409, `{"message":"Conflict: Commit status checks failed for abc","errors":[{"contexts":[{"context":"build","state":"failure"},{"context":"lint","state":"pending"}]}]}`,
			409, true, 2, "build is failure"},
		"409: the required context has not reported yet (GitHub lists only the others)": {409, `{"message":"Conflict: Commit status checks failed for abc","errors":[{"contexts":[{"context":"lint","state":"success"}],"resource":"Deployment","field":"required_contexts","code":"invalid"}]}`,
			409, true, 1, "lint is success"},
		"409: nothing has reported yet": {409, `{"message":"Conflict: Commit status checks failed for abc","errors":[{"contexts":[],"resource":"Deployment","field":"required_contexts","code":"invalid"}]}`,
			409, true, 0, "Commit status checks failed"},
		"409: another context failed, the required one runs": {409, `{"message":"Conflict: Commit status checks failed for abc","errors":[{"contexts":[{"context":"lint","state":"failure"},{"context":"build","state":"in_progress"}],"resource":"Deployment","field":"required_contexts","code":"invalid"}]}`,
			409, true, 2, "lint is failure"},
		"409: the required context failed as a status, its check run succeeded": {409, `{"message":"Conflict: Commit status checks failed for abc","errors":[{"contexts":[{"context":"build","state":"failure"},{"context":"build","state":"success"},{"context":"lint","state":"pending"}],"resource":"Deployment","field":"required_contexts","code":"invalid"}]}`,
			409, false, 3, "build is failure"},
		"409: merge conflict": {409, `{"message":"Conflict merging master into topic."}`, 409, false, 0, "Conflict merging"},
		"422: validation failed": {422, `{"message":"Validation Failed","errors":[{"resource":"Deployment","field":"ref","code":"invalid","message":"No ref found for: nope"}]}`,
			422, false, 0, "No ref found for: nope"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var sent []byte
			gh, repo := scriptedGitHub(t, func(w http.ResponseWriter, r *http.Request) {
				sent, _ = io.ReadAll(r.Body)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			})
			_, _, err := gh.CreateDeployment(context.Background(), repo, pipeline.DeploymentRequest{SHA: "abc", Environment: "test", RequiredContexts: []string{"build"}})
			var refused *pipeline.RefusedError
			if !errors.As(err, &refused) {
				t.Fatalf("got %v (%T), want a RefusedError", err, err)
			}
			if refused.Status != tc.wantStatus || refused.AwaitsContexts([]string{"build"}) != tc.awaits || len(refused.Contexts) != tc.contexts ||
				!strings.Contains(refused.Error(), tc.message) {
				t.Errorf("got %+v (%v)", refused, refused)
			}
			for _, field := range []string{`"auto_merge":false`, `"ref":"abc"`, `"required_contexts":["build"]`, `"production_environment":false`} {
				if !bytes.Contains(sent, []byte(field)) {
					t.Errorf("request %s lacks %s", sent, field)
				}
			}
		})
	}
}

func TestCreateDeploymentServerErrorIsNotARefusal(t *testing.T) {
	calls := 0
	gh, repo := scriptedGitHub(t, func(w http.ResponseWriter, r *http.Request) {
		calls++
		w.WriteHeader(http.StatusBadGateway)
	})
	_, _, err := gh.CreateDeployment(context.Background(), repo, pipeline.DeploymentRequest{SHA: "abc", Environment: "test"})
	var refused *pipeline.RefusedError
	if err == nil || errors.As(err, &refused) {
		t.Fatalf("got %v: a 502 leaves the outcome unknown and must be retried, not recorded as refused", err)
	}
	if calls != 1 {
		t.Errorf("the POST was sent %d times: it may have been applied, so it is not repeated blindly", calls)
	}
}

// A protection-rule answer GitHub refuses — 422 (the run waits for no
// answer), 404 (no such run for lastmile: deleted, or the repository out
// of reach) — is a refusal (pipeline.RefusedError), which the engine and
// the worker judge; a 5xx is not, and is tried again.
func TestReviewProtectionRuleAnswers(t *testing.T) {
	for _, c := range []struct {
		status  int
		refused bool
	}{
		{http.StatusNoContent, false},
		{http.StatusUnprocessableEntity, true},
		{http.StatusNotFound, true},
		{http.StatusBadGateway, false},
	} {
		gh, repo := scriptedGitHub(t, func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost || r.URL.Path != "/repos/acme/shop/actions/runs/42/deployment_protection_rule" {
				http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusTeapot)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(c.status)
			if c.status != http.StatusNoContent {
				fmt.Fprintf(w, `{"message":"%s"}`, http.StatusText(c.status))
			}
		})
		err := gh.ReviewProtectionRule(context.Background(), repo, 42, "production", "approved", "ok")
		var refused *pipeline.RefusedError
		switch {
		case c.status == http.StatusNoContent && err != nil:
			t.Errorf("%d: %v, want no error", c.status, err)
		case c.refused && (!errors.As(err, &refused) || refused.Status != c.status):
			t.Errorf("%d: %v, want a refusal with that status", c.status, err)
		case !c.refused && errors.As(err, &refused):
			t.Errorf("%d: %v, want an error to try again, not a refusal", c.status, err)
		case c.status == http.StatusBadGateway && err == nil:
			t.Errorf("%d: no error", c.status)
		}
	}
}

// A status that can never be written (the deployment was deleted, or GitHub
// will not take it) is told apart from one to retry.
func TestCreateDeploymentStatusAnswers(t *testing.T) {
	for code, check := range map[int]func(error) bool{
		http.StatusNotFound:            func(err error) bool { return errors.Is(err, pipeline.ErrNotFound) },
		http.StatusGone:                func(err error) bool { return errors.Is(err, pipeline.ErrNotFound) },
		http.StatusUnprocessableEntity: func(err error) bool { var r *pipeline.RefusedError; return errors.As(err, &r) && r.Status == 422 },
		http.StatusBadGateway: func(err error) bool {
			var r *pipeline.RefusedError
			return err != nil && !errors.Is(err, pipeline.ErrNotFound) && !errors.As(err, &r)
		},
	} {
		gh, repo := scriptedGitHub(t, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(code)
			io.WriteString(w, `{"message":"no"}`)
		})
		_, err := gh.CreateDeploymentStatus(context.Background(), repo, 9, pipeline.StatusRequest{State: pipeline.DeploymentInactive})
		if !check(err) {
			t.Errorf("HTTP %d: %v", code, err)
		}
	}
}

func TestFindDeploymentMatchesTheMarker(t *testing.T) {
	mine := pipeline.Marker{Instance: "i1", Release: 4, Stage: "staging", Index: 1}
	gh, repo := scriptedGitHub(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("sha") != "abc" || r.URL.Query().Get("environment") != "staging" {
			t.Errorf("query %s", r.URL.RawQuery)
		}
		io.WriteString(w, `[
			{"id": 1, "sha": "abc", "environment": "staging", "payload": {}, "created_at": "2026-01-01T00:00:00Z"},
			{"id": 2, "sha": "abc", "environment": "staging", "payload": {"lastmile": {"instance": "other", "release": 4, "stage": "staging", "index": 1}}, "created_at": "2026-01-01T00:00:00Z"},
			{"id": 5, "sha": "abc", "environment": "staging", "payload": {"lastmile": {"instance": "i1", "release": 4, "stage": "staging", "index": 1}}, "creator": {"login": "octocat", "type": "User"}, "created_at": "2026-01-01T00:00:00Z"},
			{"id": 6, "sha": "abc", "environment": "staging", "payload": {"lastmile": {"instance": "i1", "release": 4, "stage": "staging", "index": 1}}, "creator": {"login": "github-actions[bot]", "type": "Bot"}, "created_at": "2026-01-01T00:00:00Z"},
			{"id": 3, "sha": "abc", "environment": "staging", "payload": "{\"lastmile\":{\"instance\":\"i1\",\"release\":4,\"stage\":\"staging\",\"index\":1}}", "created_at": "2026-01-01T00:00:01Z"}
		]`)
	})
	id, _, err := gh.FindDeployment(context.Background(), repo, "abc", "staging", mine)
	if err != nil || id != 3 {
		t.Errorf("got %d %v, want deployment 3 (ours, payload given back as a string; not a person's or a workflow's copy of its marker)", id, err)
	}
	_, _, err = gh.FindDeployment(context.Background(), repo, "abc", "staging", pipeline.Marker{Instance: "i1", Release: 5, Stage: "staging", Index: 1})
	if !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("another release's marker: %v, want ErrNotFound", err)
	}
}

func TestReadFileNotFound(t *testing.T) {
	gh, repo := scriptedGitHub(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"message":"Not Found"}`)
	})
	if _, err := gh.ReadFile(context.Background(), repo, pipeline.ConfigPath, "abc"); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("got %v, want ErrNotFound", err)
	}
}

// GitHub's contents API answers 404 both for a file a commit does not
// hold and for a ref it does not show: the second, right after a push
// (its API not caught up yet), is not "no configuration".
func TestReadFileTellsAnUnknownCommitFromAnAbsentFile(t *testing.T) {
	gh, repo := scriptedGitHub(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"message":"No commit found for the ref `+r.URL.Query().Get("ref")+`","documentation_url":"https://docs.github.com/rest/repos/contents#get-repository-content","status":"404"}`)
	})
	_, err := gh.ReadFile(context.Background(), repo, pipeline.ConfigPath, "c2c2c2c")
	if !errors.Is(err, pipeline.ErrUnknownCommit) || errors.Is(err, pipeline.ErrNotFound) || !strings.Contains(err.Error(), "No commit found for the ref c2c2c2c") {
		t.Errorf("got %v, want ErrUnknownCommit (not ErrNotFound) with GitHub's message", err)
	}
}

// A comparison GitHub refuses for its rate limit, or for a suspended
// installation, is marked as one to wait for (pipeline.ErrGitHubWait), its
// text and the errors it wraps unchanged; another refusal is not.
func TestCompareMarksWhatToWaitFor(t *testing.T) {
	limited, repo := scriptedGitHub(t, rateLimitSpent(time.Now().Add(time.Hour)))
	_, err := limited.Compare(context.Background(), repo, "aaa", "bbb")
	if !errors.Is(err, pipeline.ErrGitHubWait) {
		t.Fatalf("rate limited: %v, want pipeline.ErrGitHubWait", err)
	}
	if _, ok := AsRateLimited(err, time.Now()); !ok || strings.Contains(err.Error(), pipeline.ErrGitHubWait.Error()) {
		t.Errorf("the mark changed the error: %v", err)
	}
	suspended, repo := scriptedGitHub(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"message":"This installation has been suspended"}`)
	})
	if _, err := suspended.Compare(context.Background(), repo, "aaa", "bbb"); !errors.Is(err, pipeline.ErrGitHubWait) || !InstallationSuspended(err) {
		t.Errorf("installation suspended: %v, want pipeline.ErrGitHubWait", err)
	}
	refused, repo := scriptedGitHub(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"message":"Resource not accessible by integration"}`)
	})
	if _, err := refused.Compare(context.Background(), repo, "aaa", "bbb"); err == nil || errors.Is(err, pipeline.ErrGitHubWait) {
		t.Errorf("refused for lack of permission: %v, want an error that is not the rate limit", err)
	}
}

// A file over 1 MB is ErrTooLarge whichever way GitHub says so: 403 with
// errors[].code too_large (the default media type), or encoding "none" (the
// object media type). Another 403 is not.
func TestReadFileTooLarge(t *testing.T) {
	tests := map[string]struct {
		status   int
		body     string
		tooLarge bool
	}{
		"403 too_large":               {403, `{"message":"This API returns blobs up to 1 MB in size. The requested blob is too large to fetch via the API, but you can use the Git Data API to request blobs up to 100 MB in size.","errors":[{"resource":"Blob","field":"data","code":"too_large"}],"documentation_url":"https://docs.github.com/rest/repos/contents#get-repository-content"}`, true},
		"encoding none":               {200, `{"type":"file","encoding":"none","content":"","size":2000000,"name":"lastmile.yml","path":".github/lastmile.yml"}`, true},
		"another 403":                 {403, `{"message":"Resource not accessible by integration","documentation_url":"https://docs.github.com/rest"}`, false},
		"another error code on a 422": {422, `{"message":"Validation Failed","errors":[{"resource":"Blob","field":"data","code":"too_large"}]}`, false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			gh, repo := scriptedGitHub(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json; charset=utf-8")
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			})
			_, err := gh.ReadFile(context.Background(), repo, pipeline.ConfigPath, "abc")
			if err == nil || errors.Is(err, pipeline.ErrTooLarge) != tc.tooLarge {
				t.Errorf("got %v, want ErrTooLarge: %v", err, tc.tooLarge)
			}
		})
	}
}

// A path that is no regular file — a symbolic link whose target the
// contents API does not return, a submodule (GitHub's examples of each),
// a directory — is ErrNotAFile, saying which, not an empty file.
func TestReadFileNotAFile(t *testing.T) {
	for kind, body := range map[string]string{
		"symlink": `{"type":"symlink","target":"/path/to/symlink/target","size":23,"name":"lastmile.yml","path":".github/lastmile.yml","sha":"452a98979c88e093d682cab404a3ec82babebb48"}`,
		"submodule": `{"type":"submodule","submodule_git_url":"git://github.com/jquery/qunit.git","size":0,"name":"lastmile.yml","path":".github/lastmile.yml",` +
			`"sha":"6ca3721222109997540bd6d9ccd396902e0ad2f9"}`,
		"directory": `[{"type":"file","size":10,"name":"a.yml","path":".github/lastmile.yml/a.yml","sha":"6ca3721222109997540bd6d9ccd396902e0ad2f9"}]`,
	} {
		t.Run(kind, func(t *testing.T) {
			gh, repo := scriptedGitHub(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json; charset=utf-8")
				io.WriteString(w, body)
			})
			data, err := gh.ReadFile(context.Background(), repo, pipeline.ConfigPath, "abc")
			if !errors.Is(err, pipeline.ErrNotAFile) || !strings.Contains(err.Error(), "(a "+kind+")") {
				t.Errorf("got %q, %v; want ErrNotAFile saying it is a %s", data, err, kind)
			}
		})
	}
}

func TestReadBounded(t *testing.T) {
	tests := map[string]struct {
		in        string
		max       int
		want      string
		truncated bool
	}{
		"shorter":         {"hello", 10, "hello", false},
		"exactly the max": {"0123456789", 10, "0123456789", false},
		"longer: head and tail kept, the cut said": {"abcdefghijKLMNOPqrstuvwxyz", 10, "abcde\n[lastmile: 16 bytes of this log were cut; its first 5 and last 5 bytes are kept]\nvwxyz", true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, truncated, err := readBounded(strings.NewReader(tc.in), tc.max)
			if err != nil || string(got) != tc.want || truncated != tc.truncated {
				t.Errorf("got %q %v %v, want %q %v", got, truncated, err, tc.want, tc.truncated)
			}
		})
	}
}

// A short log costs what it holds, not the configured maximum.
func TestReadBoundedAllocatesWhatArrives(t *testing.T) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	got, truncated, err := readBounded(strings.NewReader("hello"), 512<<20)
	runtime.ReadMemStats(&after)
	if err != nil || string(got) != "hello" || truncated {
		t.Fatalf("got %q %v %v", got, truncated, err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Errorf("reading 5 bytes with a 512 MB maximum allocated %d bytes", n)
	}
}

// A redirect to another host is not followed, by the App's installation
// clients nor by the Action's token client: their transports would send
// the token there too. A redirect within the API's host is followed.
func TestRedirectsToAnotherHostAreNotFollowed(t *testing.T) {
	var seen atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		if r.Header.Get("Authorization") != "" {
			t.Errorf("the token reached another host: %s %s", r.Method, r.URL)
		}
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, `{"type":"file","encoding":"base64","content":"eA=="}`)
	}))
	defer other.Close()
	gh, repo := scriptedGitHub(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("moved") != "" {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"type":"file","encoding":"base64","content":"eA=="}`)
			return
		}
		if strings.Contains(r.URL.Path, "/here/") {
			http.Redirect(w, r, r.URL.Path+"?moved=1", http.StatusFound)
			return
		}
		http.Redirect(w, r, other.URL+r.URL.Path+"?sig=SECRETSIG", http.StatusFound)
	})
	if data, err := gh.ReadFile(context.Background(), repo, "here/file", "abc"); err != nil || string(data) != "x" {
		t.Errorf("redirect within the host: %q, %v", data, err)
	}
	// The error says so, without the address's query (a signed URL's
	// signature).
	if _, err := gh.ReadFile(context.Background(), repo, ".github/lastmile.yml", "abc"); err == nil || !strings.Contains(err.Error(), "not followed") ||
		strings.Contains(err.Error(), "SECRETSIG") {
		t.Errorf("installation client, redirect to another host: %v", err)
	}
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.Path+"?sig=SECRETSIG", http.StatusFound)
	}))
	defer api.Close()
	tc, err := NewTokenClient(api.URL, "ghs_secret", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tc.Repositories.Get(context.Background(), "acme", "shop"); err == nil || !strings.Contains(err.Error(), "not followed") ||
		strings.Contains(err.Error(), "SECRETSIG") {
		t.Errorf("token client, redirect to another host: %v", err)
	}
	if n := seen.Load(); n != 0 {
		t.Errorf("the other host got %d requests", n)
	}
}

// Relation asks for the comparison's status in one request, however many
// commits lie between (Compare pages through them all).
func TestRelationIsOneRequest(t *testing.T) {
	var calls atomic.Int32
	gh, repo := scriptedGitHub(t, func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/repos/acme/shop/compare/") {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		calls.Add(1)
		page := r.URL.Query().Get("page")
		next := "2"
		if page == "2" {
			next = "3"
		}
		w.Header().Set("Link", fmt.Sprintf(`<http://%s%s?page=%s&per_page=%s>; rel="next"`, r.Host, r.URL.Path, next, r.URL.Query().Get("per_page")))
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"status":"ahead","ahead_by":5000,"total_commits":5000,"commits":[{"sha":"c%s","commit":{"message":"m"}}]}`, page)
	})
	rel, err := gh.Relation(context.Background(), repo, "abc", "main")
	if err != nil || rel != "ahead" || calls.Load() != 1 {
		t.Errorf("Relation: %q, %v after %d requests; want ahead after 1", rel, err, calls.Load())
	}
}

// A job's log is downloaded from the short-lived URL GitHub redirects to,
// signed by its query (sig=…). When the download fails, the error — which
// ends up in the log and in the delivery's last_error — says where it
// went, without the signature.
func TestJobLogErrorHidesTheSignedURL(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close() // nothing listens there any more: connection refused
	gh, repo := scriptedGitHub(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://"+dead+"/actions-results/job.txt?sp=r&sig=SAS-SIGNATURE-SECRET", http.StatusFound)
	})
	_, _, err = gh.JobLog(context.Background(), repo, 42, 1<<20)
	if err == nil {
		t.Fatal("download from a dead host succeeded")
	}
	if strings.Contains(err.Error(), "SAS-SIGNATURE-SECRET") || strings.Contains(err.Error(), "sp=r") {
		t.Errorf("the error shows the log URL's query: %v", err)
	}
	if !strings.Contains(err.Error(), "http://"+dead+"/actions-results/job.txt") {
		t.Errorf("the error does not say which download failed: %v", err)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("the error no longer wraps its cause: %v", err)
	}
}

// The log's body breaks off: the read error, whatever its text, does not
// show the signed URL either.
func TestJobLogBodyErrorHidesTheSignedURL(t *testing.T) {
	signed := "https://results.example.net/actions-results/job.txt?sp=r&sig=SAS-SIGNATURE-SECRET"
	gh, repo := scriptedGitHub(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, signed, http.StatusFound)
	})
	gh.Logs = &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: http.StatusOK, Body: io.NopCloser(io.MultiReader(strings.NewReader("line 1\n"),
			errReader{fmt.Errorf("read from %s: %w", r.URL, io.ErrUnexpectedEOF)}))}, nil
	})}
	_, _, err := gh.JobLog(context.Background(), repo, 42, 1<<20)
	if err == nil {
		t.Fatal("a broken download succeeded")
	}
	if strings.Contains(err.Error(), "SAS-SIGNATURE-SECRET") {
		t.Errorf("the error shows the log URL's signature: %v", err)
	}
	if !strings.Contains(err.Error(), "https://results.example.net/actions-results/job.txt") || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("error %v, want the download's address and its cause", err)
	}
}

// GitHub's redirect, the first request's answer, to a Location lastmile
// cannot follow: the errors of Go's HTTP client and of go-github repeat the
// Location, signature included.
func TestJobLogBadLocationHidesTheSignature(t *testing.T) {
	for name, location := range map[string]string{
		"not a header line": "https://results.example.net/job.txt?sig=SAS-SIGNATURE-SECRET&x=\x7f", // the transport refuses the answer
		"not a URL":         "https://results.example.net:blob/job.txt?sig=SAS-SIGNATURE-SECRET",   // go-github cannot parse it
	} {
		t.Run(name, func(t *testing.T) {
			gh, repo := scriptedGitHub(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header()["Location"] = []string{location}
				w.WriteHeader(http.StatusFound)
			})
			_, _, err := gh.JobLog(context.Background(), repo, 42, 1<<20)
			if err == nil {
				t.Fatal("a Location that is no URL was followed")
			}
			if strings.Contains(err.Error(), "SAS-SIGNATURE-SECRET") {
				t.Errorf("the error shows the log URL's signature: %v", err)
			}
			if !strings.Contains(err.Error(), "results.example.net") {
				t.Errorf("the error does not say where GitHub redirected: %v", err)
			}
		})
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// Compare pages through a comparison of up to pipeline.MaxCompareCommits
// commits; one GitHub says holds more is refused after its first page —
// not paged through, hundreds of requests against the installation's
// quota — as ErrComparisonTooLarge.
func TestCompareBoundsTheCommitsListed(t *testing.T) {
	for _, tc := range []struct {
		total, requests int
		err             error
	}{
		{total: 250, requests: 3},
		{total: pipeline.MaxCompareCommits, requests: pipeline.MaxCompareCommits / 100},
		{total: pipeline.MaxCompareCommits + 1, requests: 1, err: pipeline.ErrComparisonTooLarge},
		{total: 2_000_000, requests: 1, err: pipeline.ErrComparisonTooLarge},
	} {
		t.Run(strconv.Itoa(tc.total), func(t *testing.T) {
			var calls atomic.Int32
			gh, repo := scriptedGitHub(t, func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				page, _ := strconv.Atoi(r.URL.Query().Get("page"))
				per, _ := strconv.Atoi(r.URL.Query().Get("per_page"))
				lo, hi := min((page-1)*per, tc.total), min(page*per, tc.total)
				if hi < tc.total {
					w.Header().Set("Link", fmt.Sprintf(`<http://%s%s?page=%d&per_page=%d>; rel="next"`, r.Host, r.URL.Path, page+1, per))
				}
				commits := make([]string, 0, hi-lo)
				for i := lo; i < hi; i++ {
					commits = append(commits, fmt.Sprintf(`{"sha":"%040d","commit":{"message":"commit %d"}}`, i, i))
				}
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"status":"ahead","ahead_by":%d,"total_commits":%d,"commits":[%s]}`, tc.total, tc.total, strings.Join(commits, ","))
			})
			cmp, err := gh.Compare(context.Background(), repo, "abc", "def")
			if int(calls.Load()) != tc.requests {
				t.Errorf("%d requests, want %d", calls.Load(), tc.requests)
			}
			if tc.err != nil {
				if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), strconv.Itoa(tc.total)) || len(cmp.Commits) != 0 {
					t.Errorf("got %d commits, %v; want %v saying %d", len(cmp.Commits), err, tc.err, tc.total)
				}
				return
			}
			if err != nil || len(cmp.Commits) != tc.total || cmp.Commits[tc.total-1].SHA != fmt.Sprintf("%040d", tc.total-1) {
				t.Errorf("got %d commits, %v; want %d", len(cmp.Commits), err, tc.total)
			}
		})
	}
}

// Statuses read back from GitHub are read as their webhooks are: GitHub's
// "waiting" (a job's own deployment held for reviewers) is queued, not
// lastmile's waiting (a deployment GitHub refused to create), and a state
// lastmile does not know is left out.
func TestDeploymentStatusesReadAsTheirWebhooks(t *testing.T) {
	gh, repo := scriptedGitHub(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `[{"id":3,"state":"paused"},{"id":2,"state":"waiting"},{"id":1,"state":"success","log_url":"https://x/1"}]`)
	})
	list, err := gh.DeploymentStatuses(context.Background(), repo, 7)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range list {
		got = append(got, fmt.Sprintf("%d:%s", s.GitHubID, s.State))
	}
	if want := []string{"2:queued", "1:success"}; !slices.Equal(got, want) {
		t.Errorf("statuses %v, want %v", got, want)
	}
}

// RunsInProgress asks for the commit's runs on the event, 100 a page, and
// pages through them all, counting those not completed other than the one
// named; a 404 (the repository out of reach) is ErrNotFound, another error
// is returned as it is.
func TestRunsInProgressPagesAndCounts(t *testing.T) {
	var mu sync.Mutex
	var queries []string
	gh, repo := scriptedGitHub(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/repos/acme/shop/actions/runs" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		q := r.URL.Query()
		mu.Lock()
		queries = append(queries, r.URL.RawQuery)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case q.Get("head_sha") == "gone":
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"message":"Not Found"}`)
		case q.Get("head_sha") == "broken":
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprint(w, `{"message":"Bad Gateway"}`)
		case q.Get("page") == "2":
			fmt.Fprint(w, `{"total_count":4,"workflow_runs":[{"id":2,"status":"waiting"},{"id":1,"status":"completed","conclusion":"failure"}]}`)
		default:
			w.Header().Set("Link", fmt.Sprintf(`<http://%s%s?page=2&per_page=100>; rel="next"`, r.Host, r.URL.Path))
			fmt.Fprint(w, `{"total_count":4,"workflow_runs":[{"id":4,"status":"queued"},{"id":3,"status":"completed","conclusion":"failure"}]}`)
		}
	})
	ctx := context.Background()
	n, err := gh.RunsInProgress(ctx, repo, "abc", "deployment", 3)
	if err != nil || n != 2 {
		t.Errorf("RunsInProgress: %d, %v; want 2 (runs 4 and 2)", n, err)
	}
	if n, err := gh.RunsInProgress(ctx, repo, "abc", "deployment", 4); err != nil || n != 1 {
		t.Errorf("RunsInProgress but run 4: %d, %v; want 1 (run 2)", n, err)
	}
	mu.Lock()
	sent := slices.Clone(queries)
	mu.Unlock()
	if len(sent) < 2 || !strings.Contains(sent[0], "event=deployment") || !strings.Contains(sent[0], "head_sha=abc") ||
		!strings.Contains(sent[0], "per_page=100") || !strings.Contains(sent[1], "page=2") {
		t.Errorf("queries %q, want the commit's runs on the event, 100 a page, then page 2", sent)
	}
	if _, err := gh.RunsInProgress(ctx, repo, "gone", "deployment", 3); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("404: %v, want ErrNotFound", err)
	}
	if _, err := gh.RunsInProgress(ctx, repo, "broken", "deployment", 3); err == nil || errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("502: %v, want GitHub's error", err)
	}
}

// A log GitHub will not give for now — a rate limit, an installation
// suspended — is marked as one to wait for (pipeline.ErrGitHubWait), as
// the other calls' answers are: the delivery waits, rather than the log
// being recorded as one lastmile could not download.
func TestJobLogMarksWhatToWaitFor(t *testing.T) {
	limited, repo := scriptedGitHub(t, rateLimitSpent(time.Now().Add(time.Hour)))
	if _, _, err := limited.JobLog(context.Background(), repo, 42, 1<<20); !errors.Is(err, pipeline.ErrGitHubWait) {
		t.Errorf("rate limited: %v, want pipeline.ErrGitHubWait", err)
	}
	refused, repo := scriptedGitHub(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"message":"Resource not accessible by integration"}`)
	})
	if _, _, err := refused.JobLog(context.Background(), repo, 42, 1<<20); err == nil || errors.Is(err, pipeline.ErrGitHubWait) {
		t.Errorf("refused (no actions: read): %v, want an error not to wait for", err)
	}
}

// rateLimitSpent answers as GitHub does once the installation's core quota
// is spent, until reset.
func rateLimitSpent(reset time.Time) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-RateLimit-Limit", "5000")
		w.Header().Set("X-RateLimit-Remaining", "0")
		w.Header().Set("X-RateLimit-Reset", fmt.Sprint(reset.Unix()))
		w.Header().Set("X-RateLimit-Resource", "core")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"message":"API rate limit exceeded for installation ID 7."}`)
	}
}
