package simulator_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-github/v62/github"

	"github.com/lastmile-app/lastmile/githubapp/simulator"
)

func TestContentsAtRefs(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{Files: map[string]string{"cfg.yml": "v: 1\n", "dir/a.txt": "a", "dir/sub/b.txt": "b"}})
	first := h.sim.Branch("acme/shop", "main")
	second := h.sim.Push("acme/shop", "main", simulator.CommitSpec{Files: map[string]string{"cfg.yml": "v: 2\n", "dir/a.txt": ""}}).After
	gh := h.client(h.org, nil)
	ctx := h.ctx()
	get := func(path, ref string) (string, int) {
		fc, _, resp, err := gh.Repositories.GetContents(ctx, "acme", "shop", path, &github.RepositoryContentGetOptions{Ref: ref})
		if err != nil {
			return "", resp.StatusCode
		}
		s, err := fc.GetContent()
		if err != nil {
			t.Fatal(err)
		}
		if fc.GetType() != "file" || fc.GetEncoding() != "base64" || fc.GetSize() != len(s) || len(fc.GetSHA()) != 40 {
			t.Errorf("file fields: %+v", fc)
		}
		return s, 200
	}
	for _, tc := range []struct {
		path, ref, want string
		status          int
	}{
		{"cfg.yml", first, "v: 1\n", 200},
		{"cfg.yml", first[:7], "v: 1\n", 200},
		{"cfg.yml", second, "v: 2\n", 200},
		{"cfg.yml", "main", "v: 2\n", 200},
		{"cfg.yml", "", "v: 2\n", 200},
		{"dir/a.txt", first, "a", 200},
		{"dir/a.txt", second, "", 404},
		{"nope.txt", "main", "", 404},
		{"cfg.yml", "no-such-branch", "", 404},
	} {
		if got, status := get(tc.path, tc.ref); got != tc.want || status != tc.status {
			t.Errorf("%s@%s: %q %d, want %q %d", tc.path, tc.ref, got, status, tc.want, tc.status)
		}
	}
	_, dir, _, err := gh.Repositories.GetContents(ctx, "acme", "shop", "dir", &github.RepositoryContentGetOptions{Ref: first})
	if err != nil || len(dir) != 2 || dir[0].GetName() != "a.txt" || dir[1].GetType() != "dir" || dir[1].GetPath() != "dir/sub" {
		t.Errorf("directory: %v %+v", err, dir)
	}
	// Blob SHAs are git's: "hello\n" is ce013625030ba8dba906f756967f9e9ca394464a.
	h.sim.Push("acme/shop", "main", simulator.CommitSpec{Files: map[string]string{"hello": "hello\n"}})
	fc, _, _, err := gh.Repositories.GetContents(ctx, "acme", "shop", "hello", nil)
	if err != nil || fc.GetSHA() != "ce013625030ba8dba906f756967f9e9ca394464a" {
		t.Errorf("blob sha %s: %v", fc.GetSHA(), err)
	}
}

// Without a path (no slash after "contents") GitHub lists the root
// directory, as for "contents/", with the headers of any answer; it is not
// the mux's redirect.
func TestContentsRootWithoutSlash(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{Files: map[string]string{"cfg.yml": "v: 1\n", "dir/a.txt": "a"}})
	tok := h.token(h.org)
	slash := h.do("GET", "/repos/acme/shop/contents/?ref=main", tok, nil)
	if slash.status != 200 {
		t.Fatalf("contents/: %d %s", slash.status, slash.body)
	}
	r := h.do("GET", "/repos/acme/shop/contents?ref=main", tok, nil)
	if r.status != 200 || string(r.body) != string(slash.body) || r.header.Get("X-GitHub-Request-Id") == "" {
		t.Fatalf("contents: %d %v %s, want %s", r.status, r.header, r.body, slash.body)
	}
	var names []string
	for _, e := range r.list(t) {
		names = append(names, e["name"].(string)+":"+e["type"].(string))
	}
	if strings.Join(names, " ") != "cfg.yml:file dir:dir" {
		t.Errorf("root listing %v", names)
	}
	reqs := h.sim.Requests()
	if last := reqs[len(reqs)-1]; last.Path != "/repos/acme/shop/contents" || last.Status != 200 {
		t.Errorf("request log: %+v", last)
	}
}

// A file over 1 MB: GitHub refuses it with the default media type (403,
// errors[0].code too_large) and, with the object media type, answers its
// metadata with content "" and encoding "none".
func TestContentsOverOneMB(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	big := strings.Repeat("x", 1<<20+1)
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{Files: map[string]string{"big.txt": big, "edge.txt": big[1:]}})
	gh := h.client(h.org, nil)
	ctx := h.ctx()

	_, _, resp, err := gh.Repositories.GetContents(ctx, "acme", "shop", "big.txt", nil)
	var er *github.ErrorResponse
	if !errors.As(err, &er) || resp.StatusCode != 403 || len(er.Errors) != 1 ||
		er.Errors[0] != (github.Error{Resource: "Blob", Field: "data", Code: "too_large"}) ||
		!strings.HasPrefix(er.Message, "This API returns blobs up to 1 MB in size.") ||
		er.DocumentationURL != "https://docs.github.com/rest/repos/contents#get-repository-content" {
		t.Fatalf("default media type: %v %+v", err, er)
	}
	// Exactly 1 MB is still served.
	if fc, _, _, err := gh.Repositories.GetContents(ctx, "acme", "shop", "edge.txt", nil); err != nil || fc.GetEncoding() != "base64" {
		t.Errorf("1 MB: %v %+v", err, fc)
	}

	for _, accept := range []string{"application/vnd.github.object", "application/vnd.github.object+json", "application/vnd.github.v3.object+json; charset=utf-8"} {
		req, err := gh.NewRequest("GET", "repos/acme/shop/contents/big.txt", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", accept)
		var fc github.RepositoryContent
		if _, err := gh.Do(ctx, req, &fc); err != nil {
			t.Fatalf("%s: %v", accept, err)
		}
		if fc.Content == nil || *fc.Content != "" || fc.GetEncoding() != "none" || fc.GetSize() != len(big) || fc.GetType() != "file" {
			t.Errorf("%s: %+v", accept, fc)
		}
	}
}

func TestCompare(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	base := h.sim.Branch("acme/shop", "main")
	var specs []simulator.CommitSpec
	for i := 0; i < 5; i++ {
		specs = append(specs, simulator.CommitSpec{Message: "c" + string(rune('0'+i)), Files: map[string]string{"f.txt": strings.Repeat("x\n", i+1)},
			Author: simulator.Author{Name: "Mona", Email: "mona@example.com", Login: "mona"}})
	}
	push := h.sim.Push("acme/shop", "main", specs...)
	side := h.sim.Push("acme/shop", "side", simulator.CommitSpec{Message: "side"}).After
	gh := h.client(h.org, nil)
	ctx := h.ctx()

	c, _, err := gh.Repositories.CompareCommits(ctx, "acme", "shop", base, "main", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.GetStatus() != "ahead" || c.GetAheadBy() != 5 || c.GetBehindBy() != 0 || c.GetTotalCommits() != 5 || len(c.Commits) != 5 {
		t.Fatalf("compare: %s ahead %d", c.GetStatus(), c.GetAheadBy())
	}
	for i, cm := range c.Commits { // oldest first
		if cm.GetSHA() != push.Commits[i] || cm.GetAuthor().GetLogin() != "mona" || cm.GetCommit().GetAuthor().GetEmail() != "mona@example.com" {
			t.Errorf("commit %d: %s", i, cm.GetSHA())
		}
		if i > 0 && cm.Parents[0].GetSHA() != push.Commits[i-1] {
			t.Errorf("commit %d parent", i)
		}
	}
	if len(c.Files) != 1 || c.Files[0].GetFilename() != "f.txt" || c.Files[0].GetStatus() != "added" {
		t.Errorf("files: %+v", c.Files)
	}
	// Paged: first page holds the earliest commits.
	var got []string
	opts := &github.ListOptions{PerPage: 2, Page: 1}
	for {
		c, resp, err := gh.Repositories.CompareCommits(ctx, "acme", "shop", base, push.After, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, cm := range c.Commits {
			got = append(got, cm.GetSHA())
		}
		if resp.NextPage == 0 {
			break
		}
		opts.Page = resp.NextPage
	}
	if strings.Join(got, ",") != strings.Join(push.Commits, ",") {
		t.Errorf("paged commits out of order")
	}
	for _, tc := range []struct{ base, head, status string }{
		{"main", base, "behind"},
		{"main", "main", "identical"},
		{"main", side, "ahead"},
		{push.Commits[2], "side", "ahead"},
	} {
		c, _, err := gh.Repositories.CompareCommits(ctx, "acme", "shop", tc.base, tc.head, nil)
		if err != nil || c.GetStatus() != tc.status {
			t.Errorf("%s...%s: %v %s, want %s", tc.base, tc.head, err, c.GetStatus(), tc.status)
		}
	}
	h.sim.Push("acme/shop", "main", simulator.CommitSpec{Message: "more"})
	if c, _, _ := gh.Repositories.CompareCommits(ctx, "acme", "shop", "main", "side", nil); c.GetStatus() != "diverged" || c.GetBehindBy() != 1 || c.GetAheadBy() != 1 {
		t.Errorf("diverged: %s", c.GetStatus())
	}
	// A history replaced by an unrelated one: no common ancestor, 404.
	before := h.sim.Branch("acme/shop", "main")
	orphan := h.sim.ReplaceHistory("acme/shop", "main", simulator.CommitSpec{Message: "root", Files: map[string]string{"g.txt": "g"}})
	_, resp, err := gh.Repositories.CompareCommits(ctx, "acme", "shop", before, orphan.After, nil)
	var gerr *github.ErrorResponse
	if resp == nil || resp.StatusCode != http.StatusNotFound || !errors.As(err, &gerr) || !strings.HasPrefix(gerr.Message, "No common ancestor between "+before) {
		t.Errorf("compare across unrelated histories: %v; want 404, no common ancestor", err)
	}
	if c, _, err := gh.Repositories.CompareCommits(ctx, "acme", "shop", side, "side", nil); err != nil || c.GetStatus() != "identical" {
		t.Errorf("compare within the old history after the replacement: %v %s", err, c.GetStatus())
	}
	commit, _, err := gh.Repositories.GetCommit(ctx, "acme", "shop", push.Commits[1], nil)
	if err != nil || commit.GetStats().GetAdditions() != 2 || commit.GetStats().GetDeletions() != 1 || commit.GetCommit().GetMessage() != "c1" {
		t.Errorf("single commit: %v %+v", err, commit.GetStats())
	}
}

// The commit endpoints take a ref as "a commit SHA, branch name
// (heads/BRANCH_NAME), or tag name": heads/<branch>, slashes and all, as
// sent (go-github keeps them) or escaped. There are no tags. Like git, heads/x is branch x
// before a branch named "heads/x".
func TestCommitEndpointsTakeHeadsRef(t *testing.T) {
	h := newHarness(t, simulator.Options{})
	h.sim.CreateRepo(h.org, "acme/shop", simulator.RepoOptions{})
	main := h.sim.Branch("acme/shop", "main")
	feature := h.sim.Push("acme/shop", "feature/x", simulator.CommitSpec{Message: "x"}).After
	other := h.sim.Push("acme/shop", "heads/main", simulator.CommitSpec{Message: "heads/main"}).After
	h.sim.SetCommitStatus("acme/shop", main, "ci", "success")
	h.sim.SetCommitStatus("acme/shop", feature, "ci", "failure")
	h.sim.SetCommitStatus("acme/shop", feature, "lint", "success")
	gh := h.client(h.org, nil)
	ctx := h.ctx()
	for _, tc := range []struct {
		ref, sha string
		statuses int
	}{
		{"heads/main", main, 1},
		{"heads/feature/x", feature, 2},
		{"refs/heads/main", main, 1},
		{"heads/heads/main", other, 0},
	} {
		c, _, err := gh.Repositories.GetCommit(ctx, "acme", "shop", tc.ref, nil)
		if err != nil || c.GetSHA() != tc.sha {
			t.Errorf("commit %s: %v %s, want %s", tc.ref, err, c.GetSHA(), tc.sha)
		}
		combined, _, err := gh.Repositories.GetCombinedStatus(ctx, "acme", "shop", tc.ref, nil)
		if err != nil || combined.GetSHA() != tc.sha || combined.GetTotalCount() != tc.statuses {
			t.Errorf("combined status %s: %v %s %d", tc.ref, err, combined.GetSHA(), combined.GetTotalCount())
		}
		list, _, err := gh.Repositories.ListStatuses(ctx, "acme", "shop", tc.ref, nil)
		if err != nil || len(list) != tc.statuses {
			t.Errorf("statuses %s: %v %d", tc.ref, err, len(list))
		}
	}
	tok := h.token(h.org)
	for path, want := range map[string]int{
		"/repos/acme/shop/commits/heads%2Ffeature%2Fx":          200,
		"/repos/acme/shop/commits/heads%2Ffeature%2Fx/status":   200,
		"/repos/acme/shop/commits/heads%2Ffeature%2Fx/statuses": 200,
		"/repos/acme/shop/commits/heads/nope":                   422,
		"/repos/acme/shop/commits/heads/nope/status":            404,
		"/repos/acme/shop/commits/tags/v1":                      422,
		"/repos/acme/shop/commits/":                             404,
	} {
		if r := h.do("GET", path, tok, nil); r.status != want || r.header.Get("X-GitHub-Request-Id") == "" {
			t.Errorf("%s: %d %s, want %d", path, r.status, r.body, want)
		}
	}
	if r := h.do("GET", "/repos/acme/shop/commits/heads%2Ffeature%2Fx/statuses", tok, nil); len(r.list(t)) != 2 {
		t.Errorf("statuses of heads%%2Ffeature%%2Fx: %s", r.body)
	}
}

func TestHandlerOnHTTPTestServer(t *testing.T) {
	sim := simulator.New(simulator.Options{AppID: 7})
	defer sim.Close()
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	sim.SetURL(srv.URL)
	if sim.URL() != srv.URL+"/" {
		t.Fatalf("URL %s", sim.URL())
	}
	inst := sim.CreateInstallation("acme", "Organization")
	sim.CreateRepo(inst, "acme/pub", simulator.RepoOptions{})
	gh := github.NewClient(nil)
	gh.BaseURL = mustParse(t, sim.URL())
	// A public repository is readable without credentials (60/h).
	c, resp, err := gh.Repositories.GetCommit(testCtx(t), "acme", "pub", "main", nil)
	if err != nil || resp.Rate.Limit != 60 || !strings.HasPrefix(c.GetURL(), srv.URL+"/repos/acme/pub/commits/") {
		t.Fatalf("%v %+v %s", err, resp.Rate, c.GetURL())
	}
	// Unknown paths answer GitHub's 404.
	_, resp, _ = gh.Repositories.GetBranch(testCtx(t), "acme", "pub", "main", 0)
	if resp.StatusCode != 404 {
		t.Errorf("unknown endpoint: %d", resp.StatusCode)
	}
	if err := sim.Close(); err != nil {
		t.Error(err)
	}
	if err := sim.Close(); err != nil {
		t.Error("second Close:", err)
	}
}
